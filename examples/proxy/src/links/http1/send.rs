//! One exchange on a connection: the request written (its head and a
//! body read whole in one vectored write; a streamed body after its
//! head), and the response head read back, past any interim answers.
//!
//! A streamed body is sent while the response is awaited: a backend that
//! answers before the upload ends (a `413`, or a stream that echoes the
//! body) is heard at once, and the rest of the body is sent as its answer
//! is read. A connection whose request was not sent whole is not used
//! again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::body::Body;
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{HeaderMap, Method};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::head::{self, Head, WireError};
use crate::body::{BoxError, UpstreamBody};

/// Bytes asked of the socket at a time, at least.
pub(super) const READ_SIZE: usize = 16 * 1024;

/// Interim (1xx) answers read past before the final one, at most.
const MAX_INTERIM: usize = 8;

/// A connection to a backend and its buffers, kept between exchanges.
pub(crate) struct Conn {
    pub(super) stream: TcpStream,
    /// Bytes read and not yet used.
    pub(super) read: BytesMut,
    /// The request head being written (its allocation reused).
    write: Vec<u8>,
}

/// How the request's body goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// None, or whole in the head's write.
    Written,
    /// Streamed, this many bytes (the client's own `Content-Length`).
    Length(u64),
    /// Streamed in chunks.
    Chunked,
}

/// A streamed body did not match its `Content-Length`.
#[derive(Debug)]
struct BodyLength;

impl std::fmt::Display for BodyLength {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body does not match its Content-Length")
    }
}

