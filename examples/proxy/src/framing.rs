//! Which request heads framed their body twice, told to the handler.
//!
//! A request with both `Content-Length` and `Transfer-Encoding` is the
//! classic smuggling attempt: a proxy and its upstream that pick different
//! headers disagree on where the body ends. hyper 1 reads such a request
//! as chunked, silently drops `Content-Length` and closes the connection
//! after the response, so the handler cannot see that the request was
//! ambiguous, and would forward it. RFC 9112 §6.1 lets a server reject
//! it, and we do, with 400, before anything is forwarded.
//!
//! [`Framing`] wraps the connection's IO under hyper and watches the bytes
//! hyper reads, never changing them. It follows HTTP/1.1 framing as hyper
//! does (heads, `Content-Length` bodies, chunked bodies with extensions and
//! trailers) to stay in step across keep-alive and pipelined requests, and
//! queues one verdict per head; the handler takes them in order with
//! [`Heads::next`]. Whatever it cannot follow, it fails closed on: that
//! head and every later one are [`Head::Conflicting`].
//!
//! It assumes hyper's default request parser (no obsolete line folding, no
//! ignored invalid header lines), under which every head hyper accepts is
//! one this follows, and a `max_head` no smaller than hyper's read buffer
//! limit (`http1::Builder::max_buf_size`, 408 KiB by default), or longer
//! heads that hyper accepts are refused here.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The verdict on one request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// At most one of `Content-Length` and `Transfer-Encoding`, and that
    /// one `chunked` alone.
    Clean,
    /// Both, `chunked` twice, or a head this could not follow: answer 400
    /// and close, never forward.
    Conflicting,
    /// A transfer coding other than `chunked` (`gzip, chunked`): hyper
    /// would drop it and read the body as chunked. Answer 501 and close
    /// (RFC 9112 §6.1; nginx).
    UnsupportedCoding,
}

/// The verdicts of the request heads read so far, in order. Cheap to
/// clone: the service holds one, the connection's [`Framing`] the other.
#[derive(Clone, Debug)]
pub(crate) struct Heads {
    // hyper serves one HTTP/1.1 request at a time per connection, so the
    // lock is never contended; it is taken once a head.
    queue: Arc<Mutex<VecDeque<Head>>>,
}

impl Heads {
    /// The verdict on the next request head, in the order hyper hands
    /// requests to the service. Call exactly once per request.
    ///
    /// hyper parses a head only from bytes that went through [`Framing`],
    /// so a verdict is always queued before its request reaches the
    /// service; if none is (a bug), this fails closed with
    /// [`Head::Conflicting`].
    pub(crate) fn next(&self) -> Head {
        self.lock().pop_front().unwrap_or(Head::Conflicting)
    }

