//! What the cache counts, for /metrics. Each counter is a figure on its
//! own (`Relaxed`).

use std::sync::atomic::AtomicU64;

/// What /metrics shows of the cache.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    /// Stale answers (`stale-while-revalidate`, `stale-if-error`).
    pub(crate) stale: AtomicU64,
    /// Stale entries a backend's `304` made fresh again.
    pub(crate) revalidated: AtomicU64,
    pub(crate) stored: AtomicU64,
    /// Responses meant for the cache that were not kept (too large, cut
    /// short, no room).
    pub(crate) not_stored: AtomicU64,
    /// Misses that waited for another's response instead of going to the
    /// backend.
    pub(crate) collapsed: AtomicU64,
    /// Body bytes answered from the cache.
    pub(crate) hit_bytes: AtomicU64,
    pub(crate) invalidated: AtomicU64,
}
