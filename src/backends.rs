//! The backend table every balancer holds: the values, their counts and
//! flags, and the validation of what the caller gave.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::clock_and_policy::Shared;
use crate::guard::Holds;
use crate::record::Record;
use crate::sync::atomic::{AtomicU32, Ordering};
pub(crate) use crate::weights::{check_len, Weights};
use crate::{BuildError, Guard};

/// The most backends one balancer holds. Schedules and hash tables store
/// indices as `u16`, which keeps them small enough to stay in cache.
pub const MAX_BACKENDS: usize = 1 << 16;

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
    dense: Option<DenseSlot>,
}

impl<T> Entry<T> {
    pub(crate) fn new(value: T, weight: u32, shared: Arc<Shared>) -> Self {
        Self {
            record: Arc::new(Record::new(weight, shared)),
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
type DenseCounts = Arc<[AtomicU32]>;

/// A backend's place in a `DenseCounts`.
struct DenseSlot {
    counts: DenseCounts,
    index: usize,
}

/// The backends of one balancer (or one snapshot of a live one), numbered
/// in order. Parallel arrays, so that a scan of the active counts walks
/// eight-byte steps.
pub(crate) struct Backends<T> {
    /// Weak references: the one strong reference that is not a guard lives
    /// in `owned` or in a live balancer's member list.
    entries: Box<[Weak<Entry<T>>]>,
    /// The entries' records, reachable even after an entry is gone.
    records: Box<[Arc<Record>]>,
    /// What every record points at, kept here one load closer to a pick.
    shared: Arc<Shared>,
    /// The entries' one strong reference that is not a guard, for a static
    /// balancer; a live balancer keeps it in its member list.
    owned: Option<Box<[Arc<Entry<T>>]>>,
    /// A dense copy of the active counts that every guard of this table
    /// raises and lowers (static least-connections tables of many backends).
    dense: Option<DenseCounts>,
    /// Every guard also counts in the balancer's total of active guards
    /// (bounded-load hashing, which compares a backend with the mean).
    counted: bool,
}

impl<T> Backends<T> {
    /// Takes the backends in order; fails when there are none or too many.
    pub(crate) fn new(values: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        let (backends, _) = Self::weighted(values.into_iter().map(|value| (value, 1)), false)?;
        Ok(backends)
    }

    /// Takes weighted backends in order and checks the weights too.
    /// `effective`: the algorithm steers by effective weights, which
    /// failures then lower.
    pub(crate) fn weighted(
        backends: impl IntoIterator<Item = (T, u32)>,
        effective: bool,
    ) -> Result<(Self, Weights), BuildError> {
        Self::weighted_dense(backends, effective, usize::MAX)
    }

    /// As [`weighted`](Self::weighted), also keeping a dense copy of the
    /// active counts when there are more than `dense_above` backends. The
    /// copy costs every pick and drop one more atomic step and saves a scan
    /// of every count most of its cache misses.
    pub(crate) fn weighted_dense(
        backends: impl IntoIterator<Item = (T, u32)>,
        effective: bool,
        dense_above: usize,
    ) -> Result<(Self, Weights), BuildError> {
        let (values, weights): (Vec<T>, Vec<u32>) = backends.into_iter().unzip();
        let weights = Weights::new(weights)?;
        let shared = Shared::standard(effective);
        let dense: Option<DenseCounts> = (values.len() > dense_above)
            .then(|| values.iter().map(|_| AtomicU32::new(0)).collect());
        let owned: Box<[Arc<Entry<T>>]> = values
            .into_iter()
            .zip(weights.as_slice())
            .enumerate()
            .map(|(index, (value, &weight))| {
                let mut entry = Entry::new(value, weight, Arc::clone(&shared));
                entry.dense = dense.as_ref().map(|counts| DenseSlot {
                    counts: Arc::clone(counts),
                    index,
                });
                Arc::new(entry)
            })
            .collect();
        let mut backends = Self::over(&owned);
        backends.owned = Some(owned);
        backends.dense = dense;
        Ok((backends, weights))
    }

    /// Over entries whose owning references live elsewhere (a live
    /// balancer's member list, which outlives every pick on this table).
    pub(crate) fn from_entries(entries: &[Arc<Entry<T>>]) -> Result<Self, BuildError> {
        check_len(entries.len())?;
        Ok(Self::over(entries))
    }

    /// `entries` is not empty (checked by the callers).
    fn over(entries: &[Arc<Entry<T>>]) -> Self {
        Self {
            entries: entries.iter().map(Arc::downgrade).collect(),
            records: entries
                .iter()
                .map(|entry| Arc::clone(&entry.record))
                .collect(),
            shared: Arc::clone(&entries[0].record.shared),
            owned: None,
            dense: None,
            counted: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every backend's record, in order.
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        self.records.iter().map(|record| &**record)
    }

    /// Record `index`, which must be in range (algorithms only produce
    /// indices below `len`).
    #[inline]
    pub(crate) fn record(&self, index: usize) -> &Record {
        &self.records[index]
    }

    /// The balancer's shared state (every record points at the same one).
    #[inline]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Counts a pick of backend `index` and returns its guard; `None` only
    /// if the backend left a live balancer and its last guard is gone,
    /// which a live balancer's removal protocol rules out for any table a
    /// pick can still reach.
    #[inline]
    pub(crate) fn guard(&self, index: usize) -> Option<Guard<T>> {
        self.guard_holding(index, Holds::Nothing)
    }

    /// As `guard`, for a pick that took one of the backend's `max_conns`
    /// slots: the guard gives it back on drop.
    pub(crate) fn slot_guard(&self, index: usize) -> Option<Guard<T>> {
        self.guard_holding(index, Holds::Slot)
    }

    /// Always inlined: as a call it cost every pick 8 ns (round-robin 31
    /// against 24 ns, `cargo bench --bench pick`).
    #[inline(always)]
    fn guard_holding(&self, index: usize, mut holds: Holds) -> Option<Guard<T>> {
        // A static table clones its own reference: one `fetch_add`, where a
        // weak reference's upgrade is a load and a compare-exchange loop.
        let entry = match &self.owned {
            Some(owned) => Arc::clone(&owned[index]),
            None => self.entries[index].upgrade()?,
        };
        if let Some(counts) = &self.dense {
            // Relaxed: see `Entry::release_dense`.
            counts[index].fetch_add(1, Ordering::Relaxed);
            // A static table: its backends have no `max_conns` slots.
            holds = Holds::Dense;
        }
        if self.counted {
            self.shared.total_active_changed(true);
            // A counted table is a hashing one: no dense counts.
            holds = if holds == Holds::Slot {
                Holds::SlotCounted
            } else {
                Holds::Counted
            };
        }
        self.records[index].count_pick();
        Some(Guard::new(entry, index, holds))
    }

    /// Counts every guard in the balancer's total of active guards from now
    /// on; set before the table takes its first pick.
    pub(crate) fn count_total(mut self, on: bool) -> Self {
        self.counted = on;
        self
    }

    /// Active guards of backend `index` as an algorithm that reads a few
    /// counts at random sees them: from the dense copy when the table keeps
    /// one (a 4-byte slot, where the entry's count is a cache line of its
    /// own), else as [`active`](Self::active).
    #[inline]
    pub(crate) fn steering_active(&self, index: usize) -> usize {
        match &self.dense {
            // Relaxed: see `Entry::release_dense`.
            Some(counts) => counts[index].load(Ordering::Relaxed) as usize,
            None => self.active(index),
        }
    }

    /// Active guards of backend `index`, which must be in range.
    #[inline]
    pub(crate) fn active(&self, index: usize) -> usize {
        // The one strong reference that is not a guard.
        self.entries[index].strong_count().saturating_sub(1)
    }

    /// Every backend's active guards, in order, handed to `scan` as an
    /// iterator it may run more than once. Static tables read their own
    /// strong references, which skips the check a weak reference makes for
    /// a dangling pointer: a scan of many backends is a sixth faster.
    #[inline]
    pub(crate) fn scan_actives<R>(&self, scan: impl ScanActives<R>) -> R {
        if let Some(counts) = &self.dense {
            return scan.scan_dense(counts);
        }
        match &self.owned {
            // The table's own reference is the one that is not a guard.
            Some(owned) => scan.scan(|| owned.iter().map(|entry| Arc::strong_count(entry) - 1)),
            None => scan.scan(|| {
                self.entries
                    .iter()
                    .map(|entry| entry.strong_count().saturating_sub(1))
            }),
        }
    }

    /// The backend at `index`, for a static balancer (which owns its
    /// entries); `None` past the end or for a live balancer's table.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.owned.as_ref()?.get(index).map(|entry| &entry.value)
    }

    /// Backend `index`'s entry, held for an instant (hashing its identity,
    /// reading its value for stats); `None` if it is gone.
    pub(crate) fn upgrade(&self, index: usize) -> Option<Arc<Entry<T>>> {
        self.entries[index].upgrade()
    }
}

/// A computation over every backend's active count, generic over how the
/// counts are read (see [`Backends::scan_actives`]).
pub(crate) trait ScanActives<R>: Sized {
    fn scan<I: Iterator<Item = usize>>(self, actives: impl Fn() -> I) -> R;

    /// As `scan`, over a static table's dense copy of the counts, which a
    /// scan may read in blocks.
    #[inline]
    fn scan_dense(self, counts: &[AtomicU32]) -> R {
        // Relaxed: see `Entry::release_dense`.
        self.scan(|| {
            counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed) as usize)
        })
    }
}

impl<T: fmt::Debug> fmt::Debug for Backends<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries((0..self.len()).map(|i| {
                let active = self.active(i);
                let value = self.upgrade(i);
                (value.map(|entry| format!("{:?}", entry.value)), active)
            }))
            .finish()
    }
}
