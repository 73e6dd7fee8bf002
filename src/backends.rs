//! The backend table every balancer holds: the values, their counts and
//! flags, and the validation of what the caller gave.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::guard::Holds;
use crate::health::Health;
use crate::shared::Shared;
use crate::{BuildError, Context, Guard};

/// The most backends one balancer holds. Schedules and hash tables store
/// indices as `u16`, which keeps them small enough to stay in cache.
pub const MAX_BACKENDS: usize = 1 << 16;

/// Flag bits of a record. Any flag set sends picks to the slow path.
pub(crate) mod flag {
    /// Marked down by the operator: no new picks.
    pub(crate) const DOWN: u32 = 1;
    /// Draining: no new picks, existing guards finish.
    pub(crate) const DRAINING: u32 = 1 << 1;
    /// A backup: picked only while no primary is available.
    pub(crate) const BACKUP: u32 = 1 << 2;
    /// Has a `max_conns` limit.
    pub(crate) const CAPPED: u32 = 1 << 3;
    /// Ejected by passive health (cooling down or on trial).
    pub(crate) const EJECTED: u32 = 1 << 4;
    /// Effective weight lowered by failures, not yet restored.
    pub(crate) const DEGRADED: u32 = 1 << 5;
    /// In slow start.
    pub(crate) const RAMPING: u32 = 1 << 6;
}

/// Source of record ids: unique for the life of the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

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

/// What the balancer knows of one backend besides its value: flags, limits,
/// health and statistics, all atomics that picks read without a lock.
#[repr(align(128))]
pub(crate) struct Record {
    /// `flag` bits.
    flags: AtomicU32,
    /// The `max_conns` limit while `CAPPED` is set.
    max_conns: AtomicU32,
    /// Guards taken while `CAPPED`: the count the limit applies to, raised
    /// by CAS so that picks racing for the last slot cannot both win.
    conns: AtomicU32,
    /// The configured weight (slow start and failures scale it per pick).
    weight: AtomicU32,
    /// Picks so far, counted with a plain (racy) increment: see `count_pick`.
    picks: AtomicU64,
    /// Steps of the thinning sequence (see `accept`).
    thinning: AtomicU64,
    /// Unique for the process: how a tried set names this backend.
    pub(crate) id: u64,
    pub(crate) health: Health,
    pub(crate) shared: Arc<Shared>,
}

impl Record {
    fn new(weight: u32, shared: Arc<Shared>) -> Self {
        Self {
            flags: AtomicU32::new(0),
            max_conns: AtomicU32::new(0),
            conns: AtomicU32::new(0),
            weight: AtomicU32::new(weight),
            picks: AtomicU64::new(0),
            thinning: AtomicU64::new(0),
            // Relaxed: ids need only be distinct.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            health: Health::new(weight),
            shared,
        }
    }

    /// Picks so far.
    pub(crate) fn picks(&self) -> u64 {
        // Relaxed: a statistic.
        self.picks.load(Ordering::Relaxed)
    }

    /// Counts a pick with a load and a store, not a read-modify-write: an
    /// atomic step here would cost every pick a third of its time (measured
    /// 23 -> 32 ns a round-robin pick). Exact on one thread; two threads
    /// picking the same backend in the same instant may count one pick.
    #[inline]
    pub(crate) fn count_pick(&self) {
        // Relaxed: a statistic.
        let picks = self.picks.load(Ordering::Relaxed);
        self.picks.store(picks.wrapping_add(1), Ordering::Relaxed);
    }

