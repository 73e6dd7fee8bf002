//! How many client connections the proxy keeps: at most `max_connections`
//! in all (nginx's `worker_connections`, HAProxy's `maxconn`) and
//! `max_connections_per_client` from one address (nginx's `limit_conn`;
//! IPv6 clients by /64, trusted proxies exempt). A connection past the
//! per-client limit is closed at once. At the global limit, or when
//! `accept` runs out of descriptors (`EMFILE`), an idle connection (no
//! request being handled: between keep-alive requests, or still sending
//! its first head) is closed to make room, the longest idle of a bounded
//! sample (Redis's approximate LRU), so a client that holds many idle
//! connections cannot keep anyone else out and choosing costs the same at
//! any scale; only when every connection sampled is busy is the new one
//! closed. A connection told to close still counts, in all and for its
//! client, until it has closed.
//!
//! # Synchronization
//!
//! The registry is one mutex, taken when a connection opens, closes or is
//! shed, never per request. Whether a connection is idle, and since when,
//! is its [`Busy`]'s own atomics, read under the mutex only to choose whom
//! to shed: a connection that turns busy just after it was chosen finishes
//! its request before it closes (hyper's graceful shutdown).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::idle::Busy;

/// Connections looked at to choose one to shed.
const SAMPLE: usize = 32;

/// Places (open or free) looked at for that sample, at most.
const SCAN: usize = 512;

/// The open connections and their limits.
pub(crate) struct Connections {
    max: usize,
    per_client: usize,
    registry: Mutex<Registry>,
    /// Connections closed at once: over the per-client limit.
    pub(crate) refused_per_client: AtomicU64,
    /// Connections closed at once: every other one sampled busy at the
    /// limit.
    pub(crate) refused_full: AtomicU64,
    /// Idle connections closed to make room.
    pub(crate) shed: AtomicU64,
    /// `accept` failures (out of descriptors, most likely).
    pub(crate) accept_errors: AtomicU64,
}

/// The open connections in places reused as they free (a slab).
#[derive(Default)]
struct Registry {
    places: Vec<Option<Open>>,
    free: Vec<usize>,
    /// Open connections, those told to close included.
    open: usize,
    /// Where the next sample starts.
    cursor: usize,
    /// Open connections by client key.
    by_client: ClientCounts,
}

/// Things open per client (connections, tunnels); no entry holds zero, so
/// the map is bounded by what is open.
#[derive(Debug, Default)]
pub(crate) struct ClientCounts(HashMap<IpAddr, usize>);

impl ClientCounts {
    /// How many `client` has open.
    pub(crate) fn count(&self, client: IpAddr) -> usize {
        self.0.get(&client).copied().unwrap_or(0)
    }

    /// One more for `client`.
    pub(crate) fn add(&mut self, client: IpAddr) {
        *self.0.entry(client).or_insert(0) += 1;
    }

    /// One fewer for `client`.
    pub(crate) fn remove(&mut self, client: IpAddr) {
        if let Some(count) = self.0.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.0.remove(&client);
            }
        }
    }
}

struct Open {
    client: Option<IpAddr>,
    busy: Busy,
    shed: Arc<Notify>,
    /// Told to close; not a candidate again.
    shedding: bool,
}

/// Why a new connection is closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    PerClient,
    Full,
}

/// One open connection's place; frees it when dropped.
pub(crate) struct Slot {
    place: usize,
    connections: Arc<Connections>,
    shed: Arc<Notify>,
}

impl Slot {
    /// Resolves when the connection should close to make room.
    pub(crate) async fn shed(&self) {
        self.shed.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.connections.registry.lock();
        // The place is this slot's until now: nothing else frees it.
        if let Some(open) = registry.places.get_mut(self.place).and_then(Option::take) {
            registry.open -= 1;
            registry.free.push(self.place);
            if let Some(client) = open.client {
                registry.by_client.remove(client);
            }
        }
    }
}

