//! The core shared by every balancer type: a backend table plus an
//! algorithm, lock-free or behind a mutex.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::backends::{Backends, Entry, Weights};
use crate::driver::{self, Choose};
use crate::own_line::OwnLine;
use crate::{BuildError, Context, Guard, PickError};

/// A pick algorithm whose state is shared between threads by `&self`.
pub(crate) trait Pick: Send + Sync {
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError>;
}

/// A mutex-backed algorithm: the lock word and the state it guards, on
/// cache lines of their own (see [`OwnLine`]).
pub(crate) type Locked<S> = OwnLine<Mutex<S>>;

/// The mutex-backed forms: an algorithm's sequential state (its reference
/// form) run by the one pick driver under the lock.
impl<S: Choose + Send> Pick for Locked<S> {
    #[inline]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        // The guard is taken while the lock is held, so the next pick already
        // sees this connection: two picks never see the same minimum.
        driver::pick(&mut *self.lock(), ctx, backends)
    }
}

/// Backends plus the algorithm that chooses among them.
pub(crate) struct Balanced<T, A> {
    pub(crate) backends: Backends<T>,
    pub(crate) algorithm: A,
}

impl<T, A: Pick> Balanced<T, A> {
    #[inline]
    pub(crate) fn pick(&self, ctx: &Context<'_>) -> Result<Guard<T>, PickError> {
        self.algorithm.pick(ctx, &self.backends)
    }

    pub(crate) fn active(&self, index: usize) -> Option<usize> {
        (index < self.backends.len()).then(|| self.backends.active(index))
    }
}

impl<T, S> Balanced<T, Locked<S>> {
    pub(crate) fn locked(backends: Backends<T>, state: S) -> Self {
        Self {
            backends,
            algorithm: OwnLine(Mutex::new(state)),
        }
    }
}

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
    pub trait Sealed {}
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

/// Declares a public balancer type over `Balanced<T, $algorithm>` and
/// implements [`Balancer`](crate::Balancer) and `Debug` for it.
macro_rules! balancer_type {
    ($(#[$doc:meta])* $name:ident, $algorithm:ty) => {
        $(#[$doc])*
        pub struct $name<T>(crate::balanced::Balanced<T, $algorithm>);

        impl<T: Send + Sync> crate::Balancer<T> for $name<T> {
            #[inline]
            fn pick(
                &self,
                ctx: &crate::Context<'_>,
            ) -> Result<crate::Guard<T>, crate::PickError> {
                self.0.pick(ctx)
            }

            fn len(&self) -> usize {
                self.0.backends.len()
            }

            fn active(&self, index: usize) -> Option<usize> {
                self.0.active(index)
            }

            fn stats(&self) -> Vec<crate::BackendStats<T>>
            where
                T: Clone,
            {
                self.0.backends.stats()
            }
        }

        impl<T> crate::balanced::sealed::Sealed for $name<T> {}

        impl<T> $name<T> {
            /// The backend at `index`, or `None` past the end.
            pub fn get(&self, index: usize) -> Option<&T> {
                self.0.backends.get(index)
            }

            /// Sets the passive-health policy (default: nginx's, one failure
            /// ejects for 10 s; [`HealthPolicy::none`](crate::HealthPolicy::none)
            /// turns it off). Slow start applies to backends that rejoin
            /// after an ejection.
            #[must_use]
            pub fn with_health(self, policy: crate::HealthPolicy) -> Self {
                self.0.backends.shared().set_policy(policy);
                self
            }
        }

        impl<T: std::fmt::Debug> std::fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("backends_and_active", &self.0.backends)
                    .finish_non_exhaustive()
            }
        }
    };
}
pub(crate) use balancer_type;
