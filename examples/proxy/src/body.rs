//! The bodies the proxy sends: a short one of its own (errors), or a
//! backend's response streamed through while its pick is held, so the
//! backend counts as busy until the last byte and the outcome is reported
//! when the exchange really ends; and the client's request body on its way
//! to the backend, capped in size.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use loadbalance::Picked;
use loadbalance::limit::Admission;
use tokio::time::{Instant, Sleep};

use super::headers::grpc_unavailable;
use super::idle::BusyGuard;
use super::links::Answer;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: the proxy's own, or a backend's.
pub(crate) enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Held),
    /// A backend's body whose outcome was already reported (a retried
    /// 5xx that was the last word); the client's admission is held until
    /// it ends.
    Unheld(Answer, Option<Admission>),
    /// A body passed through a layer on its way: compressed
    /// (`compress/`), or stored in the cache (`cache/`).
    Layered(Box<dyn Layer>),
}

/// A body that carries another on its way to the client.
pub(crate) trait Layer: Body<Data = Bytes, Error = BoxError> + Send + Unpin {
    /// Hands the connection's busy mark to whatever reads the backend's
    /// body, so the client's idle clock stands still until it ends.
    fn hold(&mut self, busy: BusyGuard);
}

impl ProxyBody {
    pub(crate) fn text(text: &'static str) -> Self {
        Self::Full(Some(Bytes::from_static(text.as_bytes())))
    }

    pub(crate) fn owned(text: String) -> Self {
        Self::Full(Some(Bytes::from(text)))
    }

    /// Keeps the connection's idle clock stopped until a backend's body
    /// ends (its pauses are the backend's, bounded by the stall timeout,
    /// not the client's idleness).
    pub(crate) fn hold(&mut self, busy: BusyGuard) {
        match self {
            Self::Upstream(held) => held.busy = Some(busy),
            Self::Layered(body) => body.hold(busy),
            Self::Full(_) | Self::Unheld(..) => {}
        }
    }
}

/// A backend's response body and the pick it holds: reported a success
/// when the body ends (unless the status was already a failure), a failure
/// when it breaks or stalls, and nothing when the client goes away first
/// or broke its own request. The client's admission (its in-flight slots)
/// is held as long.
pub(crate) struct Held {
    body: Answer,
    picked: Option<Picked<String>>,
    success: bool,
    admission: Option<Admission>,
    /// Set when the client's request body broke: not the backend's fault.
    fault: Option<ClientFault>,
    busy: Option<BusyGuard>,
    /// A backend silent this long mid-body has failed.
    stall_after: Duration,
    stall: Option<Pin<Box<Sleep>>>,
}

impl Held {
    pub(crate) fn new(
        body: Answer,
        picked: Picked<String>,
        success: bool,
        admission: Option<Admission>,
        fault: Option<ClientFault>,
        stall_after: Duration,
    ) -> Self {
        let mut held = Self {
            body,
            picked: Some(picked),
            success,
            admission,
            fault,
            busy: None,
            stall_after,
            stall: None,
        };
        if held.body.is_end_stream() {
            held.finish(success);
        }
        held
    }

    fn finish(&mut self, success: bool) {
        if let Some(picked) = self.picked.take() {
            if self.fault.as_ref().is_some_and(|f| f.get().is_some()) {
                drop(picked);
            } else {
                picked.finish(success);
            }
        }
        self.admission = None;
        self.busy = None;
        self.stall = None;
    }
}

/// Why the proxy broke off a body.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// A backend sent part of its body and then nothing for the stall
    /// timeout (`upstream_timeout_ms`).
    Stalled,
    /// A request body past `max_body_bytes`.
    TooLarge,
    /// A client silent mid-body for `client_body_timeout_ms`.
    ClientSilent,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stalled => "the backend stalled mid-body",
            Self::TooLarge => "the request body is larger than max_body_bytes",
            Self::ClientSilent => "the client stopped sending its request body",
        })
    }
}

