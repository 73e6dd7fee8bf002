//! A pool's pick: the guard, and when it was picked, so that the request's
//! outcome reports its own latency.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use crate::backend::Outcome;
use crate::table::Guard;
use crate::time::Nanos;

/// One picked backend for one request, from [`Pool::pick`](crate::Pool::pick):
/// counted as active until it is finished or dropped, and timed from the
/// pick.
///
/// [`success`](Self::success) and [`failure`](Self::failure) take the
/// `Picked` by value: a request reports once, with the latency from its
/// pick, and gives its backend back. Dropped without either (a cancelled
/// request), it reports nothing.
///
/// # Examples
///
/// ```
/// use loadbalance::{Algorithm, Backend, Context, Pool};
///
/// let pool = Pool::builder(Algorithm::LeastConn)
///     .build([Backend::new("10.0.0.1:80"), Backend::new("10.0.0.2:80")])?;
/// let upstream = pool.pick(&Context::new())?;
/// assert_eq!(pool.active_of("10.0.0.1:80"), Some(1));
/// // ... forward the request to *upstream ...
/// upstream.success();
/// assert_eq!(pool.active_of("10.0.0.1:80"), Some(0));
/// assert!(pool.stats_of("10.0.0.1:80").unwrap().latency.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Picked<T> {
    guard: Guard<T>,
    /// When the pick was made, in nanoseconds of the pool's clock.
    at: u64,
}

impl<T> Picked<T> {
    pub(crate) fn new(guard: Guard<T>) -> Self {
        let at = guard.now();
        Self { guard, at }
    }

    /// Time since the pick, by the pool's clock.
    pub fn elapsed(&self) -> Duration {
        Nanos::duration(self.guard.now().saturating_sub(self.at))
    }

    /// The request succeeded: reports it with its latency and gives the
    /// backend back.
    pub fn success(self) {
        let latency = self.elapsed();
        self.guard.report(Outcome::Success { latency });
    }

    /// The request failed (the health policy counts it): reports it with
    /// its latency and gives the backend back.
    pub fn failure(self) {
        let latency = self.elapsed();
        self.guard.report(Outcome::Failure { latency });
    }

    /// Reports `success` or a failure, as [`success`](Self::success) or
    /// [`failure`](Self::failure).
    pub fn finish(self, success: bool) {
        if success {
            self.success();
        } else {
            self.failure();
        }
    }

    /// The guard, to add to a [`Tried`](crate::Tried) set or read its index.
    pub fn guard(&self) -> &Guard<T> {
        &self.guard
    }

    /// The guard alone, to hold past the request without a report.
    pub fn into_guard(self) -> Guard<T> {
        self.guard
    }
}

impl<T> Deref for Picked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: fmt::Debug> fmt::Debug for Picked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("guard", &self.guard)
            .field("elapsed", &self.elapsed())
            .finish()
    }
}
