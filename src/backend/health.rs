//! Passive health: what a guard's reported outcome does to its backend.
//!
//! As nginx's `max_fails` and `fail_timeout`: each failure lowers the
//! backend's effective weight by `weight / max_fails` (each later pick
//! restores one unit; only the algorithms that weigh backends by effective
//! weight, smooth weighted round-robin and least-connections, use it), and
//! the `max_fails`-th failure ejects the backend for `fail_timeout`.
//! Failures each within `fail_timeout` of the one before add up, however
//! long the run (as nginx counts them under traffic: its count goes back to
//! zero only at a success of a request picked more than `fail_timeout`
//! after the last failure). After the cooldown one pick at a time is let through as a trial
//! (again once a `fail_timeout` while trials fail); a successful trial
//! rejoins the backend, in slow start if configured.
//!
//! The per-backend state these rules change lives in the record (see
//! `record.rs`).

use std::time::Duration;

/// What to do when every backend that could take a pick is ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenAllEjected {
    /// Pick among the ejected backends anyway, as if healthy (Envoy's
    /// panic mode): a struggling upstream beats none.
    #[default]
    Panic,
    /// Fail the pick with [`PickError::AllEjected`](crate::PickError::AllEjected).
    Fail,
}

/// Passive-health and slow-start settings of a balancer.
///
/// The defaults are nginx's: `max_fails` 1, `fail_timeout` 10 s, no slow
/// start; and panic mode when everything is ejected.
///
/// # Examples
///
/// ```
/// use loadbalance::{HealthPolicy, WhenAllEjected};
/// use std::time::Duration;
///
/// let policy = HealthPolicy::default()
///     .max_fails(3)
///     .fail_timeout(Duration::from_secs(30))
///     .slow_start(Duration::from_secs(60))
///     .when_all_ejected(WhenAllEjected::Fail);
/// assert_eq!(policy.get_max_fails(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    max_fails: u32,
    fail_timeout: Duration,
    slow_start: Duration,
    when_all_ejected: WhenAllEjected,
}

impl HealthPolicy {
    /// No passive health: failures are counted in the stats and change
    /// nothing else (`max_fails` 0), no slow start.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::RoundRobin, Balancer, Context, HealthPolicy, Outcome};
    /// use std::time::Duration;
    ///
    /// let lb = RoundRobin::new(["a", "b"])?.with_health(HealthPolicy::none());
    /// let guard = lb.pick(&Context::new())?;
    /// guard.report(Outcome::Failure { latency: Duration::from_millis(3) });
    /// drop(guard);
    /// assert_eq!(*lb.pick(&Context::new())?, "b");
    /// assert_eq!(*lb.pick(&Context::new())?, "a"); // not ejected
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn none() -> Self {
        Self::default().max_fails(0)
    }

    /// Failures within `fail_timeout` that eject a backend; 0 turns passive
    /// health off (failures are still counted in the stats).
    #[must_use]
    pub fn max_fails(mut self, max_fails: u32) -> Self {
        self.max_fails = max_fails;
        self
    }

    /// The window failures are counted in, and how long an ejection lasts.
    #[must_use]
    pub fn fail_timeout(mut self, fail_timeout: Duration) -> Self {
        self.fail_timeout = fail_timeout;
        self
    }

    /// How long an added or recovered backend takes to ramp from a small
    /// share to its full weight; zero (the default) turns slow start off.
    #[must_use]
    pub fn slow_start(mut self, slow_start: Duration) -> Self {
        self.slow_start = slow_start;
        self
    }

    /// What a pick does when every backend it could take is ejected.
    #[must_use]
    pub fn when_all_ejected(mut self, policy: WhenAllEjected) -> Self {
        self.when_all_ejected = policy;
        self
    }

    /// The configured `max_fails`.
    pub fn get_max_fails(&self) -> u32 {
        self.max_fails
    }

    /// The configured `fail_timeout`.
    pub fn get_fail_timeout(&self) -> Duration {
        self.fail_timeout
    }

    /// The configured slow-start duration.
    pub fn get_slow_start(&self) -> Duration {
        self.slow_start
    }

    /// The configured all-ejected policy.
    pub fn get_when_all_ejected(&self) -> WhenAllEjected {
        self.when_all_ejected
    }
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            slow_start: Duration::ZERO,
            when_all_ejected: WhenAllEjected::Panic,
        }
    }
}

/// How a request on a picked backend went, as the caller saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The backend answered well.
    Success {
        /// How long the request took.
        latency: Duration,
    },
    /// The backend failed (connect error, timeout, 5xx: the caller decides).
    Failure {
        /// How long until the failure was seen.
        latency: Duration,
    },
}

impl Outcome {
    /// How long the request took until its outcome was seen.
    pub fn latency(&self) -> Duration {
        match *self {
            Self::Success { latency } | Self::Failure { latency } => latency,
        }
    }
}

/// Thousandths: the unit of slow-start progress.
pub(crate) const FULL: u64 = 1000;
