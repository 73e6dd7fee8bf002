//! Least-connections as nginx's sequential state machine: the mutex-backed
//! form and the reference the lock-free form is tested against.

use super::{capped, compare_ramped, load, ramped};
use crate::algorithms::effective::EffectiveWeights;
use crate::algorithms::weighted_round_robin::UNIT;
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, Set};
use crate::table::{Backends, ScanActives, Weights};

/// Least-connections' sequential state: nginx's
/// `ngx_http_upstream_get_least_conn_peer` as a state machine, written in
/// its two-pass form.
#[derive(Debug)]
pub struct LeastConnState {
    weights: Weights,
    /// All weights are 1: the plain rule compares counts without products.
    unit: bool,
    current: Box<[i64]>,
    /// Used by the tie-break; restored one unit each time the backend ties.
    effective: EffectiveWeights,
}

impl LeastConnState {
    fn new(weights: Weights, effective: EffectiveWeights) -> Self {
        Self {
            effective,
            unit: weights.all_one(),
            current: vec![0; weights.as_slice().len()].into_boxed_slice(),
            weights,
        }
    }

    /// The plain rule: every backend available at full weight, given a way
    /// to read every backend's load in order (read twice when some tie).
    #[inline]
    fn least<I: Iterator<Item = u64>>(&mut self, loads: impl Fn() -> I) -> usize {
        if self.unit {
            self.least_with::<true, I>(loads)
        } else {
            self.least_with::<false, I>(loads)
        }
    }

    /// `least`, compiled once for all weights 1 (`UNIT_WEIGHTS`: no weight
    /// is read and no product taken) and once for any weights.
    #[inline(always)]
    fn least_with<const UNIT_WEIGHTS: bool, I: Iterator<Item = u64>>(
        &mut self,
        loads: impl Fn() -> I,
    ) -> usize {
        let w = self.weights.as_slice();
        let weight = |i: usize| if UNIT_WEIGHTS { 1 } else { u64::from(w[i]) };
        // Pass 1: the first backend with the least load per weight, and
        // whether others tie. The best so far stays in registers: re-read
        // through its index, it put a load in the loop-carried chain.
        let mut pass_1 = loads();
        let (mut best, mut best_load, mut best_weight) = (0, pass_1.next().unwrap_or(0), weight(0));
        let mut many = false;
        for (i, load) in pass_1.enumerate() {
            let (i, w_i) = (i + 1, weight(i + 1));
            // `load / w_i` against `best_load / best_weight`, cross-multiplied.
            let (this, least) = (load * best_weight, best_load * w_i);
            if this < least {
                (best, best_load, best_weight, many) = (i, load, w_i, false);
            } else if this == least {
                many = true;
            }
        }
        if !many {
            return best;
        }
        // Pass 2: smooth weighted round-robin over the tied backends only.
        let (first, first_load, first_weight) = (best, best_load, best_weight);
        let mut total = 0i64;
        let mut best_current = i64::MIN;
        let current = &mut self.current[..w.len()];
        for (i, load) in loads().enumerate().skip(first) {
            let w_i = weight(i);
            if load * first_weight != first_load * w_i {
                continue;
            }
            // Current weights stay within a few totals of zero: no overflow.
            let add = w_i as i64 * UNIT;
            current[i] += add;
            total += add;
            if current[i] > best_current {
                (best, best_current) = (i, current[i]);
            }
        }
        self.current[best] -= total;
        best
    }

    /// nginx's rule over the backends that can take the pick, comparing by
    /// slow-start-scaled weights and breaking ties by effective weights.
    fn least_available<T>(
        &mut self,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = candidates.backends();
        let selection = self.effective.begin(candidates)?;
        let w = self.weights.as_slice();
        let ramped = |i: usize| ramped(w[i], selection.ramp(i));
        let mut best: Option<usize> = None;
        let mut many = false;
        for i in (0..w.len()).filter(|&i| selection.eligible(i)) {
            let Some(b) = best else {
                best = Some(i);
                continue;
            };
            match compare_ramped(load(backends, i), ramped(i), load(backends, b), ramped(b)) {
                std::cmp::Ordering::Less => (best, many) = (Some(i), false),
                std::cmp::Ordering::Equal => many = true,
                std::cmp::Ordering::Greater => {}
            }
        }
        let Some(mut best) = best else {
            return Ok(None);
        };
        if many {
            let (first, first_load, first_weight) = (best, load(backends, best), ramped(best));
            let mut total = 0i64;
            for i in (first..w.len()).filter(|&i| selection.eligible(i)) {
                if compare_ramped(load(backends, i), ramped(i), first_load, first_weight).is_ne() {
                    continue;
                }
                // Thousandths of a unit, as `ramped`; scaling all alike
                // leaves nginx's sequence as is.
                let used = self.effective.take(i, w[i], selection.ramp(i), backends);
                self.current[i] += used;
                total += used;
                if self.current[i] > self.current[best] {
                    best = i;
                }
            }
            self.current[best] -= total;
        }
        Ok(Some(best))
    }
}

impl Choose for LeastConnState {
    #[inline]
    fn plain<T>(
        &mut self,
        _: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        Ok(Some(backends.scan_actives(SequentialLeast(self))))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        self.least_available(candidates)
    }
}

/// `LeastConnState::least` over whichever way the table reads its counts.
struct SequentialLeast<'a>(&'a mut LeastConnState);

impl ScanActives<usize> for SequentialLeast<'_> {
    #[inline]
    fn scan<I: Iterator<Item = usize>>(self, actives: impl Fn() -> I) -> usize {
        self.0.least(|| actives().map(capped))
    }
}

impl<T> Build<T> for LeastConnState {
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = true;
    const DENSE_ABOVE: usize = super::LOCKED_DENSE_ABOVE;

    /// From the backends' health as it is.
    fn build(set: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
        Ok(Self::new(
            set.validated().clone(),
            EffectiveWeights::from_set(set),
        ))
    }
}
