//! Flow control: how much traffic gets in (tower's `limit/` is the
//! model). A [`RateLimiter`] holds one [`Quota`] on one atomic word
//! (GCRA), exact in integer nanoseconds, and answers each check with what
//! remains or the `Retry-After`.

mod concurrency;
mod gcra;
mod quota;

pub use concurrency::{AtCapacity, ConcurrencyLimit, Permit};
pub use gcra::{Allowed, CheckNError, Denied, RateLimiter};
pub use quota::{Quota, QuotaError};
