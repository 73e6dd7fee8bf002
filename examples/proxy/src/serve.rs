//! One client connection from accept to close: the TLS handshake if it
//! came to the TLS listener (bounded by `handshake_timeout_ms`), then
//! HTTP/1.1 (plaintext, or ALPN `http/1.1`) or HTTP/2 (ALPN `h2`), every
//! request through the same [`forward::handle`]; its bounds (idle time,
//! framing for HTTP/1.1, HTTP/2's abuse limits) and its place among the
//! connections ([`Slot`]), which may ask it to close to make room.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use std::future::Future;

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::access_log::{self, Logged, Pending};
use super::connections::Slot;
use super::forward::{self, Protocol};
use super::framing::{Framing, Head};
use super::idle::{Busy, Idle};
use super::links::Http1;
use super::{Shared, stopped};

/// How long a connection between requests, told to close, may take to.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// Runs a hyper connection until it ends, or until shutdown or its slot
/// is shed: then a busy connection closes after its requests, one between
/// requests now, outright if it has not within `CLOSE_GRACE` (hyper
/// waits out a head begun, which a flood of partial heads would use).
/// A macro: HTTP/1.1's and HTTP/2's connections share the shape, not a
/// trait.
macro_rules! drive {
    ($connection:expr, $slot:expr, $busy:expr, $stop:expr) => {{
        let mut stop = $stop;
        let mut connection = std::pin::pin!($connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = stopped(&mut stop) => {}
            () = $slot.shed() => {}
        }
        connection.as_mut().graceful_shutdown();
        if $busy.is_busy() {
            let _ = connection.await;
        } else {
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        }
        drop($slot);
    }};
}

/// Everything one connection needs besides its socket.
pub(crate) struct Accepted {
    pub(crate) shared: Arc<Shared>,
    pub(crate) backends: Http1,
    pub(crate) peer: SocketAddr,
    pub(crate) slot: Slot,
    pub(crate) busy: Busy,
    pub(crate) stop: watch::Receiver<bool>,
}

/// Serves `stream` until it closes, shutdown, or it is shed: over TLS
/// when `tls` is given.
///
/// Plaintext HTTP/1.1 is the common case and runs in this future; TLS
/// and HTTP/2 are boxed (their states are several times larger, and a
/// task's future is moved whole when it is spawned, once a connection).
pub(crate) async fn connection(accepted: Accepted, stream: TcpStream, tls: Option<TlsAcceptor>) {
    let _ = stream.set_nodelay(true);
    if let Some(acceptor) = tls {
        return Box::pin(secure(accepted, stream, acceptor)).await;
    }
    // HTTP/2 by prior knowledge (h2c: gRPC clients) opens with its
    // preface; anything else is HTTP/1.1.
    let timeout = accepted.shared.settings.header_timeout();
    let mut stop = accepted.stop.clone();
    let h2c = tokio::select! {
        seen = tokio::time::timeout(timeout, h2c_preface(&stream)) => seen == Ok(true),
        // Shed or shut down before a byte came: nothing to finish.
        () = accepted.slot.shed() => return,
        () = stopped(&mut stop) => return,
    };
    if h2c {
        return Box::pin(http2_on(accepted, stream, Protocol::H2c)).await;
    }
    http1_on(accepted, stream, Protocol::Http1).await;
}

/// A connection to the TLS listener: the handshake (bounded by
/// `handshake_timeout_ms`), then HTTP/2 or HTTP/1.1 by ALPN.
async fn secure(accepted: Accepted, stream: TcpStream, acceptor: TlsAcceptor) {
    let counters = &accepted.shared.counters;
    let timeout = accepted
        .shared
        .tls
        .as_ref()
        .map_or(Duration::from_secs(10), |tls| tls.handshake_timeout);
    let mut stop = accepted.stop.clone();
    let handshake = tokio::select! {
        done = tokio::time::timeout(timeout, acceptor.accept(stream)) => done,
        // Shed or shut down mid-handshake: nothing to finish.
        () = accepted.slot.shed() => return,
        () = stopped(&mut stop) => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => {
            counters.tls_handshake_failures.fetch_add(1, Relaxed);
            return;
        }
        Err(_) => {
            counters.tls_handshake_timeouts.fetch_add(1, Relaxed);
            return;
        }
    };
    counters.tls_handshakes.fetch_add(1, Relaxed);
    let (_, session) = stream.get_ref();
    let tls13 = session.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    if session.alpn_protocol() == Some(b"h2") {
        Box::pin(http2_on(accepted, stream, Protocol::H2 { tls13 })).await;
    } else {
        http1_on(accepted, stream, Protocol::Https1 { tls13 }).await;
    }
}

