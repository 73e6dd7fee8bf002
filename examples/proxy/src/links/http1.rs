//! A worker's HTTP/1.1 connections to its backends, kept open between
//! requests by backend address, on the worker's own event loop.
//!
//! hyper's connection API, without hyper-util's general pool: no key
//! built and hashed from a URI's scheme and authority, no URI rewritten
//! per request, no task spawned per request to watch for idleness. A
//! connection goes back to its address's list when its response head is
//! in, and is taken again only once hyper says it is ready (the previous
//! response read to its end); one the backend has closed is dropped from
//! the list when met. Lists hold at most [`MAX_KEPT`] connections each,
//! and a connection idle through a whole [`SWEEP`] period is closed.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::body::{BoxError, UpstreamBody};

/// Connections kept per backend address, per worker.
const MAX_KEPT: usize = 256;

/// How often idle connections are looked over: one idle through a whole
/// period (15 to 30 s in all, hyper-util's pool keeps them 30 s) is closed.
const SWEEP: Duration = Duration::from_secs(15);

/// One worker's HTTP/1.1 client: cheap to clone (one shared list).
#[derive(Clone)]
pub(crate) struct Http1 {
    inner: Arc<Inner>,
}

struct Inner {
    lists: Mutex<Lists>,
    connect_timeout: Duration,
    /// [`MAX_KEPT`], smaller in tests.
    max_kept: usize,
}

#[derive(Default)]
struct Lists {
    by_address: HashMap<Box<str>, Vec<Kept>>,
    /// The sweep period now; a connection put back remembers it.
    epoch: u64,
    /// Whether the sweeping task runs (started with the first connection,
    /// inside a runtime).
    sweeping: bool,
}

/// A connection in a list: idle, or still reading its last response.
struct Kept {
    sender: SendRequest<UpstreamBody>,
    epoch: u64,
}

/// A connection taken from a list: put back when dropped (after its
/// response head, or when the request is given up), unless it closed.
struct Lease<'a> {
    sender: Option<SendRequest<UpstreamBody>>,
    inner: &'a Inner,
    address: &'a str,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.inner.put(self.address, sender);
        }
    }
}

impl Http1 {
    /// A client whose connections take at most `connect_timeout` to open.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Self::keeping(connect_timeout, MAX_KEPT)
    }

    fn keeping(connect_timeout: Duration, max_kept: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                lists: Mutex::new(Lists::default()),
                connect_timeout,
                max_kept,
            }),
        }
    }

    /// Sends `request` (its target in origin form, its `Host` set) to the
    /// backend at `address` and returns the response head. When hyper
    /// learns that a kept connection was closed (the backend's keep-alive
    /// timeout) before the request goes out, it hands the request back
    /// unsent and it goes on a new connection; a close after the request
    /// was written is an error (never sent twice), as is any other.
    pub(crate) async fn request(
        &self,
        address: &str,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, BoxError> {
        let mut kept = self.inner.take(address);
        // Two turns at most: a kept connection, then a new one. One send
        // in the loop keeps this future small (it is moved per request).
        loop {
            let reused = kept.is_some();
            let sender = match kept.take() {
                Some(sender) => sender,
                // Boxed: opening a connection is the rare case.
                None => Box::pin(self.connect(address)).await?,
            };
            let mut lease = self.lease(sender, address);
            let Some(sender) = lease.sender.as_mut() else {
                return Err("no connection".into());
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
    }

    fn lease<'a>(&'a self, sender: SendRequest<UpstreamBody>, address: &'a str) -> Lease<'a> {
        Lease {
            sender: Some(sender),
            inner: &self.inner,
            address,
        }
    }

    /// A new connection to `address`, its protocol driven by a task of
    /// the current event loop (upgrades included: a `101` hands the
    /// socket to a tunnel).
    async fn connect(&self, address: &str) -> Result<SendRequest<UpstreamBody>, BoxError> {
        let stream = open(address, self.inner.connect_timeout).await?;
        // Latency over packet count, as for every socket of the proxy; a
        // socket that refuses it still works.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Its end (or error) reaches the request through its sender.
            let _ = connection.with_upgrades().await;
        });
        self.sweep_later();
        Ok(sender)
    }

    /// Starts the task that closes long-idle connections, once; it ends
    /// when the client is dropped.
    fn sweep_later(&self) {
        {
            let mut lists = self.inner.lists.lock();
            if lists.sweeping {
                return;
            }
            lists.sweeping = true;
        }
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SWEEP);
            // A late tick is not made up for by a burst of sweeps (two in a
            // row would close connections idle for no time at all).
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                inner.sweep();
            }
        });
    }

    /// Connections kept now, to every address (tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.inner
            .lists
            .lock()
            .by_address
            .values()
            .map(Vec::len)
            .sum()
    }
}