    fn push(&self, head: Head) {
        self.lock().push_back(head);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Head>> {
        // The queue stays consistent whatever panicked holding it.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's IO with its request heads watched: reads and writes
/// pass through unchanged.
#[derive(Debug)]
pub(crate) struct Framing<IO> {
    io: IO,
    scanner: Scanner,
    heads: Heads,
}

impl<IO> Framing<IO> {
    /// Wraps `io`; the verdicts come out of the returned [`Heads`].
    /// `max_head`: a head longer than this (leading empty lines included)
    /// is [`Head::Conflicting`] and ends the watching.
    pub(crate) fn new(io: IO, max_head: usize) -> (Self, Heads) {
        let heads = Heads {
            // Pipelined heads rarely queue deeper than this.
            queue: Arc::new(Mutex::new(VecDeque::with_capacity(4))),
        };
        let framing = Framing {
            io,
            scanner: Scanner::new(max_head),
            heads: heads.clone(),
        };
        (framing, heads)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Framing<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let heads = &this.heads;
            this.scanner
                .feed(&buf.filled()[before..], &mut |head| heads.push(head));
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Framing<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    // hyper writes a response's head and body in one vectored write when it can.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// hyper's largest body length (`DecodedLength::MAX_LEN`); longer is its
/// error.
const MAX_LEN: u64 = u64::MAX - 2;

/// Where the scanner is in the request stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In a head (or before one).
    Head,
    /// In a `Content-Length` body, this many bytes left.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Lost: stopped watching (hyper has failed the connection, or will).
    Lost,
}

/// hyper's chunked decoder's states (`proto/h1/decode.rs`), so this
/// accepts exactly the bytes it does: CRLF strictly after sizes and data,
/// whitespace after the size, extensions up to CR, trailer lines up to CR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

/// What one head said about its body, gathered line by line.
#[derive(Clone, Copy, Debug, Default)]
struct Facts {
    request_line: bool,
    http10: bool,
    length: Option<u64>,
    /// `Transfer-Encoding` seen: whether its last line's last coding is
    /// `chunked` (hyper's reading of several lines).
    chunked: Option<bool>,
    /// `chunked` codings over every `Transfer-Encoding` line (at most 2
    /// counted).
    chunked_codings: u8,
    /// A coding other than `chunked` on any line.
    other_coding: bool,
}

impl Facts {
    /// Takes in one header line (line end removed); false when hyper would
    /// refuse it or this cannot follow it.
    fn header(&mut self, line: &[u8]) -> bool {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        let content_length = name.eq_ignore_ascii_case(b"content-length");
        if !content_length && !name.eq_ignore_ascii_case(b"transfer-encoding") {
            return true;
        }
        // httparse's header value bytes; others fail the head.
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=0x7e).contains(&b) || b >= 0x80)
        {
            return false;
        }
        if content_length {
            let Some(n) = digits(value) else {
                return false;
            };
            if n > MAX_LEN || self.length.is_some_and(|m| m != n) {
                return false;
            }
            self.length = Some(n);
        } else {
            // hyper: the value as visible ASCII, its last comma-separated coding.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(value);
            self.chunked = Some(value.is_ascii() && trim(last).eq_ignore_ascii_case(b"chunked"));
            // Every coding of every line, empty list elements skipped.
            for coding in value.split(|&b| b == b',').map(trim) {
                if coding.eq_ignore_ascii_case(b"chunked") {
                    self.chunked_codings = self.chunked_codings.saturating_add(1).min(2);
                } else if !coding.is_empty() {
                    self.other_coding = true;
                }
            }
        }
        true
    }
}

/// Follows the request stream a byte slice at a time, in bounded memory.
#[derive(Debug)]
struct Scanner {
    max_head: usize,
    state: State,
    /// The current head line so far; its capacity is reused.
    line: Vec<u8>,
    /// Bytes of the current head so far, leading empty lines included.
    head_len: usize,
    facts: Facts,
}

impl Scanner {
    fn new(max_head: usize) -> Self {
        Scanner {
            max_head,
            state: State::Head,
            line: Vec::new(),
            head_len: 0,
            facts: Facts::default(),
        }
    }

    /// Takes in the next bytes of the stream, emitting a verdict at the
    /// end of each head.
    fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Head)) {
        while !data.is_empty() {
            match self.state {
                State::Lost => return,
                State::Head => {
                    let newline = data.iter().position(|&b| b == b'\n');
                    let taken = newline.map_or(data.len(), |i| i + 1);
                    self.head_len += taken;
                    if self.head_len > self.max_head {
                        self.lose(emit);
                        return;
                    }
                    match newline {
                        Some(i) => {
                            self.line.extend_from_slice(&data[..i]);
                            self.end_line(emit);
                        }
                        None => self.line.extend_from_slice(data),
                    }
                    data = &data[taken..];
                }
                State::Length(left) | State::Chunked(Chunk::Data(left)) => {
                    let skipped = left.min(data.len() as u64);
                    data = &data[skipped as usize..];
                    let left = left - skipped;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Head,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::Chunked(Chunk::DataCr),
                        _ => State::Chunked(Chunk::Data(left)),
                    };
                }
                State::Chunked(chunk) => {
                    self.state = match step(chunk, data[0]) {
                        Some(Some(next)) => State::Chunked(next),
                        Some(None) => State::Head,
                        None => State::Lost,
                    };
                    data = &data[1..];
                }
            }
        }
    }

    /// A line of the head ended at LF (httparse's line end, CR optional).
    fn end_line(&mut self, emit: &mut impl FnMut(Head)) {
        let line = match self.line.as_slice() {
            [line @ .., b'\r'] => line,
            line => line,
        };
        if !self.facts.request_line {
            // Empty lines before the request line are skipped, as httparse does.
            if !line.is_empty() {
                self.facts.request_line = true;
                self.facts.http10 = line.ends_with(b" HTTP/1.0");
            }
        } else if line.is_empty() {
            self.end_head(emit);
        } else if !self.facts.header(line) {
            self.lose(emit);
        }
        self.line.clear();
    }

    /// The head is complete: its verdict, and its body's framing as
    /// hyper's server decides it (`proto/h1/role.rs`).
    fn end_head(&mut self, emit: &mut impl FnMut(Head)) {
        let facts = std::mem::take(&mut self.facts);
        self.head_len = 0;
        self.state = match (facts.chunked, facts.length) {
            // Both: hyper closes the connection after this one. A
            // `Transfer-Encoding` not ending in chunked, or on HTTP/1.0:
            // hyper refuses the head.
            (Some(_), Some(_)) | (Some(false), None) => return self.lose(emit),
            (Some(true), None) if facts.http10 => return self.lose(emit),
            (Some(true), None) => State::Chunked(Chunk::Start),
            (None, Some(n)) if n > 0 => State::Length(n),
            (None, _) => State::Head,
        };
        // hyper reads these bodies as chunked, and so does the scanner to
        // stay in step; the handler refuses them.
        emit(if facts.other_coding {
            Head::UnsupportedCoding
        } else if facts.chunked_codings > 1 {
            Head::Conflicting
        } else {
            Head::Clean
        });
    }

    /// Stops following the stream: the head in hand (if any) is
    /// conflicting, and later calls to [`Heads::next`] find no verdict,
    /// which is conflicting too.
    fn lose(&mut self, emit: &mut impl FnMut(Head)) {
        if self.state == State::Head {
            emit(Head::Conflicting);
        }
        self.state = State::Lost;
        self.line = Vec::new();
    }

    /// Between requests, nothing of the next one read.
    #[cfg(test)]
    fn at_boundary(&self) -> bool {
        self.state == State::Head && self.head_len == 0
    }
}

