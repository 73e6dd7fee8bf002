//! Bounded loads for keyed picks: consistent hashing with bounded loads
//! (Mirrokni, Thorup and Zadimoghaddam, 2018), as HAProxy's
//! `hash-balance-factor` and Envoy's `hash_balance_factor` offer it.
//!
//! With a factor `c` (a percentage above 100), backend i takes a pick only
//! while its active guards are below `c * (A + 1) * w_i / W`, its share of
//! the guards that will be active with this pick (`A` the guards on the
//! backends that may take the pick, `W` their weights): a pick never takes
//! a backend past `ceil(c * mean)` of its weight's share. (Guards dropped
//! elsewhere can leave a backend above that until its own drop.) A key
//! whose hash choice is over capacity goes to the next backend in the key's
//! own preference order (fixed per key, so its fallback is stable), and
//! comes back as soon as its choice is under capacity again. The
//! capacities add up to `c` times the guards, so some backend is always
//! under capacity; when racing picks leave none, the pick goes to the hash
//! choice.
//!
//! While every backend may take picks (the plain path), `A` is one counter
//! in the balancer that every guard of a bounded balancer raises and
//! lowers (`Holds::Counted`): a pick reads it, its own choice's count and
//! the weights, `O(1)` while nothing overflows. The counter includes
//! guards of backends a live balancer removed, until they drop. Otherwise
//! (some backend down, draining, a backup, ejected or full: the slow path)
//! a pick sums the counts and weights of the backends that may take it,
//! `O(n)` as the slow path's selection already is. Lock-free picks that race may each see a backend just under its
//! capacity and all take it (at most one over for each racing pick); the
//! mutex-backed forms take the guard under the lock, so the bound holds
//! exactly.

use crate::error::BuildError;
use crate::table::{Backends, Weights};

/// The capacity rule of a bounded balancer.
#[derive(Clone, Debug)]
pub(crate) struct Bound {
    /// The factor `c`, in percent.
    percent: u128,
    weights: Box<[u32]>,
    /// `W * 100` over every backend.
    scaled_total: u128,
}

/// What capacities are shares of: the active guards and the weight (times
/// 100) of the backends that may take the pick.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    active: u128,
    scaled_weight: u128,
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

    /// The plain path's load: every backend may take the pick, so the
    /// balancer's total and every weight (one load).
    #[inline]
    pub(crate) fn load_of_all<T>(&self, backends: &Backends<T>) -> Load {
        Load {
            active: backends.common().total_active() as u128,
            scaled_weight: self.scaled_total,
        }
    }

    /// The slow path's load: the guards and weights of the backends that
    /// may take the pick (`open`), in one pass. Down, draining, backup
    /// (while a primary can serve) and ejected backends hold no share, as
    /// in HAProxy and Envoy: with them counted, the rest would all look
    /// full once they held a fifth of the weight.
    pub(crate) fn load_among<T>(
        &self,
        backends: &Backends<T>,
        open: impl Fn(usize) -> bool,
    ) -> Load {
        let (mut active, mut weight) = (0u128, 0u128);
        for index in (0..self.weights.len()).filter(|&index| open(index)) {
            active += backends.active(index) as u128;
            weight += u128::from(self.weights[index]);
        }
        Load {
            active,
            scaled_weight: weight * 100,
        }
    }

    /// Whether backend `index` is under its capacity in `load`.
    #[inline]
    fn admits<T>(&self, backends: &Backends<T>, load: Load, index: usize) -> bool {
        let active = backends.active(index) as u128;
        active * load.scaled_weight
            < self.percent * (load.active + 1) * u128::from(self.weights[index])
    }

    /// The backend for a key whose choice is `home`: `home` while it is
    /// under capacity, else the first of `order` that is and that `open`
    /// allows (the key's preference order after `home`), counting the
    /// overflow on `home`; `home` when none is (racing picks).
    #[inline]
    pub(crate) fn place<T>(
        &self,
        backends: &Backends<T>,
        load: Load,
        home: usize,
        order: impl Iterator<Item = usize>,
        mut open: impl FnMut(usize) -> bool,
    ) -> usize {
        if self.admits(backends, load, home) {
            return home;
        }
        match order
            .filter(|&index| index != home)
            .find(|&index| open(index) && self.admits(backends, load, index))
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
