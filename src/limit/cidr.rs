//! Static allow and deny lists by CIDR: the networks a server lets in or
//! turns away before any limit is counted, so a trusted monitor never
//! spends quota and a banned network never reaches a bucket.
//!
//! An [`IpNet`] is one network, validated when it is parsed: a typo such
//! as `10.0.0.1/8` is an error naming the network it would have been
//! (nginx accepts it with a warning), so a list can never widen silently.
//! An [`IpList`] is a set of networks built once and then read by every
//! request: each address family is kept as sorted, disjoint inclusive
//! ranges of integers, overlapping and adjacent networks merged at build,
//! so a lookup is one binary search, `O(log n)`, without allocating.
//!
//! # IPv4-mapped addresses
//!
//! A dual-stack socket reports an IPv4 client as `::ffff:a.b.c.d`. Both
//! sides count such an address as the IPv4 address it maps, as the
//! per-client limits and the hashes do: a client `::ffff:10.1.2.3` is in
//! `10.0.0.0/8`, and `::ffff:10.0.0.0/104` is parsed as `10.0.0.0/8`.
//! IPv6 networks therefore never contain a mapped client, even `::/0`, and
//! IPv4 networks never contain any other IPv6 client.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::pick::normalise;

/// The prefix of IPv4-mapped IPv6 addresses, `::ffff:0:0/96`, in bits.
const MAPPED_PREFIX: u8 = 96;

/// One IPv4 or IPv6 network: an address with its host bits clear and a
/// prefix length.
///
/// Parsed from `"10.0.0.0/8"`, `"2001:db8::/32"`, or a bare address (a
/// `/32` or `/128`). An IPv4-mapped IPv6 network of prefix 96 or longer
/// (`"::ffff:10.0.0.0/104"`) is the IPv4 network it maps (`10.0.0.0/8`),
/// so equal networks compare and hash equal however they were written.
/// [`Display`](fmt::Display) always writes the prefix length, and parses
/// back to the same network.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::IpNet;
///
/// let net: IpNet = "10.0.0.0/8".parse()?;
/// assert!(net.contains("10.255.255.255".parse()?));
/// assert!(!net.contains("11.0.0.0".parse()?));
/// // A dual-stack socket's view of an IPv4 client counts as that client.
/// assert!(net.contains("::ffff:10.1.2.3".parse()?));
///
/// let mapped: IpNet = "::ffff:10.0.0.0/104".parse()?;
/// assert_eq!(mapped, net);
/// assert_eq!(mapped.to_string(), "10.0.0.0/8");
///
/// // Host bits set: rejected, naming the network it would have been.
/// let error = "10.0.0.1/8".parse::<IpNet>().unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     r#"host bits are set in "10.0.0.1/8": the network would be 10.0.0.0/8"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The first address of the network; never IPv4-mapped IPv6 with a
    /// prefix of 96 or more (that is stored as IPv4).
    addr: IpAddr,
    /// At most 32 for IPv4, 128 for IPv6.
    prefix_len: u8,
}

impl IpNet {
    /// The network of `addr` with a `prefix_len`-bit prefix.
    ///
    /// An IPv4-mapped `addr` with a prefix of 96 or more gives the IPv4
    /// network it maps (`::ffff:10.0.0.0` and 104 give `10.0.0.0/8`).
    ///
    /// # Errors
    ///
    /// [`CidrError::BadPrefix`] when `prefix_len` is over 32 for IPv4 or
    /// 128 for IPv6; [`CidrError::HostBitsSet`] when `addr` has bits set
    /// past the prefix. The error's input is `addr/prefix_len`.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::{CidrError, IpNet};
    /// use std::net::{IpAddr, Ipv4Addr};
    ///
    /// let net = IpNet::new(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16)?;
    /// assert_eq!(net.to_string(), "192.168.0.0/16");
    /// assert!(matches!(
    ///     IpNet::new(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 33),
    ///     Err(CidrError::BadPrefix { max: 32, .. })
    /// ));
    /// # Ok::<(), CidrError>(())
    /// ```
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        Self::build(addr, prefix_len, || format!("{addr}/{prefix_len}"))
    }

    /// The network, or an error whose input `input` writes.
    fn build(
        addr: IpAddr,
        prefix_len: u8,
        input: impl FnOnce() -> String,
    ) -> Result<Self, CidrError> {
        let max = max_prefix_len(addr);
        if prefix_len > max {
            return Err(CidrError::BadPrefix {
                input: input(),
                max,
            });
        }
        let (addr, prefix_len) = match addr {
            IpAddr::V6(v6) if prefix_len >= MAPPED_PREFIX => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix_len - MAPPED_PREFIX),
                None => (addr, prefix_len),
            },
            _ => (addr, prefix_len),
        };
        let network = Self {
            addr: mask(addr, prefix_len),
            prefix_len,
        };
        if network.addr == addr {
            Ok(network)
        } else {
            Err(CidrError::HostBitsSet {
                input: input(),
                network,
            })
        }
    }

    /// The network's first address (its host bits are clear).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The number of leading bits that every address in the network shares:
    /// up to 32 for an IPv4 network, 128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `client` is in the network. An IPv4-mapped IPv6 client
    /// (`::ffff:a.b.c.d`) counts as its IPv4 address; an IPv4 network never
    /// contains any other IPv6 address, nor an IPv6 network an IPv4 one.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::IpNet;
    ///
    /// let net: IpNet = "2001:db8::/32".parse()?;
    /// assert!(net.contains("2001:db8:ffff::1".parse()?));
    /// assert!(!net.contains("2001:db9::".parse()?));
    /// assert!(!net.contains("10.0.0.1".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn contains(&self, client: IpAddr) -> bool {
        match (self.range(), normalise(client)) {
            (Range::V4(start, end), IpAddr::V4(v4)) => (start..=end).contains(&u32::from(v4)),
            (Range::V6(start, end), IpAddr::V6(v6)) => (start..=end).contains(&u128::from(v6)),
            _ => false,
        }
    }

    /// The network's first and last addresses as integers.
    fn range(&self) -> Range {
        match self.addr {
            IpAddr::V4(v4) => {
                let start = u32::from(v4);
                Range::V4(start, start | !mask_v4(self.prefix_len))
            }
            IpAddr::V6(v6) => {
                let start = u128::from(v6);
                Range::V6(start, start | !mask_v6(self.prefix_len))
            }
        }
    }
}

