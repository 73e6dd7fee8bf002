//! Least-connections, weighted and unweighted: nginx's `least_conn`.
//!
//! A pick goes to a backend with the fewest active guards per unit of weight
//! (`a_i * w_j < a_j * w_i`, in `u64`). When several tie, nginx runs smooth
//! weighted round-robin over the tied backends only: their current weights
//! grow by their weights, the largest wins (lowest index on ties), and the
//! winner's drops by the tied backends' total. With every guard dropped
//! before the next pick all backends tie, so the sequence is exactly smooth
//! weighted round-robin (plain round-robin for equal weights).
//!
//! The lock-free form runs the same rule on atomics and, on one thread,
//! makes exactly nginx's picks. To keep the common all-tied pick `O(1)` in
//! writes it stores each current weight as `base_i + epoch * w_i`: raising
//! every backend's current weight is one `fetch_add` on `epoch`. Under
//! concurrency two picks may read the same counts and choose the same
//! minimum, and their current-weight updates interleave; every update still
//! adds exactly what it subtracts, so the current weights keep summing to
//! zero and ties keep rotating in proportion to weight. The mutex-backed form
//! never lets two picks see the same minimum.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::backends::{Backends, Weights};
use crate::balanced::{balancer_type, Balanced, Pick, Sequential};
use crate::{BuildError, Context, Guard, PickError};

balancer_type! {
    /// Lock-free least-connections, weighted or not (see the
    /// [module docs](self) for how ties and concurrency behave).
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::LeastConn, Balancer, Context};
    ///
    /// let lb = LeastConn::new(["a", "b", "c"])?;
    /// let ctx = Context::new();
    /// let held = lb.pick(&ctx)?; // "a": all tie, round-robin order
    /// assert_eq!(*lb.pick(&ctx)?, "b"); // dropped at once
    /// assert_eq!(*lb.pick(&ctx)?, "c"); // "a" is busy; "b" and "c" tie
    /// assert_eq!(*held, "a");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    LeastConn, Scan
}

balancer_type! {
    /// Mutex-backed least-connections, weighted or not: nginx's
    /// `least_conn` exactly, ties included.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{locked::LeastConn, Balancer, Context};
    ///
    /// let lb = LeastConn::weighted([("big", 3), ("small", 1)])?;
    /// let ctx = Context::new();
    /// let held: Vec<_> = (0..4).map(|_| lb.pick(&ctx).unwrap()).collect();
    /// assert_eq!(held.iter().filter(|g| ***g == "big").count(), 3);
    /// # Ok::<(), loadbalance::BuildError>(())
    /// ```
    LockedLeastConn, Mutex<LeastConnState>
}

impl<T> LeastConn<T> {
    /// Least-connections over equally weighted backends.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`] or [`BuildError::TooManyBackends`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        let backends = Backends::new(backends)?;
        let weights = Weights::unit(backends.len());
        Ok(Self(Balanced {
            backends,
            algorithm: Scan::new(weights),
        }))
    }

    /// Weighted least-connections over `(backend, weight)` pairs.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`], [`BuildError::TooManyBackends`],
    /// [`BuildError::ZeroWeight`] or [`BuildError::WeightOverflow`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted(backends)?;
        Ok(Self(Balanced {
            backends,
            algorithm: Scan::new(weights),
        }))
    }
}

impl<T> LockedLeastConn<T> {
    /// Least-connections over equally weighted backends.
    ///
    /// # Errors
    ///
    /// As [`LeastConn::new`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        let backends = Backends::new(backends)?;
        let weights = Weights::unit(backends.len());
        Ok(Self(Balanced::locked(
            backends,
            LeastConnState::new(weights),
        )))
    }

    /// Weighted least-connections over `(backend, weight)` pairs.
    ///
    /// # Errors
    ///
    /// As [`LeastConn::weighted`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted(backends)?;
        Ok(Self(Balanced::locked(
            backends,
            LeastConnState::new(weights),
        )))
    }
}

/// Active count as compared: capped at `u32::MAX` so that a count times a
/// weight always fits in `u64`.
#[inline]
fn load<T>(backends: &Backends<T>, index: usize) -> u64 {
    backends.active(index).min(u32::MAX as usize) as u64
}

/// Whether backend `(a_i, w_i)` has fewer active per weight than `(a_j, w_j)`,
/// or the same: `a_i / w_i` against `a_j / w_j`, cross-multiplied.
#[inline]
fn compare(a_i: u64, w_i: u32, a_j: u64, w_j: u32) -> std::cmp::Ordering {
    (a_i * u64::from(w_j)).cmp(&(a_j * u64::from(w_i)))
}

