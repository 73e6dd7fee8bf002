//! What every backend of one balancer shares: the clock, the health policy,
//! and a count of backends that need more than the plain pick path.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::clock::{self, Clock, SystemClock};
use crate::HealthPolicy;

/// Shared by a balancer (every snapshot of a live one) and its backends.
pub(crate) struct Shared {
    clock: Arc<dyn Clock>,
    pub(crate) policy: HealthPolicy,
    /// Backends with any flag set (down, draining, backup, capped, ejected,
    /// degraded, ramping). While it is 0 and a pick carries no tried set,
    /// every algorithm takes its plain path: no clock read, no flag read.
    irregular: AtomicUsize,
    /// Picks taken on the slow path by lock-free forms: the step counter
    /// that restores lowered effective weights, one unit a pick, as nginx.
    slow_picks: AtomicU64,
}

impl Shared {
    pub(crate) fn new(clock: Arc<dyn Clock>, policy: HealthPolicy) -> Arc<Self> {
        Arc::new(Self {
            clock,
            policy,
            irregular: AtomicUsize::new(0),
            slow_picks: AtomicU64::new(0),
        })
    }

    /// The real clock and nginx's default health policy.
    pub(crate) fn standard() -> Arc<Self> {
        Self::new(Arc::new(SystemClock::new()), HealthPolicy::default())
    }

    /// Now, in nanoseconds of the balancer's clock.
    pub(crate) fn now(&self) -> u64 {
        clock::nanos(&*self.clock)
    }

    /// Whether every backend is plainly available at full weight.
    #[inline]
    pub(crate) fn regular(&self) -> bool {
        // Relaxed: a pick that must see a flag set by a call that returned
        // before it started is ordered after that call by whatever told it
        // the call returned; coherence then shows it this count or a later
        // one.
        self.irregular.load(Ordering::Relaxed) == 0
    }

    /// A backend's flags went from none to some (`+1`) or back (`-1`).
    pub(crate) fn irregular_changed(&self, became_irregular: bool) {
        // Relaxed: see `regular`.
        if became_irregular {
            self.irregular.fetch_add(1, Ordering::Relaxed);
        } else {
            self.irregular.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes one slow-path step and returns the step count before it.
    pub(crate) fn slow_step(&self) -> u64 {
        // Relaxed: a step counter; it orders nothing.
        self.slow_picks.fetch_add(1, Ordering::Relaxed)
    }

    /// The slow-path step count now.
    pub(crate) fn slow_steps(&self) -> u64 {
        // Relaxed: see `slow_step`.
        self.slow_picks.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("clock", &self.clock)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
