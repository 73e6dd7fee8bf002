//! Embeddable load balancing: exact algorithms, lock-free and mutex-backed,
//! with RAII connection guards.
//!
//! A server that already accepts connections builds a balancer over its
//! upstreams and calls [`Balancer::pick`] once per request or connection.
//! The answer is a [`Guard`] for one backend, counted as active until the
//! guard is dropped. Nothing here opens sockets.
//!
//! Every algorithm comes in two forms with the same constructors:
//! [`lockfree`] (atomics only, no lock and no allocation on the pick path)
//! and [`locked`] (the algorithm as a plain sequential state machine behind
//! a `parking_lot::Mutex`). [`docs`] explains the exact sequences and the
//! trade-off between the forms.
//!
//! # Examples
//!
//! ```
//! use loadbalance::{lockfree::WeightedRoundRobin, Balancer, Context};
//!
//! let lb = WeightedRoundRobin::new([("10.0.0.1:80", 5), ("10.0.0.2:80", 1), ("10.0.0.3:80", 1)])?;
//! let upstream = lb.pick(&Context::new())?; // counted as active until dropped
//! assert_eq!(*upstream, "10.0.0.1:80");
//! assert_eq!(lb.active(upstream.index()), Some(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]
#![forbid(unsafe_code)]

mod algorithms;
mod assemble;
mod backends;
mod balancer;
mod balancer_type;
mod clock;
mod clock_and_policy;
mod context;
pub mod docs;
mod driver;
mod error;
mod guard;
mod health;
mod live;
mod mutex_form;
mod peak_estimate;
mod pool;
mod record;
mod retire;
mod selection;
mod stats;
mod sync;
mod tried;
mod weights;

#[cfg(all(test, loom))]
mod loom_models;

pub use algorithms::ip_hash::HashOptions;
pub use algorithms::nginx::hash::NginxHashOptions;
pub use algorithms::nginx::ip_hash::NginxIpHashOptions;
pub use algorithms::random::least_conn::ChoiceOptions;
pub use algorithms::random::peak_ewma::PeakEwmaOptions;
pub use algorithms::random::RandomOptions;
pub use assemble::Assemble;
pub use backends::MAX_BACKENDS;
pub use balancer::Balancer;
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::Context;
pub use error::{BuildError, PickError, UpdateError};
pub use guard::Guard;
pub use health::{HealthPolicy, Outcome, WhenAllEjected};
pub use live::{AdminState, Backend, Live, LiveBuilder};
#[cfg(feature = "tower")]
pub use pool::tower;
#[cfg(feature = "metrics")]
pub use pool::PrometheusText;
pub use pool::{
    Algorithm, Form, ParseAlgorithmError, ParseFormError, Picked, Pool, PoolBackend, PoolBuilder,
    RetryBudget, RetryError, RetryPolicy, Verdict,
};
#[cfg(feature = "serde")]
pub use pool::{BackendConfig, ConfigError, HealthConfig, OptionsConfig, PoolConfig};
pub use stats::{BackendState, BackendStats};
pub use tried::Tried;

/// Lock-free balancers: atomics only, no lock and no allocation on the pick
/// path.
pub mod lockfree {
    pub use crate::algorithms::ip_hash::IpHash;
    pub use crate::algorithms::least_conn::LeastConn;
    pub use crate::algorithms::nginx::hash::NginxHash;
    pub use crate::algorithms::nginx::ip_hash::NginxIpHash;
    pub use crate::algorithms::random::least_conn::RandomLeastConn;
    pub use crate::algorithms::random::peak_ewma::PeakEwma;
    pub use crate::algorithms::random::Random;
    pub use crate::algorithms::round_robin::RoundRobin;
    pub use crate::algorithms::weighted_round_robin::WeightedRoundRobin;
}

/// Mutex-backed balancers: each algorithm as a sequential state machine
/// behind a `parking_lot::Mutex`. They are the reference the lock-free forms
/// are tested against, and they never let two concurrent picks see the same
/// least-loaded backend.
pub mod locked {
    pub use crate::algorithms::ip_hash::LockedIpHash as IpHash;
    pub use crate::algorithms::least_conn::LockedLeastConn as LeastConn;
    pub use crate::algorithms::nginx::hash::LockedNginxHash as NginxHash;
    pub use crate::algorithms::nginx::ip_hash::LockedNginxIpHash as NginxIpHash;
    pub use crate::algorithms::random::least_conn::LockedRandomLeastConn as RandomLeastConn;
    pub use crate::algorithms::random::peak_ewma::LockedPeakEwma as PeakEwma;
    pub use crate::algorithms::random::LockedRandom as Random;
    pub use crate::algorithms::round_robin::LockedRoundRobin as RoundRobin;
    pub use crate::algorithms::weighted_round_robin::LockedWeightedRoundRobin as WeightedRoundRobin;
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
