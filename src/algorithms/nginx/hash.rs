//! nginx's `hash $key consistent` and `hash $key`
//! (`ngx_http_upstream_hash_module.c`), bit for bit.
//!
//! Consistent (`ngx_http_upstream_init_chash`): each backend's name (its
//! value's `Display`, which must be the text of nginx's `server` line) is
//! split into host and port as nginx splits it: after a leading `unix:`
//! the rest is the host and there is no port; otherwise a trailing
//! `:digits` is the port. The base is `crc32(host "\0" port)`; point `j`
//! of `weight * 160` continues the base with the previous point's four
//! bytes, little-endian (zero for the first). The points are sorted and
//! equal hashes dropped but the first. A key's point is the first at or
//! after `crc32(key)`, wrapping; if its backend cannot take the pick, the
//! next point's, and so on (see [`RingWalk`]). A `down` backend keeps its
//! points, so only its keys move; removing a backend removes its points,
//! which moves only its keys too.
//!
//! Plain (`ngx_http_upstream_get_hash_peer`, Cache::Memcached's hash):
//! step `r` adds `(crc32(r KEY) >> 16) & 0x7fff` to a running sum (`r` in
//! decimal, left out at step 0), and the backend is the one whose share of
//! `0..total_weight` holds `sum % total_weight` (see [`KeyWalk`]).
//!
//! The key is [`Context::from_key`]'s bytes. A context with only a client
//! address hashes the address's text as nginx's `$remote_addr` spells it
//! (`hash $remote_addr consistent`), an IPv4-mapped address as its IPv4
//! text (nginx behind a dual-stack socket would hash `::ffff:a.b.c.d`).

use std::fmt::{self, Display};

use super::addr_text::AddrText;
use super::crc32::{Crc32, crc32};
use super::{ByWeight, Retry, first, walk_bounded};
use crate::algorithms::bounded_load::Bound;
use crate::algorithms::choose_through_ref;
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, LockFree, Locked, Set, Static, normalise};
use crate::table::{Backends, Weights};

/// Options of the nginx `hash` balancers: consistent (the ketama ring of
/// `hash $key consistent`, the default) or not (`hash $key`).
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::NginxHash, Balancer, Context, NginxHashOptions};
///
/// // nginx: `hash $request_uri;` (without `consistent`).
/// let options = NginxHashOptions::default().consistent(false);
/// let lb = NginxHash::with_options([("10.0.0.1:80", 1), ("10.0.0.2:80", 1)], options)?;
/// let ctx = Context::from_key(b"/index.html");
/// assert_eq!(lb.pick(&ctx)?.index(), lb.pick(&ctx)?.index());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NginxHashOptions {
    consistent: bool,
    bounded_load: Option<u32>,
}

impl NginxHashOptions {
    /// The largest total weight of a consistent ring: `160 * 65,536`
    /// points, 63 MiB (nginx sets no limit; it would allocate the same).
    pub const MAX_CONSISTENT_TOTAL_WEIGHT: u32 = 1 << 16;

    /// `true` (the default): nginx's `hash $key consistent`; `false`:
    /// `hash $key`, where removing one of n backends moves most keys.
    #[must_use]
    pub fn consistent(mut self, consistent: bool) -> Self {
        self.consistent = consistent;
        self
    }

    /// Whether these options build the consistent ring.
    pub fn is_consistent(&self) -> bool {
        self.consistent
    }

    /// Bounded loads with a factor of `percent` (above 100), as
    /// [`HashOptions::bounded_load`](crate::HashOptions::bounded_load): a
    /// key over capacity goes to the next backend of nginx's own walk for
    /// it (the next points of the ring). nginx has no such option: while
    /// nothing overflows the map is nginx's.
    #[must_use]
    pub fn bounded_load(mut self, percent: u32) -> Self {
        self.bounded_load = Some(percent);
        self
    }
}

impl Default for NginxHashOptions {
    fn default() -> Self {
        Self {
            consistent: true,
            bounded_load: None,
        }
    }
}

