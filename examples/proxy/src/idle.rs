//! A connection that closes itself after a while with no progress either
//! way: a client that stops sending or reading ties up nothing for longer
//! than the idle timeout (nginx's `client_body_timeout` and
//! `send_timeout`). While a request is handled, from its head until its
//! response body ends, only a pending write (the client not reading)
//! counts: the waits on the backend are bounded by the pick, upstream and
//! stall timeouts instead (nginx's `proxy_read_timeout`), so a slow
//! backend is not taken for an idle client.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub(crate) struct Idle<IO> {
    io: IO,
    busy: Busy,
    timeout: Duration,
    /// The last read or write that moved bytes.
    progress: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<IO> Idle<IO> {
    /// `io` closed after `timeout` without progress, except while `busy`.
    pub(crate) fn new(io: IO, timeout: Duration, busy: Busy) -> Self {
        let now = Instant::now();
        Self {
            io,
            busy,
            timeout,
            progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// A pending read or write: an error once the connection has been idle
    /// for the timeout, else pending with the timer armed.
    /// While a request is handled, only a pending write (the client not
    /// reading) counts as idle.
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>, writing: bool) -> Poll<io::Result<T>> {
        if self.busy.is_busy() && !writing {
            // Idleness starts when the handler is done; whatever wakes
            // this connection next (the response) polls here again.
            self.progress = Instant::now();
            return Poll::Pending;
        }
        let deadline = self.progress + self.timeout;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn done<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
        writing: bool,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.progress = Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx, writing),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Idle<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        this.done(result, cx, false)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Idle<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.done(result, cx, true)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.done(result, cx, true)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.done(result, cx, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Requests of one connection being handled now; its [`Idle`] clock
/// stops while any is. When none is, the connection is idle, and since
/// when tells which to shed first ([`Connections`](super::connections)).
#[derive(Clone, Debug)]
pub(crate) struct Busy(Arc<BusyState>);

#[derive(Debug)]
struct BusyState {
    requests: AtomicUsize,
    /// When the last request ended (or the connection opened), in
    /// nanoseconds after the process's first connection.
    idle_since: AtomicU64,
}

impl Default for Busy {
    fn default() -> Self {
        Self(Arc::new(BusyState {
            requests: AtomicUsize::new(0),
            idle_since: AtomicU64::new(since_start()),
        }))
    }
}

/// Nanoseconds since the first call: one clock for every connection.
fn since_start() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

// Relaxed throughout: hints read on the connection's own task (which
// also runs the handler that writes them) or, to choose whom to shed, by
// another thread that tolerates a stale answer (a connection shed as it
// turns busy finishes its request first).
impl Busy {
    /// Whether a request is being handled now.
    pub(crate) fn is_busy(&self) -> bool {
        self.0.requests.load(Ordering::Relaxed) > 0
    }

    /// Since when the connection has been idle, or `None` while a request
    /// is handled.
    pub(crate) fn idle_since(&self) -> Option<u64> {
        (!self.is_busy()).then(|| self.0.idle_since.load(Ordering::Relaxed))
    }

    /// Marks a request handled until the returned guard drops.
    pub(crate) fn enter(&self) -> BusyGuard {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }
}

/// One request being handled.
#[derive(Debug)]
pub(crate) struct BusyGuard(Busy);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let state = &(self.0).0;
        state.idle_since.store(since_start(), Ordering::Relaxed);
        state.requests.fetch_sub(1, Ordering::Relaxed);
    }
}
