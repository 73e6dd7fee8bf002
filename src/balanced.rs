//! The core shared by every balancer type: a backend table plus an
//! algorithm, lock-free or behind a mutex.

use parking_lot::Mutex;

use crate::backends::Backends;
use crate::{Context, Guard, PickError};

/// A pick algorithm whose state is shared between threads by `&self`.
pub(crate) trait Pick: Send + Sync {
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError>;
}

/// An algorithm written as a plain sequential state machine: the reference
/// form of each algorithm, and the mutex-backed balancers.
pub(crate) trait Sequential: Send {
    /// The index of the next backend, below `backends.len()`.
    fn next<T>(&mut self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<usize, PickError>;
}

impl<S: Sequential> Pick for Mutex<S> {
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        let mut state = self.lock();
        let index = state.next(ctx, backends)?;
        // The guard is taken while the lock is held, so the next pick already
        // sees this connection: two picks never see the same minimum.
        Ok(backends.guard(index))
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

impl<T, S> Balanced<T, Mutex<S>> {
    pub(crate) fn locked(backends: Backends<T>, state: S) -> Self {
        Self {
            backends,
            algorithm: Mutex::new(state),
        }
    }
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

            fn get(&self, index: usize) -> Option<&T> {
                self.0.backends.get(index)
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
