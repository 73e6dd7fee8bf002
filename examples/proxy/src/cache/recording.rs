//! A response stored as it streams. A pump task reads the backend's body
//! at the backend's pace, keeps each piece aside for the cache, and hands
//! it on to the client, who reads at its own: a client that reads slowly
//! (or leaves) neither holds the backend nor delays the entry, and so
//! never holds up the misses collapsed behind it (nginx buffers a cached
//! response the same way). At the end the pieces become the stored entry
//! and the waiting misses are woken.
//!
//! A body past `max_entry_bytes` is passed on uncached: what was kept is
//! let go, the waiting misses go their own way, and from then on the pump
//! waits for the client whenever 64 KiB are unread. The bytes clients
//! have not read of responses being stored are bounded in all by
//! `max_bytes` again (past it a response is no longer stored), so slow
//! readers cannot make the proxy hold more than that. A body that breaks,
//! stalls past `upstream_timeout_ms` or carries trailers is not stored
//! either; a pump whose client has left and that no longer stores stops
//! at once.
//!
//! # Synchronization
//! The tape (the pieces unread by the client, the end, and whether the
//! client is gone) is one mutex's; the pump wakes the client's waker after
//! each change, and the client wakes the pump's `Notify` after each read,
//! so neither misses the other's progress.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::collapse::Flight;
use super::counters::Counters;
use super::store::{Slot, Store, Stored};
use crate::body::{BoxError, Layer, ProxyBody};
use crate::idle::BusyGuard;

/// What will be stored when the body has all arrived.
pub(crate) struct Pending {
    pub(crate) store: Arc<Store>,
    pub(crate) counters: Arc<Counters>,
    /// `max_entry_bytes`.
    pub(crate) limit: usize,
    /// A backend silent this long mid-body has failed.
    pub(crate) stall: std::time::Duration,
    /// Bytes on every tape that their clients have not read yet, and the
    /// most the responses being stored may leave there in all.
    pub(crate) unread: Arc<AtomicU64>,
    pub(crate) budget: u64,
    pub(crate) key: String,
    /// The entry, its body still empty.
    pub(crate) entry: Stored,
    pub(crate) flight: Option<Flight>,
}

/// How a body ended.
enum End {
    Whole(Option<HeaderMap>),
    Broken(String),
}

#[derive(Default)]
struct TapeState {
    unread: VecDeque<Bytes>,
    unread_bytes: usize,
    end: Option<End>,
    reader: Option<Waker>,
    reader_gone: bool,
}

/// The pieces between the pump and the client.
#[derive(Default)]
struct Tape {
    state: Mutex<TapeState>,
    /// The client read, or left.
    read: Notify,
}

/// The client's side: the body as the pump hands it on.
pub(crate) struct Recording {
    tape: Arc<Tape>,
    /// The bytes unread on every tape (this one's among them).
    unread: Arc<AtomicU64>,
    size: SizeHint,
    /// The connection's idle clock stays stopped until the body ends.
    busy: Option<BusyGuard>,
    done: bool,
}

impl Recording {
    /// Starts the pump over `inner` for `pending`.
    pub(crate) fn new(inner: ProxyBody, pending: Pending) -> Self {
        let tape = Arc::new(Tape::default());
        let size = inner.size_hint();
        let unread = Arc::clone(&pending.unread);
        tokio::spawn(pump(inner, Arc::clone(&tape), pending));
        Self {
            unread,
            tape,
            size,
            busy: None,
            done: false,
        }
    }
}

impl Layer for Recording {
    fn hold(&mut self, busy: BusyGuard) {
        self.busy = Some(busy);
    }
}

/// Unread bytes a client may have on a tape once its response is no
/// longer being stored: past them the pump waits for the client (as a
/// proxy's buffers do).
const UNSTORED_UNREAD: usize = 64 << 10;

