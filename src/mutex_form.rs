//! The mutex-backed forms: each algorithm's sequential state (its
//! reference form) run by the one pick driver under a `parking_lot::Mutex`.

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::backends::Backends;
use crate::balancer_type::{Balanced, Pick};
use crate::driver::{self, Choose};
use crate::{Context, Guard, PickError};

/// A mutex-backed algorithm: the lock word and the state it guards, on
/// cache lines of their own (`CachePadded`: 128 bytes on x86_64).
pub(crate) type Locked<S> = CachePadded<Mutex<S>>;

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

impl<T, S> Balanced<T, Locked<S>> {
    pub(crate) fn locked(backends: Backends<T>, state: S) -> Self {
        Self {
            backends,
            algorithm: CachePadded::new(Mutex::new(state)),
        }
    }
}
