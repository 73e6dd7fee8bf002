//! What a request offers the balancer to decide with.

use std::net::IpAddr;

use super::Tried;

/// What a request offers the balancer: nothing, a client address, or a
/// caller-chosen key, and optionally the backends it already tried. Cheap to
/// build and `Copy`; algorithms that do not hash ignore the address and key.
///
/// # Examples
///
/// ```
/// use loadbalance::Context;
/// use std::net::{IpAddr, Ipv4Addr};
///
/// let none = Context::new();
/// let client = Context::from_addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
/// let session = Context::from_key(b"session-42");
/// assert!(none.addr().is_none() && client.addr().is_some() && session.key().is_some());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context<'a> {
    affinity: Affinity<'a>,
    tried: Option<&'a Tried>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Affinity<'a> {
    #[default]
    None,
    Addr(IpAddr),
    Key(&'a [u8]),
}

impl<'a> Context<'a> {
    /// A context with nothing in it, for algorithms that need nothing.
    #[inline]
    pub const fn new() -> Self {
        Self {
            affinity: Affinity::None,
            tried: None,
        }
    }

    /// A context carrying the client's address, for source-IP hashing.
    #[inline]
    pub const fn from_addr(addr: IpAddr) -> Self {
        Self {
            affinity: Affinity::Addr(addr),
            tried: None,
        }
    }

    /// A context carrying a caller-chosen key (a session id, a user id, a
    /// URL), for key hashing.
    #[inline]
    pub const fn from_key(key: &'a [u8]) -> Self {
        Self {
            affinity: Affinity::Key(key),
            tried: None,
        }
    }

    /// The client address, if this context carries one.
    #[inline]
    pub const fn addr(&self) -> Option<IpAddr> {
        match self.affinity {
            Affinity::Addr(addr) => Some(addr),
            _ => None,
        }
    }

    /// The key, if this context carries one.
    #[inline]
    pub const fn key(&self) -> Option<&'a [u8]> {
        match self.affinity {
            Affinity::Key(key) => Some(key),
            _ => None,
        }
    }
}

impl<'a> Context<'a> {
    /// The same context, skipping the backends in `tried` (a retry).
    #[inline]
    pub const fn with_tried(mut self, tried: &'a Tried) -> Self {
        self.tried = Some(tried);
        self
    }

    /// The tried set, if this pick is a retry that skips one.
    #[inline]
    pub const fn tried(&self) -> Option<&'a Tried> {
        self.tried
    }

    /// Whether this pick has nothing to skip: no tried set, or an empty one.
    #[inline]
    pub(crate) fn skips_nothing(&self) -> bool {
        match self.tried {
            None => true,
            Some(tried) => tried.is_empty(),
        }
    }
}

impl From<IpAddr> for Context<'_> {
    fn from(addr: IpAddr) -> Self {
        Self::from_addr(addr)
    }
}

/// A client address as every rule counts it: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) is the IPv4 client it maps.
#[inline]
pub(crate) fn normalise(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}
