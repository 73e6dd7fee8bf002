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

    /// Whether `peer` is one of the trusted proxies, whose forwarding
    /// headers (and not only the one read here) may be passed on.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.proxies.contains(peer)
    }

    /// The client's address, from the connection's `peer` and the values
    /// of the configured header in the order received (several header
    /// lines count as one list). From a peer not trusted: the peer. From a
    /// trusted one: the list walked from the right past trusted addresses;
    /// the first untrusted address is the client, or the last address
    /// before an entry that is not one (`unknown`, an obfuscated name), or
    /// the leftmost when all are trusted. Allocates nothing.
    ///
    /// A server facing clients should prefer [`try_client`](Self::try_client):
    /// where this stops at an entry it cannot read, the client may come out
    /// as a trusted proxy's own address, to which no limit applies.
    pub fn client<'a, I>(&self, peer: IpAddr, values: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: DoubleEndedIterator,
    {
        let entries = values.into_iter().map(str::as_bytes);
        self.walk(peer, entries).unwrap_or_else(|last| last)
    }

    /// The client's address as [`client`](Self::client) finds it, from the
    /// header's raw bytes, failing closed: an entry walked (one a trusted
    /// proxy vouches for) that is not an address, or holds bytes that are
    /// not text, is an error rather than a stop, so a client cannot
    /// become its trusted proxy by sending a header no one can read.
    /// Entries left of the client are the client's own and not read.
    /// Allocates nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::{ForwardedHeader, IpList, TrustedProxies};
    /// use std::net::IpAddr;
    ///
    /// let proxies = TrustedProxies::new(IpList::parse(["10.0.0.0/8"])?, ForwardedHeader::XForwardedFor);
    /// let lb: IpAddr = "10.0.0.5".parse()?;
    /// let line: &[u8] = b"\xff203.0.113.7";
    /// assert!(proxies.try_client(lb, [line]).is_err());
    /// let line: &[u8] = b"\xff, 203.0.113.7";
    /// assert_eq!(proxies.try_client(lb, [line])?, "203.0.113.7".parse::<IpAddr>()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_client<'a, I>(&self, peer: IpAddr, values: I) -> Result<IpAddr, UnreadableForwarded>
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: DoubleEndedIterator,
    {
        self.walk(peer, values.into_iter())
            .map_err(|_| UnreadableForwarded)
    }

    /// The walk both forms make: `Err` carries the address reached when
    /// an entry could not be read.
    fn walk<'a, I>(&self, peer: IpAddr, values: I) -> Result<IpAddr, IpAddr>
    where
        I: DoubleEndedIterator<Item = &'a [u8]>,
    {
        if !self.proxies.contains(peer) {
            return Ok(peer);
        }
        let mut client = peer;
        let entries = values.rev().flat_map(|value| value.rsplit(|&b| b == b','));
        for entry in entries {
            let entry = std::str::from_utf8(entry).map_err(|_| client)?;
            let parsed = match self.header {
                ForwardedHeader::XForwardedFor | ForwardedHeader::XRealIp => address(entry),
                ForwardedHeader::Forwarded => forwarded_for(entry).and_then(address),
            };
            client = parsed.ok_or(client)?;
            if !self.proxies.contains(client) || self.header == ForwardedHeader::XRealIp {
                return Ok(client);
            }
        }
        Ok(client)
    }
}

/// A trusted proxy's forwarded header holds an entry, among those it
/// vouches for, that is not an address (or not text): who the client is
/// cannot be known, and a server should refuse the request (400).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnreadableForwarded;

impl std::fmt::Display for UnreadableForwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a trusted proxy forwarded a client address that cannot be read")
    }
}

impl std::error::Error for UnreadableForwarded {}

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
