//! Whole nanoseconds: the unit of every deadline, window and timestamp the
//! crate keeps in an atomic word, and the one place a `Duration` becomes
//! one (governor's `Nanos`).

use std::time::Duration;

use super::Clock;

/// A count of nanoseconds, converted from and to `Duration` only here.
/// `u64` holds five centuries; conversions from longer durations saturate
/// ([`saturating`](Self::saturating)) or fail ([`exact`](Self::exact)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Nanos(u64);

impl Nanos {
    /// `duration`, or `u64::MAX` nanoseconds past that.
    #[inline]
    pub(crate) fn saturating(duration: Duration) -> u64 {
        Self::exact(duration).unwrap_or(u64::MAX)
    }

    /// `duration`, or `None` past `u64::MAX` nanoseconds.
    #[inline]
    pub(crate) fn exact(duration: Duration) -> Option<u64> {
        u64::try_from(duration.as_nanos()).ok()
    }

    /// Now by `clock`, saturating.
    #[inline]
    pub(crate) fn now(clock: &dyn Clock) -> u64 {
        Self::saturating(clock.now())
    }

    /// `nanos` as a `Duration`.
    #[inline]
    pub(crate) fn duration(nanos: u64) -> Duration {
        Duration::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_or_fail_past_u64() {
        assert_eq!(Nanos::saturating(Duration::from_millis(3)), 3_000_000);
        assert_eq!(Nanos::saturating(Duration::MAX), u64::MAX);
        assert_eq!(Nanos::exact(Duration::MAX), None);
        assert_eq!(Nanos::duration(1_500), Duration::from_nanos(1_500));
    }
}
