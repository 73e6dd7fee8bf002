//! Flow control: how much traffic gets in (tower's `limit/` is the
//! model). A [`RateLimiter`] holds one [`Quota`] on one atomic word
//! (GCRA), exact in integer nanoseconds, and answers each check with what
//! remains or the `Retry-After`. A [`KeyedRateLimiter`] holds one per key
//! (per [`ClientKey`], grouped by [`ClientGrouping`]) in memory bounded by
//! a [`Capacity`].

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
mod table;
mod time;

pub use ban::{BanRule, BanRuleError, BanStats, Bans, Strike};
pub use capacity::{Capacity, CapacityError};
pub use cidr::{CidrError, IpList, IpNet};
pub use client::{ClientGrouping, ClientKey, GroupingError};
pub use concurrency::{AtCapacity, ConcurrencyLimit, Permit};
pub use flow::{Admission, FlowControl, FlowControlBuilder, Reason, Rejection, DEFAULT_CAPACITY};
pub use gcra::{Allowed, CheckNError, Denied, RateLimiter};
pub use keyed::{KeyedRateLimiter, KeyedStats};
pub use keyed_concurrency::{
    KeyedConcurrencyError, KeyedConcurrencyLimit, KeyedConcurrencyStats, KeyedPermit,
};
pub use quota::{Quota, QuotaError};