/// Reads `body` at the backend's pace onto `tape`, keeping the pieces for
/// `pending` until they pass its limit, or the unread bytes of every
/// response being stored pass the budget; stores them at the end. A
/// backend silent for the stall bound ends the body broken.
async fn pump(mut body: ProxyBody, tape: Arc<Tape>, pending: Pending) {
    let (limit, stall) = (pending.limit, pending.stall);
    let unread = Arc::clone(&pending.unread);
    let mut pending = Some(pending);
    let mut kept: Vec<Bytes> = Vec::new();
    let mut bytes = 0usize;
    let give_up = |pending: &mut Option<Pending>, kept: &mut Vec<Bytes>| {
        if let Some(pending) = pending.take() {
            pending.counters.not_stored.fetch_add(1, Relaxed);
        }
        kept.clear();
    };
    loop {
        // Not storing: wait while the client has enough unread, and stop
        // as soon as it has left (even mid-wait for the backend).
        let next = tokio::time::timeout(stall, body.frame());
        let frame = if pending.is_some() {
            next.await
        } else {
            if !room(&tape).await {
                return;
            }
            tokio::select! {
                frame = next => frame,
                () = left(&tape) => return,
            }
        };
        let frame = frame.unwrap_or_else(|_| Some(Err("the backend stalled".into())));
        let mut state = tape.state.lock();
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if let Some(storing) = &pending {
                        let over_budget = storing.unread.load(Relaxed) > storing.budget;
                        if bytes + data.len() > limit || over_budget {
                            give_up(&mut pending, &mut kept);
                        } else {
                            bytes += data.len();
                            kept.push(data.clone());
                        }
                    }
                    if !state.reader_gone {
                        state.unread_bytes += data.len();
                        unread.fetch_add(data.len() as u64, Relaxed);
                        state.unread.push_back(data);
                    }
                }
                Err(frame) => {
                    // Trailers cannot be replayed from the cache.
                    give_up(&mut pending, &mut kept);
                    if let Ok(trailers) = frame.into_trailers() {
                        state.end = Some(End::Whole(Some(trailers)));
                    }
                }
            },
            Some(Err(error)) => {
                give_up(&mut pending, &mut kept);
                state.end = Some(End::Broken(error.to_string()));
            }
            None => {
                if state.end.is_none() {
                    state.end = Some(End::Whole(None));
                }
            }
        }
        let ended = state.end.is_some();
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
        drop(state);
        if ended {
            break;
        }
    }
    if let Some(mut pending) = pending {
        let flight = pending.flight.take();
        let mut whole = BytesMut::with_capacity(bytes);
        for piece in kept {
            whole.extend_from_slice(&piece);
        }
        pending.entry.body = whole.freeze();
        let Pending {
            store,
            counters,
            key,
            entry,
            ..
        } = pending;
        let slot = Slot::Response(Arc::new(entry));
        // A URI invalidated while its response streamed keeps nothing of
        // it.
        let kept = match &flight {
            Some(flight) => flight.store_unless_invalidated(|| store.keep(key, slot, &counters)),
            None => {
                store.keep(key, slot, &counters);
                true
            }
        };
        if !kept {
            counters.not_stored.fetch_add(1, Relaxed);
        }
        // The waiters are woken once the entry is in.
        drop(flight);
    }
}

/// Waits until the client has fewer than [`UNSTORED_UNREAD`] bytes
/// unread; `false` when it has left.
async fn room(tape: &Tape) -> bool {
    loop {
        let read = tape.read.notified();
        {
            let state = tape.state.lock();
            if state.reader_gone {
                return false;
            }
            if state.unread_bytes < UNSTORED_UNREAD {
                return true;
            }
        }
        read.await;
    }
}

/// Waits until the client has left.
async fn left(tape: &Tape) {
    loop {
        let read = tape.read.notified();
        if tape.state.lock().reader_gone {
            return;
        }
        read.await;
    }
}

impl Body for Recording {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let tape = Arc::clone(&self.tape);
        let mut state = tape.state.lock();
        if let Some(piece) = state.unread.pop_front() {
            state.unread_bytes -= piece.len();
            self.unread.fetch_sub(piece.len() as u64, Relaxed);
            drop(state);
            tape.read.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let answer = match state.end.take() {
            None => {
                state.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Some(End::Whole(None)) => None,
            Some(End::Whole(Some(trailers))) => Some(Ok(Frame::trailers(trailers))),
            Some(End::Broken(error)) => Some(Err(error.into())),
        };
        drop(state);
        self.done = true;
        self.busy = None;
        Poll::Ready(answer)
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let state = self.tape.state.lock();
        state.unread.is_empty() && matches!(state.end, Some(End::Whole(None)))
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let mut state = self.tape.state.lock();
        state.reader_gone = true;
        state.unread.clear();
        self.unread.fetch_sub(state.unread_bytes as u64, Relaxed);
        state.unread_bytes = 0;
        drop(state);
        // The pump, if it waits for room, stops.
        self.tape.read.notify_one();
    }
}
