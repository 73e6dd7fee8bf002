//! Snapshot retirement: how an update waits for the picks that began
//! before it.
//!
//! # Synchronization
//!
//! A live balancer publishes snapshots with arc-swap. Its `swap` turns every
//! load still reading the replaced snapshot into a counted reference, so
//! after the swap a snapshot's strong count is exactly the picks still in
//! it. An update whose contract is "no pick that ends after I return sees
//! the old state" (remove, down, draining) must wait for every older
//! snapshot still in use, not only the one it replaced: a pick descheduled
//! in a snapshot two updates back sees that snapshot's state too. So every
//! replaced snapshot is filed here (as a weak reference, with what its picks
//! may still need kept alive), the update collects those still in use and
//! waits for them after letting go of the update lock, so other updates go
//! on meanwhile. The wait backs off to sleeps rather than spinning.
//!
//! Entries kept for a snapshot are let go only once it and every older
//! snapshot are gone (a pick in an older one may reach them too). The loom
//! model in `loom_models` checks that a pick in any older snapshot ends
//! before the waiting update returns.

use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::sync::Backoff;

/// Replaced snapshots of type `S` possibly still in use, oldest first, each
/// with what it keeps alive (`K`).
#[derive(Debug)]
pub(crate) struct Retirement<S, K> {
    retired: Vec<Retired<S, K>>,
}

#[derive(Debug)]
struct Retired<S, K> {
    snapshot: Weak<S>,
    keep: Vec<K>,
}

impl<S, K> Retirement<S, K> {
    pub(crate) fn new() -> Self {
        Self {
            retired: Vec::new(),
        }
    }

    /// Files the replaced snapshot `old` with what its picks may still need,
    /// and returns every retired snapshot still in use: what an update that
    /// excludes the old state waits for.
    pub(crate) fn retire(&mut self, old: Arc<S>, keep: Vec<K>) -> Vec<Weak<S>> {
        self.retired.push(Retired {
            snapshot: Arc::downgrade(&old),
            keep,
        });
        drop(old);
        self.prune();
        self.retired
            .iter()
            .filter(|retired| retired.snapshot.strong_count() > 0)
            .map(|retired| Weak::clone(&retired.snapshot))
            .collect()
    }

    /// Forgets the snapshots no pick uses any more, oldest first, and lets
    /// go of what they kept.
    pub(crate) fn prune(&mut self) {
        let in_use = self
            .retired
            .iter()
            .position(|retired| retired.snapshot.strong_count() > 0)
            .unwrap_or(self.retired.len());
        self.retired.drain(..in_use);
    }

    /// Takes back every kept item that `is` picks out (a removed backend
    /// added again, which the member list holds from then on).
    pub(crate) fn unkeep(&mut self, is: impl Fn(&K) -> bool) {
        for retired in &mut self.retired {
            retired.keep.retain(|kept| !is(kept));
        }
    }
}

/// Waits until no pick uses any of the snapshots `in_use`, or `deadline`
/// passes (`false`). A pick takes nanoseconds, so the wait is that long
/// unless a picking thread was descheduled mid-pick.
pub(crate) fn wait_for<S>(in_use: &[Weak<S>], deadline: Option<Instant>) -> bool {
    let mut backoff = Backoff::new();
    for snapshot in in_use {
        while snapshot.strong_count() > 0 {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return false;
            }
            backoff.wait();
        }
    }
    true
}
