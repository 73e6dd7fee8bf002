//! nginx's `ip_hash` (`ngx_http_upstream_ip_hash_module.c`), bit for bit.
//!
//! The hash starts at 89 and runs `hash = (hash * 113 + byte) % 6271` over
//! the first three octets of an IPv4 address or all sixteen bytes of an
//! IPv6 one; the backend is the one whose share of `0..total_weight` holds
//! `hash % total_weight`. When it cannot take the pick, the hash runs over
//! the same bytes again from where it stopped, and so on (see
//! [`IpWalk`]). A `down` backend keeps its share, so only its own clients
//! move; removing a backend changes `total_weight`, which moves about half
//! of all clients (measured in `tests/algorithms/nginx_hash.rs`).
//!
//! An IPv4-mapped IPv6 address counts as its IPv4 address. nginx hashes
//! the sockaddr it accepted: a `listen [::]` socket is IPv6-only by
//! default (since nginx 1.3.4), so IPv4 clients reach nginx as `AF_INET`
//! and hash by three octets, as here. Behind a dual-stack socket
//! (`ipv6only=off`) nginx would hash the sixteen bytes of `::ffff:a.b.c.d`
//! instead.

use std::net::IpAddr;

use super::{ByWeight, Retry, first, walk_bounded};
use crate::algorithms::bounded_load::Bound;
use crate::algorithms::choose_through_ref;
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, LockFree, Locked, Set, Static, normalise};
use crate::table::Backends;

/// Options of the nginx `ip_hash` balancers.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::NginxIpHash, NginxIpHashOptions};
///
/// let options = NginxIpHashOptions::default().bounded_load(125);
/// let lb = NginxIpHash::with_options([("10.0.0.1:80", 1), ("10.0.0.2:80", 1)], options)?;
/// # drop(lb);
/// # Ok::<(), loadbalance::BuildError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NginxIpHashOptions {
    bounded_load: Option<u32>,
}

impl NginxIpHashOptions {
    /// Bounded loads with a factor of `percent` (above 100), as
    /// [`HashOptions::bounded_load`](crate::HashOptions::bounded_load): a
    /// client over capacity goes to the next backend of nginx's own walk
    /// for it. nginx has no such option: while nothing overflows the map is
    /// nginx's.
    #[must_use]
    pub fn bounded_load(mut self, percent: u32) -> Self {
        self.bounded_load = Some(percent);
        self
    }
}

/// Lock-free nginx `ip_hash`: the same backend for a client as nginx
/// would choose, with the same weights and order. Nothing shared is
/// written but the guard's count.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::NginxIpHash, Balancer, Context};
/// use std::net::IpAddr;
///
/// let lb = NginxIpHash::weighted([("10.0.0.1:80", 1), ("10.0.0.2:80", 2), ("10.0.0.3:80", 3)])?;
/// // nginx: hash = 89, then (hash * 113 + octet) % 6271 over 192, 0, 2:
/// // 3978, 4273, 6255; 6255 % 6 = 3, the third backend's share (3..6).
/// let client: IpAddr = "192.0.2.77".parse()?;
/// assert_eq!(*lb.pick(&Context::from_addr(client))?, "10.0.0.3:80");
/// // The last octet does not count: the whole /24 goes there.
/// let neighbour: IpAddr = "192.0.2.1".parse()?;
/// assert_eq!(*lb.pick(&Context::from_addr(neighbour))?, "10.0.0.3:80");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type NginxIpHash<T> = Static<T, LockFree<NginxIpTable>>;

/// Mutex-backed nginx `ip_hash`: the same choice behind a
/// mutex, for uniformity with the other algorithms.
///
/// # Examples
///
/// ```
/// use loadbalance::{locked, lockfree, Balancer, Context};
/// use std::net::IpAddr;
///
/// let a = locked::NginxIpHash::new(["x", "y", "z"])?;
/// let b = lockfree::NginxIpHash::new(["x", "y", "z"])?;
/// let client = Context::from_addr("2001:db8::7".parse::<IpAddr>()?);
/// assert_eq!(a.pick(&client)?.index(), b.pick(&client)?.index());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LockedNginxIpHash<T> = Static<T, Locked<NginxIpTable>>;

