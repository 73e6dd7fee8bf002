//! Smooth weighted round-robin, exactly nginx's.
//!
//! On each pick every backend's current weight grows by its weight, the
//! largest current weight wins (the lowest index on ties), and the winner's
//! current weight drops by the total. Weights 5, 1, 1 give 0 0 1 0 2 0 0.
//!
//! The sequence is periodic: after `sum(w) / gcd(w)` picks every current
//! weight is back at zero. The lock-free form precomputes one period, so a
//! pick is one atomic cursor step and a table read. The period is bounded
//! (`SCHEDULE_LIMIT` picks, and `BUILD_WORK_LIMIT` steps of work to
//! compute it); past the bound the lock-free form computes the sequence in
//! windows (`windows.rs`), still exact, still without a lock and without an
//! allocation, but with an `O(n)` cost per pick amortised over each window.
//!
//! - `state.rs`: [`SmoothState`], nginx's state machine (the mutex-backed
//!   form and the reference);
//! - `schedule.rs`: [`SmoothSchedule`], the lock-free form;
//! - `windows.rs`: the sequence a window at a time, past the bound.

mod schedule;
mod state;
mod windows;

#[cfg(all(test, loom))]
mod loom_windows;

pub use schedule::SmoothSchedule;
pub use state::SmoothState;

use crate::backend::health::FULL;
use crate::pick::{LockFree, Locked, Sharing, Static};

/// See [`WeightedRoundRobin::SCHEDULE_LIMIT`].
const SCHEDULE_LIMIT: usize = 1 << 19;

/// See [`WeightedRoundRobin::BUILD_WORK_LIMIT`].
const BUILD_WORK_LIMIT: u64 = 1 << 30;

/// Work, in steps × backends, spent on one window past the bound, so that
/// the pick that computes a window stalls for about a millisecond.
const WINDOW_WORK: usize = 1 << 20;

/// One weight unit in current weights: thousandths, so that slow start can
/// scale a weight of 1. Scaling every weight alike leaves the sequence as is.
pub(crate) const UNIT: i64 = FULL as i64;

/// Lock-free smooth weighted round-robin: nginx's exact sequence.
///
/// Within [`SCHEDULE_LIMIT`](Self::SCHEDULE_LIMIT) a pick is one relaxed
/// `fetch_add` and a read of the precomputed period; each concurrent pick
/// takes its own step of the sequence. Past the limit the sequence is
/// computed in windows (see [`docs`](crate::docs#memory-bounds)).
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::WeightedRoundRobin, Balancer, Context};
///
/// let lb = WeightedRoundRobin::new([("a", 5), ("b", 1), ("c", 1)])?;
/// let picks: String = (0..7).map(|_| *lb.pick(&Context::new()).unwrap()).collect();
/// assert_eq!(picks, "aabacaa");
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
pub type WeightedRoundRobin<T> = Static<T, LockFree<SmoothSchedule>>;

/// Mutex-backed smooth weighted round-robin: nginx's algorithm, `O(n)`
/// per pick, behind a mutex.
///
/// # Examples
///
/// ```
/// use loadbalance::{locked::WeightedRoundRobin, Balancer, Context};
///
/// let lb = WeightedRoundRobin::new([("a", 2), ("b", 1)])?;
/// let picks: String = (0..3).map(|_| *lb.pick(&Context::new()).unwrap()).collect();
/// assert_eq!(picks, "aba");
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
pub type LockedWeightedRoundRobin<T> = Static<T, Locked<SmoothState>>;

/// The one part of a balancer type's API that is its algorithm's own: the
/// bounds of the precomputed schedule (every other method is `Static`'s).
impl<T> WeightedRoundRobin<T> {
    /// The longest period the lock-free form precomputes: 2^19 picks, stored
    /// as `u16` indices in 1 MiB.
    pub const SCHEDULE_LIMIT: usize = SCHEDULE_LIMIT;

    /// The most sequential steps (period × backends) spent precomputing a
    /// period: about a quarter of a second on a 2-core test machine.
    pub const BUILD_WORK_LIMIT: u64 = BUILD_WORK_LIMIT;

    /// Whether the whole period is precomputed (the fast path), rather than
    /// computed in windows past [`SCHEDULE_LIMIT`](Self::SCHEDULE_LIMIT).
    pub fn is_precomputed(&self) -> bool {
        self.form().with_state(SmoothSchedule::is_precomputed)
    }
}
