//! The tunnels open, per client and in all: `max_tunnels_per_client`
//! bounds one client's (429 past it), and shutdown waits on the total.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;

use crate::connections::ClientCounts;

/// The tunnels open, per client and in all.
pub(crate) struct Tunnels {
    per_client: usize,
    by_client: Mutex<ClientCounts>,
    open: AtomicUsize,
    /// Tunnels refused: the client had `max_tunnels_per_client` open.
    pub(crate) refused: AtomicU64,
    /// Tunnels opened.
    pub(crate) opened: AtomicU64,
}

/// One tunnel's place; frees it when dropped.
pub(crate) struct TunnelPermit {
    tunnels: Arc<Tunnels>,
    client: IpAddr,
}

impl Tunnels {
    /// `per_client` tunnels from one client at most (0: no limit).
    pub(crate) fn new(per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            per_client,
            by_client: Mutex::new(ClientCounts::default()),
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        })
    }

    /// A place for one more tunnel of `client`, if it has fewer than its
    /// limit open.
    pub(crate) fn open(self: &Arc<Self>, client: IpAddr) -> Option<TunnelPermit> {
        let mut by_client = self.by_client.lock();
        if self.per_client > 0 && by_client.count(client) >= self.per_client {
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        by_client.add(client);
        // Relaxed: a figure on its own (read for /metrics and shutdown's
        // wait, which polls it).
        self.open.fetch_add(1, Relaxed);
        Some(TunnelPermit {
            tunnels: Arc::clone(self),
            client,
        })
    }

    /// Tunnels open now.
    pub(crate) fn open_now(&self) -> usize {
        self.open.load(Relaxed)
    }
}

impl TunnelPermit {
    /// Counts the tunnel opened: both sides switched.
    pub(crate) fn opened(&self) {
        self.tunnels.opened.fetch_add(1, Relaxed);
    }
}

impl Drop for TunnelPermit {
    fn drop(&mut self) {
        self.tunnels.by_client.lock().remove(self.client);
        self.tunnels.open.fetch_sub(1, Relaxed);
    }
}