impl std::error::Error for BodyError {}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Upstream(held) => {
                let frame = match Pin::new(&mut held.body).poll_frame(cx) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        let after = held.stall_after;
                        // The stall clock counts the backend's own time: a
                        // pause while the client's body is awaited (its own
                        // timeout bounds that) or just after it moved is
                        // not the backend's. At most two turns: a reset
                        // deadline lies ahead.
                        loop {
                            let stall = held
                                .stall
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                            ready!(stall.as_mut().poll(cx));
                            let now = Instant::now();
                            let later = match &held.fault {
                                Some(body) if body.waiting() => Some(now + after),
                                Some(body) if body.progressed_at() + after > now => {
                                    Some(body.progressed_at() + after)
                                }
                                _ => None,
                            };
                            match later {
                                Some(deadline) => stall.as_mut().reset(deadline),
                                None => break,
                            }
                        }
                        held.finish(false);
                        return Poll::Ready(Some(Err(Box::new(BodyError::Stalled))));
                    }
                };
                held.stall = None;
                // A gRPC call's status comes in its trailers.
                if let Some(Ok(trailers)) =
                    frame.as_ref().map(|f| f.as_ref().map(Frame::trailers_ref))
                {
                    if trailers.is_some_and(grpc_unavailable) {
                        held.success = false;
                    }
                }
                match &frame {
                    None => held.finish(held.success),
                    Some(Err(_)) => held.finish(false),
                    Some(Ok(_)) if held.body.is_end_stream() => held.finish(held.success),
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame)
            }
            Self::Unheld(body, admission) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if frame.is_none() {
                    *admission = None;
                }
                Poll::Ready(frame)
            }
            Self::Layered(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Upstream(held) => held.body.is_end_stream(),
            Self::Unheld(body, _) => body.is_end_stream(),
            Self::Layered(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Upstream(held) => held.body.size_hint(),
            Self::Unheld(body, _) => body.size_hint(),
            Self::Layered(body) => body.size_hint(),
        }
    }
}

/// How a client broke its own request body, if it did, and whether the
/// exchange is waiting on it now; shared by the body and the response
/// that may outlive it, so the backend is not blamed for an exchange the
/// client broke or held up (else any client could eject healthy backends
/// at will).
#[derive(Clone, Debug)]
pub(crate) struct ClientFault(Arc<BodyState>);

#[derive(Debug)]
struct BodyState {
    fault: AtomicU8,
    /// The body's next bytes are awaited from the client.
    waiting: AtomicBool,
    /// When the client last moved its body (a frame, or its end), in
    /// nanoseconds after `since`.
    progress: AtomicU64,
    since: Instant,
}

/// What a client did wrong with its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Past `max_body_bytes`.
    TooLarge,
    /// Cut off, or not valid HTTP framing.
    Broken,
    /// Silent for `client_body_timeout_ms` mid-body.
    TimedOut,
}

// Relaxed throughout: each field is a figure on its own, written by the
// body's task and read by the exchange on the same worker thread (one
// event loop a connection), or after the exchange that set it ended
// (its error reached the reader through the connection's own
// synchronisation).
impl ClientFault {
    pub(crate) fn new() -> Self {
        Self(Arc::new(BodyState {
            fault: AtomicU8::new(0),
            waiting: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            since: Instant::now(),
        }))
    }

    pub(crate) fn get(&self) -> Option<Fault> {
        match self.0.fault.load(Ordering::Relaxed) {
            1 => Some(Fault::TooLarge),
            2 => Some(Fault::Broken),
            3 => Some(Fault::TimedOut),
            _ => None,
        }
    }

    fn set(&self, fault: Fault) {
        let code = match fault {
            Fault::TooLarge => 1,
            Fault::Broken => 2,
            Fault::TimedOut => 3,
        };
        self.0.fault.store(code, Ordering::Relaxed);
    }

    /// Whether the exchange waits on the client's body now.
    pub(crate) fn waiting(&self) -> bool {
        self.0.waiting.load(Ordering::Relaxed)
    }

    /// When the client last moved its body (the exchange's start if never).
    pub(crate) fn progressed_at(&self) -> Instant {
        self.0.since + Duration::from_nanos(self.0.progress.load(Ordering::Relaxed))
    }

    fn wait(&self, waiting: bool) {
        self.0.waiting.store(waiting, Ordering::Relaxed);
    }

