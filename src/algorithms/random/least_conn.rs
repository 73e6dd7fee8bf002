//! Power-of-two-choices least-connections (nginx's `random two least_conn`,
//! HAProxy's `random(2)`, Envoy's `LEAST_REQUEST`): draw `d` distinct
//! candidates by weight, take the one with the fewest active guards per
//! unit of weight, compared in integers (`a_i * w_j < a_j * w_i`). `O(d)`
//! a pick whatever the number of backends, where a full scan is `O(n)`;
//! the maximum load stays within a small margin of the full scan's
//! (`tests/choices.rs` measures it).

use super::choices::{check_choices, Choices, ChoicesState, Cost, DENSE_ABOVE};
use crate::assemble::{Assemble, Parts};
use crate::backends::Backends;
use crate::balancer_type::{balancer_type, Balanced};
use crate::mutex_form::Locked;
use crate::BuildError;

/// Options of the algorithms that draw candidates at random and keep the
/// best ([`RandomLeastConn`](crate::lockfree::RandomLeastConn)).
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::RandomLeastConn, ChoiceOptions};
///
/// let options = ChoiceOptions::default().choices(3).seed(7);
/// let lb = RandomLeastConn::with_options([("a", 1), ("b", 1), ("c", 1), ("d", 1)], options)?;
/// # drop(lb);
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChoiceOptions {
    pub(super) seed: Option<u64>,
    pub(super) choices: u8,
}

impl Default for ChoiceOptions {
    fn default() -> Self {
        Self {
            seed: None,
            choices: 2,
        }
    }
}

impl ChoiceOptions {
    /// Candidates drawn a pick, 2 to 8 (default 2). More candidates bring
    /// the loads closer to a full scan's at the cost of reading more
    /// backends; with no more backends than this, every pick scans them all.
    #[must_use]
    pub fn choices(mut self, choices: u8) -> Self {
        self.choices = choices;
        self
    }

    /// Draws from `splitmix64(seed + k)`: the same candidates on every run
    /// (and in both forms), for tests and simulations.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

balancer_type! {
    /// Lock-free power-of-two-choices least-connections: the least loaded
    /// per unit of weight of `d` candidates drawn by weight, `O(d)` a pick.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::RandomLeastConn, Balancer, Context};
    ///
    /// let lb = RandomLeastConn::new(["a", "b"])?;
    /// let first = lb.pick(&Context::new())?;
    /// // Two backends, two candidates: the idle one wins.
    /// let second = lb.pick(&Context::new())?;
    /// assert_ne!(first.index(), second.index());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    RandomLeastConn, Choices
}

balancer_type! {
    /// Mutex-backed power-of-two-choices least-connections: the same draws
    /// under a lock, so two picks never read the same counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{locked, lockfree, Balancer, ChoiceOptions, Context};
    ///
    /// let backends = [("a", 2), ("b", 1), ("c", 1), ("d", 3)];
    /// let options = ChoiceOptions::default().seed(11);
    /// let a = locked::RandomLeastConn::with_options(backends, options.clone())?;
    /// let b = lockfree::RandomLeastConn::with_options(backends, options)?;
    /// let (mut held_a, mut held_b) = (Vec::new(), Vec::new());
    /// for _ in 0..50 {
    ///     held_a.push(a.pick(&Context::new())?);
    ///     held_b.push(b.pick(&Context::new())?);
    ///     assert_eq!(held_a.last().map(|g| g.index()), held_b.last().map(|g| g.index()));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    LockedRandomLeastConn, Locked<ChoicesState>
}

impl<T> RandomLeastConn<T> {
    /// Equally weighted backends, two candidates a pick.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`] or [`BuildError::TooManyBackends`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(|backend| (backend, 1)))
    }

    /// `(backend, weight)` pairs, two candidates a pick.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`], [`BuildError::TooManyBackends`],
    /// [`BuildError::ZeroWeight`] or [`BuildError::WeightOverflow`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        Self::with_options(backends, ChoiceOptions::default())
    }

    /// `(backend, weight)` pairs with options (candidates, seed).
    ///
    /// # Errors
    ///
    /// As [`weighted`](Self::weighted), and [`BuildError::Choices`].
    pub fn with_options(
        backends: impl IntoIterator<Item = (T, u32)>,
        options: ChoiceOptions,
    ) -> Result<Self, BuildError> {
        let choices = check_choices(options.choices)?;
        let (backends, weights) = Backends::weighted_dense(backends, false, DENSE_ABOVE)?;
        Ok(Self(Balanced {
            backends,
            algorithm: Choices::new(&weights, choices, Cost::Load, options.seed, 0),
        }))
    }
}

impl<T> LockedRandomLeastConn<T> {
    /// Equally weighted backends, two candidates a pick.
    ///
    /// # Errors
    ///
    /// As [`RandomLeastConn::new`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(|backend| (backend, 1)))
    }

    /// `(backend, weight)` pairs, two candidates a pick.
    ///
    /// # Errors
    ///
    /// As [`RandomLeastConn::weighted`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        Self::with_options(backends, ChoiceOptions::default())
    }

    /// `(backend, weight)` pairs with options (candidates, seed).
    ///
    /// # Errors
    ///
    /// As [`RandomLeastConn::with_options`].
    pub fn with_options(
        backends: impl IntoIterator<Item = (T, u32)>,
        options: ChoiceOptions,
    ) -> Result<Self, BuildError> {
        let choices = check_choices(options.choices)?;
        let (backends, weights) = Backends::weighted_dense(backends, false, DENSE_ABOVE)?;
        let state = ChoicesState::new(&weights, choices, Cost::Load, options.seed, 0);
        Ok(Self(Balanced::locked(backends, state)))
    }
}

impl<T: Send + Sync> Assemble for RandomLeastConn<T> {
    type Value = T;
    type Options = ChoiceOptions;
    const EFFECTIVE_WEIGHTS: bool = false;

    fn assemble(
        parts: Parts<'_, T>,
        options: &ChoiceOptions,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError> {
        let choices = check_choices(options.choices)?;
        let drawn = previous.map_or(0, |previous| previous.0.algorithm.words.drawn());
        Ok(Self(Balanced {
            backends: Backends::from_entries(parts.entries)?,
            algorithm: Choices::new(&parts.weights, choices, Cost::Load, options.seed, drawn),
        }))
    }
}

impl<T: Send + Sync> Assemble for LockedRandomLeastConn<T> {
    type Value = T;
    type Options = ChoiceOptions;
    const EFFECTIVE_WEIGHTS: bool = false;

    fn assemble(
        parts: Parts<'_, T>,
        options: &ChoiceOptions,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError> {
        let choices = check_choices(options.choices)?;
        let drawn = previous.map_or(0, |previous| previous.0.algorithm.lock().stream.drawn);
        let backends = Backends::from_entries(parts.entries)?;
        let state = ChoicesState::new(&parts.weights, choices, Cost::Load, options.seed, drawn);
        Ok(Self(Balanced::locked(backends, state)))
    }
}
