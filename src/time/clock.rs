//! Time as the health rules see it, injectable so that ejection, cooldown
//! and slow start are tested without sleeping.

use super::Nanos;
use crate::sync::atomic::{AtomicU64, Ordering};
use std::fmt;
use std::time::{Duration, Instant};

/// A monotonic clock: the time since some fixed start of the clock's own.
///
/// Balancers read it only on picks and reports that need it (while some
/// backend is ejected, ramping or otherwise not plainly available), never
/// on the plain pick path.
///
/// # Examples
///
/// ```
/// use loadbalance::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_secs(3));
/// assert_eq!(clock.now(), Duration::from_secs(3));
/// ```
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time elapsed since the clock's start; never goes backwards.
    fn now(&self) -> Duration;
}

/// The real clock: [`Instant`] since the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A clock that moves only when told to: for tests, simulations and
/// examples. Shared by reference (`Arc<ManualClock>` is a [`Clock`] too).
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = Nanos::saturating(by);
        // Relaxed: the clock's value is all it publishes.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        // Relaxed: see `advance`.
        Nanos::duration(self.nanos.load(Ordering::Relaxed))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}
