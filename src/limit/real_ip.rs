//! Who the client is behind proxies: the socket's peer, unless that peer
//! is a proxy the server trusts, in which case the address the proxy
//! forwarded (nginx's `set_real_ip_from`, `real_ip_header` and
//! `real_ip_recursive on`). Forwarded headers from anyone else are ignored,
//! so a client cannot spoof its way past its limit.

use std::net::{IpAddr, SocketAddr};

use super::IpList;

/// The header a trusted proxy puts the client's address in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:443"`.
    Forwarded,
    /// `X-Real-IP: client`.
    XRealIp,
}

/// The proxies whose forwarded headers are believed.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::{ForwardedHeader, IpList, TrustedProxies};
/// use std::net::IpAddr;
///
/// let proxies = TrustedProxies::new(IpList::parse(["10.0.0.0/8"])?, ForwardedHeader::XForwardedFor);
/// let lb: IpAddr = "10.0.0.5".parse()?;
/// let stranger: IpAddr = "198.51.100.9".parse()?;
/// // Through two trusted proxies: the first untrusted address from the right.
/// assert_eq!(proxies.client(lb, ["203.0.113.7, 10.1.1.1"]), "203.0.113.7".parse::<IpAddr>()?);
/// // A client that writes the header itself is still itself.
/// assert_eq!(proxies.client(stranger, ["1.2.3.4"]), stranger);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct TrustedProxies {
    proxies: IpList,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Believes `header` from peers in `proxies`.
    pub fn new(proxies: IpList, header: ForwardedHeader) -> Self {
        Self { proxies, header }
    }

    /// The header to read.
    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    /// The client's address, from the connection's `peer` and the values
    /// of the configured header in the order received (several header
    /// lines count as one list). From a peer not trusted: the peer. From a
    /// trusted one: the list walked from the right past trusted addresses;
    /// the first untrusted address is the client, or the last address
    /// before an entry that is not one (`unknown`, an obfuscated name), or
    /// the leftmost when all are trusted. Allocates nothing.
    pub fn client<'a, I>(&self, peer: IpAddr, values: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: DoubleEndedIterator,
    {
        if !self.proxies.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let entries = values.into_iter().rev().flat_map(|value| value.rsplit(','));
        for entry in entries {
            let parsed = match self.header {
                ForwardedHeader::XForwardedFor | ForwardedHeader::XRealIp => address(entry),
                ForwardedHeader::Forwarded => forwarded_for(entry).and_then(address),
            };
            let Some(address) = parsed else {
                return client;
            };
            client = address;
            if !self.proxies.contains(address) || self.header == ForwardedHeader::XRealIp {
                return client;
            }
        }
        client
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:443`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`, maybe quoted.
fn address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse().ok())
}

/// The `for=` value of one RFC 7239 element (`for=1.2.3.4;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })
}
