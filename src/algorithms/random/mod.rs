//! Random selection: uniform, or weighted with exact shares, in `O(1)`
//! (Vose's alias table, see `alias.rs`), and the algorithms that draw
//! candidates at random and keep the best: power-of-two-choices
//! least-connections and peak-EWMA latency.
//!
//! Randomness comes from `words.rs`: a generator per thread, or a seeded
//! stream that both forms follow word for word.
//!
//! Off the plain path a pick draws as usual and accepts the backend only if
//! it may take the pick (and, in slow start, with its ramp's probability);
//! after 16 rejections it draws among the backends that may, by weight
//! times ramp, in one pass. Both are exact: each draws backend i with
//! probability proportional to `w_i * ramp_i` among those that may.
//! Failures eject a backend as for every algorithm but do not lower its
//! weight: like nginx's `random`, it draws by configured weights.

mod alias;
mod choices;
pub(crate) mod least_conn;
pub(crate) mod peak_ewma;
mod words;

use self::alias::{draw_available, Alias};
use self::words::{Stream, Words};
use crate::assemble::{Assemble, Parts};
use crate::backends::{Backends, Weights};
use crate::balancer_type::{balancer_type, Balanced, Pick};
use crate::driver::{self, Choose};
use crate::mutex_form::Locked;
use crate::selection::Slow;
use crate::{BuildError, Context, Guard, PickError};

/// Options of the random balancers.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree, locked, Balancer, Context, RandomOptions};
///
/// let options = RandomOptions::default().seed(7);
/// let a = lockfree::Random::with_options([("a", 3), ("b", 1)], options.clone())?;
/// let b = locked::Random::with_options([("a", 3), ("b", 1)], options)?;
/// for _ in 0..100 {
///     assert_eq!(*a.pick(&Context::new())?, *b.pick(&Context::new())?);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RandomOptions {
    seed: Option<u64>,
}

impl RandomOptions {
    /// Draws from `splitmix64(seed + k)`: the same picks on every run (and
    /// in both forms), for tests and simulations.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

balancer_type! {
    /// Lock-free random selection, uniform or weighted with exact shares,
    /// `O(1)` a pick whatever n (see the [module docs](crate::docs)).
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::Random, Balancer, Context};
    ///
    /// let lb = Random::weighted([("a", 3), ("b", 1)])?;
    /// let picks = (0..4000).filter(|_| *lb.pick(&Context::new()).unwrap() == "a").count();
    /// assert!((2700..3300).contains(&picks)); // three quarters
    /// # Ok::<(), loadbalance::BuildError>(())
    /// ```
    Random, Draw
}

balancer_type! {
    /// Mutex-backed random selection: the same draws from a generator the
    /// mutex guards.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{locked::Random, Balancer, Context};
    ///
    /// let lb = Random::new(["a", "b"])?;
    /// assert!(["a", "b"].contains(&*lb.pick(&Context::new())?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    LockedRandom, Locked<RandomState>
}

impl<T> Random<T> {
    /// Uniform over `backends`.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`] or [`BuildError::TooManyBackends`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(|backend| (backend, 1)))
    }

    /// Weighted over `(backend, weight)` pairs.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`], [`BuildError::TooManyBackends`],
    /// [`BuildError::ZeroWeight`] or [`BuildError::WeightOverflow`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        Self::with_options(backends, RandomOptions::default())
    }

    /// Weighted, with options (a seed).
    ///
    /// # Errors
    ///
    /// As [`weighted`](Self::weighted).
    pub fn with_options(
        backends: impl IntoIterator<Item = (T, u32)>,
        options: RandomOptions,
    ) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted(backends, false)?;
        Ok(Self(Balanced {
            backends,
            algorithm: Draw::new(&weights, &options, 0),
        }))
    }
}

impl<T> LockedRandom<T> {
    /// Uniform over `backends`.
    ///
    /// # Errors
    ///
    /// As [`Random::new`].
    pub fn new(backends: impl IntoIterator<Item = T>) -> Result<Self, BuildError> {
        Self::weighted(backends.into_iter().map(|backend| (backend, 1)))
    }

    /// Weighted over `(backend, weight)` pairs.
    ///
    /// # Errors
    ///
    /// As [`Random::weighted`].
    pub fn weighted(backends: impl IntoIterator<Item = (T, u32)>) -> Result<Self, BuildError> {
        Self::with_options(backends, RandomOptions::default())
    }

    /// Weighted, with options (a seed).
    ///
    /// # Errors
    ///
    /// As [`Random::weighted`].
    pub fn with_options(
        backends: impl IntoIterator<Item = (T, u32)>,
        options: RandomOptions,
    ) -> Result<Self, BuildError> {
        let (backends, weights) = Backends::weighted(backends, false)?;
        let state = RandomState::new(&weights, &options, 0);
        Ok(Self(Balanced::locked(backends, state)))
    }
}

/// The lock-free form: the alias table and where its random words come
/// from.
pub(crate) struct Draw {
    alias: Alias,
    words: Words,
}

impl Draw {
    fn new(weights: &Weights, options: &RandomOptions, drawn: u64) -> Self {
        Self {
            alias: Alias::new(weights),
            words: Words::new(options.seed, drawn),
        }
    }
}

impl Pick for Draw {
    #[inline]
    fn pick<T>(&self, ctx: &Context<'_>, backends: &Backends<T>) -> Result<Guard<T>, PickError> {
        driver::pick(&mut &*self, ctx, backends)
    }
}

impl Choose for &Draw {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<usize, PickError> {
        Ok(self.alias.draw(self.words.word()))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        draw_available(&self.alias, slow, &[], || self.words.word())
    }
}

/// The sequential form: the table and a generator of its own (seeded, or
/// from the operating system when built).
#[derive(Debug)]
pub(crate) struct RandomState {
    alias: Alias,
    stream: Stream,
}

impl RandomState {
    fn new(weights: &Weights, options: &RandomOptions, drawn: u64) -> Self {
        Self {
            alias: Alias::new(weights),
            stream: Stream::new(options.seed, drawn),
        }
    }
}

impl Choose for RandomState {
    #[inline]
    fn plain<T>(&mut self, _: &Context<'_>, _: &Backends<T>) -> Result<usize, PickError> {
        Ok(self.alias.draw(self.stream.word()))
    }

    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        slow: &mut Slow<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let Self { alias, stream } = self;
        draw_available(alias, slow, &[], || stream.word())
    }
}

impl<T: Send + Sync> Assemble for Random<T> {
    type Value = T;
    type Options = RandomOptions;
    const EFFECTIVE_WEIGHTS: bool = false;

    fn assemble(
        parts: Parts<'_, T>,
        options: &RandomOptions,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError> {
        let drawn = previous.map_or(0, |previous| previous.0.algorithm.words.drawn());
        Ok(Self(Balanced {
            backends: Backends::from_entries(parts.entries)?,
            algorithm: Draw::new(&parts.weights, options, drawn),
        }))
    }
}

impl<T: Send + Sync> Assemble for LockedRandom<T> {
    type Value = T;
    type Options = RandomOptions;
    const EFFECTIVE_WEIGHTS: bool = false;

    fn assemble(
        parts: Parts<'_, T>,
        options: &RandomOptions,
        previous: Option<&Self>,
    ) -> Result<Self, BuildError> {
        let drawn = previous.map_or(0, |previous| previous.0.algorithm.lock().stream.drawn);
        let backends = Backends::from_entries(parts.entries)?;
        let state = RandomState::new(&parts.weights, options, drawn);
        Ok(Self(Balanced::locked(backends, state)))
    }
}
