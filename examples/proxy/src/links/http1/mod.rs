//! A worker's HTTP/1.1 connections to its backends, spoken by the proxy
//! itself on the worker's own event loop, in the request's own task.
//!
//! hyper's client hands each request to a task per connection through a
//! channel and back, and rebuilds its head; here a request's task writes
//! its head (and a body read whole) in one write and parses the answer's
//! head straight from the bytes read, its fields slices of them. An idle
//! connection waits in its address's list, the most recently used taken
//! first once it is known to be open; a connection goes back when its
//! response body has ended, if its framing allows another request. Lists
//! hold at most [`MAX_KEPT`] connections each, and a connection idle
//! through a whole [`SWEEP`] period is closed.
//!
//! - [`send`]: a connection and one exchange on it, the request out and
//!   the response head in;
//! - [`head`]: a response head and its body's framing (RFC 9112 §6.3);
//! - [`chunked`]: a chunked body (§7.1);
//! - [`answer`]: the response body, which puts its connection back;
//! - [`switched`]: a connection after a `101`, for a tunnel;
//! - [`connect`]: opening a connection to an address.

mod answer;
mod chunked;
mod connect;
mod head;
mod send;
mod switched;

#[cfg(test)]
mod hostile_backends;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::Response;
use parking_lot::Mutex;

use self::answer::Home;
use self::send::Conn;
use super::Outgoing;
use crate::body::BoxError;

pub(crate) use answer::Streaming;
pub(crate) use switched::Switched;

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
    /// How long a backend may take none of an upload it answered early.
    stall: Duration,
    /// [`MAX_KEPT`], smaller in tests.
    max_kept: usize,
}

#[derive(Default)]
struct Lists {
    by_address: HashMap<Box<str>, List>,
    /// The sweep period now; a connection put back remembers it.
    epoch: u64,
    /// Whether the sweeping task runs (started with the first connection,
    /// inside a runtime).
    sweeping: bool,
}

/// An address's idle connections, the most recently used last.
struct List {
    /// The address, shared with every body that will put a connection
    /// back here.
    address: Arc<str>,
    idle: Vec<Kept>,
}

/// An idle connection and the period it was put back in.
struct Kept {
    conn: Conn,
    epoch: u64,
}

impl Http1 {
    /// A client whose connections take at most `connect_timeout` to open,
    /// and whose backends may take nothing of an upload they answered
    /// early for `stall`.
    pub(crate) fn new(connect_timeout: Duration, stall: Duration) -> Self {
        Self::keeping(connect_timeout, stall, MAX_KEPT)
    }

    fn keeping(connect_timeout: Duration, stall: Duration, max_kept: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                lists: Mutex::new(Lists::default()),
                connect_timeout,
                stall,
                max_kept,
            }),
        }
    }

    /// Sends `request` (its target in origin form, its `Host` set) to the
    /// backend at `address` and returns the response head, its body read
    /// as it is taken. An idle connection is used only once it is known
    /// open (a backend's keep-alive close seen); a close after the
    /// request was written is an error (never sent twice), as is any
    /// other. Dropped before its answer, the connection closes.
    pub(crate) async fn request(
        &self,
        address: &str,
        request: Outgoing<'_>,
    ) -> Result<Response<Streaming>, BoxError> {
        let Outgoing {
            method,
            target,
            headers,
            mut body,
        } = request;
        let (kept, address) = self.inner.take(address);
        let mut conn = match kept {
            Some(conn) => conn,
            // Boxed: opening a connection is the rare case.
            None => Box::pin(self.connect(&address)).await?,
        };
        let (head, upload) = conn
            .exchange(method, target, headers, &mut body, self.inner.stall)
            .await?;
        let home = head.reusable.then(|| Home {
            client: self.clone(),
            address,
        });
        let body = Streaming::new(conn, head.framing, home, upload);
        Ok(Response::from_parts(head.parts, body))
    }

    /// A new connection to `address`.
    async fn connect(&self, address: &str) -> Result<Conn, BoxError> {
        let stream = connect::open(address, self.inner.connect_timeout).await?;
        // Latency over packet count, as for every socket of the proxy; a
        // socket that refuses it still works.
        let _ = stream.set_nodelay(true);
        self.sweep_later();
        Ok(Conn::new(stream))
    }

    /// Puts an idle connection back on `address`'s list; a full list has
    /// enough and closes it.
    fn put(&self, address: &str, conn: Conn) {
        let mut lists = self.inner.lists.lock();
        let epoch = lists.epoch;
        let Some(list) = lists.by_address.get_mut(address) else {
            return;
        };
        if list.idle.len() < self.inner.max_kept {
            list.idle.push(Kept { conn, epoch });
        }
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
            .map(|list| list.idle.len())
            .sum()
    }
}

