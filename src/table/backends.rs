//! The backend table every balancer holds: the values, their counts and
//! records, in order.

use std::fmt;
use std::sync::{Arc, Weak};

use super::entry::{DenseCounts, DenseSlot, Entry};
use super::guard::{Guard, Holds};
use super::weights::{Weights, check_len};
use crate::backend::common::Common;
use crate::backend::record::Record;
use crate::error::BuildError;
use crate::sync::atomic::{AtomicU32, Ordering};

/// The backends of one balancer (or one snapshot of a live one), numbered
/// in order: what an algorithm's plain choice reads ([`Choose::plain`]).
/// Parallel arrays, so that a scan of the active counts walks eight-byte
/// steps.
///
/// [`Choose::plain`]: crate::Choose::plain
pub struct Backends<T> {
    /// Weak references: the one strong reference that is not a guard lives
    /// in `owned` or in a live balancer's member list.
    entries: Box<[Weak<Entry<T>>]>,
    /// The entries' records, reachable even after an entry is gone.
    records: Box<[Arc<Record>]>,
    /// What every record points at, kept here one load closer to a pick.
    common: Arc<Common>,
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
    /// A static balancer's table: it owns the entries of `values`, weighted
    /// as `weights` (validated, so as many and at least one). With `dense`,
    /// it also keeps a dense copy of the active counts: every pick and drop
    /// pays one more atomic step, and a scan of every count saves most of
    /// its cache misses.
    pub(crate) fn owning(
        values: Vec<T>,
        weights: &Weights,
        common: Arc<Common>,
        dense: bool,
    ) -> Self {
        let dense: Option<DenseCounts> =
            dense.then(|| values.iter().map(|_| AtomicU32::new(0)).collect());
        let owned: Box<[Arc<Entry<T>>]> = values
            .into_iter()
            .zip(weights.as_slice())
            .enumerate()
            .map(|(index, (value, &weight))| {
                let mut entry = Entry::new(value, weight, Arc::clone(&common));
                entry.dense = dense.as_ref().map(|counts| DenseSlot {
                    counts: Arc::clone(counts),
                    index,
                });
                Arc::new(entry)
            })
            .collect();
        let mut backends = Self::over(&owned, common);
        backends.owned = Some(owned);
        backends.dense = dense;
        backends
    }

    /// Over entries whose owning references live elsewhere (a live
    /// balancer's member list, which outlives every pick on this table).
    pub(crate) fn from_entries(entries: &[Arc<Entry<T>>]) -> Result<Self, BuildError> {
        check_len(entries.len())?;
        let common = Arc::clone(&entries[0].record.common);
        Ok(Self::over(entries, common))
    }

    fn over(entries: &[Arc<Entry<T>>], common: Arc<Common>) -> Self {
        Self {
            entries: entries.iter().map(Arc::downgrade).collect(),
            records: entries
                .iter()
                .map(|entry| Arc::clone(&entry.record))
                .collect(),
            common,
            owned: None,
            dense: None,
            counted: false,
        }
    }

    /// A static table's entries (empty for a live snapshot's).
    pub(crate) fn owned(&self) -> &[Arc<Entry<T>>] {
        self.owned.as_deref().unwrap_or_default()
    }

    /// The number of backends.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none (never, for a balancer's table).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Backend `index`'s configured weight, or 0 past the end.
    pub fn weight(&self, index: usize) -> u32 {
        self.record_at(index).map_or(0, Record::weight)
    }

    /// Every backend's record, in order.
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        self.records.iter().map(|record| &**record)
    }

    /// Record `index`, or `None` past the end.
    #[inline]
    pub(crate) fn record_at(&self, index: usize) -> Option<&Record> {
        self.records.get(index).map(|record| &**record)
    }

    /// Record `index`, which must be in range (algorithms only produce
    /// indices below `len`).
    #[inline]
    pub(crate) fn record(&self, index: usize) -> &Record {
        &self.records[index]
    }

    /// What every record of the balancer has in common.
    #[inline]
    pub(crate) fn common(&self) -> &Common {
        &self.common
    }

    /// The same, shared (a probe keeps it to hand its answer back).
    pub(super) fn common_arc(&self) -> &Arc<Common> {
        &self.common
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
            Some(owned) => Arc::clone(owned.get(index)?),
            None => self.entries.get(index)?.upgrade()?,
        };
        if let Some(counts) = &self.dense {
            // Relaxed: see `Entry::release_dense`.
            counts[index].fetch_add(1, Ordering::Relaxed);
            // A static table: its backends have no `max_conns` slots.
            holds = Holds::Dense;
        }
        if self.counted {
            self.common.total_active_changed(true);
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

    /// Active guards of backend `index` (0 past the end).
    #[inline]
    pub fn active(&self, index: usize) -> usize {
        // The one strong reference that is not a guard.
        self.entries
            .get(index)
            .map_or(0, |entry| entry.strong_count().saturating_sub(1))
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
