//! Smooth weighted round-robin, exactly nginx's.
//!
//! On each pick every backend's current weight grows by its weight, the
//! largest current weight wins (the lowest index on ties), and the winner's
//! current weight drops by the total. Weights 5, 1, 1 give 0 0 1 0 2 0 0.
//!
//! The sequence is periodic: after `sum(w) / gcd(w)` picks every current
//! weight is back at zero. The lock-free form precomputes one period, so a
//! pick is one atomic cursor step and a table read. The period is bounded
//! (`SCHEDULE_LIMIT` picks, and `BUILD_WORK_LIMIT` steps of work to
//! compute it); past the bound the lock-free form computes the sequence in
//! windows (`windows.rs`), still exact, still without a lock and without an
//! allocation, but with an `O(n)` cost per pick amortised over each window.

use crate::sync::atomic::{AtomicI64, AtomicU16, AtomicUsize, Ordering};

use super::effective::{lazy_take, EffectiveWeights};
use super::windows::{self, Windows};
use crate::assemble::{Assemble, Parts};
use crate::backends::{Backends, Weights};
use crate::balancer_type::{balancer_type, Balanced, Pick};
use crate::driver::{self, Choose};
use crate::health::FULL;
use crate::mutex_form::Locked;
use crate::selection::Slow;
use crate::{BuildError, Context, Guard, PickError};
use crossbeam_utils::CachePadded;

/// See [`WeightedRoundRobin::SCHEDULE_LIMIT`].
const SCHEDULE_LIMIT: usize = 1 << 19;

/// See [`WeightedRoundRobin::BUILD_WORK_LIMIT`].
const BUILD_WORK_LIMIT: u64 = 1 << 30;

/// Work, in steps × backends, spent on one window past the bound, so that
/// the pick that computes a window stalls for about a millisecond.
const WINDOW_WORK: usize = 1 << 20;

balancer_type! {
    /// Lock-free smooth weighted round-robin: nginx's exact sequence.
    ///
    /// Within [`SCHEDULE_LIMIT`](Self::SCHEDULE_LIMIT) a pick is one relaxed `fetch_add` and a
    /// read of the precomputed period; each concurrent pick takes its own
    /// step of the sequence. Past the limit the sequence is computed in
    /// windows (see [`docs`](crate::docs#memory-bounds)).
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::WeightedRoundRobin, Balancer, Context};
    ///
    /// let lb = WeightedRoundRobin::new([("a", 5), ("b", 1), ("c", 1)])?;
    /// let picks: String = (0..7).map(|_| *lb.pick(&Context::new()).unwrap()).collect();
    /// assert_eq!(picks, "aabacaa");
    /// # Ok::<(), loadbalance::BuildError>(())
    /// ```
    WeightedRoundRobin, Smooth
}

balancer_type! {
    /// Mutex-backed smooth weighted round-robin: nginx's algorithm, `O(n)`
    /// per pick, behind a `parking_lot::Mutex`.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{locked::WeightedRoundRobin, Balancer, Context};
    ///
    /// let lb = WeightedRoundRobin::new([("a", 2), ("b", 1)])?;
    /// let picks: String = (0..3).map(|_| *lb.pick(&Context::new()).unwrap()).collect();
    /// assert_eq!(picks, "aba");
    /// # Ok::<(), loadbalance::BuildError>(())
    /// ```
    LockedWeightedRoundRobin, Locked<WeightedRoundRobinState>
}

impl<T> WeightedRoundRobin<T> {
    /// The longest period the lock-free form precomputes: 2^19 picks, stored
    /// as `u16` indices in 1 MiB.
    pub const SCHEDULE_LIMIT: usize = SCHEDULE_LIMIT;

    /// The most sequential steps (period × backends) spent precomputing a
    /// period: about a quarter of a second on a 2-core test machine.
    pub const BUILD_WORK_LIMIT: u64 = BUILD_WORK_LIMIT;

