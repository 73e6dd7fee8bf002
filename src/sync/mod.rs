//! The atomics and locks every protocol of the crate uses, in one place so
//! that a `cfg(loom)` build swaps in loom's types and the loom models check
//! the protocols that use them (as tokio and crossbeam do): the record's
//! words, the live set's retirement, the windows of smooth weighted
//! round-robin, the limiters, and the lock of every mutex-backed
//! balancer.
//!
//! Each model sits beside the module it checks (`loom_*.rs`, compiled only
//! under `--cfg loom`). Loom's types work only inside `loom::model`, so under
//! loom only those models run:
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.
//!
//! Not routed here: record ids (a `static` counter, which loom's atomics
//! cannot be, and which only needs to be unique) and `Arc` reference
//! counts (loom's `Arc` has no `Weak`; the retirement model stands in for
//! arc-swap instead).

mod backoff;
mod mutex;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic;

#[cfg(loom)]
pub(crate) use loom::sync::atomic;

pub(crate) use backoff::Backoff;
pub(crate) use mutex::{Mutex, MutexGuard};