/// One byte of a chunked body: the next state, `Some(None)` at the body's
/// end, `None` where hyper's decoder fails.
fn step(chunk: Chunk, b: u8) -> Option<Option<Chunk>> {
    let hex = |b: u8| (b as char).to_digit(16).map(u64::from);
    let next = match (chunk, b) {
        (Chunk::Start, b) => Chunk::Size(hex(b)?),
        (Chunk::Size(n), b) if b.is_ascii_hexdigit() => {
            Chunk::Size(n.checked_mul(16)?.checked_add(hex(b)?)?)
        }
        (Chunk::Size(n) | Chunk::SizeLws(n), b' ' | b'\t') => Chunk::SizeLws(n),
        (Chunk::Size(n) | Chunk::SizeLws(n) | Chunk::Extension(n), b';') => Chunk::Extension(n),
        (Chunk::Size(n) | Chunk::SizeLws(n) | Chunk::Extension(n), b'\r') => Chunk::SizeLf(n),
        (Chunk::Extension(_), b'\n') => return None,
        (Chunk::Extension(n), _) => Chunk::Extension(n),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        (Chunk::EndLf, b'\n') => return Some(None),
        _ => return None,
    };
    Some(Some(next))
}

/// Without leading and trailing spaces and tabs.
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A decimal number of digits only, as hyper reads `Content-Length`.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::future::poll_fn;
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    use Head::{Clean, Conflicting, UnsupportedCoding};

    const MAX_HEAD: usize = 8192;

    /// The verdicts on `input` read in pieces ending at `cuts`, and whether
    /// the scanner ended between requests.
    fn scan_cut(input: &[u8], max_head: usize, cuts: &[usize]) -> (Vec<Head>, bool) {
        let mut scanner = Scanner::new(max_head);
        let mut verdicts = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&input.len()]) {
            scanner.feed(&input[from..to], &mut |head| verdicts.push(head));
            from = to;
        }
        (verdicts, scanner.at_boundary())
    }

    /// Checks `input`'s verdicts whole, split at every byte offset and
    /// read a byte and three bytes at a time.
    fn check(input: &[u8], max_head: usize, expected: &[Head], boundary: bool) {
        let mut splits: Vec<Vec<usize>> = (0..=input.len()).map(|at| vec![at]).collect();
        splits.push(Vec::new());
        splits.push((1..input.len()).collect());
        splits.push((3..input.len()).step_by(3).collect());
        for cuts in splits {
            let (verdicts, at_boundary) = scan_cut(input, max_head, &cuts);
            let text = String::from_utf8_lossy(input);
            assert_eq!(verdicts, expected, "{text:?} cut at {cuts:?}");
            assert_eq!(at_boundary, boundary, "{text:?} cut at {cuts:?}");
        }
    }

    fn clean(input: &[u8], expected: &[Head]) {
        check(input, MAX_HEAD, expected, true);
    }

    fn lost(input: &[u8], expected: &[Head]) {
        check(input, MAX_HEAD, expected, false);
    }

    #[test]
    fn clean_get() {
        clean(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Clean]);
        clean(b"GET / HTTP/1.1\r\n\r\n", &[Clean]);
        clean(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", &[Clean]);
        clean(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            &[Clean, Clean],
        );
    }

    #[test]
    fn content_length_body_then_pipelined_get() {
        clean(
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n",
            &[Clean, Clean],
        );
        clean(
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            &[Clean, Clean],
        );
        // The same length twice is one length to hyper.
        clean(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length:2 \r\n\r\nokGET / HTTP/1.1\r\n\r\n",
            &[Clean, Clean],
        );
    }

    #[test]
    fn a_head_inside_a_body_is_body() {
        let smuggled =
            b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            smuggled.len()
        )
        .into_bytes();
        input.extend_from_slice(smuggled);
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        clean(&input, &[Clean, Clean]);

        let mut input = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            smuggled.len()
        )
        .into_bytes();
        input.extend_from_slice(smuggled);
        input.extend_from_slice(b"\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        clean(&input, &[Clean, Clean]);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers_then_pipelined() {
        clean(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n\
              A ; x=\"y\"\r\n0123456789\r\n\
              0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\n\
              GET / HTTP/1.1\r\n\r\n",
            &[Clean, Clean],
        );
        // Another coding before chunked: hyper reads the body as chunked,
        // the scanner follows it, and the verdict refuses the coding.
        clean(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n\
              POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[UnsupportedCoding, Clean],
        );
        // A later line decides the framing, as in hyper; every line's
        // codings count.
        clean(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[UnsupportedCoding],
        );
        clean(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, ,\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
              POST / HTTP/1.1\r\nTransfer-Encoding: identity,chunked\r\n\r\n0\r\n\r\n",
            &[Conflicting, UnsupportedCoding],
        );
    }

    #[test]
    fn length_and_transfer_encoding_conflict() {
        for (first, second) in [
            ("Content-Length: 3", "Transfer-Encoding: chunked"),
            ("Transfer-Encoding: chunked", "Content-Length: 3"),
            ("content-length: 3", "TRANSFER-ENCODING: chunked"),
            ("Transfer-encoding: gzip, chunked", "CoNtEnT-LeNgTh:0"),
            ("Transfer-Encoding: identity", "Content-Length: 3"),
        ] {
            let input = format!(
                "GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\n{first}\r\n{second}\r\n\r\n\
                 0\r\n\r\nGET / HTTP/1.1\r\n\r\n"
            );
            lost(input.as_bytes(), &[Clean, Conflicting]);
        }
    }

    #[test]
    fn odd_case_headers() {
        clean(
            b"POST / HTTP/1.1\r\ncOnTeNt-LeNgTh:   3\t\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
            &[Clean, Clean],
        );
        clean(
            b"POST / HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            &[Clean, Clean],
        );
        // Names that only look alike are other headers.
        clean(
            b"POST / HTTP/1.1\r\nContent-Length-X: 3\r\nX-Transfer-Encoding: chunked\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            &[Clean, Clean],
        );
    }

    #[test]
    fn bare_line_feeds_and_leading_empty_lines() {
        clean(
            b"\r\n\nGET / HTTP/1.1\nHost: a\n\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\n\r\nxGET / HTTP/1.1\r\n\n",
            &[Clean, Clean, Clean],
        );
    }

    #[test]
    fn a_head_over_max_head_is_conflicting() {
        let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(100));
        let mut input = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        input.extend_from_slice(long.as_bytes());
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        check(&input, 100, &[Clean, Conflicting], false);
        check(&input, long.len(), &[Clean, Clean, Clean], true);
        // Empty lines count: an endless stream of them is a head too long.
        check(&b"\r\n".repeat(60), 100, &[Conflicting], false);
    }

    #[test]
    fn unparsable_streams_are_lost() {
        // Differing lengths, a bad length, a coding that is not chunked last.
        lost(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            &[Conflicting],
        );
        lost(
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
            &[Conflicting],
        );
        lost(
            b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx",
            &[Conflicting],
        );
        lost(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            &[Conflicting],
        );
        lost(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[Conflicting],
        );
        lost(b"GET / HTTP/1.1\r\nno colon\r\n\r\n", &[Conflicting]);
        lost(
            b"GET / HTTP/1.1\r\nContent-Length: 1\x01\r\n\r\nx",
            &[Conflicting],
        );
        // Chunk framing hyper's decoder refuses: a bare LF after the size, a
        // size that is not hex, data not followed by CRLF.
        for body in [
            "1\nx\r\n0\r\n\r\n",
            "zz\r\n",
            "1\r\nxy\r\n0\r\n\r\n",
            "1;a\nx\r\n0\r\n\r\n",
        ] {
            let input = format!(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}GET / HTTP/1.1\r\n\r\n"
            );
            lost(input.as_bytes(), &[Clean]);
        }
    }

    #[test]
    fn heads_fail_closed_without_a_verdict() {
        let (_framing, heads) = Framing::new(Reads(VecDeque::new()), MAX_HEAD);
        assert_eq!(heads.next(), Conflicting);
        heads.push(Clean);
        assert_eq!(heads.next(), Clean);
        assert_eq!(heads.next(), Conflicting);
    }

    /// Yields its pieces one read each.
    struct Reads(VecDeque<Vec<u8>>);

    impl AsyncRead for Reads {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let pieces = &mut self.get_mut().0;
            if let Some(piece) = pieces.front_mut() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                piece.drain(..n);
                if piece.is_empty() {
                    pieces.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn framing_passes_bytes_through_unchanged() {
        let input: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
            POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for read_size in [1, 2, 7, 64] {
            let pieces = input.chunks(5).map(<[u8]>::to_vec).collect();
            let (mut framing, heads) = Framing::new(Reads(pieces), MAX_HEAD);
            let mut out = Vec::new();
            loop {
                let mut space = vec![0; read_size];
                let mut buf = ReadBuf::new(&mut space);
                poll_fn(|cx| Pin::new(&mut framing).poll_read(cx, &mut buf))
                    .await
                    .expect("reads from memory");
                if buf.filled().is_empty() {
                    break;
                }
                out.extend_from_slice(buf.filled());
            }
            assert_eq!(out, input);
            assert_eq!(
                [heads.next(), heads.next(), heads.next()],
                [Clean, Conflicting, Conflicting]
            );
        }
    }

    /// A hyper 1 server on loopback whose service answers 400 to
    /// conflicting heads and otherwise `got N` for an N-byte body.
    async fn server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds loopback");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.expect("accepts");
                tokio::spawn(async move {
                    let (io, heads) = Framing::new(stream, MAX_HEAD);
                    let service = service_fn(move |request: Request<Incoming>| {
                        let head = heads.next();
                        async move {
                            if head == Conflicting {
                                let refusal = Bytes::from_static(b"conflicting framing");
                                let mut response = Response::new(Full::new(refusal));
                                *response.status_mut() = StatusCode::BAD_REQUEST;
                                return Ok::<_, hyper::Error>(response);
                            }
                            let body = request.into_body().collect().await?.to_bytes();
                            let text = format!("got {}", body.len());
                            Ok(Response::new(Full::new(Bytes::from(text))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Writes `request` on a new connection and reads until the server closes it.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let exchange = async {
            let stream = TcpStream::connect(addr).await.expect("connects");
            let mut rest = request;
            while !rest.is_empty() {
                stream.writable().await.expect("writable");
                match stream.try_write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            let mut response = Vec::new();
            let mut buf = [0; 4096];
            loop {
                stream.readable().await.expect("readable");
                match stream.try_read(&mut buf) {
                    Ok(0) => return Ok(response),
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the server answers and closes within 10 s")
            .expect("the connection works");
        String::from_utf8(response).expect("responses are text")
    }

    fn statuses(responses: &str) -> Vec<&str> {
        responses
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| &responses[at + 9..at + 12])
            .collect()
    }

    #[tokio::test]
    async fn hyper_server_rejects_conflicting_heads() {
        let addr = server().await;

        let responses = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
              POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\n",
        )
        .await;
        assert_eq!(statuses(&responses), ["200", "400"], "{responses}");
        assert!(responses.contains("conflicting framing"), "{responses}");

        let responses = exchange(
            addr,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;x=y\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n\
              GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(statuses(&responses), ["200", "200"], "{responses}");
        assert!(
            responses.contains("got 5") && responses.contains("got 0"),
            "{responses}"
        );
    }

    /// hyper accepts bare LF line ends and skips leading empty lines, as
    /// the scanner does; it refuses obsolete line folding itself.
    #[tokio::test]
    async fn hyper_agrees_on_line_ends() {
        let addr = server().await;

        let responses = exchange(
            addr,
            b"\r\n\nPOST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nhi\r\n\
              POST / HTTP/1.1\nHost: a\ntransfer-encoding: chunked\nContent-Length: 2\n\n0\r\n\r\n",
        )
        .await;
        assert_eq!(statuses(&responses), ["200", "400"], "{responses}");
        assert!(responses.contains("got 2"), "{responses}");
        assert!(responses.contains("conflicting framing"), "{responses}");

        let responses = exchange(
            addr,
            b"POST / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\n\
              Content-Length: 0\r\n\r\n",
        )
        .await;
        assert_eq!(statuses(&responses), ["400"], "{responses}");
        assert!(
            !responses.contains("conflicting framing"),
            "hyper refused it: {responses}"
        );
    }
}
