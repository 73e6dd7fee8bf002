//! One backend as its guards hold it: the value beside its record.

use std::sync::Arc;

use crate::backend::common::Common;
use crate::backend::record::Record;
use crate::sync::atomic::{AtomicU32, Ordering};

/// One backend as its guards hold it: the value, and its record.
///
/// The `Arc` around an entry is its active-connection count: exactly one
/// strong reference is not a guard (the static balancer's table, or the
/// live balancer's member list); snapshots of a live balancer hold only
/// weak references. So a pick pays one reference-count step and a drop one,
/// the least any guard that may outlive the balancer can pay, and the count
/// carries across snapshots by itself. Aligned to 128 bytes so two
/// backends' counts never share a cache line (or the adjacent line the
/// prefetcher pulls in with it).
#[repr(align(128))]
pub(crate) struct Entry<T> {
    pub(crate) record: Arc<Record>,
    pub(crate) value: T,
    /// The entry's place in its static table's dense copy of the counts, if
    /// the table keeps one (see `Backends::weighted_dense`).
    pub(super) dense: Option<DenseSlot>,
}

impl<T> Entry<T> {
    pub(crate) fn new(value: T, weight: u32, common: Arc<Common>) -> Self {
        Self {
            record: Arc::new(Record::new(weight, common)),
            value,
            dense: None,
        }
    }

    /// Lowers the dense count, for a guard that raised it.
    #[inline]
    pub(crate) fn release_dense(&self) {
        if let Some(slot) = &self.dense {
            // Relaxed: dense counts only steer least-connections; the true
            // count is the reference count.
            slot.counts[slot.index].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A dense array of active counts, one `u32` per backend in order: a scan
/// of every count reads a few cache lines where the entries' own counts
/// take a line each. A count wraps only after 4 billion guards of one
/// backend are leaked with `mem::forget`.
pub(super) type DenseCounts = Arc<[AtomicU32]>;

/// A backend's place in a `DenseCounts`.
pub(super) struct DenseSlot {
    pub(super) counts: DenseCounts,
    pub(super) index: usize,
}
