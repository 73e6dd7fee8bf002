//! Who a client is, for per-client limits: its address, with IPv6
//! addresses grouped by prefix (a /64 by default, the allocation one site
//! gets) so that rotating through one's own addresses does not multiply a
//! budget, and an IPv4-mapped IPv6 address counted as its IPv4 address.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// How client addresses group into keys.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::ClientGrouping;
/// use std::net::IpAddr;
///
/// let grouping = ClientGrouping::default();
/// let a: IpAddr = "2001:db8:1:2::1".parse()?;
/// let b: IpAddr = "2001:db8:1:2:ffff::9".parse()?;
/// assert_eq!(grouping.key(a), grouping.key(b));
/// let mapped: IpAddr = "::ffff:192.0.2.7".parse()?;
/// let plain: IpAddr = "192.0.2.7".parse()?;
/// assert_eq!(grouping.key(mapped), grouping.key(plain));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientGrouping {
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl Default for ClientGrouping {
    /// Each IPv4 address alone, IPv6 addresses by /64.
    fn default() -> Self {
        Self {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

impl ClientGrouping {
    /// IPv4 clients grouped by their first `bits` bits (32: each address
    /// alone; 24: nginx's `ip_hash` grouping).
    ///
    /// # Errors
    ///
    /// [`GroupingError`] past 32.
    pub fn ipv4_prefix(mut self, bits: u8) -> Result<Self, GroupingError> {
        if bits > 32 {
            return Err(GroupingError { bits, most: 32 });
        }
        self.ipv4_prefix = bits;
        Ok(self)
    }

    /// IPv6 clients grouped by their first `bits` bits (64 by default; 56
    /// or 48 for providers that hand out larger blocks).
    ///
    /// # Errors
    ///
    /// [`GroupingError`] past 128.
    pub fn ipv6_prefix(mut self, bits: u8) -> Result<Self, GroupingError> {
        if bits > 128 {
            return Err(GroupingError { bits, most: 128 });
        }
        self.ipv6_prefix = bits;
        Ok(self)
    }

    /// The key of the group `ip` belongs to.
    #[inline]
    pub fn key(&self, ip: IpAddr) -> ClientKey {
        let (bits, prefix) = match ip.to_canonical() {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().to_bits(), 96 + self.ipv4_prefix),
            IpAddr::V6(v6) => (v6.to_bits(), self.ipv6_prefix),
        };
        let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
        ClientKey {
            bits: bits & mask,
            prefix,
        }
    }
}

/// A group of client addresses that shares one budget: the network the
/// client's address falls in. `Display` shows it as `192.0.2.7` or
/// `2001:db8:1:2::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    /// The network in IPv6 form (IPv4 as mapped), host bits zero.
    bits: u128,
    /// Its prefix in IPv6 bits (96 + the IPv4 prefix for IPv4).
    prefix: u8,
}

impl ClientKey {
    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        Ipv6Addr::from_bits(self.bits).to_canonical()
    }

    /// The network's prefix length, in the address family's bits.
    pub fn prefix_len(&self) -> u8 {
        match self.addr() {
            IpAddr::V4(_) => self.prefix - 96,
            IpAddr::V6(_) => self.prefix,
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr();
        let full = if addr.is_ipv4() { 32 } else { 128 };
        if self.prefix_len() == full {
            addr.fmt(f)
        } else {
            write!(f, "{addr}/{}", self.prefix_len())
        }
    }
}

/// A grouping prefix longer than the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupingError {
    /// The prefix asked for.
    pub bits: u8,
    /// The address family's length.
    pub most: u8,
}

impl fmt::Display for GroupingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a /{} prefix is longer than the {}-bit address",
            self.bits, self.most
        )
    }
}

impl std::error::Error for GroupingError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(grouping: ClientGrouping, ip: &str) -> ClientKey {
        grouping.key(ip.parse().expect("an address"))
    }

    #[test]
    fn groups_by_prefix_and_shows_the_network() {
        let g = ClientGrouping::default();
        assert_eq!(key(g, "10.1.2.3").to_string(), "10.1.2.3");
        assert_ne!(key(g, "10.1.2.3"), key(g, "10.1.2.4"));
        assert_eq!(key(g, "2001:db8::1").to_string(), "2001:db8::/64");
        assert_ne!(key(g, "2001:db8:0:1::1"), key(g, "2001:db8::1"));
        // An IPv6 address is never an IPv4 client (outside the mapped range).
        assert_ne!(key(g, "::a01:203"), key(g, "10.1.2.3"));
        let wide = g
            .ipv4_prefix(24)
            .and_then(|g| g.ipv6_prefix(0))
            .expect("valid");
        assert_eq!(key(wide, "10.1.2.3"), key(wide, "::ffff:10.1.2.200"));
        assert_eq!(key(wide, "10.1.2.3").to_string(), "10.1.2.0/24");
        assert_eq!(key(wide, "2001:db8::1"), key(wide, "fe80::1"));
        assert_eq!(key(wide, "fe80::1").to_string(), "::/0");
        let exact = g.ipv6_prefix(128).expect("valid");
        assert_eq!(key(exact, "2001:db8::1").to_string(), "2001:db8::1");
        let none = g.ipv4_prefix(0).expect("valid");
        assert_eq!(key(none, "1.2.3.4"), key(none, "200.1.1.1"));
        assert_eq!(g.ipv4_prefix(33), Err(GroupingError { bits: 33, most: 32 }));
        assert_eq!(
            g.ipv6_prefix(129),
            Err(GroupingError {
                bits: 129,
                most: 128
            })
        );
    }
}
