//! Time as the crate reads it: a [`Clock`] (the system's, or a manual one
//! for tests) and [`Nanos`], the one conversion between `Duration` and the
//! whole nanoseconds every rule computes in.

mod clock;
mod nanos;

pub use clock::{Clock, ManualClock, SystemClock};
pub(crate) use nanos::Nanos;
