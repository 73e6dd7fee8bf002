//! How much a keyed limiter may hold, stated by the user and never
//! exceeded: the table is allocated once, at build, and never grows.

use std::fmt;

/// The memory a keyed limiter may use, in bytes or in keys.
///
/// Either way the limiter allocates its whole table when it is built and
/// never more (nginx's `zone=name:10m`): the cap is also the footprint.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::{Capacity, KeyedRateLimiter, Quota};
///
/// let limiter = KeyedRateLimiter::<u32>::new(Quota::per_second(10)?, Capacity::Bytes(16 << 20))?;
/// assert!(limiter.stats().memory <= 16 << 20);
/// assert!(limiter.stats().capacity >= 1_000_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Capacity {
    /// At most this many bytes, the limiter's own struct and clock
    /// included.
    Bytes(usize),
    /// Room for this many keys, rounded up to a whole set of 8.
    Entries(usize),
}

impl Capacity {
    /// Sets of `set_bytes` each that fit, after `overhead` bytes.
    pub(crate) fn sets(
        self,
        set_bytes: usize,
        ways: usize,
        overhead: usize,
    ) -> Result<usize, CapacityError> {
        let sets = match self {
            Self::Bytes(bytes) => bytes.saturating_sub(overhead) / set_bytes,
            Self::Entries(entries) => entries.div_ceil(ways),
        };
        if sets == 0 {
            return Err(CapacityError::TooSmall {
                least: overhead + set_bytes,
            });
        }
        if sets
            .checked_mul(set_bytes)
            .is_none_or(|bytes| bytes > isize::MAX as usize)
        {
            return Err(CapacityError::OutOfMemory);
        }
        Ok(sets)
    }
}

/// Why a keyed limiter could not be built with the capacity asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityError {
    /// Not even one set of 8 keys fits.
    TooSmall {
        /// The fewest bytes that hold one set.
        least: usize,
    },
    /// The system could not allocate the table.
    OutOfMemory,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooSmall { least } => write!(f, "a keyed limiter needs at least {least} bytes"),
            Self::OutOfMemory => f.write_str("the keyed limiter's table could not be allocated"),
        }
    }
}

impl std::error::Error for CapacityError {}
