//! Limits shared through real Redis servers and clusters, which the
//! harness (`tests/redis_support`) starts and stops.
#![cfg(feature = "redis")]

#[path = "../redis_support/mod.rs"]
mod redis_support;

mod bans;
mod harness;
mod limit;
mod permits;
