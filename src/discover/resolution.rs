//! What a name resolved to: backends' addresses with their weights and
//! roles, and how long the answer holds.

use std::net::SocketAddr;
use std::time::Duration;

/// Most backends one name yields; records past it are left out, so a huge
/// answer cannot grow a pool without bound.
pub const MAX_ENDPOINTS: usize = 256;

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
/// (its first record kept), at most [`MAX_ENDPOINTS`]; and the time to
/// live of the shortest record that gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    endpoints: Vec<Endpoint>,
    ttl: Duration,
}

impl Resolution {
    /// An answer of `endpoints`, valid for `ttl`: ordered, each address
    /// once, at most [`MAX_ENDPOINTS`].
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>, ttl: Duration) -> Self {
        let mut kept: Vec<Endpoint> = Vec::new();
        for endpoint in endpoints {
            if !kept.iter().any(|seen| seen.addr == endpoint.addr) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_ordered_each_address_once_and_bounded() {
        let at = |last: u16, port| SocketAddr::from(([10, 0, (last >> 8) as u8, last as u8], port));
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
    }
}
