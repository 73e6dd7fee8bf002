//! The backend table every balancer holds: the values, their active counts,
//! and the validation of what the caller gave.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::{BuildError, Guard};

/// The most backends one balancer holds. Schedules and hash tables store
/// indices as `u16`, which keeps them small enough to stay in cache.
pub const MAX_BACKENDS: usize = 1 << 16;

/// One backend as the table and its guards share it.
///
/// The `Arc` around an entry doubles as its active-connection count: the
/// table holds one reference and every guard one more, so the count is the
/// strong count minus one. A pick therefore pays one reference-count
/// increment and a drop one decrement: the least any guard that may outlive
/// the balancer can pay. Aligned to 128 bytes so two backends' counts never
/// share a cache line (or the adjacent line the prefetcher pulls in with it).
#[repr(align(128))]
pub(crate) struct Entry<T> {
    pub(crate) value: T,
    dense: Option<DenseSlot>,
}

impl<T> Entry<T> {
    /// Called when a guard of this entry drops: the reference count drops by
    /// itself; a dense copy of the count must be lowered by hand.
    #[inline]
    pub(crate) fn release(&self) {
        if let Some(slot) = &self.dense {
            // Relaxed: dense counts only steer least-connections; the true
            // count is the reference count.
            slot.counts[slot.index].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A backend's place in a dense array of active counts, kept by algorithms
/// that scan every count on every pick: the array fits a few cache lines
/// where the reference counts, one per 128-byte entry, would need one line
/// a backend. A `u32` a count: it would wrap only after 4 billion guards
/// leaked with `mem::forget` on one backend.
struct DenseSlot {
    counts: Arc<[AtomicU32]>,
    index: usize,
}

/// Shared array of dense active counts, one per backend, in order.
pub(crate) type DenseCounts = Arc<[AtomicU32]>;

/// The backends of one balancer, numbered in the order given.
pub(crate) struct Backends<T> {
    entries: Box<[Arc<Entry<T>>]>,
}

impl<T> Backends<T> {
    /// Takes the backends in order; fails when there are none or too many.
    pub(crate) fn new(values: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::build(values.into_iter().collect(), false).map(|(backends, _)| backends)
    }

    /// Validates the number of backends, then builds their entries; with
    /// `dense`, also an array of their active counts that the caller raises
    /// on each pick and guards lower on drop.
    fn build(values: Vec<T>, dense: bool) -> Result<(Self, Option<DenseCounts>), BuildError> {
        match values.len() {
            0 => return Err(BuildError::NoBackends),
            len if len > MAX_BACKENDS => {
                return Err(BuildError::TooManyBackends {
                    len,
                    max: MAX_BACKENDS,
                })
            }
            _ => {}
        }
        let counts: Option<DenseCounts> =
            dense.then(|| values.iter().map(|_| AtomicU32::new(0)).collect());
        let entries = values
            .into_iter()
            .enumerate()
            .map(|(index, value)| {
                let dense = counts.as_ref().map(|counts| DenseSlot {
                    counts: Arc::clone(counts),
                    index,
                });
                Arc::new(Entry { value, dense })
            })
            .collect();
        Ok((Self { entries }, counts))
    }

    /// Takes weighted backends in order and checks the weights too.
    pub(crate) fn weighted(
        backends: impl IntoIterator<Item = (T, u32)>,
    ) -> Result<(Self, Weights), BuildError> {
        let (values, weights): (Vec<T>, Vec<u32>) = backends.into_iter().unzip();
        let backends = Self::new(values)?;
        let weights = Weights::new(weights)?;
        Ok((backends, weights))
    }

    /// As [`weighted`](Self::weighted), also keeping a dense array of the
    /// active counts (see [`build`](Self::build)) when there are more than
    /// `dense_above` backends.
    pub(crate) fn weighted_counted(
        backends: impl IntoIterator<Item = (T, u32)>,
        dense_above: usize,
    ) -> Result<(Self, Weights, Option<DenseCounts>), BuildError> {
        let (values, weights): (Vec<T>, Vec<u32>) = backends.into_iter().unzip();
        let dense = values.len() > dense_above;
        let (backends, counts) = Self::build(values, dense)?;
        let weights = Weights::new(weights)?;
        Ok((backends, weights, counts))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// A guard for backend `index`, which must be in range (algorithms only
    /// produce indices below `len`).
    #[inline]
    pub(crate) fn guard(&self, index: usize) -> Guard<T> {
        Guard::new(Arc::clone(&self.entries[index]), index)
    }

    /// Active guards of backend `index`, which must be in range.
    #[inline]
    pub(crate) fn active(&self, index: usize) -> usize {
        // The table's own reference is the one that is not a guard.
        Arc::strong_count(&self.entries[index]) - 1
    }

    /// Every backend's active guards, in order.
    #[inline]
    pub(crate) fn actives(&self) -> impl Iterator<Item = usize> + '_ {
        // The table's own reference is the one that is not a guard.
        self.entries
            .iter()
            .map(|entry| Arc::strong_count(entry) - 1)
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.entries.get(index).map(|entry| &entry.value)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|entry| &entry.value)
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