impl Inner {
    /// An open idle connection to `address`, the most recently used
    /// first (closed ones met on the way are dropped), and the address
    /// as its list shares it.
    fn take(&self, address: &str) -> (Option<Conn>, Arc<str>) {
        let mut lists = self.lists.lock();
        let list = match lists.by_address.get_mut(address) {
            Some(list) => list,
            None => lists
                .by_address
                .entry(address.into())
                .or_insert_with(|| List {
                    address: address.into(),
                    idle: Vec::new(),
                }),
        };
        // Each turn removes an entry.
        while let Some(kept) = list.idle.pop() {
            if kept.conn.idle_and_open() {
                return (Some(kept.conn), Arc::clone(&list.address));
            }
        }
        (None, Arc::clone(&list.address))
    }

    /// Closes the connections idle through the whole period that ends
    /// now; then a new period begins.
    fn sweep(&self) {
        let mut lists = self.lists.lock();
        let epoch = lists.epoch;
        for list in lists.by_address.values_mut() {
            list.idle.retain(|kept| kept.epoch >= epoch);
        }
        lists.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;
    use hyper::body::Incoming;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use tokio::net::TcpListener;

    /// A body past what hyper reads ahead: a connection stays busy until
    /// it is read.
    fn long() -> &'static str {
        "x".repeat(1 << 20).leak()
    }

    /// A client that opens connections within a second.
    fn client() -> Http1 {
        Http1::new(Duration::from_secs(1), Duration::from_secs(1))
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

    fn get() -> Outgoing<'static> {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("host", "backend".parse().expect("value"));
        Outgoing {
            method: &hyper::Method::GET,
            target: "/",
            headers: Box::leak(Box::new(headers)),
            body: crate::body::UpstreamBody::Empty,
        }
    }

    async fn read_whole(response: Response<Streaming>) -> Vec<u8> {
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
        // Busy until their bodies end.
        assert_eq!(client.kept(), 0);
        for response in open {
            assert_eq!(read_whole(response).await.len(), long.len());
        }
        assert_eq!(client.kept(), 4);
        for _ in 0..8 {
            let response = client.request(&address, get()).await.expect("answer");
            assert_eq!(read_whole(response).await.len(), long.len());
        }
        assert_eq!(accepted.load(Relaxed), 4);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let long = long();
        let (address, accepted) = backend(usize::MAX, long).await;
        let client = client();
        let response = client.request(&address, get()).await.expect("answer");
        drop(response);
        assert_eq!(client.kept(), 0);
        let response = client.request(&address, get()).await.expect("answer");
        assert_eq!(read_whole(response).await.len(), long.len());
        assert_eq!(accepted.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        let client = client();
        let Err(error) = client.request(&address, get()).await else {
            panic!("answered");
        };
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
        assert_eq!(read_whole(response).await.len(), long.len());
        // Idle for no time at all: not closed at the next sweep.
        assert_eq!(client.kept(), 1);
        client.inner.sweep();
        assert_eq!(client.kept(), 1);
        client.inner.sweep();
        assert_eq!(client.kept(), 0);
    }

    #[tokio::test]
    async fn a_full_list_closes_what_comes_back() {
        let long = long();
        let (address, accepted) = backend(usize::MAX, long).await;
        let client = Http1::keeping(Duration::from_secs(1), Duration::from_secs(1), 2);
        let open = [
            client.request(&address, get()).await.expect("answer"),
            client.request(&address, get()).await.expect("answer"),
            client.request(&address, get()).await.expect("answer"),
        ];
        for response in open {
            assert_eq!(read_whole(response).await.len(), long.len());
        }
        // Two kept; the third closed as it came back.
        assert_eq!(client.kept(), 2);
        for _ in 0..3 {
            let response = client.request(&address, get()).await.expect("answer");
            assert_eq!(read_whole(response).await.len(), long.len());
        }
        assert_eq!(accepted.load(Relaxed), 3);
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
}
