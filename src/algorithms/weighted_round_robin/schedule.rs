//! Smooth weighted round-robin's lock-free state: one period of nginx's
//! sequence precomputed (or, past the bound, computed a window at a time),
//! a pick a cursor step; nginx's loop on atomics when a pick leaves it.

use crossbeam_utils::CachePadded;

use super::state::SmoothState;
use super::windows::Windows;
use super::{BUILD_WORK_LIMIT, SCHEDULE_LIMIT, UNIT, WINDOW_WORK};
use crate::algorithms::effective::lazy_take;
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, Set};
use crate::sync::atomic::{AtomicI64, AtomicU16, AtomicUsize, Ordering};
use crate::table::{Backends, Weights};

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
pub struct SmoothSchedule {
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

impl std::fmt::Debug for SmoothSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmoothSchedule")
            .field("weights", &self.weights)
            .field("precomputed", &self.is_precomputed())
            .finish_non_exhaustive()
    }
}

impl SmoothSchedule {
    /// Whether the whole period is precomputed, rather than computed in
    /// windows.
    pub(super) fn is_precomputed(&self) -> bool {
        matches!(self.schedule, Schedule::Cyclic { .. })
    }

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

impl Choose for &SmoothSchedule {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<Option<usize>, PickError> {
        Ok(Some(self.full_step()))
    }

    /// nginx's loop over the available backends: a full step when every
    /// backend is in at full weight, else on `current`.
    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = candidates.backends();
        let step = backends.common().slow_step();
        let w = self.weights.as_slice();
        let selection = candidates.selection()?;
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

/// The lock-free form's view of the sequence while its state is a position
/// (see `SmoothSchedule`).
pub(super) enum Schedule {
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
pub(super) struct Period {
    picks: Box<[AtomicU16]>,
    start: Box<[AtomicI64]>,
}

/// `SmoothSchedule::mode`'s bit for a state held in explicit current weights.
const EXPLICIT: usize = 2;

impl Schedule {
    fn new(weights: &Weights, limit: usize, work_limit: u64) -> Self {
        let period = period(weights);
        let work = period.saturating_mul(weights.as_slice().len() as u64);
        let n = weights.as_slice().len();
        if period <= limit as u64 && work <= work_limit {
            let mut state = SmoothState::new(weights);
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

impl<T> Build<T> for SmoothSchedule {
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = true;

    /// Restarts at step 0 of the new set's sequence (as nginx on reload).
    fn build(set: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
        Ok(Self::new(set.validated()))
    }
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
        let mut state = SmoothState::new(&weights(w));
        (0..picks).map(|_| state.step()).collect()
    }

    /// After a pick leaves the schedule's sequence, plain picks find their
    /// way back to a precomputed period (the fast path) within two periods,
    /// for a state that is periodic again at once and for one that is not.
    #[test]
    fn plain_picks_return_to_a_precomputed_period() {
        use crate::{Balancer, Context, Sharing, Tried};
        for w in [[2u32, 1, 1], [5, 3, 2]] {
            let lb = super::super::WeightedRoundRobin::new((0u32..).zip(w)).expect("valid");
            let explicit = || {
                lb.form()
                    .with_state(|smooth| smooth.mode.load(Ordering::Relaxed) & EXPLICIT != 0)
            };
            let first = lb.pick(&Context::new()).expect("pick");
            let mut tried = Tried::new();
            tried.insert(&first);
            drop(first);
            // A retry skips a backend: nginx's state leaves the period.
            drop(lb.pick(&Context::new().with_tried(&tried)).expect("pick"));
            assert!(explicit(), "{w:?}");
            let period = w.iter().sum::<u32>() as usize;
            for _ in 0..2 * period + 1 {
                drop(lb.pick(&Context::new()).expect("pick"));
            }
            assert!(!explicit(), "{w:?}: still explicit");
        }
    }

    #[test]
    fn nginx_example() {
        assert_eq!(reference(&[5, 1, 1], 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn period_returns_every_current_weight_to_zero() {
        let w = weights(&[6, 4, 2]);
        let mut state = SmoothState::new(&w);
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
