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
        Self {
            inner: Arc::new(Inner {
                lists: Mutex::new(Lists::default()),
                connect_timeout,
            }),
        }
    }

    /// Sends `request` (its target in origin form, its `Host` set) to the
    /// backend at `address` and returns the response head. On a kept
    /// connection the backend closed just as the request went out (its
    /// keep-alive timeout), hyper hands the request back unsent and it
    /// goes on a new connection; any other error is the backend's.
    pub(crate) async fn request(
        &self,
        address: &str,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, BoxError> {
        if let Some(sender) = self.inner.take(address) {
            let mut lease = self.lease(sender, address);
            let Some(sender) = lease.sender.as_mut() else {
                return Err("no connection".into());
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(failed.into_error().into()),
                },
            }
        }
        let sender = self.connect(address).await?;
        let mut lease = self.lease(sender, address);
        let Some(sender) = lease.sender.as_mut() else {
            return Err("no connection".into());
        };
        Ok(sender.send_request(request).await?)
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
        let stream = tokio::time::timeout(self.inner.connect_timeout, open(address))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
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
        if kept.len() < MAX_KEPT {
            kept.push(Kept { sender, epoch });
        }
    }

    /// Closes the connections idle since before the current period and
    /// drops the closed ones; then a new period begins.
    fn sweep(&self) {
        let mut lists = self.lists.lock();
        let epoch = lists.epoch;
        lists.by_address.retain(|_, kept| {
            kept.retain(|k| {
                let idle_long = k.sender.is_ready() && k.epoch < epoch;
                !k.sender.is_closed() && !idle_long
            });
            !kept.is_empty()
        });
        lists.epoch += 1;
    }
}

/// A TCP connection to `address`: a socket address, or a name tried
/// address by address.
async fn open(address: &str) -> io::Result<TcpStream> {
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return TcpStream::connect(socket).await;
    }
    let mut last = None;
    // As many turns as the name has addresses.
    for socket in tokio::net::lookup_host(address).await? {
        match TcpStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use tokio::net::TcpListener;

    /// A backend answering `body`, counting the connections it accepted
    /// and closing each after `per_connection` requests.
    async fn backend(per_connection: usize, body: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
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
        (address, accepted)
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
        let client = Http1::new(Duration::from_secs(1));
        let address = address.to_string();
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
        let client = Http1::new(Duration::from_secs(1));
        let address = address.to_string();
        for _ in 0..10 {
            let response = client.request(&address, get()).await.expect("answer");
            assert_eq!(read_whole(response).await, b"ok");
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Relaxed), 5);
    }

    #[tokio::test]
    async fn concurrent_requests_take_connections_of_their_own() {
        // Bodies past what hyper reads ahead: a connection is busy until
        // its body is read.
        let long: &'static str = "x".repeat(1 << 20).leak();
        let (address, accepted) = backend(usize::MAX, long).await;
        let client = Http1::new(Duration::from_secs(1));
        let address = address.to_string();
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
        let client = Http1::new(Duration::from_secs(1));
        let error = client.request(&address, get()).await.expect_err("refused");
        let io = error.downcast_ref::<io::Error>().expect("an io error");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(client.kept(), 0);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_a_whole_period() {
        let (address, _) = backend(usize::MAX, "ok").await;
        let client = Http1::new(Duration::from_secs(1));
        let address = address.to_string();
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
}
