//! The bodies the proxy sends: a short one of its own (errors), or a
//! backend's response streamed through while its pick is held, so the
//! backend counts as busy until the last byte and the outcome is reported
//! when the exchange really ends.

use std::pin::Pin;
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
}

impl Held {
    pub(crate) fn new(
        body: Incoming,
        picked: Picked<String>,
        success: bool,
        admission: Admission,
    ) -> Self {
        let mut held = Self {
            body,
            picked: Some(picked),
            success,
            admission: Some(admission),
        };
        if held.body.is_end_stream() {
            held.finish(success);
        }
        held
    }

    fn finish(&mut self, success: bool) {
        if let Some(picked) = self.picked.take() {
            picked.finish(success);
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
