//! Probing selection (Prequal, NSDI 2024): after each pick, a few backends
//! drawn at random are asked for their requests in flight and their
//! latency; their answers wait in a small pool; a pick takes, among the
//! answers whose requests in flight are not hot (above a percentile of the
//! pool's), the one of lowest latency.
//!
//! The crate sends nothing: a pick only reads the pool, and the probes it
//! asks for ([`Probe`](crate::Probe), from
//! [`Pool::probes`](crate::Pool::probes)) go by the caller's transport,
//! whose answers come back through [`Probe::answer`](crate::Probe::answer).
//! So a pick never waits for the network, and the figures are the
//! backends' own: every client's requests in flight, not only this
//! balancer's.
//!
//! - `rule.rs`: the hot-cold rule over the pool;
//! - `state.rs`: the state both forms pick with, and its fallback;
//! - the pool itself is the backend layer's (`backend/probes.rs`): it
//!   outlives every rebuild of a live set.
//!
//! While the pool has no answer that may take a pick (at the start, after
//! a quiet spell longer than the answers' age) or another thread holds it,
//! the pick is power-of-two-choices least-connections by weight. Weights
//! count only there: the answers steer every other pick.

mod rule;
mod state;

use std::time::Duration;

pub use state::ProbingState;

use crate::backend::probes::{BoardSettings, MAX_PROBES};
use crate::error::BuildError;
use crate::pick::{LockFree, Locked, Static};
use crate::time::Nanos;
use rule::Rule;

/// Options of the probing balancer.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::Probing, ProbingOptions};
/// use std::time::Duration;
///
/// let options = ProbingOptions::default()
///     .probes(3)
///     .max_age(Duration::from_millis(500))
///     .hot_percentile(80);
/// let lb = Probing::with_options([("a", 1), ("b", 1)], options)?;
/// # drop(lb);
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbingOptions {
    probes: u8,
    pool: u8,
    uses: u8,
    max_age: Duration,
    hot: u8,
    seed: Option<u64>,
}

impl Default for ProbingOptions {
    /// Three probes a pick, a pool of 8 answers, each steering one pick
    /// within 1 s, hot above the 30th percentile of requests in flight:
    /// the best of the settings tried in the simulator's Prequal-like
    /// scenario (`tools/simulate`, BENCHMARKS.md). Prequal's pool of 16
    /// did no better there, and a pick scans its pool: 8 is the cheaper.
    fn default() -> Self {
        Self {
            probes: 3,
            pool: 8,
            uses: 1,
            max_age: Duration::from_secs(1),
            hot: 30,
            seed: None,
        }
    }
}

impl ProbingOptions {
    /// Probes asked for after each pick, 0 to 8 (default 3). With 0, the
    /// caller probes on its own schedule (a timer) with the probes of
    /// [`Pool::probes`](crate::Pool::probes) left empty.
    #[must_use]
    pub fn probes(mut self, probes: u8) -> Self {
        self.probes = probes;
        self
    }

    /// Answers the pool keeps, 1 to 16 (default 8); a new answer takes
    /// the place of the oldest.
    #[must_use]
    pub fn pool(mut self, pool: u8) -> Self {
        self.pool = pool;
        self
    }

    /// Picks one answer may steer, 1 to 255 (default 1): each pick it
    /// steers counts one more request in flight in it.
    #[must_use]
    pub fn uses(mut self, uses: u8) -> Self {
        self.uses = uses;
        self
    }

    /// How long an answer may steer picks (default 1 s; above zero, below
    /// 584 years): it leaves the pool
    /// when an answer comes this long after it. (A pick does not read the
    /// clock; while no answer comes, each answer still steers at most its
    /// [`uses`](Self::uses).)
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The percentile of the pool's requests in flight above which an
    /// answer is hot, 1 to 100 (default 30): the lower, the more a pick
    /// weighs requests in flight over latency.
    #[must_use]
    pub fn hot_percentile(mut self, percent: u8) -> Self {
        self.hot = percent;
        self
    }

    /// The same draws on every run, for tests and simulations.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates and gives the rule and the pool's settings.
    fn check(&self) -> Result<(Rule, BoardSettings), BuildError> {
        let range = |option, value: u8, min: u32, max: u32| {
            let value = u32::from(value);
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(BuildError::Range {
                    option,
                    value,
                    min,
                    max,
                })
            }
        };
        let per_pick = range("probes", self.probes, 0, 8)?;
        let pool = range("pool", self.pool, 1, MAX_PROBES as u32)?;
        let uses = range("uses", self.uses, 1, 255)?;
        let hot = range("hot_percentile", self.hot, 1, 100)?;
        let max_age = Nanos::exact(self.max_age)
            .filter(|&nanos| nanos > 0)
            .ok_or(BuildError::Duration { option: "max_age" })?;
        let settings = BoardSettings {
            capacity: pool as usize,
            per_pick,
            uses,
            max_age,
            seed: self.seed.unwrap_or_else(rand::random),
        };
        Ok((Rule { hot }, settings))
    }
}

/// Lock-free probing selection: the pick takes the cold answer of lowest
/// latency from the probe pool, which it only `try_lock`s.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::Probing, Balancer, Context, ProbingOptions};
/// use std::time::Duration;
///
/// let options = ProbingOptions::default().probes(3);
/// let lb = Probing::with_options([("a", 1), ("b", 1), ("c", 1)], options)?;
/// // Before any answer: power-of-two-choices least-connections.
/// drop(lb.pick(&Context::new())?);
/// for probe in lb.probes() {
///     let (in_flight, ms) = if *probe.backend() == "c" { (1, 5) } else { (9, 90) };
///     probe.answer(in_flight, Duration::from_millis(ms));
/// }
/// assert_eq!(*lb.pick(&Context::new())?, "c");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type Probing<T> = Static<T, LockFree<ProbingState>>;

/// Mutex-backed probing selection: the same rule, picks serialised.
///
/// # Examples
///
/// ```
/// use loadbalance::{locked::Probing, Balancer, Context, ProbingOptions};
///
/// let lb = Probing::with_options([("a", 1), ("b", 1)], ProbingOptions::default().probes(1))?;
/// let _guard = lb.pick(&Context::new())?;
/// assert_eq!(lb.probes().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LockedProbing<T> = Static<T, Locked<ProbingState>>;
