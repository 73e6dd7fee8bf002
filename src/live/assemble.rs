//! How a live set rebuilds its balancer over a changed backend set: every
//! [`Static`] balancer whose algorithm state can be built ([`Build`]).

use crate::error::{BuildError, PickError};
use crate::pick::{Build, Set, Sharing, Static};
use crate::table::Backends;

/// Keeps [`Assemble`] to [`Static`]: the module is private, so nothing
/// outside can name the trait to implement it.
pub(crate) mod sealed {
    use crate::error::PickError;

    pub trait SealedAssemble {
        /// Whether a pick without a key or a tried set would find a
        /// backend now, without taking one (see `candidates::capacity`).
        fn capacity(&self) -> Result<(), PickError>;
    }
}

/// A balancer type that a [`Live`](crate::Live) set can rebuild over a
/// changed backend set: every [`Static`] balancer whose state implements
/// [`Build`] (every type of [`lockfree`](crate::lockfree) and
/// [`locked`](crate::locked), and yours). Sealed.
pub trait Assemble: sealed::SealedAssemble + Sized + Send + Sync {
    /// The backend type.
    type Value: Send + Sync;
    /// Options the algorithm keeps across rebuilds ([`HashOptions`](crate::HashOptions)
    /// for hashing, `()` for none).
    type Options: Clone + Default + std::fmt::Debug + Send + Sync;

    /// Whether the algorithm steers by effective weights, which failures
    /// then lower (nginx's `effective_weight`).
    #[doc(hidden)]
    const EFFECTIVE_WEIGHTS: bool;

    /// Builds over `set`, continuing from `previous` where the algorithm
    /// can ([`Build::resume`]).
    #[doc(hidden)]
    fn assemble(
        set: &Set<'_, Self::Value>,
        options: &Self::Options,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError>;

    /// The probes to send after a pick, if the algorithm probes.
    #[doc(hidden)]
    fn probes(&self) -> Vec<crate::table::Probe<Self::Value>>
    where
        Self::Value: Clone;
}

impl<T, F: Sharing> sealed::SealedAssemble for Static<T, F> {
    fn capacity(&self) -> Result<(), PickError> {
        Static::capacity(self)
    }
}

impl<T, F> Assemble for Static<T, F>
where
    T: Send + Sync,
    F: Sharing,
    F::State: Build<T>,
{
    type Value = T;
    type Options = <F::State as Build<T>>::Options;
    const EFFECTIVE_WEIGHTS: bool = F::State::EFFECTIVE_WEIGHTS;

    fn assemble(
        set: &Set<'_, T>,
        options: &Self::Options,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError> {
        let mut state = F::State::build(set, options)?;
        if let Some(previous) = previous.filter(|_| F::State::RESUMES) {
            previous
                .form()
                .with_state(|previous| state.resume(previous));
        }
        let backends = Backends::from_entries(set.entries())?.count_total(state.counts_total());
        Ok(Static::from_parts(backends, F::wrap(state)))
    }

    fn probes(&self) -> Vec<crate::table::Probe<T>>
    where
        T: Clone,
    {
        Static::probes(self)
    }
}