impl Inner {
    /// A ready connection to `address`, the most recently used first;
    /// closed ones met on the way are dropped.
    fn take(&self, address: &str) -> Option<SendRequest<UpstreamBody>> {
        let mut lists = self.lists.lock();
        let kept = lists.by_address.get_mut(address)?;
        // Each turn removes an entry or moves down by one.
        let mut index = kept.len();
        while index > 0 {
            index -= 1;
            if kept[index].sender.is_closed() {
                kept.swap_remove(index);
            } else if kept[index].sender.is_ready() {
                return Some(kept.swap_remove(index).sender);
            }
        }
        None
    }

    /// Puts a connection back (its response head is in; it may still be
    /// reading the body). A full list drops its closed connections, then
    /// lets go of a busy one (it finishes its response, then closes) to
    /// keep the one put back; a list full of idle ones has enough.
    fn put(&self, address: &str, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut lists = self.lists.lock();
        let epoch = lists.epoch;
        let kept = match lists.by_address.get_mut(address) {
            Some(kept) => kept,
            None => lists.by_address.entry(address.into()).or_default(),
        };
        if kept.len() >= self.max_kept {
            kept.retain(|k| !k.sender.is_closed());
        }
        if kept.len() >= self.max_kept {
            match kept.iter().position(|k| !k.sender.is_ready()) {
                Some(busy) => drop(kept.swap_remove(busy)),
                None => return,
            }
        }
        kept.push(Kept { sender, epoch });
    }

    /// Closes the connections idle through the whole period that ends
    /// now and drops the closed ones; then a new period begins. A busy
    /// connection counts as used in the next period.
    fn sweep(&self) {
        let mut lists = self.lists.lock();
        let epoch = lists.epoch;
        lists.by_address.retain(|_, kept| {
            kept.retain_mut(|k| {
                if k.sender.is_closed() {
                    return false;
                }
                if !k.sender.is_ready() {
                    k.epoch = epoch + 1;
                    return true;
                }
                k.epoch >= epoch
            });
            !kept.is_empty()
        });
        lists.epoch += 1;
    }
}

/// Where hyper-util's connector connects for an address without a port.
const DEFAULT_PORT: u16 = 80;

/// A TCP connection to `address`: a socket address, or a name, with or
/// without a port (80), each of its addresses tried in turn within an
/// equal share of `timeout`, as hyper-util's connector does (without its
/// IPv4/IPv6 race). The name's resolution is outside that timeout,
/// bounded by the request's upstream timeout.
async fn open(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return connect_any(&[socket], timeout).await;
    }
    let (host, port) = host_and_port(address)?;
    let sockets: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect();
    connect_any(&sockets, timeout).await
}

/// The host (IPv6 without its brackets) and port (80 if none) of a
/// backend's `address`.
fn host_and_port(address: &str) -> io::Result<(String, u16)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "not a backend address");
    let authority = address
        .parse::<hyper::http::uri::Authority>()
        .map_err(|_| invalid())?;
    let text = authority.as_str();
    // An authority may carry credentials; a backend's address may not.
    if text.contains('@') {
        return Err(invalid());
    }
    // The port's text, after an IPv6 address's brackets or the last `:`;
    // one that is there but is not a port is an error, never port 80.
    let port = match text.rfind(']') {
        Some(end) => text[end + 1..].strip_prefix(':'),
        None => text.rsplit_once(':').map(|(_, port)| port),
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port.parse::<u16>().map_err(|_| invalid())?,
    };
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok((host.to_owned(), port))
}

