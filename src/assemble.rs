//! How a live balancer rebuilds a balancer type over a changed backend set.

use std::sync::Arc;

use crate::backends::{Entry, Weights};
use crate::BuildError;

/// What a live balancer builds each snapshot from: entries shared with the
/// snapshot before (so counts and health carry over) and their weights.
pub struct Parts<'a, T> {
    pub(crate) entries: &'a [Arc<Entry<T>>],
    pub(crate) weights: Weights,
}

impl<T> std::fmt::Debug for Parts<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("weights", &self.weights)
            .finish_non_exhaustive()
    }
}

/// Keeps [`Assemble`] to this crate's types: the module is private, so
/// nothing outside can name the trait to implement it.
pub(crate) mod sealed {
    use crate::PickError;

    pub trait Sealed {
        /// Whether a pick without a key or a tried set would find a
        /// backend now, without taking one (see `selection::capacity`).
        fn capacity(&self) -> Result<(), PickError>;
    }
}

/// A balancer type that a [`Live`](crate::Live) balancer can rebuild over a
/// changed backend set. Implemented by every balancer of this crate; sealed.
pub trait Assemble: sealed::Sealed + Sized + Send + Sync {
    /// The backend type.
    type Value: Send + Sync;
    /// Options the algorithm keeps across rebuilds ([`HashOptions`](crate::HashOptions)
    /// for hashing, `()` otherwise).
    type Options: Clone + Default + std::fmt::Debug + Send + Sync;

    /// Whether the algorithm steers by effective weights, which failures
    /// then lower (nginx's `effective_weight`).
    #[doc(hidden)]
    const EFFECTIVE_WEIGHTS: bool;

    /// Builds over `parts`, continuing from `previous` where the algorithm
    /// can (round-robin keeps its cursor).
    #[doc(hidden)]
    fn assemble(
        parts: Parts<'_, Self::Value>,
        options: &Self::Options,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError>;
}