/// A network's addresses as an inclusive range of integers.
enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The netmask of a prefix of `prefix_len` bits, at most 32.
fn mask_v4(prefix_len: u8) -> u32 {
    // A shift by the whole width (prefix 0) overflows: the mask is empty.
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// The netmask of a prefix of `prefix_len` bits, at most 128.
fn mask_v6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// `addr` with the bits past `prefix_len` cleared.
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix_len))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix_len))),
    }
}

impl FromStr for IpNet {
    type Err = CidrError;

    /// Parses `address/prefix` or a bare address (the whole prefix). The
    /// prefix is decimal digits only; nothing around the text is trimmed.
    fn from_str(s: &str) -> Result<Self, CidrError> {
        if s.is_empty() {
            return Err(CidrError::Empty);
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress {
            input: s.to_owned(),
        })?;
        let max = max_prefix_len(addr);
        let prefix_len = match prefix {
            None => max,
            // Digits only: `u8::from_str` would also take a leading `+`.
            Some(prefix) if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) => {
                // Too many digits for a `u8` is past any maximum too.
                prefix.parse().unwrap_or(u8::MAX)
            }
            Some(_) => {
                return Err(CidrError::BadPrefix {
                    input: s.to_owned(),
                    max,
                });
            }
        };
        Self::build(addr, prefix_len, || s.to_owned())
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a network could not be parsed or built. Each variant but
/// [`Empty`](Self::Empty) carries the text it was given, so a configuration
/// error can name the entry.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::{CidrError, IpNet};
///
/// let error = "10.0.0.0/33".parse::<IpNet>().unwrap_err();
/// assert_eq!(error, CidrError::BadPrefix { input: "10.0.0.0/33".to_owned(), max: 32 });
/// assert_eq!(error.input(), "10.0.0.0/33");
/// assert_eq!(
///     error.to_string(),
///     r#"the prefix length in "10.0.0.0/33" is not a number from 0 to 32"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrError {
    /// The text was empty.
    Empty,
    /// The part before the `/` is not an IPv4 or IPv6 address.
    BadAddress {
        /// The whole text given.
        input: String,
    },
    /// The part after the `/` is not a decimal number, or is longer than
    /// the address (32 bits for IPv4, 128 for IPv6).
    BadPrefix {
        /// The whole text given (`address/prefix` for [`IpNet::new`]).
        input: String,
        /// The longest prefix the address allows.
        max: u8,
    },
    /// The address has bits set past the prefix, as in `10.0.0.1/8`. Taken
    /// as the network it would be, a typo could widen a list silently.
    HostBitsSet {
        /// The whole text given (`address/prefix` for [`IpNet::new`]).
        input: String,
        /// The network with the host bits cleared.
        network: IpNet,
    },
}

