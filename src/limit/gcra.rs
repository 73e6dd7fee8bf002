//! A rate limiter on one atomic word: the generic cell rate algorithm
//! (GCRA, as governor, redis-cell and Stripe's limiter), in integer
//! nanoseconds.
//!
//! The limiter keeps the theoretical arrival time (TAT): when the next
//! request would be due if requests had come at exactly the sustained rate.
//! A request of weight `n` at `now` is allowed when
//! `max(TAT, now) + n * T <= now + tau` (`T` the emission interval, `tau`
//! the burst times `T`), and then moves TAT there. Equivalent to a token
//! bucket of `burst` tokens refilled one per `T`, without a refill step.
//!
//! # Synchronization
//!
//! The TAT is the whole state: one `AtomicU64`, moved forward by
//! compare-and-swap, so two checks can never both spend the same capacity.
//! It publishes nothing else, so every access is Relaxed. A check that
//! loses the race reads the new TAT and decides again. The loom model
//! `rate_limiter_spends_capacity_once` races two checks for the last
//! request.

use std::time::Duration;

use super::Quota;
use super::time::Time;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::time::Clock;
use crate::time::Nanos;

/// A request let in, and how many more could come in at once now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// Requests that could still pass right now (the burst left).
    pub remaining: u32,
}

/// A request turned away, and when one would pass: the `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Time until a request of the same weight would be allowed.
    pub retry_after: Duration,
}

/// Why [`RateLimiter::check_n`] refused `n` requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckNError {
    /// Not now: wait for the retry-after.
    Denied(Denied),
    /// Never: `n` is more than the burst, which is all that ever passes at
    /// once.
    ExceedsBurst {
        /// The burst of the quota.
        burst: u32,
    },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rate limited: retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for Denied {}

impl std::fmt::Display for CheckNError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(denied) => denied.fmt(f),
            Self::ExceedsBurst { burst } => {
                write!(f, "more requests at once than the burst of {burst} lets in")
            }
        }
    }
}

impl std::error::Error for CheckNError {}

/// A rate limiter shared by every thread that checks it (`Send + Sync`,
/// lock-free, one atomic word).
///
/// # Examples
///
/// ```
/// use loadbalance::limit::{Quota, RateLimiter};
/// use loadbalance::ManualClock;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = Arc::new(ManualClock::new());
/// let limiter = RateLimiter::with_clock(Quota::per_second(10)?.burst(2)?, Arc::clone(&clock));
/// assert_eq!(limiter.check()?.remaining, 1);
/// assert_eq!(limiter.check()?.remaining, 0);
/// let denied = limiter.check().unwrap_err();
/// assert_eq!(denied.retry_after, Duration::from_millis(100));
/// clock.advance(Duration::from_millis(100));
/// assert!(limiter.check().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RateLimiter {
    /// The theoretical arrival time, in nanoseconds of `time`.
    tat: AtomicU64,
    rule: Gcra,
    time: Time,
}

impl RateLimiter {
    /// A limiter for `quota` on the CPU's time-stamp counter, starting
    /// with its whole burst.
    pub fn new(quota: Quota) -> Self {
        Self::with_time(quota, Time::counter())
    }

    /// A limiter for `quota` reading `clock`.
    pub fn with_clock(quota: Quota, clock: impl Clock + 'static) -> Self {
        Self::with_time(quota, Time::custom(clock))
    }

    fn with_time(quota: Quota, time: Time) -> Self {
        Self {
            tat: AtomicU64::new(0),
            rule: Gcra::new(quota),
            time,
        }
    }

    /// Lets one request in, or says when one would pass.
    ///
    /// # Errors
    ///
    /// [`Denied`] with the retry-after.
    #[inline]
    pub fn check(&self) -> Result<Allowed, Denied> {
        self.check_at(1, self.time.nanos()).map_err(one)
    }

    /// Lets `n` requests in together (a request of weight `n`), or none.
    ///
    /// # Errors
    ///
    /// [`CheckNError::Denied`] with the retry-after, or
    /// [`CheckNError::ExceedsBurst`] when `n` could never pass.
    pub fn check_n(&self, n: u32) -> Result<Allowed, CheckNError> {
        self.check_at(n, self.time.nanos())
    }

    /// The decision at `now` nanoseconds.
    #[inline]
    pub(crate) fn check_at(&self, n: u32, now: u64) -> Result<Allowed, CheckNError> {
        // Relaxed: see the module docs.
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let (next, allowed) = self.rule.step(tat, n, now)?;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(allowed),
                Err(current) => tat = current,
            }
        }
    }
}

/// The GCRA's arithmetic for one quota, apart from where the TAT is kept
/// (one atomic word here, a slot of the keyed table there).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gcra {
    interval: u64,
    tolerance: u64,
    burst: u32,
}

impl Gcra {
    pub(crate) fn new(quota: Quota) -> Self {
        Self {
            interval: quota.interval_nanos(),
            tolerance: quota.tolerance_nanos(),
            burst: quota.burst_size(),
        }
    }

    /// The TAT after letting `n` requests in at `now`, or why not.
    #[inline]
    pub(crate) fn step(&self, tat: u64, n: u32, now: u64) -> Result<(u64, Allowed), CheckNError> {
        if n > self.burst {
            return Err(CheckNError::ExceedsBurst { burst: self.burst });
        }
        // At most the tolerance, at most 2^62 ns (the quota checked it).
        let cost = self.interval * u64::from(n);
        // How far the schedule runs ahead of now: at most the tolerance,
        // unless `now` went back (another core's counter), so the sum
        // cannot overflow and nothing saturates into a wrong answer.
        let ahead = tat.saturating_sub(now).saturating_add(cost);
        if ahead > self.tolerance {
            return Err(CheckNError::Denied(Denied {
                retry_after: Nanos::duration(ahead - self.tolerance),
            }));
        }
        let remaining = (self.tolerance - ahead) / self.interval;
        Ok((
            now.saturating_add(ahead),
            Allowed {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            },
        ))
    }

    /// A key whose TAT is at or before `now` has its whole burst back: its
    /// state says nothing a fresh key's does not.
    #[inline]
    pub(crate) fn refilled(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

/// [`CheckNError`] for a single request, which can only be denied.
pub(crate) fn one(error: CheckNError) -> Denied {
    match error {
        CheckNError::Denied(denied) => denied,
        // A burst is at least 1.
        CheckNError::ExceedsBurst { .. } => Denied {
            retry_after: Duration::MAX,
        },
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval", &Nanos::duration(self.rule.interval))
            .field("burst", &self.rule.burst)
            .finish_non_exhaustive()
    }
}
