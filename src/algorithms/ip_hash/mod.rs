//! Source-IP (or key) hashing, consistent: the same client always reaches
//! the same backend, and taking a backend away moves only its own clients.
//!
//! A client's address (an IPv4-mapped IPv6 address counts as its IPv4
//! address) or key is hashed with keyed SipHash-1-3 into a table of
//! `2^bits` slots, each owned by its weighted-rendezvous winner (see
//! [`HashOptions`]). A pick is one hash and one table read, whatever the
//! number of backends. Backends are told apart by their value's `Hash`, not
//! their position, so removing one from the list and rebuilding keeps every
//! other backend's clients where they were.

mod slot_hash;
mod slot_table;

use std::fmt;

pub use slot_hash::SlotHash;

use crate::pick::{LockFree, Locked, Static};

/// Options of the hashing balancers.
///
/// Instances that should agree (all replicas of a proxy) must use the same
/// options, backends and weights.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::IpHash, HashOptions};
///
/// let options = HashOptions::default()
///     .key(*b"operator secret!")
///     .table_bits(20)
///     .ipv4_prefix_24(true);
/// let lb = IpHash::with_options([("a", 1), ("b", 3)], options)?;
/// # drop(lb);
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HashOptions {
    pub(super) key: [u8; 16],
    pub(super) table_bits: u8,
    pub(super) ipv4_prefix_24: bool,
    pub(super) bounded_load: Option<u32>,
}

impl HashOptions {
    /// Smallest accepted `table_bits`.
    pub const MIN_TABLE_BITS: u8 = 8;
    /// Largest accepted `table_bits` (a 32 MiB table).
    pub const MAX_TABLE_BITS: u8 = 24;
    /// The default hash key. Public on purpose: set your own with
    /// [`key`](Self::key) if clients must not be able to predict where
    /// they land.
    pub const DEFAULT_KEY: [u8; 16] = *b"loadbalance-v1\0\0";

    /// The SipHash key. Changing it moves almost every client.
    #[must_use]
    pub fn key(mut self, key: [u8; 16]) -> Self {
        self.key = key;
        self
    }

    /// Log2 of the number of slots (default 16: 65,536 slots, 128 KiB). A
    /// backend's share of clients is its share of slots, so more slots a
    /// backend spread shares closer to the weights: with `s` slots per
    /// backend the share varies by about `1/sqrt(s)`. The table size does
    /// not follow the number of backends, on purpose: a different size moves
    /// clients, so keep it fixed for a deployment.
    ///
    /// Building the table costs about 21 ms at 16 bits, 0.35 s at 20 bits
    /// and 5.5 s at 24 bits (up to 1,024 backends, one core of the 2-core
    /// test machine; `cargo bench --bench pick -- build/`). A
    /// [`Live`](crate::Live) hashing balancer builds it again on every
    /// `add`, `remove` and `set_weight` (19 to 23 ms at the default size),
    /// never on a change of state, limit or role.
    #[must_use]
    pub fn table_bits(mut self, bits: u8) -> Self {
        self.table_bits = bits;
        self
    }

    /// Hash only the first three octets of an IPv4 address, as nginx's
    /// `ip_hash` does, so a /24 of clients shares a backend.
    #[must_use]
    pub fn ipv4_prefix_24(mut self, on: bool) -> Self {
        self.ipv4_prefix_24 = on;
        self
    }

    /// Bounded loads with a factor of `percent` (above 100; HAProxy's
    /// `hash-balance-factor`, where 125 is a fair choice): a client goes to
    /// its own backend unless that one holds its weight's share of
    /// `percent`% of the mean, then to the next backend in the client's own
    /// fixed order (the slots its hash probes next), and back as soon as
    /// its own is under that again. Each overflow counts in the home
    /// backend's [`BackendStats::overflows`](crate::BackendStats::overflows).
    /// Without it (the default) a pick is the plain hash.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::{lockfree::IpHash, Balancer, Context, HashOptions};
    ///
    /// let options = HashOptions::default().bounded_load(125);
    /// let lb = IpHash::with_options([("a", 1), ("b", 1), ("c", 1), ("d", 1)], options)?;
    /// // One very busy client: its backend fills to its cap, then it spills.
    /// let ctx = Context::from_key(b"hot-client");
    /// let held: Vec<_> = (0..40).map(|_| lb.pick(&ctx)).collect::<Result<_, _>>()?;
    /// let home = held[0].index();
    /// // Each backend holds at most ceil(1.25 * 40 / 4) = 13.
    /// assert!((0..4).all(|i| lb.active(i).unwrap() <= 13));
    /// assert!(lb.stats()[home].overflows > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn bounded_load(mut self, percent: u32) -> Self {
        self.bounded_load = Some(percent);
        self
    }
}

/// The key is secret material: `Debug` says only whether it is the public
/// default.
impl fmt::Debug for HashOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key == Self::DEFAULT_KEY {
            "default"
        } else {
            "set (not shown)"
        };
        f.debug_struct("HashOptions")
            .field("key", &key)
            .field("table_bits", &self.table_bits)
            .field("ipv4_prefix_24", &self.ipv4_prefix_24)
            .field("bounded_load", &self.bounded_load)
            .finish()
    }
}

impl Default for HashOptions {
    fn default() -> Self {
        Self {
            key: Self::DEFAULT_KEY,
            table_bits: 16,
            ipv4_prefix_24: false,
            bounded_load: None,
        }
    }
}

/// Lock-free source-IP or key hash: a SipHash and a table read a pick,
/// no shared writes but the guard's count.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::IpHash, Balancer, Context};
/// use std::net::IpAddr;
///
/// let lb = IpHash::new(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])?;
/// let client: IpAddr = "198.51.100.23".parse()?;
/// let first = lb.pick(&Context::from_addr(client))?.index();
/// assert_eq!(lb.pick(&Context::from_addr(client))?.index(), first);
/// // The same client over IPv6 as an IPv4-mapped address:
/// let mapped: IpAddr = "::ffff:198.51.100.23".parse()?;
/// assert_eq!(lb.pick(&mapped.into())?.index(), first);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type IpHash<T> = Static<T, LockFree<SlotHash>>;

/// Mutex-backed source-IP or key hash: the same table behind a
/// mutex, for comparison and uniformity.
///
/// # Examples
///
/// ```
/// use loadbalance::{locked, lockfree, Balancer, Context};
///
/// let a = locked::IpHash::new(["x", "y", "z"])?;
/// let b = lockfree::IpHash::new(["x", "y", "z"])?;
/// let ctx = Context::from_key(b"user-1234");
/// assert_eq!(a.pick(&ctx)?.index(), b.pick(&ctx)?.index());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LockedIpHash<T> = Static<T, Locked<SlotHash>>;