impl CidrError {
    /// The text the error is about, empty for [`Empty`](Self::Empty).
    pub fn input(&self) -> &str {
        match self {
            Self::Empty => "",
            Self::BadAddress { input }
            | Self::BadPrefix { input, .. }
            | Self::HostBitsSet { input, .. } => input,
        }
    }
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("an IP network cannot be empty"),
            Self::BadAddress { input } => {
                write!(f, "no IPv4 or IPv6 address in {input:?}")
            }
            Self::BadPrefix { input, max } => {
                write!(
                    f,
                    "the prefix length in {input:?} is not a number from 0 to {max}"
                )
            }
            Self::HostBitsSet { input, network } => write!(
                f,
                "host bits are set in {input:?}: the network would be {network}"
            ),
        }
    }
}

impl std::error::Error for CidrError {}

/// A set of networks, built once, asked for each request whether it
/// holds a client address.
///
/// [`contains`](Self::contains) is one binary search over the networks of
/// the client's family, merged into disjoint ranges when the list was
/// built: `O(log n)` and no allocation, whatever the overlaps. An
/// IPv4-mapped client counts as its IPv4 address, as in
/// [`IpNet::contains`]. An empty list, the [`Default`], contains nothing.
///
/// # Examples
///
/// ```
/// use loadbalance::limit::IpList;
///
/// let deny = IpList::parse(["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"])?;
/// assert!(deny.contains("10.20.30.40".parse()?));
/// assert!(deny.contains("::ffff:192.168.1.7".parse()?));
/// assert!(deny.contains("2001:db8::1".parse()?));
/// assert!(!deny.contains("192.168.2.1".parse()?));
/// assert_eq!(deny.len(), 3);
///
/// // The first bad entry is the error, named.
/// let error = IpList::parse(["10.0.0.0/8", "10.0.0.256"]).unwrap_err();
/// assert_eq!(error.input(), "10.0.0.256");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct IpList {
    /// IPv4 networks as inclusive ranges, sorted, disjoint and not
    /// adjacent (a gap of at least one address between two ranges).
    v4: Box<[(u32, u32)]>,
    /// IPv6 networks, as `v4`.
    v6: Box<[(u128, u128)]>,
    /// The number of networks given.
    len: usize,
}

impl IpList {
    /// The list of `networks`. Overlapping, nested, repeated and adjacent
    /// networks are merged; [`len`](Self::len) still counts each one given.
    ///
    /// # Examples
    ///
    /// ```
    /// use loadbalance::limit::{IpList, IpNet};
    ///
    /// let allow = IpList::new([
    ///     "10.0.0.0/25".parse::<IpNet>()?,
    ///     "10.0.0.128/25".parse()?,
    /// ]);
    /// assert!(allow.contains("10.0.0.127".parse()?));
    /// assert!(allow.contains("10.0.0.128".parse()?));
    /// assert!(!allow.contains("10.0.1.0".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut len = 0;
        for network in networks {
            len += 1;
            match network.range() {
                Range::V4(start, end) => v4.push((start, end)),
                Range::V6(start, end) => v6.push((start, end)),
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
            len,
        }
    }

    /// The list of the networks written in `networks`, each parsed as an
    /// [`IpNet`]: for a list read from configuration.
    ///
    /// # Errors
    ///
    /// The first entry's [`CidrError`], which names it.
    pub fn parse<S: AsRef<str>>(networks: impl IntoIterator<Item = S>) -> Result<Self, CidrError> {
        networks
            .into_iter()
            .map(|network| network.as_ref().parse::<IpNet>())
            .collect()
    }

    /// Whether `client` is in one of the networks. An IPv4-mapped IPv6
    /// client counts as its IPv4 address.
    #[inline]
    pub fn contains(&self, client: IpAddr) -> bool {
        match normalise(client) {
            IpAddr::V4(v4) => in_ranges(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6, u128::from(v6)),
        }
    }

    /// The number of networks the list was built from, each counted even
    /// where it repeats or overlaps another.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list was built from no network (and so contains no
    /// address).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromIterator<IpNet> for IpList {
    fn from_iter<I: IntoIterator<Item = IpNet>>(networks: I) -> Self {
        Self::new(networks)
    }
}

/// Sorts `ranges` and merges those that overlap or touch, leaving each
/// range separated from the next by at least one address.
fn merge<T: Copy + Ord + Step>(mut ranges: Vec<(T, T)>) -> Box<[(T, T)]> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            // `start` is at or before the address after `last` ends. At the
            // top of the family `last` already reaches every later start.
            Some(last) if start <= last.1.next_saturating() => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged.into_boxed_slice()
}

/// Whether `addr` is in one of the sorted, disjoint `ranges`.
#[inline]
fn in_ranges<T: Copy + Ord>(ranges: &[(T, T)], addr: T) -> bool {
    // The ranges starting at or before `addr` come first; the last of them
    // is the only one that can hold it.
    let after = ranges.partition_point(|&(start, _)| start <= addr);
    after
        .checked_sub(1)
        .and_then(|at| ranges.get(at))
        .is_some_and(|&(_, end)| addr <= end)
}

