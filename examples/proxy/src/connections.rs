//! How many client connections the proxy keeps: at most `max_connections`
//! in all (nginx's `worker_connections`, HAProxy's `maxconn`) and
//! `max_connections_per_client` from one address (nginx's `limit_conn`;
//! IPv6 clients by /64, trusted proxies exempt). A connection past the
//! per-client limit is closed at once. At the global limit, or when
//! `accept` runs out of descriptors (`EMFILE`), the connection idle the
//! longest (no request being handled: between keep-alive requests, or
//! still sending its first head) is closed to make room, so a client that
//! holds many idle connections cannot keep anyone else out; only when
//! every connection is busy is the new one closed.
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

/// The open connections and their limits.
pub(crate) struct Connections {
    max: usize,
    per_client: usize,
    registry: Mutex<Registry>,
    /// Connections closed at once: over the per-client limit.
    pub(crate) refused_per_client: AtomicU64,
    /// Connections closed at once: every other one busy at the limit.
    pub(crate) refused_full: AtomicU64,
    /// Idle connections closed to make room.
    pub(crate) shed: AtomicU64,
    /// `accept` failures (out of descriptors, most likely).
    pub(crate) accept_errors: AtomicU64,
}

#[derive(Default)]
struct Registry {
    next: u64,
    open: HashMap<u64, Open>,
    /// Open connections by client key; no entry holds zero.
    by_client: HashMap<IpAddr, usize>,
}

struct Open {
    client: Option<IpAddr>,
    busy: Busy,
    shed: Arc<Notify>,
}

/// Why a new connection is closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    PerClient,
    Full,
}

/// One open connection's place; frees it when dropped.
pub(crate) struct Slot {
    id: u64,
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
        if let Some(open) = registry.open.remove(&self.id) {
            registry.release(open.client);
        }
    }
}

impl Registry {
    fn release(&mut self, client: Option<IpAddr>) {
        let Some(client) = client else { return };
        if let Some(count) = self.by_client.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.by_client.remove(&client);
            }
        }
    }

    /// Closes the connection idle the longest, if any is idle.
    fn shed_one(&mut self) -> bool {
        let oldest = self
            .open
            .iter()
            .filter_map(|(&id, open)| open.busy.idle_since().map(|since| (since, id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(open) = self.open.remove(&id) {
            open.shed.notify_one();
            self.release(open.client);
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
            if registry.by_client.get(&client).copied().unwrap_or(0) >= self.per_client {
                self.refused_per_client.fetch_add(1, Relaxed);
                return Err(Refused::PerClient);
            }
        }
        if registry.open.len() >= self.max {
            if !registry.shed_one() {
                self.refused_full.fetch_add(1, Relaxed);
                return Err(Refused::Full);
            }
            self.shed.fetch_add(1, Relaxed);
        }
        let id = registry.next;
        registry.next += 1;
        let shed = Arc::new(Notify::new());
        registry.open.insert(
            id,
            Open {
                client,
                busy,
                shed: Arc::clone(&shed),
            },
        );
        if let Some(client) = client {
            *registry.by_client.entry(client).or_insert(0) += 1;
        }
        Ok(Slot {
            id,
            connections: Arc::clone(self),
            shed,
        })
    }

    /// Out of descriptors: closes the connection idle the longest.
    pub(crate) fn relieve(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
        if self.registry.lock().shed_one() {
            self.shed.fetch_add(1, Relaxed);
        }
    }

    /// Connections open now.
    pub(crate) fn open_now(&self) -> usize {
        self.registry.lock().open.len()
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
        assert_eq!(connections.open_now(), 2);
        // The shed connection was told to close.
        let told = tokio_test_notified(&oldest);
        assert!(told, "the shed connection is notified");
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
    fn the_default_follows_the_descriptor_limit() {
        assert!(default_max() >= 16);
    }
}