/// Lock-free nginx `hash $key consistent` (or, by
/// [`NginxHashOptions::consistent`], `hash $key`): the same backend for
/// a key as nginx would choose over the same `server` lines. A pick
/// hashes the key once and searches the ring; nothing shared is
/// written but the guard's count.
///
/// # Examples
///
/// ```
/// use loadbalance::{lockfree::NginxHash, Balancer, Context};
///
/// let lb = NginxHash::new(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])?;
/// let ctx = Context::from_key(b"/videos/42.mp4");
/// assert_eq!(lb.pick(&ctx)?.index(), lb.pick(&ctx)?.index());
/// // Without "10.0.0.2:80", only its keys move: its points are gone and
/// // every other point keeps its server.
/// let smaller = NginxHash::new(["10.0.0.1:80", "10.0.0.3:80"])?;
/// for i in 0..100 {
///     let key = format!("/videos/{i}.mp4");
///     let ctx = Context::from_key(key.as_bytes());
///     let before = *lb.pick(&ctx)?;
///     if before != "10.0.0.2:80" {
///         assert_eq!(*smaller.pick(&ctx)?, before);
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type NginxHash<T> = Static<T, LockFree<NginxKeyTable>>;

/// Mutex-backed nginx `hash`: the same choice behind a
/// mutex, for uniformity with the other algorithms.
///
/// # Examples
///
/// ```
/// use loadbalance::{locked, lockfree, Balancer, Context};
/// use std::net::IpAddr;
///
/// let a = locked::NginxHash::new(["10.0.0.1:80", "10.0.0.2:80"])?;
/// let b = lockfree::NginxHash::new(["10.0.0.1:80", "10.0.0.2:80"])?;
/// // `hash $remote_addr consistent`: the address's text is the key.
/// let client: IpAddr = "198.51.100.7".parse()?;
/// assert_eq!(a.pick(&client.into())?.index(), b.pick(&client.into())?.index());
/// assert_eq!(
///     a.pick(&client.into())?.index(),
///     a.pick(&Context::from_key(b"198.51.100.7"))?.index(),
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LockedNginxHash<T> = Static<T, Locked<NginxKeyTable>>;

/// nginx's `hash $key` state (both forms): what a key is hashed against
/// (the consistent ring, or the weights), and the capacity rule.
#[derive(Debug)]
pub struct NginxKeyTable {
    hash: KeyHash,
    bound: Option<Bound>,
}

/// The ring, or the weights.
#[derive(Debug)]
enum KeyHash {
    Ring(Ring),
    Plain(ByWeight),
}

impl NginxKeyTable {
    fn new<'v, T: Display + 'v>(
        values: impl Iterator<Item = &'v T>,
        weights: &Weights,
        options: &NginxHashOptions,
    ) -> Result<Self, BuildError> {
        Ok(Self {
            hash: KeyHash::new(values, weights, options)?,
            bound: Bound::new(options.bounded_load, weights)?,
        })
    }

    /// The candidates for `key`, in nginx's order.
    #[inline]
    fn candidates<'a>(&'a self, key: &'a [u8]) -> KeyCandidates<'a> {
        match &self.hash {
            KeyHash::Ring(ring) => KeyCandidates::Ring(RingWalk::new(ring, key)),
            KeyHash::Plain(by_weight) => KeyCandidates::Key(KeyWalk::new(by_weight, key)),
        }
    }

    /// The number of backends, and how a retry counts its tries.
    fn shape(&self) -> (usize, Retry) {
        match &self.hash {
            KeyHash::Ring(ring) => (ring.len, Retry::Revisits),
            KeyHash::Plain(by_weight) => (by_weight.len(), Retry::Continues),
        }
    }
}

impl KeyHash {
    fn new<'v, T: Display + 'v>(
        values: impl Iterator<Item = &'v T>,
        weights: &Weights,
        options: &NginxHashOptions,
    ) -> Result<Self, BuildError> {
        if !options.consistent {
            return Ok(Self::Plain(ByWeight::new(weights)));
        }
        let max = NginxHashOptions::MAX_CONSISTENT_TOTAL_WEIGHT;
        if weights.total() > max {
            return Err(BuildError::RingTooLarge {
                total_weight: weights.total(),
                max,
            });
        }
        let names: Vec<String> = values.map(ToString::to_string).collect();
        let mut sorted: Vec<(&str, usize)> = names.iter().map(String::as_str).zip(0..).collect();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let (a, b) = (pair[0].1, pair[1].1);
            return Err(BuildError::DuplicateBackend {
                first: a.min(b),
                second: a.max(b),
            });
        }
        Ok(Self::Ring(Ring::new(&names, weights.as_slice())))
    }
}

/// nginx's ketama ring: point hashes in ascending order, and each point's
/// backend.
pub(crate) struct Ring {
    hashes: Box<[u32]>,
    owners: Box<[u16]>,
    /// The number of backends.
    len: usize,
}

/// Says how big the ring is, not every point.
impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("points", &self.hashes.len())
            .field("backends", &self.len)
            .finish()
    }
}

/// Points a unit of weight (nginx's `peer->weight * 160`).
const POINTS_PER_WEIGHT: u32 = 160;

