//! The table of a balancer's backends: each value beside its record, the
//! guards a pick hands out, and the figures a monitor reads.
//!
//! - `weights`: the caller's weights, validated (one to [`MAX_BACKENDS`]
//!   backends, each weight at least 1, their sum within `u32`);
//! - `entry`: one backend as its guards hold it, value and record; the
//!   `Arc` around it is its active count;
//! - `guard`: [`Guard`], one picked backend, counted until dropped;
//! - `backends`: [`Backends`], the entries of one balancer (or one
//!   snapshot of a live one) in order, and how a pick makes a guard;
//! - `stats`: [`BackendStats`], one backend's counters and state;
//! - `probe`: [`Probe`], a probe a probing balancer asks for, and its
//!   answer.

mod backends;
pub(crate) mod entry;
mod guard;
mod probe;
mod stats;
mod weights;

pub use backends::Backends;
pub(crate) use backends::ScanActives;
pub use guard::Guard;
pub use probe::Probe;
pub use stats::{BackendState, BackendStats};
pub use weights::MAX_BACKENDS;
pub(crate) use weights::{Weights, check_len};
