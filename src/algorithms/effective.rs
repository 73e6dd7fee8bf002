//! nginx's effective weights, as the weighted algorithms use them: lowered
//! by failures (`Record::report`), restored one unit each time a backend
//! takes part in a pick.

use crate::backend::record::{Record, flag};
use crate::error::PickError;
use crate::pick::{Candidates, Selection, Set};
use crate::table::{Backends, Weights};

/// The mutex-backed forms' effective weights: nginx's `effective_weight`
/// per backend, kept exactly as nginx keeps it.
#[derive(Clone, Debug)]
pub(crate) struct EffectiveWeights {
    effective: Box<[i64]>,
    /// Each backend's `Health::lowered` as last applied to `effective`.
    seen: Box<[u64]>,
}

impl EffectiveWeights {
    /// Every backend at its full weight.
    pub(crate) fn new(weights: &Weights) -> Self {
        Self {
            effective: weights.as_slice().iter().map(|&w| i64::from(w)).collect(),
            seen: vec![0; weights.as_slice().len()].into_boxed_slice(),
        }
    }

    /// Starts from the backends' health as it is (a live balancer's
    /// snapshot; a static balancer's backends are all at full weight).
    pub(crate) fn from_set<T>(set: &Set<'_, T>) -> Self {
        let weights = set.validated();
        let mut state = Self::new(weights);
        let step = set.common().slow_steps();
        for (i, record) in set.records().enumerate() {
            state.seen[i] = record.lowered();
            state.effective[i] = i64::from(record.lazy_effective(step).min(weights.as_slice()[i]));
        }
        state
    }

    /// The start of a mutex-backed slow pick: one slow-path step, the
    /// failures reported since the last pick applied, and the backends that
    /// may take this one.
    pub(crate) fn begin<'b, T>(
        &mut self,
        candidates: &mut Candidates<'b, '_, T>,
    ) -> Result<Selection<'b, T>, PickError> {
        let backends = candidates.backends();
        backends.common().slow_step();
        self.catch_up(backends);
        candidates.selection()
    }

    /// Applies the failures reported since the last pick.
    fn catch_up<T>(&mut self, backends: &Backends<T>) {
        for (i, record) in backends.records().enumerate() {
            let lowered = record.lowered();
            let by = i64::try_from(lowered - self.seen[i]).unwrap_or(i64::MAX);
            self.effective[i] = self.effective[i].saturating_sub(by).max(0);
            self.seen[i] = lowered;
        }
    }

    /// What backend `index` adds to its current weight in this pick, in
    /// thousandths of a unit scaled by `ramp` (slow start); then one unit
    /// of its effective weight comes back, as in nginx, up to `weight`.
    pub(crate) fn take<T>(
        &mut self,
        index: usize,
        weight: u32,
        ramp: u64,
        backends: &Backends<T>,
    ) -> i64 {
        let effective = &mut self.effective[index];
        // Ramps are thousandths: the product fits i64 for any u32 weight.
        let used = *effective * ramp as i64;
        if *effective < i64::from(weight) {
            *effective += 1;
        } else {
            restored(backends.record(index));
        }
        used
    }
}

/// What backend `record` adds to its current weight in a lock-free pick at
/// slow-path step `step`: its lazily restored effective weight, at most
/// `weight`, in thousandths of a unit scaled by `ramp`.
pub(crate) fn lazy_take(record: &Record, weight: u32, step: u64, ramp: u64) -> i64 {
    let effective = record.lazy_effective(step).min(weight);
    if effective == weight {
        restored(record);
    }
    (u64::from(effective) * ramp) as i64
}

/// A backend back at full effective weight no longer needs the slow path
/// on its account.
fn restored(record: &Record) {
    if record.flags() & flag::DEGRADED != 0 {
        record.tidy(flag::DEGRADED);
    }
}
