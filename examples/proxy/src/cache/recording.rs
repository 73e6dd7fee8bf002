//! A response stored as it streams to the client: each piece is passed on
//! at once and kept aside; at the end the pieces become the stored entry.
//! A body past `max_entry_bytes` is passed on uncached (what was kept is
//! let go), and so is one that breaks, carries trailers, or whose client
//! leaves first. Whatever ends the recording wakes the misses that
//! waited on it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use super::Cache;
use super::collapse::Flight;
use super::store::{Slot, Stored};
use crate::body::{BoxError, ProxyBody};

/// What will be stored when the body has all arrived.
pub(crate) struct Pending {
    pub(crate) cache: Arc<Cache>,
    pub(crate) key: String,
    /// The entry, its body still empty.
    pub(crate) entry: Stored,
    pub(crate) flight: Option<Flight>,
}

/// A body on its way to the client and into the cache.
pub(crate) struct Recording {
    inner: ProxyBody,
    pending: Option<Pending>,
    kept: Vec<Bytes>,
    bytes: usize,
}

impl Recording {
    pub(crate) fn new(inner: ProxyBody, pending: Pending) -> Self {
        let mut recording = Self {
            inner,
            pending: Some(pending),
            kept: Vec::new(),
            bytes: 0,
        };
        // An empty body may never be polled.
        if recording.inner.is_end_stream() {
            recording.complete();
        }
        recording
    }

    pub(crate) fn inner_mut(&mut self) -> &mut ProxyBody {
        &mut self.inner
    }

    fn give_up(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending
                .cache
                .counters
                .not_stored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.kept = Vec::new();
    }

    fn complete(&mut self) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let mut body = BytesMut::with_capacity(self.bytes);
        for piece in self.kept.drain(..) {
            body.extend_from_slice(&piece);
        }
        pending.entry.body = body.freeze();
        let cache = Arc::clone(&pending.cache);
        cache.keep(pending.key, Slot::Response(Arc::new(pending.entry)));
        // The waiters are woken once the entry is in.
        drop(pending.flight.take());
    }
}

impl Body for Recording {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => match frame.data_ref() {
                Some(data) if this.pending.is_some() => {
                    let limit = this
                        .pending
                        .as_ref()
                        .map_or(0, |p| p.cache.settings.max_entry_bytes);
                    if this.bytes + data.len() > limit {
                        this.give_up();
                    } else {
                        this.bytes += data.len();
                        this.kept.push(data.clone());
                    }
                }
                Some(_) => {}
                // Trailers cannot be replayed from the cache.
                None => this.give_up(),
            },
            Some(Err(_)) => this.give_up(),
            None => this.complete(),
        }
        if frame.as_ref().is_some_and(Result::is_ok) && this.inner.is_end_stream() {
            this.complete();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // The client left before the end: nothing is stored.
        if self.pending.is_some() {
            self.give_up();
        }
    }
}

/// Reads `body` to its end (a response stored while its client was
/// answered otherwise, or a background refresh).
pub(crate) async fn drain(mut body: ProxyBody) {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return;
        }
    }
}