    /// Builds over `(backend, weight)` pairs in the order given.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`], [`BuildError::TooManyBackends`],
    /// [`BuildError::ZeroWeight`] or [`BuildError::WeightOverflow`].
    pub fn new(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted(backends, true)?;
        Ok(Self(Balanced {
            backends,
            algorithm: Smooth::new(&weights),
        }))
    }

    /// Whether the whole period is precomputed (the fast path), rather than
    /// computed in windows past [`SCHEDULE_LIMIT`](Self::SCHEDULE_LIMIT).
    pub fn is_precomputed(&self) -> bool {
        matches!(self.0.algorithm.schedule, Schedule::Cyclic { .. })
    }
}

impl<T> LockedWeightedRoundRobin<T> {
    /// Builds over `(backend, weight)` pairs in the order given.
    ///
    /// # Errors
    ///
    /// As [`WeightedRoundRobin::new`].
    pub fn new(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted(backends, true)?;
        Ok(Self(Balanced::locked(
            backends,
            WeightedRoundRobinState::new(&weights),
        )))
    }
}

/// One weight unit in current weights: thousandths, so that slow start can
/// scale a weight of 1. Scaling every weight alike leaves the sequence as is.
pub(crate) const UNIT: i64 = FULL as i64;

/// nginx's smooth weighted round-robin as a sequential state machine.
#[derive(Clone, Debug)]
pub(crate) struct WeightedRoundRobinState {
    weights: Box<[u32]>,
    /// `weights` in units of `UNIT`, computed once rather than every pick.
    scaled: Box<[i64]>,
    current: Box<[i64]>,
    total: i64,
    /// Restored one unit each time the backend takes part in a pick.
    effective: EffectiveWeights,
}

impl WeightedRoundRobinState {
    pub(crate) fn new(weights: &Weights) -> Self {
        let len = weights.as_slice().len();
        Self {
            weights: weights.as_slice().into(),
            scaled: weights
                .as_slice()
                .iter()
                .map(|&w| i64::from(w) * UNIT)
                .collect(),
            current: vec![0; len].into_boxed_slice(),
            total: i64::from(weights.total()) * UNIT,
            effective: EffectiveWeights::new(weights),
        }
    }

    /// Starts from backends' health as it is (a live balancer's snapshot).
    fn from_backends<T>(weights: &Weights, backends: &Backends<T>) -> Self {
        Self {
            effective: EffectiveWeights::from_backends(weights, backends),
            ..Self::new(weights)
        }
    }

    /// nginx's `ngx_http_upstream_get_peer` over the backends that can take
    /// the pick, with effective weights (scaled by slow start).
    fn step_available<T>(
        &mut self,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = slow.backends();
        let selection = self.effective.begin(slow)?;
        let mut best: Option<usize> = None;
        let mut total = 0i64;
        for i in 0..self.weights.len() {
            if !selection.eligible(i) {
                continue;
            }
            // In thousandths of a weight unit, so slow start scales even
            // weight 1; scaling every weight alike leaves the sequence as is.
            let used = self
                .effective
                .take(i, self.weights[i], selection.ramp(i), backends);
            self.current[i] += used;
            total += used;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        if let Some(best) = best {
            self.current[best] -= total;
        }
        Ok(best)
    }

    /// One pick. Current weights stay within `(-total, total]`, so `i64`
    /// never overflows.
    #[inline]
    pub(crate) fn step(&mut self) -> usize {
        windows::step(&mut self.current, &self.scaled, self.total)
    }
}

impl Choose for WeightedRoundRobinState {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<usize, PickError> {
        Ok(self.step())
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        self.step_available(slow)
    }
}

/// The lock-free form: one sequence state, held in one of two places.
///
/// While every pick has been one of nginx's steps over all backends at full
/// weight, the state is the schedule's position (the precomputed period, or
/// the current window): a pick is a cursor step. The first pick that
/// leaves that sequence (a backend down, full, tried, ramping or degraded)
/// replays the schedule up to its position into `current`, once, and from
/// then on the state is `current`: nginx's loop on atomics, `O(n)` a pick,
/// exactly as the mutex-backed form continues. Back to plain picks, the
/// state returns to a schedule: a windowed schedule computes its next
/// window from `current` at once; a precomputed one records one period of
/// picks from `current` into its second buffer and, if the state is back
/// where it began (nginx's sequence is periodic again), replays that period
/// from then on; otherwise it records the next period.
///
/// On one thread the picks are nginx's exactly. Under concurrency every
/// step adds exactly what it subtracts, so the shares stay nginx's.
pub(crate) struct Smooth {
    schedule: Schedule,
    weights: Weights,
    /// The current weights while the state is explicit (in units of `UNIT`).
    current: Box<[AtomicI64]>,
    /// Where the state is: `EXPLICIT` set, in `current`; the low bit, the
    /// period buffer in use (or last in use). Read by every plain pick and
    /// written only when the state moves, so it stays in every core's cache;
    /// read before the cursor step, it leaves that step's latency alone.
    mode: AtomicUsize,
    /// Plain steps recorded since `current` began a period (see above).
    recorded: AtomicUsize,
}

impl Smooth {
    fn new(weights: &Weights) -> Self {
        Self {
            schedule: Schedule::new(weights, SCHEDULE_LIMIT, BUILD_WORK_LIMIT),
            weights: weights.clone(),
            current: weights
                .as_slice()
                .iter()
                .map(|_| AtomicI64::new(0))
                .collect(),
            mode: AtomicUsize::new(0),
            recorded: AtomicUsize::new(0),
        }
    }