    fn progress(&self) {
        let nanos = u64::try_from(self.0.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.progress.store(nanos, Ordering::Relaxed);
        self.wait(false);
    }
}

/// A request body cut at `max_body_bytes` and at `client_body_timeout_ms`
/// of silence (nginx's `client_body_timeout`): past either, an error (the
/// exchange breaks) and the fault recorded. A declared `Content-Length`
/// past the limit is refused before this (413); a chunked body is only
/// known to be too large as it streams, so the client gets a 413 if the
/// backend has not answered yet, and a cut connection if it has; a
/// silent client gets a 408.
pub(crate) struct Capped {
    body: Incoming,
    /// What was read before a backend was picked, sent first.
    prefix: Option<Bytes>,
    left: u64,
    fault: ClientFault,
    /// The longest silence between two reads of the body.
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Capped {
    pub(crate) fn new(body: Incoming, limit: u64, timeout: Duration, fault: ClientFault) -> Self {
        Self {
            body,
            prefix: None,
            left: limit,
            fault,
            timeout,
            timer: None,
        }
    }

    /// How the client broke this body, if it did.
    pub(crate) fn fault(&self) -> Option<Fault> {
        self.fault.get()
    }

    /// Sends `prefix`, read already, before the rest.
    fn with_prefix(mut self, prefix: Bytes) -> Self {
        self.prefix = Some(prefix);
        self
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        // Request trailers are dropped, as nginx does: a backend that
        // merged them into the headers would take a client's `X-Real-IP`
        // trailer for the proxy's. At most two turns: trailers end a body.
        let polled = loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {}
                polled => break polled,
            }
        };
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                this.fault.wait(true);
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(timer.as_mut().poll(cx));
                this.timer = None;
                this.fault.set(Fault::TimedOut);
                this.fault.wait(false);
                return Poll::Ready(Some(Err(Box::new(BodyError::ClientSilent))));
            }
        };
        this.timer = None;
        this.fault.progress();
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                match this.left.checked_sub(size) {
                    Some(left) => {
                        this.left = left;
                        Some(Ok(frame))
                    }
                    None => {
                        this.fault.set(Fault::TooLarge);
                        Some(Err(Box::new(BodyError::TooLarge)))
                    }
                }
            }
            Some(Err(error)) => {
                this.fault.set(Fault::Broken);
                Some(Err(error.into()))
            }
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

/// What the proxy sends a backend: nothing, a body read whole before the
/// pick (replayable on a retry), or one streamed from the client (its
/// first part read already).
pub(crate) enum UpstreamBody {
    Empty,
    Whole(Option<Bytes>),
    /// Boxed: the rarer case, and every request to a backend carries
    /// this enum (moved along with it) at the size of its largest form.
    Streamed(Box<Capped>),
}

impl UpstreamBody {
    /// Reads `body` before a backend is picked: whole, if it ends within
    /// `buffer` bytes, so a slow sender never holds a backend; else the
    /// part read and the rest streamed. `Err` when the client broke it.
    pub(crate) async fn read(mut body: Capped, buffer: usize) -> Result<Self, Fault> {
        let mut read = bytes::BytesMut::new();
        // Each turn takes one frame; the body is bounded by its cap.
        loop {
            match http_body_util::BodyExt::frame(&mut body).await {
                None => return Ok(Self::Whole(Some(read.freeze()))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        read.extend_from_slice(&data);
                        if read.len() > buffer {
                            return Ok(Self::Streamed(Box::new(body.with_prefix(read.freeze()))));
                        }
                    }
                }
                Some(Err(_)) => return Err(body.fault().unwrap_or(Fault::Broken)),
            }
        }
    }

    /// Whether a second attempt can send it again.
    pub(crate) fn replayable(&self) -> bool {
        !matches!(self, Self::Streamed(_))
    }

    /// The body for one attempt: a copy of what can be replayed, else the
    /// stream itself (once).
    pub(crate) fn attempt(&mut self) -> Self {
        match self {
            Self::Empty => Self::Empty,
            Self::Whole(bytes) => Self::Whole(bytes.clone()),
            Self::Streamed(_) => std::mem::replace(self, Self::Empty),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Streamed(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Whole(bytes) => bytes.is_none(),
            Self::Streamed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Self::Streamed(body) => body.size_hint(),
        }
    }
}
