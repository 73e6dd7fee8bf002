//! A deterministic simulator of the `loadbalance` crate's picks: virtual
//! time and a seeded generator, so the same scenario and seed give the
//! same table on any machine. The pick path is the crate's real one (a
//! [`Pool`](loadbalance::Pool) by its algorithm's name on a
//! [`ManualClock`](loadbalance::ManualClock)); the clients, servers and
//! network around it are modelled.
//!
//! - `random.rs`: [`Random`], a seeded generator, and [`Service`], the
//!   service-time distributions.
//! - `scenario.rs`: [`Scenario`], what is simulated: servers (service
//!   time, concurrency, queue), arrivals, slowdowns, timeouts, retries.
//! - `engine.rs`: [`simulate`], the event loop: arrivals, picks, queues,
//!   completions and timeouts, in virtual time.
//! - `report.rs`: [`Report`], what a run measured (percentiles, success
//!   within the deadline, imbalance), and the table of several.
//! - `scenarios.rs`: the named scenarios: Linkerd's, a Prequal-like one
//!   at several loads, the demo's.

mod engine;
mod random;
mod report;
mod scenario;
pub mod scenarios;

pub use engine::{SimulateError, simulate};
pub use random::{Random, Service};
pub use report::{Report, overload_table, table};
pub use scenario::{Antagonists, Limit, Scenario, Server, Slowdown};