impl Ring {
    /// `names[i]` with weight `weights[i]`; at most `MAX_BACKENDS` of
    /// them, so each index fits `u16`.
    fn new(names: &[String], weights: &[u32]) -> Self {
        let total: usize = weights.iter().map(|&w| w as usize).sum();
        let mut points: Vec<(u32, u16)> = Vec::with_capacity(total * POINTS_PER_WEIGHT as usize);
        for (index, (name, &weight)) in names.iter().zip(weights).enumerate() {
            let (host, port) = split_server(name.as_bytes());
            let base = Crc32::new().update(host).update(&[0]).update(port);
            let mut previous = [0u8; 4];
            for _ in 0..weight * POINTS_PER_WEIGHT {
                let hash = base.update(&previous).finish();
                points.push((hash, index as u16));
                previous = hash.to_le_bytes();
            }
        }
        // Stable: of equal hashes the earlier backend's point comes first
        // and stays (nginx's qsort is glibc's merge sort: the same).
        points.sort_by_key(|&(hash, _)| hash);
        points.dedup_by_key(|&mut (hash, _)| hash);
        let (hashes, owners): (Vec<u32>, Vec<u16>) = points.into_iter().unzip();
        Self {
            hashes: hashes.into_boxed_slice(),
            owners: owners.into_boxed_slice(),
            len: names.len(),
        }
    }

    /// The first point at or after `hash`, wrapping past the last
    /// (`ngx_http_upstream_find_chash_point`, taken modulo the count).
    #[inline]
    fn find(&self, hash: u32) -> usize {
        self.hashes.partition_point(|&point| point < hash)
    }
}

/// nginx's split of a `server` text into host and port
/// (`ngx_http_upstream_init_chash`): `unix:` (any case) and the rest as the
/// host, no port; else a trailing `:digits` (digits possibly none) is the
/// port; else all host.
fn split_server(server: &[u8]) -> (&[u8], &[u8]) {
    if server.len() >= 5 && server[..5].eq_ignore_ascii_case(b"unix:") {
        return (&server[5..], &[]);
    }
    for (j, &c) in server.iter().rev().enumerate() {
        if c == b':' {
            let colon = server.len() - j - 1;
            return (&server[..colon], &server[colon + 1..]);
        }
        if !c.is_ascii_digit() {
            break;
        }
    }
    (server, &[])
}

/// One key's candidates on the ring: the backend of its point, then of
/// each next point, wrapping.
#[derive(Clone, Debug)]
pub(crate) struct RingWalk<'a> {
    ring: &'a Ring,
    at: usize,
}

impl<'a> RingWalk<'a> {
    #[inline]
    fn new(ring: &'a Ring, key: &[u8]) -> Self {
        Self {
            ring,
            at: ring.find(crc32(key)),
        }
    }
}

impl Iterator for RingWalk<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let owner = self.ring.owners[self.at % self.ring.owners.len()];
        self.at += 1;
        Some(usize::from(owner))
    }
}

/// One key's candidates under the plain hash: step `r` adds
/// `(crc32(r KEY) >> 16) & 0x7fff` to the sum (`r` in decimal, none at
/// step 0), and the sum modulo the total weight picks by weight.
#[derive(Clone, Debug)]
pub(crate) struct KeyWalk<'a> {
    by_weight: &'a ByWeight,
    key: &'a [u8],
    sum: u32,
    rehash: u32,
}

impl<'a> KeyWalk<'a> {
    #[inline]
    fn new(by_weight: &'a ByWeight, key: &'a [u8]) -> Self {
        Self {
            by_weight,
            key,
            sum: 0,
            rehash: 0,
        }
    }
}

impl Iterator for KeyWalk<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let mut crc = Crc32::new();
        if self.rehash > 0 {
            let mut digits = [0u8; 10];
            crc = crc.update(decimal(self.rehash, &mut digits));
        }
        let hash = (crc.update(self.key).finish() >> 16) & 0x7fff;
        // nginx's `hp->hash` is a uint32_t: the sum wraps.
        self.sum = self.sum.wrapping_add(hash);
        self.rehash = self.rehash.wrapping_add(1);
        Some(self.by_weight.backend(self.sum % self.by_weight.total()))
    }
}

/// `value` in decimal (nginx's `%ui`), in the tail of `buffer`.
fn decimal(mut value: u32, buffer: &mut [u8; 10]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buffer[start..];
        }
    }
}

