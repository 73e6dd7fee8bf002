//! What every backend of one balancer shares: the clock, the health policy,
//! and a count of backends that need more than the plain pick path.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::backends::flag;
use crate::clock::{self, Clock, SystemClock};
use crate::HealthPolicy;

/// Shared by a balancer (every snapshot of a live one) and its backends.
pub(crate) struct Shared {
    clock: Arc<dyn Clock>,
    pub(crate) policy: HealthPolicy,
    /// Backends with a flag that changes the choice (down, draining,
    /// ejected, degraded, ramping). While it is 0 and a pick carries no
    /// tried set, the lock-free forms (and the stateless locked ones) take
    /// their plain path: no clock read, one flag read on the chosen backend.
    irregular: AtomicUsize,
    /// Backends with a `flag::CHECKED` flag (backup, `max_conns`), which a
    /// plain pick checks on the backend it chose.
    checked: AtomicUsize,
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
            checked: AtomicUsize::new(0),
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

    /// Whether a plain choice stands, given the checks of
    /// [`Backends::plain_guard`](crate::backends::Backends::plain_guard) on
    /// the chosen backend: nothing is down, draining, ejected, degraded or
    /// ramping.
    #[inline]
    pub(crate) fn plain_choice(&self) -> bool {
        // Relaxed: a pick that must see a flag set by a call that returned
        // before it started is ordered after that call by whatever told it
        // the call returned; coherence then shows it this count or a later
        // one.
        self.irregular.load(Ordering::Relaxed) == 0
    }

    /// Whether every backend is plainly available at full weight, with no
    /// backup and no limit: what the mutex-backed algorithms whose state
    /// every backend's step changes need for their plain path to be
    /// nginx's exactly.
    #[inline]
    pub(crate) fn regular(&self) -> bool {
        // Relaxed: see `plain_choice`.
        self.irregular.load(Ordering::Relaxed) == 0 && self.checked.load(Ordering::Relaxed) == 0
    }

    /// A backend's flags of `class` went from none to some or back.
    pub(crate) fn flagged_changed(&self, class: Class, flagged: bool) {
        let count = match class {
            Class::Irregular => &self.irregular,
            Class::Checked => &self.checked,
        };
        // Relaxed: see `plain_choice`.
        if flagged {
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            count.fetch_sub(1, Ordering::Relaxed);
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

/// The two kinds of flags `Shared` counts backends by.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Class {
    /// Flags outside `flag::CHECKED`.
    Irregular,
    /// `flag::CHECKED` flags.
    Checked,
}

impl Class {
    /// Whether `flags` has a flag of this class.
    pub(crate) fn of(self, flags: u32) -> bool {
        let mask = match self {
            Self::Irregular => !flag::CHECKED,
            Self::Checked => flag::CHECKED,
        };
        flags & mask != 0
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