/// HTTP/2's connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `stream` opens with HTTP/2's preface: peeked (nothing read) as
/// far as the bytes that came still match it; false at the first that
/// does not, or an error.
async fn h2c_preface(stream: &TcpStream) -> bool {
    let mut seen = [0u8; 24];
    // Each turn waits for more bytes; the caller's timeout bounds them.
    loop {
        let Ok(n) = stream.peek(&mut seen).await else {
            return false;
        };
        if n == 0 || seen[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        // A prefix so far: wait for the rest without spinning.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What every request of a connection is handled with.
struct Each<'a> {
    shared: &'a Arc<Shared>,
    backends: &'a Http1,
    peer: SocketAddr,
    protocol: Protocol,
    busy: &'a Busy,
}

/// One request's handling, the same for HTTP/1.1 and HTTP/2: the
/// connection counted busy until the response body ends, the access line
/// begun at the head and written at the end.
fn respond(
    each: Each<'_>,
    head: Head,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<Logged>, Infallible>> + Send + use<> {
    let shared = Arc::clone(each.shared);
    let backends = each.backends.clone();
    let handling = each.busy.enter();
    let (peer, protocol) = (each.peer, each.protocol);
    let line = shared
        .access_log
        .as_ref()
        .map(|log| Pending::begin(log, &request, protocol));
    async move {
        let mut response = forward::handle(shared, backends, peer, protocol, head, request).await;
        response.body_mut().hold(handling);
        Ok(access_log::logged(response, line))
    }
}

/// HTTP/1.1 on `io`: the framing watched, one request at a time.
async fn http1_on<IO>(accepted: Accepted, io: IO, protocol: Protocol)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        shared,
        backends,
        peer,
        slot,
        busy,
        stop,
    } = accepted;
    let settings = &shared.settings;
    let (io, heads) = Framing::new(
        Idle::new(io, settings.idle_timeout(), busy.clone()),
        settings.max_header_bytes,
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout())
        .max_buf_size(settings.max_header_bytes)
        // A client may shut its side after its request (RFC 9112 §9.6):
        // it still gets its answer, as from nginx.
        .half_close(true)
        .keep_alive(true);
    let request_shared = Arc::clone(&shared);
    let request_busy = busy.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let head = heads.next();
        let each = Each {
            shared: &request_shared,
            backends: &backends,
            peer,
            protocol,
            busy: &request_busy,
        };
        respond(each, head, request)
    });
    // Upgrades: a `101` hands the connection to its tunnel (`tunnel/`).
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    drive!(connection, slot, busy, stop);
}

/// HTTP/2 (over TLS by ALPN, or h2c by prior knowledge): streams served
/// concurrently, each request a verdict of its own (HTTP/2 frames bodies
/// itself: nothing to smuggle), within the `[http2]` bounds.
async fn http2_on<IO>(accepted: Accepted, io: IO, protocol: Protocol)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        shared,
        backends,
        peer,
        slot,
        busy,
        stop,
    } = accepted;
    let limits = &shared.http2;
    let io = Idle::new(io, shared.settings.idle_timeout(), busy.clone());
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .initial_stream_window_size(limits.initial_stream_window_size)
        .initial_connection_window_size(limits.initial_connection_window_size)
        .max_send_buf_size(limits.max_send_buf_size)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(limits.max_local_error_reset_streams))
        // WebSocket over HTTP/2 (RFC 8441), tunnelled as HTTP/1.1's.
        .enable_connect_protocol();
    let request_shared = Arc::clone(&shared);
    let request_busy = busy.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let each = Each {
            shared: &request_shared,
            backends: &backends,
            peer,
            protocol,
            busy: &request_busy,
        };
        respond(each, Head::Clean, request)
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    drive!(connection, slot, busy, stop);
}
