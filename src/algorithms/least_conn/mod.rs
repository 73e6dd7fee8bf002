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
//! every backend's current weight is one `fetch_add` on `epoch`. A pick
//! reads every count once and, when several tie, every tied backend's
//! current weight once more: `O(n)`, as in nginx.
//!
//! A static balancer of many backends (above 64 lock-free, above 8
//! mutex-backed) also keeps a dense `u32` copy of the counts, raised on pick
//! and lowered by the guard's drop, so that a scan reads a few cache lines
//! rather than one line a backend. A live balancer's snapshots share their
//! entries, so they scan the entries' own counts.
//!
//! Under concurrency two picks may read the same counts and choose the same
//! minimum, and their current-weight updates interleave; every update still
//! adds exactly what it subtracts, so the current weights keep summing to
//! zero and ties keep rotating in proportion to weight. The mutex-backed form
//! never lets two picks see the same minimum.

mod kernels;
mod lockfree;
mod sequential;

#[cfg(all(test, loom))]
mod loom_locked;

pub use lockfree::LeastConnScan;
pub use sequential::LeastConnState;

use crate::pick::{LockFree, Locked, Static};
use crate::table::Backends;

/// Lock-free least-connections, weighted or not (see the
/// [`docs`](crate::docs) for how ties and concurrency behave).
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
pub type LeastConn<T> = Static<T, LockFree<LeastConnScan>>;

/// Mutex-backed least-connections, weighted or not: nginx's `least_conn`
/// exactly, ties included.
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
pub type LockedLeastConn<T> = Static<T, Locked<LeastConnState>>;

/// Backends above which a static lock-free table keeps a dense copy of the
/// counts. Measured with `cargo bench --bench pick`: at 4 backends the copy's
/// two extra shared writes cost 40.6 against 33.7 ns a pick; at 64 both
/// scans cost 113 ns; at 1,024 the copy saves 1.51 against 1.22 µs.
const DENSE_ABOVE: usize = 64;

/// As `DENSE_ABOVE`, for the mutex-backed form, whose scans run twice a
/// pick (every backend ties when guards drop at once). With the copy, at 64
/// weighted backends 170 against 185 to 194 ns a pick (unweighted, about
/// equal), at 1,024 2.18 against 2.51 µs (weighted 2.01 against 2.45).
const LOCKED_DENSE_ABOVE: usize = 8;

/// Active count as compared: capped at `u32::MAX` so that a count times a
/// weight always fits in `u64`.
#[inline]
pub(super) fn capped(active: usize) -> u64 {
    active.min(u32::MAX as usize) as u64
}

/// Backend `index`'s load, as the sequential form reads it.
#[inline]
pub(super) fn load<T>(backends: &Backends<T>, index: usize) -> u64 {
    capped(backends.active(index))
}

/// Whether backend `(a_i, w_i)` has fewer active per weight than `(a_j, w_j)`,
/// or the same: `a_i / w_i` against `a_j / w_j`, cross-multiplied.
#[inline]
pub(super) fn compare(a_i: u64, w_i: u32, a_j: u64, w_j: u32) -> std::cmp::Ordering {
    (a_i * u64::from(w_j)).cmp(&(a_j * u64::from(w_i)))
}

/// A weight scaled by slow-start progress, in thousandths of a unit.
pub(super) fn ramped(weight: u32, ramp: u64) -> u64 {
    u64::from(weight) * ramp
}

/// As [`compare`] for slow-start-scaled weights, whose products need 128 bits.
pub(super) fn compare_ramped(a_i: u64, w_i: u64, a_j: u64, w_j: u64) -> std::cmp::Ordering {
    (u128::from(a_i) * u128::from(w_j)).cmp(&(u128::from(a_j) * u128::from(w_i)))
}
