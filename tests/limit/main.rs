//! Flow control on one server: rates, keyed tables, bans, CIDR lists,
//! concurrency limits, real client addresses, and stalled checkers.

#[path = "../common/counting_alloc.rs"]
mod counting_alloc;

mod adaptive;
mod cidr;
mod concurrency_limit;
mod flow_control;
mod keyed_limit;
mod rate_limit;
mod real_ip;
mod stalled_limits;