/// The first of `sockets` to accept a connection, each given an equal
/// share of `timeout`; else the error that says most of the backend.
async fn connect_any(sockets: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let count = u32::try_from(sockets.len()).unwrap_or(u32::MAX).max(1);
    let share = timeout / count;
    let mut failed = Vec::new();
    // As many turns as there are addresses.
    for socket in sockets {
        match tokio::time::timeout(share, TcpStream::connect(socket)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => failed.push(error),
            Err(_) => failed.push(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }
    Err(reported(failed))
}

/// Which of a name's failed addresses is reported: the first that is the
/// backend's (refused, timed out, ...) rather than an address this host
/// cannot use at all (`EADDRNOTAVAIL`: `::1` where IPv6 is off), which
/// the proxy would otherwise read as running out of its own ports.
fn reported(failed: Vec<io::Error>) -> io::Error {
    const EADDRNOTAVAIL: i32 = 99;
    let mut failed = failed.into_iter();
    let mut first = None;
    // As many turns as there were addresses.
    for error in failed.by_ref() {
        if error.raw_os_error() != Some(EADDRNOTAVAIL) {
            return error;
        }
        first.get_or_insert(error);
    }
    first.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use tokio::net::TcpListener;

    /// A body past what hyper reads ahead: a connection stays busy until
    /// it is read.
    fn long() -> &'static str {
        "x".repeat(1 << 20).leak()
    }

    /// A client that opens connections within a second.
    fn client() -> Http1 {
        Http1::new(Duration::from_secs(1))
    }

    /// A backend answering `body`, counting the connections it accepted
    /// and closing each after `per_connection` requests.
    async fn backend(per_connection: usize, body: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Relaxed);
                let served = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| {
                        let n = served.fetch_add(1, Relaxed) + 1;
                        async move {
                            let mut response = Response::new(body.to_owned());
                            if n >= per_connection {
                                response
                                    .headers_mut()
                                    .insert("connection", "close".parse().expect("value"));
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (address.to_string(), accepted)
    }

    fn get() -> Request<UpstreamBody> {
        let mut request = Request::new(UpstreamBody::Empty);
        request
            .headers_mut()
            .insert("host", "backend".parse().expect("value"));
        request
    }

    async fn read_whole(response: Response<Incoming>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.expect("body");
        body.to_bytes().to_vec()
    }

    #[tokio::test]
    async fn one_connection_serves_requests_in_turn() {
        let (address, accepted) = backend(usize::MAX, "ok").await;
        let client = client();
        for _ in 0..20 {
            let response = client.request(&address, get()).await.expect("answer");
            assert_eq!(read_whole(response).await, b"ok");
            // The connection reads its way back to ready.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Relaxed), 1);
        assert_eq!(client.kept(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_used_again() {
        // Every connection closes after its second request.
        let (address, accepted) = backend(2, "ok").await;
        let client = client();
        for _ in 0..10 {
            let response = client.request(&address, get()).await.expect("answer");
            assert_eq!(read_whole(response).await, b"ok");
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Relaxed), 5);
    }

    #[tokio::test]
    async fn concurrent_requests_take_connections_of_their_own() {
        let long = long();
        let (address, accepted) = backend(usize::MAX, long).await;
        let client = client();
        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(client.request(&address, get()).await.expect("answer"));
        }
        assert_eq!(accepted.load(Relaxed), 4);
        assert_eq!(client.kept(), 4);
        for response in open {
            assert_eq!(read_whole(response).await.len(), long.len());
        }
        tokio::task::yield_now().await;
        for _ in 0..8 {
            let response = client.request(&address, get()).await.expect("answer");
            assert_eq!(read_whole(response).await.len(), long.len());
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Relaxed), 4);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        let client = client();
        let error = client.request(&address, get()).await.expect_err("refused");
        let io = error.downcast_ref::<io::Error>().expect("an io error");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(client.kept(), 0);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_a_whole_period() {
        let (address, _) = backend(usize::MAX, "ok").await;
        let client = client();
        let response = client.request(&address, get()).await.expect("answer");
        assert_eq!(read_whole(response).await, b"ok");
        tokio::task::yield_now().await;
        assert_eq!(client.kept(), 1);
        // Put back in this period: kept through its end.
        client.inner.sweep();
        assert_eq!(client.kept(), 1);
        // Idle through the whole next one: closed.
        client.inner.sweep();
        assert_eq!(client.kept(), 0);
    }

    #[tokio::test]
    async fn a_connection_busy_at_a_sweep_gets_a_whole_period_once_idle() {
        let long = long();
        let (address, _) = backend(usize::MAX, long).await;
        let client = client();
        let response = client.request(&address, get()).await.expect("answer");
        client.inner.sweep();
        client.inner.sweep();
        // Busy through two sweeps: still kept.
        assert_eq!(client.kept(), 1);
        assert_eq!(read_whole(response).await.len(), long.len());
        tokio::task::yield_now().await;
        // Idle for no time at all: not closed at the next sweep.
        client.inner.sweep();
        assert_eq!(client.kept(), 1);
        client.inner.sweep();
        assert_eq!(client.kept(), 0);
    }

    #[tokio::test]
    async fn a_list_full_of_busy_connections_still_keeps_an_idle_one() {
        let long = long();
        // Two kept at most: two long answers held unread fill the list.
        let (address, accepted) = backend(usize::MAX, long).await;
        let client = Http1::keeping(Duration::from_secs(1), 2);
        let held = [
            client.request(&address, get()).await.expect("answer"),
            client.request(&address, get()).await.expect("answer"),
        ];
        assert_eq!(client.kept(), 2);
        // Each of these reads its answer whole and is reused by the next.
        for _ in 0..3 {
            let response = client.request(&address, get()).await.expect("answer");
            assert_eq!(read_whole(response).await.len(), long.len());
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Relaxed), 3);
        drop(held);
    }

    #[tokio::test]
    async fn a_request_given_up_before_its_answer_leaves_no_usable_connection_behind() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        // The first connection's first request is answered after 300 ms.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let first = counted.fetch_add(1, Relaxed) == 0;
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| async move {
                        if first {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        Ok::<_, Infallible>(Response::new(String::from("ok")))
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let client = client();
        let given_up =
            tokio::time::timeout(Duration::from_millis(50), client.request(&address, get())).await;
        assert!(given_up.is_err(), "answered before the timeout");
        let response = client.request(&address, get()).await.expect("answer");
        assert_eq!(read_whole(response).await, b"ok");
        assert_eq!(accepted.load(Relaxed), 2);
    }

    #[test]
    fn an_address_without_a_port_is_port_80() {
        let parts = |address| host_and_port(address).expect("an address");
        assert_eq!(parts("backend"), ("backend".to_owned(), 80));
        assert_eq!(parts("backend:8080"), ("backend".to_owned(), 8080));
        assert_eq!(parts("10.0.0.1"), ("10.0.0.1".to_owned(), 80));
        assert_eq!(parts("[::1]"), ("::1".to_owned(), 80));
        assert_eq!(parts("[::1]:9000"), ("::1".to_owned(), 9000));
        assert!(host_and_port("back end").is_err());
        // A port that is there but is not one is an error, never port 80.
        for bad in [
            "backend:99999",
            "backend:8o80",
            "backend:",
            "[::1]:99999",
            "u@backend:81",
        ] {
            assert!(host_and_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_this_host_cannot_use_gives_way_to_the_backends_own_error() {
        let unusable = || io::Error::from_raw_os_error(99);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let error = reported(vec![unusable(), refused]);
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(reported(vec![unusable()]).raw_os_error(), Some(99));
        assert_eq!(reported(Vec::new()).kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_refused_address_gives_way_to_the_next() {
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let refused = closed.local_addr().expect("address");
        drop(closed);
        let live = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = live.local_addr().expect("address");
        let stream = connect_any(&[refused, open], Duration::from_secs(1))
            .await
            .expect("the second address");
        assert_eq!(stream.peer_addr().expect("peer"), open);
    }
}