/// nginx's `ngx_http_upstream_get_least_conn_peer` as a sequential state
/// machine, written in its two-pass form.
#[derive(Debug)]
pub(crate) struct LeastConnState {
    weights: Weights,
    current: Box<[i64]>,
}

impl LeastConnState {
    fn new(weights: Weights) -> Self {
        let current = vec![0; weights.as_slice().len()].into_boxed_slice();
        Self { weights, current }
    }
}

impl Sequential for LeastConnState {
    fn next<T>(&mut self, _: &Context<'_>, backends: &Backends<T>) -> Result<usize, PickError> {
        let w = self.weights.as_slice();
        // Pass 1: the first backend with the least load, and whether others tie.
        let mut best = 0;
        let mut many = false;
        for i in 1..w.len() {
            match compare(load(backends, i), w[i], load(backends, best), w[best]) {
                std::cmp::Ordering::Less => (best, many) = (i, false),
                std::cmp::Ordering::Equal => many = true,
                std::cmp::Ordering::Greater => {}
            }
        }
        if !many {
            return Ok(best);
        }
        // Pass 2: smooth weighted round-robin over the tied backends only.
        let (first, first_load) = (best, load(backends, best));
        let mut total = 0i64;
        for i in first..w.len() {
            if compare(load(backends, i), w[i], first_load, w[first]).is_ne() {
                continue;
            }
            // Current weights stay within a few totals of zero: no overflow.
            self.current[i] += i64::from(w[i]);
            total += i64::from(w[i]);
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        Ok(best)
    }
}

/// The lock-free form: one scan over the counts, nginx's tie-break on
/// atomics.
pub(crate) struct Scan {
    weights: Weights,
    /// `base_i`: backend i's current weight is `base_i + epoch * w_i`,
    /// computed in wrapping arithmetic. The true value is small, so the
    /// wrapped result is exact however far `epoch` has run.
    base: Box<[AtomicI64]>,
    /// How many picks found every backend tied.
    epoch: AtomicU64,
}

impl Scan {
    fn new(weights: Weights) -> Self {
        let base = weights
            .as_slice()
            .iter()
            .map(|_| AtomicI64::new(0))
            .collect();
        Self {
            weights,
            base,
            epoch: AtomicU64::new(0),
        }
    }

    fn next_index<T>(&self, backends: &Backends<T>) -> usize {
        let w = self.weights.as_slice();
        // Relaxed everywhere below: the counts and current weights only steer
        // the choice; nothing is published through them, and a stale read
        // costs at most a less even spread, never a wrong backend.
        let epoch = self.epoch.load(Ordering::Relaxed);
        // Current weight of backend i after this pick raises it by w_i.
        let raised = |i: usize| {
            let w_i = i64::from(w[i]);
            self.base[i]
                .load(Ordering::Relaxed)
                .wrapping_add((epoch.wrapping_add(1) as i64).wrapping_mul(w_i))
        };
        let mut first = 0;
        let mut first_load = load(backends, 0);
        let mut tied = 1;
        let mut winner = 0;
        let mut winner_weight = raised(0);
        for i in 1..w.len() {
            let load_i = load(backends, i);
            match compare(load_i, w[i], first_load, w[first]) {
                std::cmp::Ordering::Less => {
                    (first, first_load, tied, winner) = (i, load_i, 1, i);
                    winner_weight = raised(i);
                }
                std::cmp::Ordering::Equal => {
                    tied += 1;
                    let raised_i = raised(i);
                    if raised_i > winner_weight {
                        (winner, winner_weight) = (i, raised_i);
                    }
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        if tied == 1 {
            return first;
        }
        let added = if tied == w.len() {
            self.epoch.fetch_add(1, Ordering::Relaxed);
            i64::from(self.weights.total())
        } else {
            // Raise the tied backends one by one. Counts read now may differ
            // from the scan's under concurrency; subtracting exactly what was
            // added keeps the current weights summing to zero regardless.
            let mut added = 0;
            for i in first..w.len() {
                if compare(load(backends, i), w[i], first_load, w[first]).is_eq() {
                    self.base[i].fetch_add(i64::from(w[i]), Ordering::Relaxed);
                    added += i64::from(w[i]);
                }
            }
            added
        };
        self.base[winner].fetch_sub(added, Ordering::Relaxed);
        winner
    }
}

impl Pick for Scan {
    #[inline]
    fn pick<T>(&self, _: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        Ok(backends.guard(self.next_index(backends)))
    }
}
