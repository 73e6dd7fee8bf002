//! What a name resolved to: backends' addresses with their weights and
//! roles, and how long the answer holds.

use std::net::SocketAddr;
use std::time::Duration;

/// Most backends one name yields; records past it are left out, so a huge
/// answer cannot grow a pool without bound.
pub const MAX_ENDPOINTS: usize = 256;

/// Most records one answer is read for (repeats and unusable addresses
/// included), so an endless answer from a resolver of one's own ends.
const MAX_READ: usize = 16 * MAX_ENDPOINTS;

/// One backend a name resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Its address and port.
    pub addr: SocketAddr,
    /// Its weight: 1 for a host's address, the SRV record's weight (0
    /// taken as 1, the pool's least) for a service.
    pub weight: u32,
    /// A backup: an SRV record of a priority other than the lowest.
    pub backup: bool,
}

impl Endpoint {
    /// A primary of weight 1 at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            weight: 1,
            backup: false,
        }
    }
}

/// A name's answer: its backends, ordered by address, each address once
/// (its first record kept), at most [`MAX_ENDPOINTS`], none that cannot
/// be a backend (an unspecified address such as `0.0.0.0`, which Linux
/// connects to this host, a multicast or broadcast address, port 0); and
/// the time to live of the shortest record that gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    endpoints: Vec<Endpoint>,
    ttl: Duration,
}

impl Resolution {
    /// An answer of `endpoints`, valid for `ttl`: ordered, each usable
    /// address once, at most [`MAX_ENDPOINTS`].
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>, ttl: Duration) -> Self {
        let mut kept: Vec<Endpoint> = Vec::new();
        for endpoint in endpoints.into_iter().take(MAX_READ) {
            if usable(endpoint.addr) && !kept.iter().any(|seen| seen.addr == endpoint.addr) {
                kept.push(endpoint);
            }
            if kept.len() == MAX_ENDPOINTS {
                break;
            }
        }
        kept.sort_by_key(|endpoint| endpoint.addr);
        Self {
            endpoints: kept,
            ttl,
        }
    }

    /// The backends.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// How long the answer holds.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// An address a connection to a backend can go to.
fn usable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = match ip {
        std::net::IpAddr::V4(v4) => v4.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    };
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(last: u16, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, (last >> 8) as u8, last as u8], port))
    }

    #[test]
    fn an_answer_is_ordered_each_address_once_and_bounded() {
        let first = Endpoint {
            addr: at(2, 80),
            weight: 5,
            backup: false,
        };
        let again = Endpoint {
            addr: at(2, 80),
            weight: 1,
            backup: true,
        };
        let answer = Resolution::new(
            [first, Endpoint::new(at(1, 80)), again],
            Duration::from_secs(3),
        );
        assert_eq!(answer.endpoints(), [Endpoint::new(at(1, 80)), first]);
        assert_eq!(answer.ttl(), Duration::from_secs(3));
        let huge = Resolution::new((0..1_000).map(|i| Endpoint::new(at(i, 80))), Duration::ZERO);
        assert_eq!(huge.endpoints().len(), MAX_ENDPOINTS);
        let endless = Resolution::new(std::iter::repeat(Endpoint::new(at(1, 80))), Duration::ZERO);
        assert_eq!(endless.endpoints().len(), 1);
    }

    #[test]
    fn addresses_that_cannot_be_backends_are_left_out() {
        let unusable = [
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "[ff02::1]:80",
            "255.255.255.255:80",
            "10.0.0.1:0",
        ];
        let endpoints = unusable
            .iter()
            .map(|text| Endpoint::new(text.parse().expect("an address")))
            .chain([Endpoint::new(at(1, 80))]);
        let answer = Resolution::new(endpoints, Duration::ZERO);
        assert_eq!(answer.endpoints(), [Endpoint::new(at(1, 80))]);
    }
}