    /// One of nginx's steps over every backend at full weight: the
    /// schedule's next pick, or, while the state is explicit, the loop on
    /// `current`, recorded towards a new period.
    #[inline]
    fn full_step(&self) -> usize {
        // Relaxed: the mode only says where the state is; a pick racing its
        // change takes a step from the other place, which keeps the shares.
        let mode = self.mode.load(Ordering::Relaxed);
        if mode & EXPLICIT == 0 {
            return self.schedule.next_index(mode);
        }
        self.full_explicit_step(mode & 1)
    }

    /// A full step while the state is explicit; `buffer`: the period buffer
    /// last in use.
    #[cold]
    fn full_explicit_step(&self, buffer: usize) -> usize {
        let w = self.weights.as_slice();
        let spare = buffer ^ 1;
        match &self.schedule {
            Schedule::Cyclic { period, .. } => {
                // Relaxed: a count of steps, claimed one each.
                let k = self.recorded.fetch_add(1, Ordering::Relaxed);
                if k == 0 {
                    self.schedule.begin_period(spare, &self.current);
                }
                let best = self.explicit_step(|_| true, |i| i64::from(w[i]) * UNIT);
                if self.schedule.record(spare, k, best, &self.current) {
                    // Relaxed: see `full_step`.
                    self.mode.store(spare, Ordering::Relaxed);
                }
                if k + 1 >= *period {
                    self.recorded.store(0, Ordering::Relaxed);
                }
                best.unwrap_or(0)
            }
            Schedule::Windowed(_) => {
                if self.schedule.rebase(&self.current) {
                    // Relaxed: see `full_step`.
                    self.mode.store(0, Ordering::Relaxed);
                    return self.schedule.next_index(0);
                }
                self.explicit_step(|_| true, |i| i64::from(w[i]) * UNIT)
                    .unwrap_or(0)
            }
        }
    }

    /// nginx's loop on `current` over the backends `eligible`, each adding
    /// `used(i)`: `None` when none is eligible.
    fn explicit_step(
        &self,
        eligible: impl Fn(usize) -> bool,
        used: impl Fn(usize) -> i64,
    ) -> Option<usize> {
        let mut best = None;
        let mut best_weight = i64::MIN;
        let mut total = 0i64;
        for (i, current) in self.current.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let used = used(i);
            // Relaxed: current weights only steer the choice.
            let raised = current.fetch_add(used, Ordering::Relaxed) + used;
            total += used;
            if raised > best_weight {
                (best, best_weight) = (Some(i), raised);
            }
        }
        if let Some(best) = best {
            // Relaxed: see above.
            self.current[best].fetch_sub(total, Ordering::Relaxed);
        }
        best
    }

