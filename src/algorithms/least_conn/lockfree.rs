//! Least-connections on atomics: a scan for the least loaded, then nginx's
//! tie-break on current weights kept as `base + epoch * weight`.

use crossbeam_utils::CachePadded;

use super::kernels::{first_highest, level_run};
use super::{capped, compare, compare_ramped, ramped};
use crate::algorithms::effective::lazy_take;
use crate::algorithms::weighted_round_robin::UNIT;
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, Set};
use crate::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use crate::table::{Backends, ScanActives, Weights};

/// Least-connections' lock-free state: a scan for the least loaded, then
/// nginx's tie-break on atomics.
pub struct LeastConnScan {
    weights: Weights,
    /// All weights are 1: the scan compares counts without multiplying.
    unit: bool,
    /// `base_i`: backend i's current weight is `base_i + epoch * w_i`,
    /// computed in wrapping arithmetic. The true value is small, so the
    /// wrapped result is exact however far `epoch` has run.
    base: Box<[AtomicI64]>,
    /// How many picks found every backend tied.
    epoch: CachePadded<AtomicU64>,
}

impl std::fmt::Debug for LeastConnScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeastConnScan")
            .field("weights", &self.weights)
            .finish_non_exhaustive()
    }
}

/// The first least-loaded backend, its load, and how many share that load.
struct Least {
    first: usize,
    load: u64,
    tied: usize,
}

