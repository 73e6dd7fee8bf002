//! nginx's smooth weighted round-robin as a sequential state machine: the
//! mutex-backed form, and the reference the lock-free form is tested
//! against.

use super::UNIT;
use super::windows;
use crate::algorithms::effective::EffectiveWeights;
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, Set};
use crate::table::{Backends, Weights};

/// Smooth weighted round-robin's sequential state: nginx's state machine,
/// `O(n)` a pick.
#[derive(Clone, Debug)]
pub struct SmoothState {
    weights: Box<[u32]>,
    /// `weights` in units of `UNIT`, computed once rather than every pick.
    scaled: Box<[i64]>,
    pub(super) current: Box<[i64]>,
    total: i64,
    /// Restored one unit each time the backend takes part in a pick.
    effective: EffectiveWeights,
}

impl SmoothState {
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

    /// nginx's `ngx_http_upstream_get_peer` over the backends that can take
    /// the pick, with effective weights (scaled by slow start).
    fn step_available<T>(
        &mut self,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = candidates.backends();
        let selection = self.effective.begin(candidates)?;
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

impl Choose for SmoothState {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<Option<usize>, PickError> {
        Ok(Some(self.step()))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        self.step_available(candidates)
    }
}

impl<T> Build<T> for SmoothState {
    type Options = ();
    const EFFECTIVE_WEIGHTS: bool = true;

    /// Restarts at step 0 of the new set's sequence (as nginx on reload),
    /// from the backends' health as it is.
    fn build(set: &Set<'_, T>, (): &()) -> Result<Self, BuildError> {
        Ok(Self {
            effective: EffectiveWeights::from_set(set),
            ..Self::new(set.validated())
        })
    }
}
