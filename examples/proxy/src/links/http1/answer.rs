//! A backend's response body, read from its connection as the client
//! takes it. The connection goes back to its list the moment the body
//! has ended, if its framing allows another request; a body dropped
//! before its end closes it (whatever is left unread would be taken for
//! the next response).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::Http1;
use super::chunked::{Chunked, Step};
use super::head::{Framing, WireError};
use super::send::{Conn, Cut, READ_SIZE, Upload};
use super::switched::Switched;
use crate::body::BoxError;

/// The most a single read asks for on a long body.
const MAX_READ: usize = 64 * 1024;

/// A response body from one of a worker's HTTP/1.1 connections.
pub(crate) struct Streaming {
    /// `None` once the body has ended (or the connection was switched).
    conn: Option<Conn>,
    reading: Reading,
    /// Where the connection goes back to, if it may carry another request.
    home: Option<Home>,
    /// What is left to send of a streamed request the backend answered
    /// early: sent on as this is read. The connection is used again only
    /// if it was sent whole.
    upload: Option<Box<Upload>>,
}

enum Reading {
    /// The whole body, read with the head (the connection already home).
    Whole(Bytes),
    Length(u64),
    Chunked(Chunked),
    Close,
    /// A `101`: no body; the connection is the tunnel's.
    Switch,
    Done,
}

pub(super) struct Home {
    pub(super) client: Http1,
    pub(super) address: Arc<str>,
}

/// What one look at the buffered bytes gave.
enum Got {
    Frame(Frame<Bytes>),
    /// The last frame: the body ends with it.
    Last(Frame<Bytes>),
    End,
    More,
}

impl Streaming {
    pub(super) fn new(
        conn: Conn,
        framing: Framing,
        home: Option<Home>,
        upload: Option<Box<Upload>>,
    ) -> Self {
        let reading = match framing {
            Framing::Empty => Reading::Length(0),
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(Chunked::new()),
            Framing::Close => Reading::Close,
            Framing::Switch => Reading::Switch,
        };
        let mut body = Self {
            conn: Some(conn),
            reading,
            home,
            upload,
        };
        match body.reading {
            Reading::Length(0) => body.finish(),
            // Read whole with its head (a small answer): the connection
            // goes home now, not when the client has taken the body.
            Reading::Length(n) if body.conn.as_ref().is_some_and(|c| c.read.len() as u64 >= n) => {
                let whole = body
                    .conn
                    .as_mut()
                    .map(|c| c.read.split_to(n as usize).freeze());
                body.finish();
                if let Some(whole) = whole {
                    body.reading = Reading::Whole(whole);
                }
            }
            _ => {}
        }
        body
    }

    /// The connection of a `101`, now the tunnel's, with any bytes the
    /// backend sent past its head; `None` for any other response.
    pub(crate) fn switched(&mut self) -> Option<Switched> {
        if !matches!(self.reading, Reading::Switch) {
            return None;
        }
        self.reading = Reading::Done;
        self.conn
            .take()
            .map(|conn| Switched::new(conn.stream, conn.read.freeze()))
    }

    /// The body has ended: its connection goes home if it may, or sends
    /// the rest of an upload the backend answered early.
    fn finish(&mut self) {
        self.reading = Reading::Done;
        let conn = self.conn.take();
        let home = self.home.take();
        if let Some(upload) = self.upload.take() {
            if let Some(conn) = conn {
                tokio::spawn(upload.finish(conn.stream));
            }
            return;
        }
        let (Some(home), Some(conn)) = (home, conn) else {
            return;
        };
        // Bytes past the body's end: the backend and this reading disagree
        // on where it ended; nothing more is asked on this connection.
        if conn.read.is_empty() {
            home.client.put(&home.address, conn);
        }
    }

    /// The body broke: its connection closes.
    fn fail(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.reading = Reading::Done;
        self.conn = None;
        self.home = None;
        self.upload = None;
        Poll::Ready(Some(Err(error)))
    }

    /// The next frame from the bytes read so far.
    fn buffered(&mut self) -> Result<Got, BoxError> {
        if let Reading::Whole(whole) = &mut self.reading {
            let whole = std::mem::take(whole);
            self.reading = Reading::Done;
            return Ok(Got::Frame(Frame::data(whole)));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Got::End);
        };
        let read = &mut conn.read;
        match &mut self.reading {
            Reading::Done | Reading::Switch | Reading::Whole(_) => Ok(Got::End),
            Reading::Length(0) => Ok(Got::End),
            Reading::Length(left) => {
                if read.is_empty() {
                    return Ok(Got::More);
                }
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                *left -= take as u64;
                let frame = Frame::data(read.split_to(take).freeze());
                Ok(if *left == 0 {
                    Got::Last(frame)
                } else {
                    Got::Frame(frame)
                })
            }
            Reading::Chunked(chunked) => match chunked.step(read)? {
                Step::Data(data) => Ok(Got::Frame(Frame::data(data))),
                Step::Trailers(trailers) => Ok(Got::Last(Frame::trailers(trailers))),
                Step::End => Ok(Got::End),
                Step::More => Ok(Got::More),
            },
            Reading::Close => {
                if read.is_empty() {
                    return Ok(Got::More);
                }
                Ok(Got::Frame(Frame::data(read.split().freeze())))
            }
        }
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let (Some(upload), Some(conn)) = (this.upload.as_mut(), this.conn.as_mut()) {
            match upload.poll_send(&mut conn.stream, cx) {
                Poll::Ready(Ok(())) => this.upload = None,
                Poll::Ready(Err(Cut::Client(error))) => return this.fail(error),
                // The backend takes no more: its answer is read to its end
                // all the same (a reset leaves what came before it).
                Poll::Ready(Err(Cut::Backend)) => this.upload = None,
                Poll::Pending => {}
            }
        }
        // Each turn gives a frame, or reads bytes (the body is bounded by
        // its framing, or by the backend's close).
        loop {
            match this.buffered() {
                Err(error) => return this.fail(error),
                Ok(Got::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Got::Last(frame)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Got::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Got::More) => {}
            }
            let want = match this.reading {
                Reading::Length(left) => usize::try_from(left)
                    .unwrap_or(MAX_READ)
                    .clamp(READ_SIZE, MAX_READ),
                _ => READ_SIZE,
            };
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            conn.read.reserve(want);
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.stream),
                cx,
                &mut conn.read
            )) {
                Ok(0) if matches!(this.reading, Reading::Close) => {
                    // The close that ends the body; the connection is done.
                    this.home = None;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Box::new(WireError::Truncated)),
                Ok(_) => {}
                Err(error) => return this.fail(Box::new(error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(
            self.reading,
            Reading::Done | Reading::Switch | Reading::Length(0)
        )
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Whole(ref whole) => SizeHint::with_exact(whole.len() as u64),
            Reading::Length(left) => SizeHint::with_exact(left),
            Reading::Done | Reading::Switch => SizeHint::with_exact(0),
            Reading::Chunked(_) | Reading::Close => SizeHint::default(),
        }
    }
}
