//! The pool: building and applying configurations, metrics, retries,
//! waiting for a slot, the tower service, and the router.

#[path = "../common/counting_alloc.rs"]
mod counting_alloc;
#[path = "../common/user_algorithm.rs"]
mod user_algorithm;

mod config;
mod custom;
mod metrics;
mod pool;
mod retry;
mod route;
mod tower;
mod wait;