impl std::error::Error for BodyLength {}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Whether the backend may still use this idle connection: nothing
    /// in the socket (no close, no stray bytes). Asks the kernel (a
    /// peek), not the event loop's readiness, which a busy worker updates
    /// only now and then: bytes or a close that came since would
    /// otherwise be taken for the next request's answer.
    pub(super) fn idle_and_open(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        self.read.is_empty()
            && matches!(
                socket2::SockRef::from(&self.stream).peek(&mut probe),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            )
    }

    /// Sends the request and reads the response head;
    /// with it, what is left to send of a streamed body the backend
    /// answered before it had it all (sent on as the answer is read).
    pub(super) async fn exchange(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &mut UpstreamBody,
        stall: Duration,
    ) -> Result<(Head, Option<Box<Upload>>), BoxError> {
        if !super::super::sendable(target) {
            return Err(Box::new(WireError::Target));
        }
        let head_request = method == Method::HEAD;
        self.write.clear();
        let plan = encode(method, target, headers, body, &mut self.write);
        let mut upload = None;
        match body {
            UpstreamBody::Whole(Some(bytes)) if !bytes.is_empty() => {
                let mut both = Buf::chain(self.write.as_slice(), bytes.clone());
                self.stream.write_all_buf(&mut both).await?;
            }
            UpstreamBody::Streamed(_) => {
                self.stream.write_all(&self.write).await?;
                let body = std::mem::replace(body, UpstreamBody::Empty);
                upload = Some(Box::new(Upload::new(body, plan, stall)));
            }
            _ => self.stream.write_all(&self.write).await?,
        }
        let mut reading = Reading::new(head_request);
        // Whether the backend stopped taking the upload before it ended.
        let mut cut = false;
        let head = std::future::poll_fn(|cx| {
            // The answer first, as hyper's dispatcher reads before it
            // writes: an early answer in the socket is heard even when the
            // upload's next write would fail (the backend reset after it).
            if let Poll::Ready(head) = reading.poll_head(&mut self.stream, &mut self.read, cx) {
                return Poll::Ready(head);
            }
            if let Some(sending) = upload.as_mut() {
                match sending.poll_send(&mut self.stream, cx) {
                    Poll::Ready(Ok(())) => upload = None,
                    Poll::Ready(Err(Cut::Client(error))) => return Poll::Ready(Err(error)),
                    // Its answer (or its close) is read next.
                    Poll::Ready(Err(Cut::Backend)) => {
                        upload = None;
                        cut = true;
                    }
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        let mut head = head?;
        // Answered before it had the whole request: the backend may take
        // the rest of the body for a request of its own, so nothing more
        // is asked on this connection.
        if cut || upload.is_some() {
            head.reusable = false;
        }
        Ok((head, upload))
    }
}

/// The rest of a streamed request body, written as the client sends it.
pub(crate) struct Upload {
    body: UpstreamBody,
    plan: Plan,
    /// Framed and not yet written.
    pending: BytesMut,
    /// Data bytes taken from the body so far.
    sent: u64,
    ended: bool,
    /// Set at each write that moved bytes.
    moved: bool,
    /// How long a backend may take nothing, once its answer has ended.
    stall: Duration,
}

/// Why an upload stopped before its end.
pub(super) enum Cut {
    /// The client's body broke (or did not match its length).
    Client(BoxError),
    /// The backend takes no more (it closed or reset): its answer says
    /// the rest.
    Backend,
}

impl Upload {
    fn new(body: UpstreamBody, plan: Plan, stall: Duration) -> Self {
        Self {
            body,
            plan,
            pending: BytesMut::new(),
            sent: 0,
            ended: false,
            moved: false,
            stall,
        }
    }

    /// Writes on until the body has been sent whole (`Ready(Ok)`), the
    /// client or the socket has no more for now (`Pending`), or either
    /// side stopped.
    pub(super) fn poll_send(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Cut>> {
        // Each turn writes framed bytes or frames a body frame; the body
        // is bounded by its cap.
        loop {
            if !self.pending.is_empty() {
                match ready!(Pin::new(&mut *stream).poll_write(cx, &self.pending)) {
                    Ok(0) | Err(_) => return Poll::Ready(Err(Cut::Backend)),
                    Ok(written) => {
                        self.pending.advance(written);
                        self.moved = true;
                    }
                }
                continue;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are not sent on.
                    if let Ok(data) = frame.into_data() {
                        self.frame(&data).map_err(Cut::Client)?;
                    }
                }
                Some(Err(error)) => return Poll::Ready(Err(Cut::Client(error))),
                None => {
                    self.ended = true;
                    match self.plan {
                        Plan::Chunked => self.pending.extend_from_slice(b"0\r\n\r\n"),
                        Plan::Length(length) if self.sent != length => {
                            return Poll::Ready(Err(Cut::Client(Box::new(BodyLength))));
                        }
                        Plan::Length(_) | Plan::Written => {}
                    }
                }
            }
        }
    }

    /// Sends the rest once the backend's answer has ended, as hyper's
    /// connection task would: the backend may still be reading it. Gives
    /// up when either side stops, or the backend takes nothing for the
    /// stall timeout; the connection closes after.
    pub(super) async fn finish(mut self: Box<Self>, mut stream: TcpStream) {
        let stall = self.stall;
        // Each turn moves bytes or ends; a stall ends it.
        loop {
            self.moved = false;
            let step = std::future::poll_fn(|cx| match self.poll_send(&mut stream, cx) {
                Poll::Pending if self.moved => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
                Poll::Ready(done) => Poll::Ready(Some(done)),
            });
            match tokio::time::timeout(stall, step).await {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }

    /// `data` framed as the plan says, into `pending`.
    fn frame(&mut self, data: &[u8]) -> Result<(), BoxError> {
        if data.is_empty() {
            return Ok(());
        }
        self.sent += data.len() as u64;
        match self.plan {
            Plan::Chunked => {
                self.pending
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.pending.extend_from_slice(data);
                self.pending.extend_from_slice(b"\r\n");
            }
            Plan::Length(length) if self.sent > length => return Err(Box::new(BodyLength)),
            Plan::Length(_) | Plan::Written => self.pending.extend_from_slice(data),
        }
        Ok(())
    }
}

/// Reading a response head, past interim answers.
struct Reading {
    head_request: bool,
    /// How far the buffer has been looked through for the head's end.
    scanned: usize,
    interim: usize,
}

impl Reading {
    fn new(head_request: bool) -> Self {
        Self {
            head_request,
            scanned: 0,
            interim: 0,
        }
    }

    /// The final response head, read into `read` and taken from it.
    fn poll_head<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        read: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Head, BoxError>> {
        // Each turn reads more or parses a head; heads are bounded in size
        // and interim ones in number.
        loop {
            if !read.is_empty() {
                if let Some(head) = head::parse(read, &mut self.scanned, self.head_request)? {
                    if !head.interim() {
                        return Poll::Ready(Ok(head));
                    }
                    self.interim += 1;
                    if self.interim > MAX_INTERIM {
                        return Poll::Ready(Err(Box::new(WireError::Interim)));
                    }
                    continue;
                }
            }
            read.reserve(READ_SIZE);
            if ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut *stream),
                cx,
                read
            ))? == 0
            {
                return Poll::Ready(Err(Box::new(WireError::ClosedBeforeHead)));
            }
        }
    }
}

/// The request head into `out`, with the body's framing: a whole body's
/// length, a streamed one's own `Content-Length`, else chunked.
fn encode(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &UpstreamBody,
    out: &mut Vec<u8>,
) -> Plan {
    let (plan, length) = match body {
        UpstreamBody::Empty | UpstreamBody::Whole(None) => (Plan::Written, None),
        UpstreamBody::Whole(Some(bytes)) => (Plan::Written, Some(bytes.len() as u64)),
        UpstreamBody::Streamed(_) => match declared_length(headers) {
            Some(n) => (Plan::Length(n), None),
            None => (Plan::Chunked, None),
        },
    };
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // This exchange frames the body itself.
        if name == TRANSFER_ENCODING || (name == CONTENT_LENGTH && length.is_some()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(length) = length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(length.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if plan == Plan::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    plan
}

/// The client's `Content-Length` (checked by the server side: one
/// number).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::Request;

    fn head(method: &str, headers: &[(&str, &str)], body: &UpstreamBody) -> (String, Plan) {
        let mut request = Request::builder().method(method).uri("/a?b=c");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (parts, ()) = request.body(()).expect("request").into_parts();
        let mut out = Vec::new();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let plan = encode(&parts.method, target, &parts.headers, body, &mut out);
        (String::from_utf8(out).expect("text"), plan)
    }

    #[test]
    fn a_request_head_carries_its_body_framing() {
        let (text, plan) = head("GET", &[("host", "h"), ("x-a", "1")], &UpstreamBody::Empty);
        assert_eq!(text, "GET /a?b=c HTTP/1.1\r\nhost: h\r\nx-a: 1\r\n\r\n");
        assert_eq!(plan, Plan::Written);
        // A whole body's own length, whatever was said before.
        let whole = UpstreamBody::Whole(Some(Bytes::from_static(b"hello")));
        let (text, _) = head(
            "POST",
            &[("content-length", "9"), ("transfer-encoding", "chunked")],
            &whole,
        );
        assert_eq!(text, "POST /a?b=c HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
        // An empty body keeps what the client said (`Content-Length: 0`).
        let (text, _) = head("POST", &[("content-length", "0")], &UpstreamBody::Empty);
        assert_eq!(text, "POST /a?b=c HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    async fn read_head(mut answer: &[u8], read: &mut BytesMut) -> Result<Head, BoxError> {
        let mut reading = Reading::new(false);
        std::future::poll_fn(|cx| reading.poll_head(&mut answer, read, cx)).await
    }

    #[tokio::test]
    async fn interim_answers_are_read_past_and_bounded() {
        let mut read = BytesMut::new();
        let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let head = read_head(&answer[..], &mut read).await.expect("head");
        assert_eq!(head.parts.status, 200);
        assert_eq!(&read[..], b"ok");
        let many = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1);
        let mut read = BytesMut::new();
        let error = read_head(many.as_bytes(), &mut read)
            .await
            .expect_err("too many");
        assert_eq!(error.downcast_ref::<WireError>(), Some(&WireError::Interim));
        let mut read = BytesMut::new();
        let error = read_head(&b"HTTP/1.1 200 OK\r\n"[..], &mut read)
            .await
            .expect_err("cut");
        assert_eq!(
            error.downcast_ref::<WireError>(),
            Some(&WireError::ClosedBeforeHead)
        );
    }
}