    /// Takes one of `max_conns` slots, unless all are taken.
    pub(crate) fn try_take_slot(&self, max_conns: u32) -> bool {
        // Relaxed: the CAS alone decides who gets the slot; it publishes
        // nothing else.
        self.conns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |conns| {
                (conns < max_conns).then_some(conns + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken by `try_take_slot`.
    pub(crate) fn free_slot(&self) {
        // Relaxed: see `try_take_slot`.
        self.conns.fetch_sub(1, Ordering::Relaxed);
    }

    /// Slots taken (guards counted against `max_conns`).
    pub(crate) fn slots_taken(&self) -> u32 {
        // Relaxed: see `try_take_slot`.
        self.conns.load(Ordering::Relaxed)
    }

    /// The flag bits now.
    #[inline]
    pub(crate) fn flags(&self) -> u32 {
        // Relaxed: flags steer picks only; see `Shared::regular` for why a
        // pick after the call that set them sees them.
        self.flags.load(Ordering::Relaxed)
    }

    /// Sets (`on`) or clears the bits of `mask`, keeping the balancer's
    /// count of flagged backends right.
    pub(crate) fn set_flags(&self, mask: u32, on: bool) {
        // Relaxed: see `flags`. Each change from no flags to some (or back)
        // is seen by exactly one of these RMWs, so the count stays exact.
        let before = if on {
            self.flags.fetch_or(mask, Ordering::Relaxed)
        } else {
            self.flags.fetch_and(!mask, Ordering::Relaxed)
        };
        let after = if on { before | mask } else { before & !mask };
        if (before == 0) != (after == 0) {
            self.shared.irregular_changed(after != 0);
        }
    }

    /// The configured weight.
    pub(crate) fn weight(&self) -> u32 {
        // Relaxed: read by failure reports to size the drop; an update that
        // races a report may have either weight used.
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        // Relaxed: see `weight`.
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// The `max_conns` limit, if any.
    pub(crate) fn max_conns(&self) -> Option<u32> {
        // Relaxed: see `flags`.
        let limit = self.max_conns.load(Ordering::Relaxed);
        (self.flags() & flag::CAPPED != 0).then_some(limit)
    }

    pub(crate) fn set_max_conns(&self, limit: Option<u32>) {
        // Relaxed: see `flags`. The limit is stored before the flag is set,
        // so a pick that sees the flag from this call sees a limit from it
        // or a later call.
        self.max_conns.store(limit.unwrap_or(0), Ordering::Relaxed);
        self.set_flags(flag::CAPPED, limit.is_some());
    }

    /// Whether this step of a thinned backend goes ahead: of every `den`
    /// steps exactly `num` do, evenly spread (Bresenham's rule), so a
    /// thinned backend's share is exactly `num / den` of its unthinned one.
    pub(crate) fn accept(&self, num: u64, den: u64) -> bool {
        if num >= den {
            return true;
        }
        // Relaxed: a step counter; the exact share holds over all steps in
        // whatever order threads take them.
        let step = u128::from(self.thinning.fetch_add(1, Ordering::Relaxed) % den);
        let (num, den) = (u128::from(num), u128::from(den));
        (step + 1) * num / den > step * num / den
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if *self.flags.get_mut() != 0 {
            self.shared.irregular_changed(false);
        }
    }
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
}

impl<T> Backends<T> {
    /// Takes the backends in order; fails when there are none or too many.
    pub(crate) fn new(values: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        let (backends, _) = Self::weighted(values.into_iter().map(|value| (value, 1)))?;
        Ok(backends)
    }

    /// Takes weighted backends in order and checks the weights too.
    pub(crate) fn weighted(
        backends: impl IntoIterator<Item = (T, u32)>,
    ) -> Result<(Self, Weights), BuildError> {
        Self::weighted_dense(backends, usize::MAX)
    }

    /// As [`weighted`](Self::weighted), also keeping a dense copy of the
    /// active counts when there are more than `dense_above` backends. The
    /// copy costs every pick and drop one more atomic step and saves a scan
    /// of every count most of its cache misses.
    pub(crate) fn weighted_dense(
        backends: impl IntoIterator<Item = (T, u32)>,
        dense_above: usize,
    ) -> Result<(Self, Weights), BuildError> {
        let (values, weights): (Vec<T>, Vec<u32>) = backends.into_iter().unzip();
        check_len(values.len())?;
        let weights = Weights::new(weights)?;
        let shared = Shared::standard();
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

    /// The plain path every algorithm tries first: while no backend has a
    /// flag and the pick skips nothing, the guard of the backend `choose`
    /// names. `None` sends the pick down the algorithm's slow path, which
    /// each algorithm keeps out of line (`#[inline(never)]`): inlined, it
    /// made the plain pick save every callee-saved register and spill its
    /// scan's state to the stack (seen with `perf annotate`).
    #[inline]
    pub(crate) fn plain_pick(
        &self,
        ctx: &Context<'_>,
        choose: impl FnOnce() -> usize,
    ) -> Option<Guard<T>> {
        if self.shared.regular() && ctx.skips_nothing() {
            self.guard(choose())
        } else {
            None
        }
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
        self.records[index].count_pick();
        Some(Guard::new(entry, index, holds))
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

fn check_len(len: usize) -> Result<(), BuildError> {
    match len {
        0 => Err(BuildError::NoBackends),
        len if len > MAX_BACKENDS => Err(BuildError::TooManyBackends {
            len,
            max: MAX_BACKENDS,
        }),
        _ => Ok(()),
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

/// Validated weights: each at least 1, their sum within `u32`.
#[derive(Clone, Debug)]
pub(crate) struct Weights {
    per_backend: Box<[u32]>,
    total: u32,
}

impl Weights {
    pub(crate) fn new(weights: Vec<u32>) -> Result<Self, BuildError> {
        if let Some(index) = weights.iter().position(|&w| w == 0) {
            return Err(BuildError::ZeroWeight { index });
        }
        let total = weights
            .iter()
            .try_fold(0u32, |sum, &w| sum.checked_add(w))
            .ok_or(BuildError::WeightOverflow)?;
        Ok(Self {
            per_backend: weights.into_boxed_slice(),
            total,
        })
    }

    /// Weight 1 for each of `len` backends (`len` is at most `MAX_BACKENDS`).
    pub(crate) fn unit(len: usize) -> Self {
        Self {
            per_backend: vec![1; len].into_boxed_slice(),
            total: len as u32,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u32] {
        &self.per_backend
    }

    /// Whether every weight is 1 (least-connections then compares counts
    /// without products).
    pub(crate) fn all_one(&self) -> bool {
        self.per_backend.iter().all(|&w| w == 1)
    }

    pub(crate) fn total(&self) -> u32 {
        self.total
    }
}