impl Registry {
    /// Tells the longest idle connection of a sample to close; false when
    /// the sample held none idle.
    fn shed_one(&mut self) -> bool {
        let len = self.places.len();
        if len == 0 {
            return false;
        }
        let mut oldest: Option<(u64, usize)> = None;
        let mut sampled = 0;
        for step in 0..len.min(SCAN) {
            let place = (self.cursor + step) % len;
            let Some(open) = &self.places[place] else {
                continue;
            };
            if open.shedding {
                continue;
            }
            sampled += 1;
            if let Some(since) = open.busy.idle_since() {
                if oldest.is_none_or(|(best, _)| since < best) {
                    oldest = Some((since, place));
                }
            }
            if sampled == SAMPLE {
                break;
            }
        }
        self.cursor = (self.cursor + SAMPLE) % len;
        let Some((_, place)) = oldest else {
            return false;
        };
        if let Some(open) = self.places[place].as_mut() {
            open.shedding = true;
            open.shed.notify_one();
        }
        true
    }
}

impl Connections {
    /// `max` connections in all, `per_client` from one client (0: no
    /// limit).
    pub(crate) fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_client,
            registry: Mutex::new(Registry::default()),
            refused_per_client: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        })
    }

    /// Registers a connection from `peer` whose requests `busy` counts;
    /// `trusted`: a trusted proxy's, not limited per client.
    pub(crate) fn open(
        self: &Arc<Self>,
        peer: IpAddr,
        trusted: bool,
        busy: Busy,
    ) -> Result<Slot, Refused> {
        let client = (!trusted && self.per_client > 0).then(|| key(peer));
        let mut registry = self.registry.lock();
        if let Some(client) = client {
            if registry.by_client.count(client) >= self.per_client {
                self.refused_per_client.fetch_add(1, Relaxed);
                return Err(Refused::PerClient);
            }
        }
        if registry.open >= self.max {
            if !registry.shed_one() {
                self.refused_full.fetch_add(1, Relaxed);
                return Err(Refused::Full);
            }
            self.shed.fetch_add(1, Relaxed);
        }
        let shed = Arc::new(Notify::new());
        let open = Open {
            client,
            busy,
            shed: Arc::clone(&shed),
            shedding: false,
        };
        let place = match registry.free.pop() {
            Some(place) => {
                registry.places[place] = Some(open);
                place
            }
            None => {
                registry.places.push(Some(open));
                registry.places.len() - 1
            }
        };
        registry.open += 1;
        if let Some(client) = client {
            registry.by_client.add(client);
        }
        Ok(Slot {
            place,
            connections: Arc::clone(self),
            shed,
        })
    }

    /// Out of descriptors: tells an idle connection to close.
    pub(crate) fn relieve(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
        if self.registry.lock().shed_one() {
            self.shed.fetch_add(1, Relaxed);
        }
    }

    /// Connections open now (those closing included).
    pub(crate) fn open_now(&self) -> usize {
        self.registry.lock().open
    }
}

