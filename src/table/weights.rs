//! Weights as the caller gave them, validated: one to `MAX_BACKENDS` of
//! them, each at least 1, their sum within `u32`.

use crate::error::BuildError;

/// The most backends one balancer holds. Schedules and hash tables store
/// indices as `u16`, which keeps them small enough to stay in cache.
pub const MAX_BACKENDS: usize = 1 << 16;

/// Validated weights: one to `MAX_BACKENDS` of them, each at least 1, their
/// sum within `u32`. Every balancer is built from these, so no algorithm
/// ever sees an empty list (the slot table's build would not end on one).
#[derive(Clone, Debug)]
pub(crate) struct Weights {
    per_backend: Box<[u32]>,
    total: u32,
}

impl Weights {
    pub(crate) fn new(weights: Vec<u32>) -> Result<Self, BuildError> {
        check_len(weights.len())?;
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

/// One to `MAX_BACKENDS` backends, or the error that says why not.
pub(crate) fn check_len(len: usize) -> Result<(), BuildError> {
    match len {
        0 => Err(BuildError::NoBackends),
        len if len > MAX_BACKENDS => Err(BuildError::TooManyBackends {
            len,
            max: MAX_BACKENDS,
        }),
        _ => Ok(()),
    }
}