/// The address after another, saturating at the top of the family.
trait Step {
    fn next_saturating(self) -> Self;
}

impl Step for u32 {
    fn next_saturating(self) -> Self {
        self.saturating_add(1)
    }
}

impl Step for u128 {
    fn next_saturating(self) -> Self {
        self.saturating_add(1)
    }
}

impl fmt::Debug for IpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// A range of addresses, written `first..=last`.
        struct Addrs<A>(A, A);

        impl<A: fmt::Display> fmt::Debug for Addrs<A> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}..={}", self.0, self.1)
            }
        }

        f.debug_struct("IpList")
            .field("len", &self.len)
            .field(
                "v4",
                &debug_list(
                    self.v4
                        .iter()
                        .map(|&(start, end)| Addrs(Ipv4Addr::from(start), Ipv4Addr::from(end))),
                ),
            )
            .field(
                "v6",
                &debug_list(
                    self.v6
                        .iter()
                        .map(|&(start, end)| Addrs(Ipv6Addr::from(start), Ipv6Addr::from(end))),
                ),
            )
            .finish()
    }
}

/// Writes the items of an iterator as a list in `Debug`, without
/// collecting them.
fn debug_list<I>(items: I) -> impl fmt::Debug
where
    I: Iterator + Clone,
    I::Item: fmt::Debug,
{
    struct List<I>(I);

    impl<I> fmt::Debug for List<I>
    where
        I: Iterator + Clone,
        I::Item: fmt::Debug,
    {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_list().entries(self.0.clone()).finish()
        }
    }

    List(items)
}

#[cfg(feature = "serde")]
mod serde_impls {
    //! `IpNet` as its string form, as it is written in configuration.

    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, Visitor};
    use serde::ser::{Serialize, Serializer};

    use super::IpNet;

    impl Serialize for IpNet {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }

    impl<'de> Deserialize<'de> for IpNet {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct NetVisitor;

            impl Visitor<'_> for NetVisitor {
                type Value = IpNet;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an IP network such as \"10.0.0.0/8\" or an address")
                }

                fn visit_str<E: de::Error>(self, value: &str) -> Result<IpNet, E> {
                    value.parse().map_err(E::custom)
                }
            }

            deserializer.deserialize_str(NetVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(networks: &[&str]) -> IpList {
        match IpList::parse(networks) {
            Ok(list) => list,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn overlapping_nested_and_adjacent_networks_merge() {
        let list = list(&[
            "10.0.1.0/24",
            "10.0.0.0/25",
            "10.0.0.128/25",
            "10.0.0.64/26",
            "10.0.0.0/25",
            "10.0.3.0/24",
        ]);
        // 10.0.0.0/25 + 10.0.0.128/25 + 10.0.1.0/24 touch; 10.0.2.0/24 is
        // the gap before 10.0.3.0/24.
        assert_eq!(
            &*list.v4,
            &[(0x0A00_0000, 0x0A00_01FF), (0x0A00_0300, 0x0A00_03FF)]
        );
        assert_eq!(list.len(), 6);
        assert!(list.v6.is_empty());
    }

    #[test]
    fn a_range_at_the_top_absorbs_everything_after_it() {
        let list = list(&[
            "255.255.255.0/24",
            "0.0.0.0/0",
            "255.255.255.255",
            "::/0",
            "::1",
        ]);
        assert_eq!(&*list.v4, &[(0, u32::MAX)]);
        assert_eq!(&*list.v6, &[(0, u128::MAX)]);
    }

    #[test]
    fn networks_one_address_apart_stay_apart() {
        let list = list(&[
            "10.0.0.0/32",
            "10.0.0.2/32",
            "2001:db8::/128",
            "2001:db8::2/128",
        ]);
        assert_eq!(
            &*list.v4,
            &[(0x0A00_0000, 0x0A00_0000), (0x0A00_0002, 0x0A00_0002)]
        );
        assert_eq!(list.v6.len(), 2);
    }

    #[test]
    fn debug_shows_the_merged_ranges() {
        let list = list(&["10.0.0.0/25", "10.0.0.128/25", "2001:db8::/127"]);
        assert_eq!(
            format!("{list:?}"),
            "IpList { len: 3, v4: [10.0.0.0..=10.0.0.255], v6: [2001:db8::..=2001:db8::1] }"
        );
    }

    #[test]
    fn masks_cover_every_prefix_length() {
        assert_eq!(mask_v4(0), 0);
        assert_eq!(mask_v4(1), 0x8000_0000);
        assert_eq!(mask_v4(32), u32::MAX);
        assert_eq!(mask_v6(0), 0);
        assert_eq!(mask_v6(127), u128::MAX - 1);
        assert_eq!(mask_v6(128), u128::MAX);
    }
}