/// The key a client's connections are counted under: its address, an
/// IPv6 client's /64 (one host's share of addresses).
fn key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// The default `max_connections`: half the process's descriptor limit
/// (each client connection may hold one to a backend), less a reserve for
/// listeners, checks and files; 512 where the limit cannot be read.
pub(crate) fn default_max() -> usize {
    descriptor_limit().map_or(512, |limit| (limit / 2).saturating_sub(32).max(16))
}

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits` (Linux).
fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn per_client_limit_and_release() {
        let connections = Connections::new(10, 2);
        let a = ip("192.0.2.1");
        let first = connections.open(a, false, Busy::default()).expect("room");
        let _second = connections.open(a, false, Busy::default()).expect("room");
        assert_eq!(
            connections.open(a, false, Busy::default()).err(),
            Some(Refused::PerClient)
        );
        // Another client, a trusted proxy and the same /64 are counted apart.
        let _other = connections.open(ip("192.0.2.2"), false, Busy::default());
        let _proxy = connections.open(a, true, Busy::default()).expect("exempt");
        let v6 = connections.open(ip("2001:db8::1"), false, Busy::default());
        let _v6b = connections.open(ip("2001:db8::2"), false, Busy::default());
        assert_eq!(
            connections
                .open(ip("2001:db8::3"), false, Busy::default())
                .err(),
            Some(Refused::PerClient)
        );
        drop(v6);
        drop(first);
        assert!(connections.open(a, false, Busy::default()).is_ok());
        assert_eq!(connections.refused_per_client.load(Relaxed), 2);
    }

    #[test]
    fn at_the_limit_the_longest_idle_is_shed_and_busy_ones_never() {
        let connections = Connections::new(2, 0);
        let busy = Busy::default();
        let _request = busy.enter();
        let _busy = connections
            .open(ip("192.0.2.1"), false, busy.clone())
            .expect("room");
        let idle = Busy::default();
        let oldest = connections
            .open(ip("192.0.2.2"), false, idle)
            .expect("room");
        let newer = connections
            .open(ip("192.0.2.3"), false, Busy::default())
            .expect("room: the idle one is shed");
        assert_eq!(connections.shed.load(Relaxed), 1);
        // The shed connection was told to close, and counts until it has.
        assert!(
            tokio_test_notified(&oldest),
            "the shed connection is notified"
        );
        assert_eq!(connections.open_now(), 3);
        drop(oldest);
        assert_eq!(connections.open_now(), 2);
        // Now one busy and one idle (newer): shed newer; then nothing idle.
        drop(newer);
        let third = Busy::default();
        let _third_request = third.enter();
        let _third = connections
            .open(ip("192.0.2.4"), false, third.clone())
            .expect("room");
        assert_eq!(
            connections
                .open(ip("192.0.2.5"), false, Busy::default())
                .err(),
            Some(Refused::Full)
        );
    }

    /// Whether `slot` has been told to shed (a stored permit).
    fn tokio_test_notified(slot: &Slot) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(100), slot.shed())
                .await
                .is_ok()
        })
    }

    #[test]
    fn a_shed_connection_still_counts_for_its_client() {
        let connections = Connections::new(1, 1);
        let a = ip("192.0.2.1");
        let first = connections.open(a, false, Busy::default()).expect("room");
        // Another client takes the place; `a`'s connection is told to close
        // but, still open, keeps `a` at its limit.
        let _other = connections
            .open(ip("192.0.2.2"), false, Busy::default())
            .expect("room: the idle one is shed");
        assert_eq!(
            connections.open(a, false, Busy::default()).err(),
            Some(Refused::PerClient)
        );
        drop(first);
        assert!(connections.open(a, false, Busy::default()).is_ok());
    }

    #[test]
    fn choosing_whom_to_shed_is_bounded_and_finds_the_idle() {
        let max = 10_000;
        let connections = Connections::new(max, 0);
        let mut slots = Vec::new();
        let mut guards = Vec::new();
        for index in 0..max {
            let busy = Busy::default();
            // One connection in a hundred idle, the rest busy.
            if index % 100 != 0 {
                guards.push(busy.enter());
            }
            slots.push(
                connections
                    .open(ip("192.0.2.1"), false, busy)
                    .expect("room"),
            );
        }
        // Each accept at the limit sheds an idle one while the samples
        // find them; past that, the new connection is refused.
        let mut shed = 0;
        for _ in 0..200 {
            match connections.open(ip("192.0.2.9"), false, Busy::default()) {
                Ok(slot) => {
                    shed += 1;
                    slots.push(slot);
                }
                Err(refused) => assert_eq!(refused, Refused::Full),
            }
        }
        assert!(shed >= 1, "an idle connection was found");
        assert_eq!(connections.shed.load(Relaxed), shed);
    }

    #[test]
    fn the_default_follows_the_descriptor_limit() {
        assert!(default_max() >= 16);
    }
}
