//! How much traffic a rate limit lets in: a rate (requests per period)
//! and a burst, validated once so that a limiter can never hold a quota
//! that divides by zero or overflows.

use crate::time::Nanos;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// A rate of `count` requests per `period`, with bursts of up to `burst`
/// requests at once (governor's `Quota`; nginx's `burst=N` admits N + 1
/// at once, this burst N).
///
/// Requests are spaced by the emission interval `period / count`, rounded
/// up to a whole nanosecond: a limiter never lets in more than the rate
/// (at most one nanosecond a request less, where the period does not
/// divide).
///
/// # Examples
///
/// ```
/// use loadbalance::limit::Quota;
/// use std::time::Duration;
///
/// let quota = Quota::per_second(100)?.burst(20)?;
/// assert_eq!(quota.interval(), Duration::from_millis(10));
/// assert!(Quota::new(0, Duration::from_secs(1)).is_err());
/// # Ok::<(), loadbalance::limit::QuotaError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    /// The emission interval in nanoseconds, at least 1.
    interval: u64,
    burst: NonZeroU32,
}

impl Quota {
    /// `count` requests per `period`, burst 1 (requests evenly spaced).
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroRate`] for a count of 0, [`QuotaError::ZeroPeriod`]
    /// for a zero period, [`QuotaError::PeriodTooLong`] past 2^62 ns
    /// (about 146 years).
    pub fn new(count: u32, period: Duration) -> Result<Self, QuotaError> {
        let count = NonZeroU32::new(count).ok_or(QuotaError::ZeroRate)?;
        let period = Nanos::exact(period)
            .filter(|&nanos| nanos <= MAX_SPAN)
            .ok_or(QuotaError::PeriodTooLong)?;
        if period == 0 {
            return Err(QuotaError::ZeroPeriod);
        }
        Ok(Self {
            interval: period.div_ceil(u64::from(count.get())),
            burst: NonZeroU32::MIN,
        })
    }

    /// `count` requests a second, burst 1.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn per_second(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests a minute, burst 1.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn per_minute(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(60))
    }

    /// Lets up to `burst` requests in at once after a quiet spell.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroBurst`] for 0; [`QuotaError::PeriodTooLong`] when
    /// `burst` intervals span more than 2^62 ns (about 146 years).
    pub fn burst(mut self, burst: u32) -> Result<Self, QuotaError> {
        self.burst = NonZeroU32::new(burst).ok_or(QuotaError::ZeroBurst)?;
        self.interval
            .checked_mul(u64::from(burst))
            .filter(|&span| span <= MAX_SPAN)
            .ok_or(QuotaError::PeriodTooLong)?;
        Ok(self)
    }

    /// The time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        Nanos::duration(self.interval)
    }

    /// The most requests let in at once.
    pub fn burst_size(&self) -> u32 {
        self.burst.get()
    }

    pub(crate) fn interval_nanos(&self) -> u64 {
        self.interval
    }

    /// `burst * interval`: how far ahead of now the schedule may run.
    pub(crate) fn tolerance_nanos(&self) -> u64 {
        // Checked when the burst was set.
        self.interval * u64::from(self.burst.get())
    }
}

/// The longest period or burst span: 2^62 ns, about 146 years. A limiter
/// adds it to a time since its start, which leaves 2^63 ns (292 years) of
/// uptime before any sum could overflow.
const MAX_SPAN: u64 = 1 << 62;

/// Why a quota could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaError {
    /// A rate of 0 requests.
    ZeroRate,
    /// A period of 0.
    ZeroPeriod,
    /// A burst of 0 requests.
    ZeroBurst,
    /// The period, or `burst` intervals, span more than 2^62 nanoseconds.
    PeriodTooLong,
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroRate => "a rate limit needs a rate above 0 requests",
            Self::ZeroPeriod => "a rate limit needs a period above 0",
            Self::ZeroBurst => "a rate limit needs a burst of at least 1 request",
            Self::PeriodTooLong => {
                "the period, or burst times the interval, is past 2^62 ns (146 years)"
            }
        })
    }
}

impl std::error::Error for QuotaError {}
