//! Flow control: who gets in, how fast, how many at once (tower's
//! `limit/` is the model).
//!
//! - [`FlowControl`]: one decision per request, in this order: the deny
//!   list, the allow list ([`IpList`] of [`IpNet`]s), [`Bans`], the
//!   client's rate ([`KeyedRateLimiter`]), its requests in flight
//!   ([`KeyedConcurrencyLimit`]) and the server's ([`ConcurrencyLimit`]);
//!   an [`Admission`] holds the permits, a [`Rejection`] carries the
//!   [`Reason`], the HTTP status and the retry-after.
//! - [`RateLimiter`]: one [`Quota`] on one atomic word (GCRA), exact in
//!   integer nanoseconds.
//! - [`AdaptiveLimit`]: requests in flight under a limit that follows the
//!   backends' latency (the gradient of Envoy's adaptive concurrency),
//!   shedding the excess with [`Shed`] (503) before queues grow.
//! - Per-key parts keep their state in a table allocated once under a
//!   [`Capacity`], never exceeded; clients are keyed by [`ClientKey`],
//!   grouped by [`ClientGrouping`] (IPv6 by /64).
//!
//! Time is the CPU's time-stamp counter (quanta) unless a
//! [`Clock`](crate::Clock) is given: a `ManualClock` makes every decision
//! exact and repeatable in tests.

mod adaptive;
mod ban;
mod capacity;
mod cidr;
mod client;
mod concurrency;
mod flow;
mod gcra;
mod keyed;
mod keyed_concurrency;
mod quota;
mod real_ip;
#[cfg(feature = "redis")]
pub mod redis;
mod table;
mod time;

#[cfg(all(test, loom))]
mod loom_concurrency;
#[cfg(all(test, loom))]
mod loom_rate;

pub use adaptive::{
    AdaptiveLimit, AdaptiveOptions, AdaptiveOptionsError, AdaptivePermit, AdaptiveStats, Shed,
};
pub use ban::{BanRule, BanRuleError, BanStats, Bans, Strike};
pub use capacity::{Capacity, CapacityError};
pub use cidr::{CidrError, IpList, IpNet};
pub use client::{ClientGrouping, ClientKey, GroupingError};
pub use concurrency::{AtCapacity, ConcurrencyLimit, Permit};
#[cfg(feature = "redis")]
pub use flow::SharedLimits;
pub use flow::{Admission, DEFAULT_CAPACITY, FlowControl, FlowControlBuilder, Reason, Rejection};
pub use gcra::{Allowed, CheckNError, Denied, RateLimiter};
pub use keyed::{KeyedRateLimiter, KeyedStats};
pub use keyed_concurrency::{
    KeyedConcurrencyError, KeyedConcurrencyLimit, KeyedConcurrencyStats, KeyedPermit,
};
pub use quota::{Quota, QuotaError};
pub use real_ip::{ForwardedHeader, TrustedProxies, UnreadableForwarded};