    /// Moves the state from the schedule into `current`, unless it is there.
    fn leave_schedule(&self) {
        // Relaxed: see `full_step`. The exchange elects one pick to replay.
        let mode = self.mode.load(Ordering::Relaxed);
        if mode & EXPLICIT == 0
            && self
                .mode
                .compare_exchange(mode, mode | EXPLICIT, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.schedule
                .replay_into(mode, &self.current, &self.weights);
        }
        // Relaxed: a recording in progress no longer describes the state.
        self.recorded.store(0, Ordering::Relaxed);
    }
}

impl Pick for Smooth {
    #[inline]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        driver::pick(&mut &*self, ctx, backends)
    }
}

impl Choose for &Smooth {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<usize, PickError> {
        Ok(self.full_step())
    }

    /// nginx's loop over the available backends: a full step when every
    /// backend is in at full weight, else on `current`.
    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = slow.backends();
        let step = backends.shared().slow_step();
        let w = self.weights.as_slice();
        let selection = slow.selection()?;
        // In thousandths of a unit, as in the sequential form.
        let used = |i: usize| lazy_take(backends.record(i), w[i], step, selection.ramp(i));
        let full = (0..w.len()).all(|i| selection.eligible(i) && used(i) == i64::from(w[i]) * UNIT);
        if full {
            return Ok(Some(self.full_step()));
        }
        self.leave_schedule();
        Ok(self.explicit_step(|i| selection.eligible(i), used))
    }
}

impl<T: Send + Sync> Assemble for WeightedRoundRobin<T> {
    type Value = T;
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = true;

    fn assemble(parts: Parts<'_, T>, _: &(), _: Option<&Self>) -> Result<Self, BuildError> {
        Ok(Self(Balanced {
            backends: Backends::from_entries(parts.entries)?,
            algorithm: Smooth::new(&parts.weights),
        }))
    }
}

impl<T: Send + Sync> Assemble for LockedWeightedRoundRobin<T> {
    type Value = T;
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = true;

    fn assemble(parts: Parts<'_, T>, _: &(), _: Option<&Self>) -> Result<Self, BuildError> {
        let backends = Backends::from_entries(parts.entries)?;
        let state = WeightedRoundRobinState::from_backends(&parts.weights, &backends);
        Ok(Self(Balanced::locked(backends, state)))
    }
}

/// The lock-free form's view of the sequence while its state is a position
/// (see `Smooth`).
pub(crate) enum Schedule {
    /// One whole period, replayed by a shared cursor. Two buffers: the one
    /// in use, and the one a new period is recorded into.
    Cyclic {
        periods: [Period; 2],
        /// Steps taken in the buffer in use.
        cursor: CachePadded<AtomicUsize>,
        /// Picks in a period (both buffers).
        period: usize,
    },
    /// The sequence in consecutive windows, each computed from the end state
    /// of the one before into windows allocated at build.
    Windowed(Box<Windows>),
}

/// One period of picks and the current weights it starts from.
pub(crate) struct Period {
    picks: Box<[AtomicU16]>,
    start: Box<[AtomicI64]>,
}

/// `Smooth::mode`'s bit for a state held in explicit current weights.
const EXPLICIT: usize = 2;

impl Schedule {
    fn new(weights: &Weights, limit: usize, work_limit: u64) -> Self {
        let period = period(weights);
        let work = period.saturating_mul(weights.as_slice().len() as u64);
        let n = weights.as_slice().len();
        if period <= limit as u64 && work <= work_limit {
            let mut state = WeightedRoundRobinState::new(weights);
            // Indices fit u16: there are at most MAX_BACKENDS backends.
            let first = (0..period)
                .map(|_| AtomicU16::new(state.step() as u16))
                .collect();
            let empty = || Period {
                picks: (0..period).map(|_| AtomicU16::new(0)).collect(),
                start: (0..n).map(|_| AtomicI64::new(0)).collect(),
            };
            Self::Cyclic {
                periods: [
                    Period {
                        picks: first,
                        ..empty()
                    },
                    empty(),
                ],
                cursor: CachePadded::new(AtomicUsize::new(0)),
                period: period as usize,
            }
        } else {
            let len = (WINDOW_WORK / n).clamp(64, limit.max(64));
            let scaled: Vec<i64> = weights
                .as_slice()
                .iter()
                .map(|&w| i64::from(w) * UNIT)
                .collect();
            Self::Windowed(Box::new(Windows::new(&scaled, len)))
        }
    }

