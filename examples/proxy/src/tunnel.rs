//! Upgrade tunnels: WebSocket, and any other HTTP/1.1 `Upgrade` but h2c
//! (nginx's `proxy_http_version 1.1` with `Upgrade` passed on). The
//! handshake is forwarded, the backend's `101` relayed, then bytes are
//! copied both ways until either side closes. The backend stays picked
//! for the tunnel's life (counted active, so least-connections sees long
//! tunnels), as does the client's admission; the client connection's
//! idle bound (`idle_timeout_ms`, no byte either way) closes an idle
//! tunnel; `max_tunnels_per_client` bounds one client's tunnels; shutdown
//! lets tunnels run until the grace period ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Version};
use hyper_util::rt::TokioIo;
use loadbalance::Picked;
use loadbalance::limit::Admission;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::connections::ClientCounts;
use super::stopped;

/// The protocol a request asks to switch to, if it asks for a tunnel: an
/// HTTP/1.1 GET with `Connection: upgrade` and an `Upgrade` other than
/// `h2c` (HTTP/2 is offered by ALPN instead).
pub(crate) fn requested(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Option<HeaderValue> {
    if *method != Method::GET || version != Version::HTTP_11 {
        return None;
    }
    let upgrade = headers
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let protocol = headers.get(UPGRADE)?;
    let h2c = protocol.to_str().map_or(true, |p| {
        p.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c"))
    });
    (upgrade && !h2c).then(|| protocol.clone())
}

/// Puts back the headers that ask for (or agree to) the switch, after the
/// hop-by-hop ones were removed.
pub(crate) fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

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

impl Drop for TunnelPermit {
    fn drop(&mut self) {
        self.tunnels.by_client.lock().remove(self.client);
        self.tunnels.open.fetch_sub(1, Relaxed);
    }
}

/// What a tunnel holds for its life.
pub(crate) struct Held {
    pub(crate) picked: Picked<String>,
    pub(crate) admission: Admission,
    pub(crate) permit: TunnelPermit,
}

/// Copies bytes both ways between the client's and the backend's
/// upgraded connections until either closes, either fails (the client
/// side's idle bound included), or shutdown's grace period ends.
pub(crate) async fn run(
    client: OnUpgrade,
    backend: OnUpgrade,
    held: Held,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
        return;
    };
    held.permit.tunnels.opened.fetch_add(1, Relaxed);
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
        () = async {
            stopped(&mut stop).await;
            tokio::time::sleep(grace).await;
        } => {}
    }
    // However it ended (a close, the idle bound, a reset), the tunnel is
    // no failure of the backend's: either side may end a tunnel.
    held.picked.finish(true);
    drop(held.admission);
    drop(held.permit);
}
