//! The backend table every balancer holds: the values, their counts and
//! flags, and the validation of what the caller gave.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::health::Health;
use crate::shared::Shared;
use crate::{BuildError, Guard};

/// The most backends one balancer holds. Schedules and hash tables store
/// indices as `u16`, which keeps them small enough to stay in cache.
pub const MAX_BACKENDS: usize = 1 << 16;

/// Flag bits of an entry. Any flag set sends picks to the slow path.
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

/// Low half of `Entry::counts`: active guards.
const ACTIVE: u64 = 1;
/// High half of `Entry::counts`: picks, modulo 2^32.
const PICK: u64 = 1 << 32;

/// Source of entry ids: unique for the life of the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One backend as the tables and its guards share it.
///
/// The guard holds an `Arc` of the entry so it may outlive the balancer; the
/// counts are explicit so that several snapshots of a live balancer can
/// share an entry and its count. Aligned to 128 bytes so two backends'
/// counts never share a cache line (or the adjacent line the prefetcher
/// pulls in with it).
#[repr(align(128))]
pub(crate) struct Entry<T> {
    /// Picks (high 32 bits, wrapping) and active guards (low 32 bits): one
    /// `fetch_add` a pick counts both. Active guards reach the pick half
    /// only after 4 billion guards of one backend leaked with `mem::forget`.
    counts: AtomicU64,
    /// How often the pick half of `counts` wrapped.
    pick_laps: AtomicU32,
    /// `flag` bits.
    flags: AtomicU32,
    /// The `max_conns` limit while `CAPPED` is set.
    max_conns: AtomicU32,
    /// The configured weight (slow start and failures scale it per pick).
    weight: AtomicU32,
    /// Steps of the thinning sequence (see `accept`).
    thinning: AtomicU64,
    /// Unique for the process: how a tried set names this backend.
    pub(crate) id: u64,
    pub(crate) health: Health,
    pub(crate) shared: Arc<Shared>,
    pub(crate) value: T,
}

impl<T> Entry<T> {
    /// A new entry, with no flags and nothing counted.
    pub(crate) fn new(value: T, weight: u32, shared: Arc<Shared>) -> Self {
        Self {
            counts: AtomicU64::new(0),
            pick_laps: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            max_conns: AtomicU32::new(0),
            weight: AtomicU32::new(weight),
            thinning: AtomicU64::new(0),
            // Relaxed: ids need only be distinct.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            health: Health::new(weight),
            shared,
            value,
        }
    }

    /// Active guards.
    #[inline]
    pub(crate) fn active(&self) -> u32 {
        // Relaxed: counts steer choices and feed stats; they publish nothing.
        self.counts.load(Ordering::Relaxed) as u32
    }

    /// Total picks of this backend.
    pub(crate) fn picks(&self) -> u64 {
        // Relaxed: see `active`. Around each 2^32nd pick a reader may see
        // the wrapped half before its lap is counted.
        let laps = u64::from(self.pick_laps.load(Ordering::Relaxed));
        (laps << 32) | (self.counts.load(Ordering::Relaxed) >> 32)
    }

    /// Counts one pick and one active guard.
    #[inline]
    pub(crate) fn acquire(&self) {
        // Relaxed: see `active`.
        let before = self.counts.fetch_add(PICK + ACTIVE, Ordering::Relaxed);
        self.count_lap(before);
    }

    /// As `acquire`, unless `max_conns` guards are already active: the CAS
    /// makes the limit exact when picks race for the last slot.
    pub(crate) fn try_acquire(&self, max_conns: u32) -> bool {
        // Relaxed: see `active`; the CAS alone decides who gets the slot.
        let result = self
            .counts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |counts| {
                ((counts as u32) < max_conns).then_some(counts + PICK + ACTIVE)
            });
        match result {
            Ok(before) => {
                self.count_lap(before);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes back an `acquire` whose pick did not go ahead.
    pub(crate) fn undo_acquire(&self) {
        // Relaxed: see `active`.
        self.counts.fetch_sub(PICK + ACTIVE, Ordering::Relaxed);
    }

    #[inline]
    fn count_lap(&self, before: u64) {
        if before >> 32 == u64::from(u32::MAX) {
            // Relaxed: see `picks`.
            self.pick_laps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A guard of this entry dropped.
    #[inline]
    pub(crate) fn release(&self) {
        // Relaxed: see `active`.
        self.counts.fetch_sub(ACTIVE, Ordering::Relaxed);
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

impl<T> Drop for Entry<T> {
    fn drop(&mut self) {
        if *self.flags.get_mut() != 0 {
            self.shared.irregular_changed(false);
        }
    }
}

/// The backends of one balancer (or one snapshot of a live one), numbered
/// in order.
pub(crate) struct Backends<T> {
    entries: Box<[Arc<Entry<T>>]>,
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
        let (values, weights): (Vec<T>, Vec<u32>) = backends.into_iter().unzip();
        check_len(values.len())?;
        let weights = Weights::new(weights)?;
        let shared = Shared::standard();
        let entries = values
            .into_iter()
            .zip(weights.as_slice())
            .map(|(value, &weight)| Arc::new(Entry::new(value, weight, Arc::clone(&shared))))
            .collect();
        Ok((Self { entries }, weights))
    }

    /// Over entries that already exist (a live balancer's next snapshot).
    pub(crate) fn from_entries(entries: Vec<Arc<Entry<T>>>) -> Result<Self, BuildError> {
        check_len(entries.len())?;
        Ok(Self {
            entries: entries.into_boxed_slice(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn entries(&self) -> &[Arc<Entry<T>>] {
        &self.entries
    }

    /// Entry `index`, which must be in range (algorithms only produce
    /// indices below `len`).
    #[inline]
    pub(crate) fn entry(&self, index: usize) -> &Entry<T> {
        &self.entries[index]
    }

    /// The balancer's shared state (every entry points at the same one).
    #[inline]
    pub(crate) fn shared(&self) -> &Shared {
        &self.entries[0].shared
    }

    /// Counts a pick of backend `index` and returns its guard.
    #[inline]
    pub(crate) fn guard(&self, index: usize) -> Guard<T> {
        let entry = &self.entries[index];
        entry.acquire();
        Guard::new(Arc::clone(entry), index)
    }

    /// The guard for backend `index` when its pick was already counted (by
    /// `try_acquire`).
    pub(crate) fn counted_guard(&self, index: usize) -> Guard<T> {
        Guard::new(Arc::clone(&self.entries[index]), index)
    }

    /// Active guards of backend `index`, which must be in range.
    #[inline]
    pub(crate) fn active(&self, index: usize) -> usize {
        self.entries[index].active() as usize
    }

    /// Every backend's active guards, in order.
    #[inline]
    pub(crate) fn actives(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|entry| entry.active() as usize)
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.entries.get(index).map(|entry| &entry.value)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|entry| &entry.value)
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
            .entries((0..self.len()).map(|i| (&self.entries[i].value, self.active(i))))
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

    pub(crate) fn total(&self) -> u32 {
        self.total
    }
}
