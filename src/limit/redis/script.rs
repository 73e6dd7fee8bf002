//! The GCRA as one Lua script, run with EVALSHA: Redis's own `TIME` (no
//! instance's clock matters), one round trip a check, and the key written
//! with its expiry in the same `SET ... PX` (no key ever exists without a
//! TTL: it expires when its bucket has refilled, when it carries nothing).
//!
//! Times are whole microseconds, Redis's `TIME` resolution; Lua's numbers
//! are doubles, exact to 2^53, and a microsecond clock since 1970 plus the
//! longest tolerance a quota allows (2^62 ns, 4.6 × 10^15 µs) stays under
//! it (6.4 × 10^15 µs until the year 2170).
//!
//! One call decides for one key or for many (a batch of concurrent
//! checks: one script run instead of one per key). Arguments: the interval
//! and the tolerance (burst × interval) in µs, then per key the requests
//! wanted and whether fewer will do (a lease). Reply per key: `{granted,
//! remaining}` when at least one is granted, `{0, retry_after_us}` when
//! none is.

/// The script's source.
pub(super) const GCRA: &str = include_str!("gcra.lua");
/// What the script answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// `granted` requests (at least one), `remaining` more would fit now.
    Granted { granted: u64, remaining: u64 },
    /// None: the first would fit in this many µs.
    Denied { retry_after_us: u64 },
}

impl Reply {
    /// The reply from the script's two integers.
    pub(super) fn from_pair(pair: (i64, i64)) -> Self {
        let (granted, other) = pair;
        let other = u64::try_from(other).unwrap_or(0);
        match u64::try_from(granted) {
            Ok(granted) if granted > 0 => Self::Granted {
                granted,
                remaining: other,
            },
            _ => Self::Denied {
                retry_after_us: other.max(1),
            },
        }
    }
}
