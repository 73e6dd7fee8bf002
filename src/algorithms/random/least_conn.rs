//! Power-of-two-choices least-connections (nginx's `random two least_conn`,
//! HAProxy's `random(2)`, Envoy's `LEAST_REQUEST`): draw `d` distinct
//! candidates by weight, take the one with the fewest active guards per
//! unit of weight, compared in integers (`a_i * w_j < a_j * w_i`). `O(d)`
//! a pick whatever the number of backends, where a full scan is `O(n)`;
//! the maximum load stays within a small margin of the full scan's
//! (`tests/algorithms/choices.rs` measures it).

use super::choices::{Choices, ChoicesState, Cost, check_choices, choices_build};
use crate::pick::{LockFree, Locked, Static};

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
pub type RandomLeastConn<T> = Static<T, LockFree<Choices<ChoiceOptions>>>;

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
pub type LockedRandomLeastConn<T> = Static<T, Locked<ChoicesState<ChoiceOptions>>>;

choices_build! {
    /// The least loaded per unit of weight of `choices` candidates.
    ChoiceOptions => |set, options| {
        let choices = check_choices(options.choices)?;
        (choices, Cost::Load, options.seed)
    }
}
