//! Bounded loads for keyed picks: consistent hashing with bounded loads
//! (Mirrokni, Thorup and Zadimoghaddam, 2018), as HAProxy's
//! `hash-balance-factor` and Envoy's `hash_balance_factor` offer it.
//!
//! With a factor `c` (a percentage above 100), backend i takes a pick only
//! while its active guards are below `c * (A + 1) * w_i / W`, its share of
//! the guards that will be active with this pick (`A` active in the whole
//! balancer, `W` the sum of the weights): after the pick it holds at most
//! `ceil(c * mean)` of its weight's share. A key whose hash choice is over
//! that goes to the next backend in the key's own preference order (fixed
//! per key, so its fallback is stable), and comes back as soon as its
//! choice is under capacity again. The capacities add up to `c` times the
//! guards, so some backend is always under capacity; when racing picks
//! leave none, the pick goes to the hash choice.
//!
//! `A` is one counter in the balancer that every guard of a bounded
//! balancer raises and lowers (`Holds::Counted`): a pick reads it, its own
//! choice's count and the weights, `O(1)` while nothing overflows. The
//! counter includes guards of backends a live balancer removed until they
//! drop. Lock-free picks that race may each see a backend just under its
//! capacity and all take it (at most one over for each racing pick); the
//! mutex-backed forms take the guard under the lock, so the bound holds
//! exactly.

use crate::backends::{Backends, Weights};
use crate::BuildError;

/// The capacity rule of a bounded balancer.
#[derive(Clone, Debug)]
pub(crate) struct Bound {
    /// The factor `c`, in percent.
    percent: u128,
    weights: Box<[u32]>,
    /// `W * 100`.
    scaled_total: u128,
}

impl Bound {
    /// The rule for `percent` over `weights`; `None` without a factor.
    ///
    /// # Errors
    ///
    /// [`BuildError::BoundedLoad`] for a factor of 100% or less.
    pub(crate) fn new(percent: Option<u32>, weights: &Weights) -> Result<Option<Self>, BuildError> {
        let Some(percent) = percent else {
            return Ok(None);
        };
        if percent <= 100 {
            return Err(BuildError::BoundedLoad { percent });
        }
        Ok(Some(Self {
            percent: u128::from(percent),
            weights: weights.as_slice().into(),
            scaled_total: u128::from(weights.total()) * 100,
        }))
    }

    /// Whether backend `index` is under its capacity now.
    #[inline]
    pub(crate) fn admits<T>(&self, backends: &Backends<T>, index: usize) -> bool {
        let total = backends.shared().total_active() as u128;
        let active = backends.active(index) as u128;
        active * self.scaled_total < self.percent * (total + 1) * u128::from(self.weights[index])
    }

    /// The backend for a key whose choice is `home`: `home` while it is
    /// under capacity, else the first of `order` that is and that `open`
    /// allows (the key's preference order after `home`), counting the
    /// overflow on `home`; `home` when none is.
    #[inline]
    pub(crate) fn place<T>(
        &self,
        backends: &Backends<T>,
        home: usize,
        order: impl Iterator<Item = usize>,
        mut open: impl FnMut(usize) -> bool,
    ) -> usize {
        if self.admits(backends, home) {
            return home;
        }
        match order
            .filter(|&index| index != home)
            .find(|&index| open(index) && self.admits(backends, index))
        {
            Some(index) => {
                backends.record(home).count_overflow();
                index
            }
            None => home,
        }
    }
}

/// Every backend once, from `home` on in index order, wrapping: the end of
/// every preference order, so that a full walk sees every backend.
#[inline]
pub(crate) fn from_home(home: usize, len: usize) -> impl Iterator<Item = usize> + Clone {
    (1..len).map(move |step| (home + step) % len)
}
