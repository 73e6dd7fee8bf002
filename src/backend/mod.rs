//! The backend record and its health: everything a balancer knows of one
//! backend besides its value, and the rules that change it.
//!
//! - [`record`]: flags, limit, weight, passive health, slow start,
//!   effective weight and statistics of one backend, in atomic words a pick
//!   reads without a lock (its "Synchronization" section says which words
//!   pair);
//! - [`health`]: the policy (nginx's `max_fails` and `fail_timeout`, slow
//!   start, what to do when every backend is ejected) and a request's
//!   outcome;
//! - [`common`]: what every backend of one balancer has in common: the
//!   clock, the policy as it changes, the count of backends off the plain
//!   path;
//! - [`peak`]: a backend's peak-EWMA latency estimate, one word;
//! - [`probes`]: the probe pool of a probing balancer, the last answers
//!   of its backends' probes.
//!
//! Nothing here knows the backend's value or the algorithm: the table
//! above holds values beside their records.

pub(crate) mod common;
pub(crate) mod health;
pub(crate) mod peak;
mod policy;
pub(crate) mod probes;
pub(crate) mod record;

#[cfg(all(test, loom))]
mod loom_peak;
#[cfg(all(test, loom))]
mod loom_record;

pub use health::{HealthPolicy, Outcome, WhenAllEjected};