impl LeastConnScan {
    fn new(weights: Weights) -> Self {
        let base = weights
            .as_slice()
            .iter()
            .map(|_| AtomicI64::new(0))
            .collect();
        let unit = weights.all_one();
        Self {
            weights,
            unit,
            base,
            epoch: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// Whether a load equal to the first backend's `first` ties with it:
    /// always for equal weights; with weights, only when both are 0.
    #[inline]
    fn level_ties(&self, first: u64) -> bool {
        self.unit || first == 0
    }

    /// Pass 1: the first least-loaded backend and how many tie with it.
    #[inline]
    fn least(&self, mut loads: impl Iterator<Item = u64>) -> Least {
        let first = loads.next().unwrap_or(0);
        let mut least = Least {
            first: 0,
            load: first,
            tied: 1,
        };
        // The run of backends level with the first, in a loop that carries
        // only the count rather than the general loop's chain of selects:
        // with every guard dropped at once, all backends tie.
        if self.level_ties(first) {
            let Some(other) = loads.by_ref().find(|&load| {
                least.tied += usize::from(load == first);
                load != first
            }) else {
                return least;
            };
            let at = least.tied;
            self.scan_from(least, at, std::iter::once(other).chain(loads))
        } else {
            self.scan_from(least, 1, loads)
        }
    }

    /// Pass 1 from backend `at` on, given the least of those before it.
    #[inline]
    fn scan_from(&self, mut least: Least, at: usize, loads: impl Iterator<Item = u64>) -> Least {
        if self.unit {
            // Count ties up to the next lower load, a rare event taken as a
            // branch: as one loop of selects, every count waited on the last.
            let mut loads = (at..).zip(loads);
            while let Some((i, load)) = loads.find(|&(_, load)| {
                least.tied += usize::from(load == least.load);
                load < least.load
            }) {
                least = Least {
                    first: i,
                    load,
                    tied: 1,
                };
            }
        } else {
            let w = self.weights.as_slice();
            let mut w_first = w[least.first];
            // As above, with loads per weight cross-multiplied.
            let mut loads = (at..).zip(loads.zip(&w[at..]));
            while let Some((i, (load, &w_i))) = loads.find(|&(_, (load, &w_i))| {
                let order = compare(load, w_i, least.load, w_first);
                least.tied += usize::from(order.is_eq());
                order.is_lt()
            }) {
                least = Least {
                    first: i,
                    load,
                    tied: 1,
                };
                w_first = w_i;
            }
        }
        least
    }

    /// The backend this pick goes to, given a way to read every backend's
    /// load in order (read twice when a subset ties).
    #[inline]
    fn next_index<L: Iterator<Item = u64>>(&self, loads: impl Fn() -> L) -> usize {
        self.settle(self.least(loads()), loads)
    }

    /// Pass 1 over a static table's dense counts: as [`least`](Self::least),
    /// with the run level with the first backend read in blocks.
    #[inline]
    fn least_dense(&self, counts: &[AtomicU32]) -> Least {
        // Relaxed: see `settle`.
        let load = |count: &AtomicU32| u64::from(count.load(Ordering::Relaxed));
        let Some((first, rest)) = counts.split_first() else {
            return Least {
                first: 0,
                load: 0,
                tied: 1,
            };
        };
        let first = first.load(Ordering::Relaxed);
        let mut least = Least {
            first: 0,
            load: u64::from(first),
            tied: 1,
        };
        if self.level_ties(u64::from(first)) {
            least.tied += level_run(rest, first);
        }
        let at = least.tied;
        self.scan_from(least, at, counts[at..].iter().map(load))
    }

    /// Pass 2: the backend among those tied at `least`, re-reading every
    /// backend's load in order when only some tie.
    #[inline]
    fn settle<L: Iterator<Item = u64>>(&self, least: Least, loads: impl Fn() -> L) -> usize {
        // Relaxed everywhere below: the counts and current weights only steer
        // the choice; nothing is published through them, and a stale read
        // costs at most a less even spread, never a wrong backend.
        if least.tied == 1 {
            return least.first;
        }
        let w = self.weights.as_slice();
        // Every current weight as this pick raises it: `base + (epoch+1) * w`.
        let raise = self.epoch.load(Ordering::Relaxed).wrapping_add(1) as i64;
        if least.tied == w.len() {
            // All tie: raising every backend is one step of the epoch.
            let step = raise.wrapping_mul(UNIT);
            let winner = if self.unit {
                first_highest(&self.base, w, |base, _| base.wrapping_add(step))
            } else {
                first_highest(&self.base, w, |base, w_i| {
                    base.wrapping_add(step.wrapping_mul(i64::from(w_i)))
                })
            };
            self.epoch.fetch_add(1, Ordering::Relaxed);
            self.base[winner].fetch_sub(i64::from(self.weights.total()) * UNIT, Ordering::Relaxed);
            return winner;
        }
        // Raise the tied backends one by one. Counts read now may differ
        // from pass 1's under concurrency; subtracting exactly what was
        // added keeps the current weights summing to zero regardless.
        let (mut winner, mut winner_weight) = (least.first, i64::MIN);
        let w_first = w[least.first];
        let mut added = 0i64;
        let tied = loads()
            .zip(w)
            .zip(&self.base[..])
            .enumerate()
            .skip(least.first);
        for (i, ((load, &w_i), base)) in tied {
            if compare(load, w_i, least.load, w_first).is_ne() {
                continue;
            }
            let before = base.fetch_add(i64::from(w_i) * UNIT, Ordering::Relaxed);
            added += i64::from(w_i) * UNIT;
            let raised = before.wrapping_add(raise.wrapping_mul(i64::from(w_i) * UNIT));
            if raised > winner_weight {
                (winner, winner_weight) = (i, raised);
            }
        }
        self.base[winner].fetch_sub(added, Ordering::Relaxed);
        winner
    }
}

impl LeastConnScan {
    /// The rule over the backends that can take the pick, on atomics:
    /// loads compared by slow-start-scaled weights, ties broken by
    /// effective weights (lowered by failures, restored one unit a slow
    /// pick) added to the current weights one by one.
    fn least_available<T>(
        &self,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = candidates.backends();
        let step = backends.common().slow_step();
        let w = self.weights.as_slice();
        let selection = candidates.selection()?;
        let ramped = |i: usize| ramped(w[i], selection.ramp(i));
        let eligible = || (0..w.len()).filter(|&i| selection.eligible(i));
        let mut least: Option<(usize, u64, u64)> = None;
        let mut tied = 0;
        for i in eligible() {
            let (load, weight) = (capped(backends.active(i)), ramped(i));
            match least {
                Some((_, least_load, least_weight)) => {
                    match compare_ramped(load, weight, least_load, least_weight) {
                        std::cmp::Ordering::Less => (least, tied) = (Some((i, load, weight)), 1),
                        std::cmp::Ordering::Equal => tied += 1,
                        std::cmp::Ordering::Greater => {}
                    }
                }
                None => (least, tied) = (Some((i, load, weight)), 1),
            }
        }
        let Some((first, least_load, least_weight)) = least else {
            return Ok(None);
        };
        let mut winner = first;
        if tied > 1 {
            // Relaxed: current weights only steer the choice, as in
            // `next_index`; each pick subtracts exactly what it added.
            let epoch = self.epoch.load(Ordering::Relaxed) as i64;
            let mut winner_weight = i64::MIN;
            let mut added = 0i64;
            for i in eligible().skip_while(|&i| i < first) {
                let load = capped(backends.active(i));
                if compare_ramped(load, ramped(i), least_load, least_weight).is_ne() {
                    continue;
                }
                let used = lazy_take(backends.record(i), w[i], step, selection.ramp(i));
                let before = self.base[i].fetch_add(used, Ordering::Relaxed);
                added += used;
                let raised = before
                    .wrapping_add(used)
                    .wrapping_add(epoch.wrapping_mul(i64::from(w[i]) * UNIT));
                if raised > winner_weight {
                    (winner, winner_weight) = (i, raised);
                }
            }
            self.base[winner].fetch_sub(added, Ordering::Relaxed);
        }
        Ok(Some(winner))
    }
}

/// `LeastConnScan::next_index` over whichever way the table reads its
/// counts.
struct NextIndex<'a>(&'a LeastConnScan);

impl ScanActives<usize> for NextIndex<'_> {
    #[inline]
    fn scan<I: Iterator<Item = usize>>(self, actives: impl Fn() -> I) -> usize {
        self.0.next_index(|| actives().map(capped))
    }

    #[inline]
    fn scan_dense(self, counts: &[AtomicU32]) -> usize {
        // Relaxed: see `LeastConnScan::settle`.
        let loads = || {
            counts
                .iter()
                .map(|count| u64::from(count.load(Ordering::Relaxed)))
        };
        self.0.settle(self.0.least_dense(counts), loads)
    }
}

impl Choose for &LeastConnScan {
    #[inline]
    fn plain<T>(
        &mut self,
        _: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        Ok(Some(backends.scan_actives(NextIndex(self))))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        self.least_available(candidates)
    }
}

impl<T> Build<T> for LeastConnScan {
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = true;
    const DENSE_ABOVE: usize = super::DENSE_ABOVE;

    fn build(set: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
        Ok(Self::new(set.validated().clone()))
    }
}
