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
mod draw;
pub(crate) mod least_conn;
pub(crate) mod peak_ewma;
mod words;

pub use choices::{Choices, ChoicesState};
pub use draw::{RandomDraw, RandomState};

use crate::pick::{LockFree, Locked, Static};

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
    pub(super) seed: Option<u64>,
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
pub type Random<T> = Static<T, LockFree<RandomDraw>>;

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
pub type LockedRandom<T> = Static<T, Locked<RandomState>>;
