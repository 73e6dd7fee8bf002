//! The pool: building and applying configurations, metrics, retries,
//! waiting for a slot, the tower service, and the router.

#[path = "../common/counting_alloc.rs"]
mod counting_alloc;

mod config;
mod metrics;
mod pool;
mod retry;
mod route;
mod tower;
mod wait;