/// nginx's `ip_hash` state (both forms): the weights as nginx reads them,
/// and the capacity rule.
#[derive(Debug)]
pub struct NginxIpTable {
    by_weight: ByWeight,
    bound: Option<Bound>,
}

impl<T> Build<T> for NginxIpTable {
    type Options = NginxIpHashOptions;

    fn build(set: &Set<'_, T>, options: &NginxIpHashOptions) -> Result<Self, BuildError> {
        let weights = set.validated();
        Ok(Self {
            by_weight: ByWeight::new(weights),
            bound: Bound::new(options.bounded_load, weights)?,
        })
    }

    fn counts_total(&self) -> bool {
        self.bound.is_some()
    }
}

/// One client's candidates in nginx's order: each step runs the hash over
/// the address bytes once more, from where the last step left it.
#[derive(Clone, Debug)]
pub(crate) struct IpWalk<'a> {
    by_weight: &'a ByWeight,
    bytes: [u8; 16],
    len: usize,
    hash: u32,
}

impl<'a> IpWalk<'a> {
    /// The walk for the client of `ctx`; `MissingKey` without an address
    /// (nginx's `ip_hash` reads only the connection's address).
    #[inline]
    pub(crate) fn new(by_weight: &'a ByWeight, ctx: &Context<'_>) -> Result<Self, PickError> {
        let addr = ctx.addr().ok_or(PickError::MissingKey)?;
        let mut bytes = [0u8; 16];
        let len = match normalise(addr) {
            IpAddr::V4(v4) => {
                bytes[..4].copy_from_slice(&v4.octets());
                3
            }
            IpAddr::V6(v6) => {
                bytes = v6.octets();
                16
            }
        };
        Ok(Self {
            by_weight,
            bytes,
            len,
            hash: 89,
        })
    }
}

impl Iterator for IpWalk<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        for &byte in &self.bytes[..self.len] {
            self.hash = (self.hash * 113 + u32::from(byte)) % 6271;
        }
        Some(self.by_weight.backend(self.hash % self.by_weight.total()))
    }
}

impl Choose for &NginxIpTable {
    #[inline]
    fn plain<T>(
        &mut self,
        ctx: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        let candidates = IpWalk::new(&self.by_weight, ctx)?;
        Ok(Some(first(
            self.bound.as_ref(),
            candidates,
            self.by_weight.len(),
            backends,
        )))
    }

    fn choose<T>(
        &mut self,
        ctx: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        walk_bounded(
            self.bound.as_ref(),
            IpWalk::new(&self.by_weight, ctx)?,
            self.by_weight.len(),
            Retry::Continues,
            candidates,
        )
    }
}

choose_through_ref!(NginxIpTable);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Weights;

    /// The hash values nginx computes, by hand from the C source.
    #[test]
    fn hash_arithmetic_is_nginx() {
        let weights = Weights::new(vec![1, 2, 3]).expect("valid");
        let by_weight = ByWeight::new(&weights);
        let ctx = Context::from_addr(IpAddr::from([192, 0, 2, 77]));
        let mut walk = IpWalk::new(&by_weight, &ctx).expect("an address");
        let mut hash = 89u32;
        for _ in 0..25 {
            for byte in [192u32, 0, 2] {
                hash = (hash * 113 + byte) % 6271;
            }
            let mut w = hash % 6;
            let mut p = 0;
            while w >= weights.as_slice()[p] {
                w -= weights.as_slice()[p];
                p += 1;
            }
            assert_eq!(walk.next(), Some(p));
        }
        // The first step, spelt out: 89 -> 3978 -> 4273 -> 6255, and
        // 6255 % 6 = 3 falls in the third backend's share (3..6).
        let mut walk = IpWalk::new(&by_weight, &ctx).expect("an address");
        assert_eq!(walk.hash, 89);
        assert_eq!(walk.next(), Some(2));
        assert_eq!(walk.hash, 6255);
    }

    #[test]
    fn a_key_is_not_an_address() {
        let by_weight = ByWeight::new(&Weights::new(vec![1; 3]).expect("valid"));
        assert_eq!(
            IpWalk::new(&by_weight, &Context::from_key(b"k")).err(),
            Some(PickError::MissingKey)
        );
    }
}
