//! The limiters' time: nanoseconds since the limiter was built, from the
//! CPU's time-stamp counter by default (quanta, as governor: a third of
//! `Instant::now`'s cost, which dominates a check), or from any
//! [`Clock`] the caller gives (a `ManualClock` in tests).
//!
//! quanta's reads are not promised to be monotonic across cores; the GCRA
//! takes `max(TAT, now)`, so a read a little behind another thread's only
//! makes that one check stricter.

use std::sync::Arc;

use crate::time::{Clock, Nanos};

/// Where a limiter reads the time.
#[derive(Clone)]
pub(crate) enum Time {
    /// The time-stamp counter, as nanoseconds since `start`.
    Counter { clock: quanta::Clock, start: u64 },
    /// A caller's clock.
    Custom(Arc<dyn Clock>),
}

impl Time {
    /// The time-stamp counter, starting now.
    pub(crate) fn counter() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        Self::Counter { clock, start }
    }

    pub(crate) fn custom<C: Clock + 'static>(clock: C) -> Self {
        Self::Custom(Arc::new(clock))
    }

    /// Bytes this time source allocated (an `Arc`'s two counts and the
    /// clock), counted against a limiter's memory cap.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Self::Counter { .. } => 0,
            // An `Arc`'s allocation: its two counts, then the clock at its
            // alignment, padded to that alignment.
            Self::Custom(clock) => std::alloc::Layout::new::<[usize; 2]>()
                .extend(std::alloc::Layout::for_value(&**clock))
                .map_or(usize::MAX, |(layout, _)| layout.pad_to_align().size()),
        }
    }

    /// Nanoseconds since the start.
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        match self {
            Self::Counter { clock, start } => clock.delta_as_nanos(*start, clock.raw()),
            Self::Custom(clock) => Nanos::now(&**clock),
        }
    }
}

impl std::fmt::Debug for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Counter { .. } => f.write_str("TimeStampCounter"),
            Self::Custom(clock) => clock.fmt(f),
        }
    }
}