    /// The next pick of the sequence; `buffer`: the period buffer in use.
    #[inline]
    fn next_index(&self, buffer: usize) -> usize {
        match self {
            Self::Cyclic {
                periods,
                cursor,
                period,
            } => {
                let picks = &periods[buffer].picks;
                // Relaxed: the cursor only hands out steps; a period buffer
                // is rewritten only while not in use.
                let step = cursor.fetch_add(1, Ordering::Relaxed);
                usize::from(picks[step % period].load(Ordering::Relaxed))
            }
            Self::Windowed(windows) => windows.next_index(),
        }
    }

    /// Writes the current weights at the schedule's position into
    /// `current`: the start of the period (or window) in use plus what the
    /// steps taken in it added and subtracted. Up to one period of steps.
    #[cold]
    fn replay_into(&self, buffer: usize, current: &[AtomicI64], weights: &Weights) {
        let (periods, cursor, len) = match self {
            Self::Windowed(windows) => return windows.replay_into(current),
            Self::Cyclic {
                periods,
                cursor,
                period,
            } => (periods, cursor, period),
        };
        let total = i64::from(weights.total()) * UNIT;
        let period = &periods[buffer];
        // Relaxed throughout: the state steers picks only.
        let steps = cursor.load(Ordering::Relaxed) % len;
        for ((current, start), &w) in current
            .iter()
            .zip(&period.start[..])
            .zip(weights.as_slice())
        {
            let added = steps as i64 * i64::from(w) * UNIT;
            current.store(start.load(Ordering::Relaxed) + added, Ordering::Relaxed);
        }
        for pick in &period.picks[..steps] {
            current[usize::from(pick.load(Ordering::Relaxed))].fetch_sub(total, Ordering::Relaxed);
        }
    }

