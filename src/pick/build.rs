//! How an algorithm's state is built over a backend set: once for a static
//! balancer, on every change of the set for a live one.

use std::fmt;
use std::sync::Arc;

use crate::backend::common::Common;
use crate::backend::record::Record;
use crate::error::BuildError;
use crate::table::Weights;
use crate::table::entry::Entry;

/// An algorithm's state, built over a backend set.
///
/// A static balancer builds it once; a [`Live`](crate::Live) set builds a
/// new one for every change of its backends, weights or order (never for a
/// change of state, limit or role, which the driver handles), and offers
/// it the state it replaces ([`resume`](Self::resume)). Together with
/// [`Choose`](crate::Choose) it is all an algorithm writes: the forms
/// ([`LockFree`](crate::LockFree), [`Locked`](crate::Locked)), the
/// constructors of [`Static`](crate::Static), live updates, guards, health,
/// `max_conns`, slow start, backups, retries and [`Pool`](crate::Pool) come
/// with it.
///
/// `T` is the backend type: an algorithm that reads its backends' values
/// (to hash them, or to read a zone from them) bounds it.
///
/// # Examples
///
/// See [`Choose`](crate::Choose).
pub trait Build<T>: Sized {
    /// Options kept across rebuilds (`()` for none).
    type Options: Clone + Default + fmt::Debug + Send + Sync;

    /// Whether the algorithm steers by effective weights, which failures
    /// then lower and each later pick restores one unit of (nginx's
    /// `effective_weight`, as smooth weighted round-robin and
    /// least-connections use it).
    const EFFECTIVE_WEIGHTS: bool = false;

    /// A static table over more backends than this keeps a dense copy of
    /// the active counts (4 bytes a backend, where each backend's own count
    /// is a cache line): every pick and drop pays one more atomic step, and
    /// an algorithm that reads many counts a pick reads a few cache lines.
    const DENSE_ABOVE: usize = usize::MAX;

    /// The state for `set`.
    ///
    /// # Errors
    ///
    /// Options or a set the algorithm cannot work with, as a
    /// [`BuildError`]. (An empty set, zero weights and weights that
    /// overflow never reach it.)
    fn build(set: &Set<'_, T>, options: &Self::Options) -> Result<Self, BuildError>;

    /// Whether [`resume`](Self::resume) reads the state it replaces. Only
    /// then does a live set's update read it, which in the locked form
    /// takes its lock: the update waits for a pick in progress on the old
    /// state.
    const RESUMES: bool = false;

    /// Continues where `previous`, the state this one replaces in a live
    /// set, left off: round-robin keeps its position, a seeded random
    /// stream its place. Called only when [`RESUMES`](Self::RESUMES) is
    /// set, with the previous state's lock held in the locked form: keep it
    /// short. Does nothing by default.
    fn resume(&mut self, previous: &Self) {
        let _ = previous;
    }

    /// Whether every guard of this state's table also counts in a total of
    /// active guards (bounded-load hashing compares a backend with the
    /// mean): one more atomic step a pick and a drop.
    fn counts_total(&self) -> bool {
        false
    }
}

/// What `new` takes per backend: the value alone (weight 1), or a
/// `(value, weight)` pair for an algorithm whose weights are its point
/// (smooth weighted round-robin). Every balancer also has `weighted` and
/// `with_options`, which take pairs.
pub trait NewBackends<T> {
    /// One backend as `new` takes it.
    type Item;

    /// The backend and its weight.
    fn weigh(item: Self::Item) -> (T, u32);
}

/// The backends a state is built over, in order: their values and
/// validated weights (one to [`MAX_BACKENDS`](crate::MAX_BACKENDS) of
/// them, each at least 1, their sum within `u32`).
pub struct Set<'a, T> {
    entries: &'a [Arc<Entry<T>>],
    weights: &'a Weights,
    common: &'a Common,
}

impl<'a, T> Set<'a, T> {
    /// `entries` with `weights` (as many), every record pointing at
    /// `common`.
    pub(crate) fn new(
        entries: &'a [Arc<Entry<T>>],
        weights: &'a Weights,
        common: &'a Common,
    ) -> Self {
        Self {
            entries,
            weights,
            common,
        }
    }

    /// The number of backends (at least 1).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none (never).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every backend's value, in order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &'a T> + use<'a, T> {
        self.entries.iter().map(|entry| &entry.value)
    }

    /// Every backend's weight, in order.
    pub fn weights(&self) -> &'a [u32] {
        self.weights.as_slice()
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> u32 {
        self.weights.total()
    }

    /// The entries, in order.
    pub(crate) fn entries(&self) -> &'a [Arc<Entry<T>>] {
        self.entries
    }

    /// The weights, validated.
    pub(crate) fn validated(&self) -> &'a Weights {
        self.weights
    }

    /// Every backend's record, in order (its health as it is).
    pub(crate) fn records(&self) -> impl Iterator<Item = &'a Record> + use<'a, T> {
        self.entries.iter().map(|entry| &*entry.record)
    }

    /// What every backend has in common (clock, policy, counters).
    pub(crate) fn common(&self) -> &'a Common {
        self.common
    }
}

impl<T> fmt::Debug for Set<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Set")
            .field("weights", &self.weights.as_slice())
            .finish_non_exhaustive()
    }
}
