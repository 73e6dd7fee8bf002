//! The core of every balancer type: a backend table plus an algorithm
//! (lock-free, or behind a mutex: see `locked.rs`), and the macro that
//! declares each public type over it.

use crate::backends::Backends;
use crate::{Context, Guard, PickError};

/// A pick algorithm whose state is shared between threads by `&self`.
pub(crate) trait Pick: Send + Sync {
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError>;
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

/// Declares a public balancer type over `Balanced<T, $algorithm>` and
/// implements [`Balancer`](crate::Balancer) and `Debug` for it.
macro_rules! balancer_type {
    ($(#[$doc:meta])* $name:ident, $algorithm:ty) => {
        $(#[$doc])*
        pub struct $name<T>(crate::balancer_type::Balanced<T, $algorithm>);

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

            fn stats_at(&self, index: usize) -> Option<crate::BackendStats<T>>
            where
                T: Clone,
            {
                self.0.backends.stats_at(index)
            }
        }

        impl<T> crate::assemble::sealed::Sealed for $name<T> {
            fn capacity(&self) -> Result<(), crate::PickError> {
                crate::selection::capacity(&self.0.backends)
            }
        }

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