    /// Starts recording a period from the state `current` into buffer
    /// `spare` (the one not in use).
    fn begin_period(&self, spare: usize, current: &[AtomicI64]) {
        if let Self::Cyclic { periods, .. } = self {
            let spare = &periods[spare];
            // Relaxed throughout: see `replay_into`.
            for (start, current) in spare.start.iter().zip(current) {
                start.store(current.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// Records step `k` of a period (its pick `best`); after the last, puts
    /// the recorded period in use if the state `current` is back at its
    /// start, and says so.
    fn record(&self, spare: usize, k: usize, best: Option<usize>, current: &[AtomicI64]) -> bool {
        let Self::Cyclic {
            periods, cursor, ..
        } = self
        else {
            return false;
        };
        // Relaxed throughout: see `replay_into`.
        let spare = &periods[spare];
        let (Some(best), Some(slot)) = (best, spare.picks.get(k)) else {
            return false;
        };
        slot.store(best as u16, Ordering::Relaxed);
        let periodic = k + 1 == spare.picks.len()
            && spare.start.iter().zip(current).all(|(start, current)| {
                start.load(Ordering::Relaxed) == current.load(Ordering::Relaxed)
            });
        if periodic {
            cursor.store(0, Ordering::Relaxed);
        }
        periodic
    }

    /// Makes the next window start from the state `current`; `false` when
    /// no window could be taken for it now.
    fn rebase(&self, current: &[AtomicI64]) -> bool {
        match self {
            Self::Windowed(windows) => windows.rebase(current),
            Self::Cyclic { .. } => false,
        }
    }
}

/// Picks in one period: `sum(w) / gcd(w)`.
fn period(weights: &Weights) -> u64 {
    let gcd = weights.as_slice().iter().fold(0u32, |g, &w| gcd(g, w));
    // gcd >= 1: every weight is at least 1.
    u64::from(weights.total() / gcd)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(w: &[u32]) -> Weights {
        Weights::new(w.to_vec()).expect("valid weights")
    }

    fn sequence(schedule: &Schedule, picks: usize) -> Vec<usize> {
        (0..picks).map(|_| schedule.next_index(0)).collect()
    }

    fn reference(w: &[u32], picks: usize) -> Vec<usize> {
        let mut state = WeightedRoundRobinState::new(&weights(w));
        (0..picks).map(|_| state.step()).collect()
    }

    /// After a pick leaves the schedule's sequence, plain picks find their
    /// way back to a precomputed period (the fast path) within two periods,
    /// for a state that is periodic again at once and for one that is not.
    #[test]
    fn plain_picks_return_to_a_precomputed_period() {
        use crate::{Balancer, Context, Tried};
        for w in [[2u32, 1, 1], [5, 3, 2]] {
            let lb = WeightedRoundRobin::new((0u32..).zip(w)).expect("valid");
            let smooth = &lb.0.algorithm;
            let first = lb.pick(&Context::new()).expect("pick");
            let mut tried = Tried::new();
            tried.insert(&first);
            drop(first);
            // A retry skips a backend: nginx's state leaves the period.
            drop(lb.pick(&Context::new().with_tried(&tried)).expect("pick"));
            assert_ne!(smooth.mode.load(Ordering::Relaxed) & EXPLICIT, 0, "{w:?}");
            let period = w.iter().sum::<u32>() as usize;
            for _ in 0..2 * period + 1 {
                drop(lb.pick(&Context::new()).expect("pick"));
            }
            assert!(
                smooth.mode.load(Ordering::Relaxed) & EXPLICIT == 0,
                "{w:?}: still explicit"
            );
        }
    }

    #[test]
    fn nginx_example() {
        assert_eq!(reference(&[5, 1, 1], 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn period_returns_every_current_weight_to_zero() {
        let w = weights(&[6, 4, 2]);
        let mut state = WeightedRoundRobinState::new(&w);
        assert_eq!(period(&w), 6);
        for _ in 0..period(&w) {
            state.step();
        }
        assert!(state.current.iter().all(|&c| c == 0));
    }

    #[test]
    fn windows_across_many_boundaries_match_the_reference() {
        // A limit of 4 forces the windowed form; 64-pick windows are crossed
        // many times in 1,000 picks.
        let w = [7, 3, 11, 1];
        let schedule = Schedule::new(&weights(&w), 4, BUILD_WORK_LIMIT);
        assert!(matches!(schedule, Schedule::Windowed(_)));
        assert_eq!(sequence(&schedule, 1000), reference(&w, 1000));
    }

    #[test]
    fn work_limit_also_selects_windows() {
        let w = [2, 3];
        assert!(matches!(
            Schedule::new(&weights(&w), SCHEDULE_LIMIT, 4),
            Schedule::Windowed { .. }
        ));
        assert!(matches!(
            Schedule::new(&weights(&w), SCHEDULE_LIMIT, 10),
            Schedule::Cyclic { .. }
        ));
    }

    #[test]
    fn windows_shared_by_threads_hand_out_each_step_once() {
        let w = [5, 2, 9];
        let schedule = Schedule::new(&weights(&w), 4, BUILD_WORK_LIMIT);
        let per_thread = 20_000;
        let counts: Vec<[usize; 3]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut counts = [0; 3];
                        for _ in 0..per_thread {
                            counts[schedule.next_index(0)] += 1;
                        }
                        counts
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        let mut expected = [0; 3];
        for i in reference(&w, 2 * per_thread) {
            expected[i] += 1;
        }
        let total: Vec<usize> = (0..3).map(|i| counts[0][i] + counts[1][i]).collect();
        assert_eq!(total, expected);
    }
}
