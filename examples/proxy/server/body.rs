//! The bodies the proxy sends: a short one of its own (errors), or a
//! backend's response streamed through while its pick is held, so the
//! backend counts as busy until the last byte and the outcome is reported
//! when the exchange really ends.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use loadbalance::limit::Admission;
use loadbalance::Picked;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: the proxy's own, or a backend's.
pub(crate) enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Held),
    /// A backend's body whose outcome was already reported.
    Unheld(Incoming),
}

impl ProxyBody {
    pub(crate) fn text(text: &'static str) -> Self {
        Self::Full(Some(Bytes::from_static(text.as_bytes())))
    }

    pub(crate) fn owned(text: String) -> Self {
        Self::Full(Some(Bytes::from(text)))
    }
}

/// A backend's response body and the pick it holds: reported a success
/// when the body ends (unless the status was already a failure), a failure
/// when it breaks, and nothing when the client goes away first. The
/// client's admission (its in-flight slots) is held as long.
pub(crate) struct Held {
    body: Incoming,
    picked: Option<Picked<String>>,
    success: bool,
    admission: Option<Admission>,
    /// Set when the client's body passed the limit: the exchange broke by
    /// the client's fault, so the backend is not blamed.
    overflowed: Option<Overflowed>,
}

impl Held {
    pub(crate) fn new(
        body: Incoming,
        picked: Picked<String>,
        success: bool,
        admission: Admission,
        overflowed: Option<Overflowed>,
    ) -> Self {
        let mut held = Self {
            body,
            picked: Some(picked),
            success,
            admission: Some(admission),
            overflowed,
        };
        if held.body.is_end_stream() {
            held.finish(success);
        }
        held
    }

    fn finish(&mut self, success: bool) {
        if let Some(picked) = self.picked.take() {
            if self.overflowed.as_ref().is_some_and(Overflowed::get) {
                drop(picked);
            } else {
                picked.finish(success);
            }
        }
        self.admission = None;
    }
}

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
                let frame = ready!(Pin::new(&mut held.body).poll_frame(cx));
                match &frame {
                    None => held.finish(held.success),
                    Some(Err(_)) => held.finish(false),
                    Some(Ok(_)) if held.body.is_end_stream() => held.finish(held.success),
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Self::Unheld(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Upstream(held) => held.body.is_end_stream(),
            Self::Unheld(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Upstream(held) => held.body.size_hint(),
            Self::Unheld(body) => body.size_hint(),
        }
    }
}

/// Whether a request body passed its limit; shared by the body and the
/// response that may outlive it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overflowed(Arc<AtomicBool>);

impl Overflowed {
    pub(crate) fn get(&self) -> bool {
        // Relaxed: a flag on its own, read after the exchange that set it
        // broke (the body's error reached the response through the
        // connection's own synchronisation).
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A request body cut at `max_body_bytes`: past it, an error (the
/// exchange breaks) and the flag set. A declared `Content-Length` past
/// the limit is refused before this (413); a chunked body is only known
/// to be too large as it streams, so the client gets a 413 if the
/// backend has not answered yet, and a cut connection if it has.
pub(crate) struct Capped {
    body: Incoming,
    left: u64,
    overflowed: Overflowed,
}

impl Capped {
    pub(crate) fn new(body: Incoming, limit: u64, overflowed: Overflowed) -> Self {
        Self {
            body,
            left: limit,
            overflowed,
        }
    }
}

/// A request body past `max_body_bytes`.
#[derive(Debug)]
pub(crate) struct TooLarge;

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body is larger than max_body_bytes")
    }
}

impl std::error::Error for TooLarge {}

impl Body for Capped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                match this.left.checked_sub(size) {
                    Some(left) => {
                        this.left = left;
                        Some(Ok(frame))
                    }
                    None => {
                        this.overflowed.set();
                        Some(Err(Box::new(TooLarge)))
                    }
                }
            }
            Some(Err(error)) => Some(Err(error.into())),
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