/// A key's candidates, whichever the hash.
#[derive(Clone, Debug)]
pub(crate) enum KeyCandidates<'a> {
    Ring(RingWalk<'a>),
    Key(KeyWalk<'a>),
}

impl Iterator for KeyCandidates<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        match self {
            Self::Ring(walk) => walk.next(),
            Self::Key(walk) => walk.next(),
        }
    }
}

/// Runs `f` on the key of `ctx`: its bytes, or its address as nginx's
/// `$remote_addr` text (on the stack).
#[inline]
fn with_key<R>(ctx: &Context<'_>, f: impl FnOnce(&[u8]) -> R) -> Result<R, PickError> {
    if let Some(key) = ctx.key() {
        Ok(f(key))
    } else if let Some(addr) = ctx.addr() {
        Ok(f(AddrText::new(normalise(addr)).as_bytes()))
    } else {
        Err(PickError::MissingKey)
    }
}

impl Choose for &NginxKeyTable {
    #[inline]
    fn plain<T>(
        &mut self,
        ctx: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        let (len, _) = self.shape();
        with_key(ctx, |key| {
            Some(first(
                self.bound.as_ref(),
                self.candidates(key),
                len,
                backends,
            ))
        })
    }

    fn choose<T>(
        &mut self,
        ctx: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let (len, retry) = self.shape();
        with_key(ctx, |key| {
            walk_bounded(
                self.bound.as_ref(),
                self.candidates(key),
                len,
                retry,
                candidates,
            )
        })?
    }
}

choose_through_ref!(NginxKeyTable);

impl<T: Display> Build<T> for NginxKeyTable {
    type Options = NginxHashOptions;

    /// The ring hashes each backend's name (its `Display`), so a backend
    /// keeps its points across updates.
    fn build(set: &Set<'_, T>, options: &NginxHashOptions) -> Result<Self, BuildError> {
        Self::new(set.values(), set.validated(), options)
    }

    fn counts_total(&self) -> bool {
        self.bound.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_split_as_nginx_splits_them() {
        let split = |s: &'static str| {
            let (host, port) = split_server(s.as_bytes());
            (
                std::str::from_utf8(host).expect("ascii"),
                std::str::from_utf8(port).expect("ascii"),
            )
        };
        assert_eq!(split("10.0.0.1:80"), ("10.0.0.1", "80"));
        assert_eq!(split("10.0.0.1"), ("10.0.0.1", ""));
        assert_eq!(
            split("backend.example.com:8080"),
            ("backend.example.com", "8080")
        );
        assert_eq!(split("[::1]:80"), ("[::1]", "80"));
        assert_eq!(split("unix:/tmp/app.sock"), ("/tmp/app.sock", ""));
        assert_eq!(split("UNIX:/tmp/a:1"), ("/tmp/a:1", ""));
        assert_eq!(split("host:"), ("host", ""));
        assert_eq!(split("80"), ("80", ""));
        assert_eq!(split(":80"), ("", "80"));
    }

    /// The first points of one server, by hand from the C source.
    #[test]
    fn ring_points_are_ketama_as_nginx_builds_it() {
        let ring = Ring::new(&["10.0.0.1:80".to_owned()], &[1]);
        assert_eq!(ring.hashes.len(), 160);
        let base = Crc32::new().update(b"10.0.0.1").update(b"\0").update(b"80");
        let first = base.update(&[0, 0, 0, 0]).finish();
        let second = base.update(&first.to_le_bytes()).finish();
        // The same as one CRC over the concatenated bytes.
        assert_eq!(first, crc32(b"10.0.0.1\x0080\0\0\0\0"));
        assert!(ring.hashes.binary_search(&first).is_ok());
        assert!(ring.hashes.binary_search(&second).is_ok());
        assert!(ring.hashes.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn decimal_is_nginx_ui() {
        let mut buffer = [0u8; 10];
        assert_eq!(decimal(0, &mut buffer), b"0");
        assert_eq!(decimal(7, &mut buffer), b"7");
        assert_eq!(decimal(20, &mut buffer), b"20");
        assert_eq!(decimal(u32::MAX, &mut buffer), b"4294967295");
    }

    /// The plain hash's first two steps, spelt out.
    #[test]
    fn plain_steps_are_cache_memcached() {
        let by_weight = ByWeight::new(&Weights::new(vec![1, 2, 3, 1]).expect("valid"));
        let mut walk = KeyWalk::new(&by_weight, b"key");
        let first = (crc32(b"key") >> 16) & 0x7fff;
        let second = first + ((crc32(b"1key") >> 16) & 0x7fff);
        assert_eq!(walk.next(), Some(by_weight.backend(first % 7)));
        assert_eq!(walk.next(), Some(by_weight.backend(second % 7)));
    }
}
