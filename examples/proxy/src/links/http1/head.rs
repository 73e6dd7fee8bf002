//! A backend's response head (RFC 9112 §4) and how its body is framed
//! (§6.3), read from the connection's buffer without copying: the field
//! values are slices of the bytes read.
//!
//! What cannot be framed one way only is an error (a 502), never a
//! guess: differing `Content-Length`s, a transfer coding on HTTP/1.0. A
//! response framed by `Transfer-Encoding` drops any `Content-Length`, and
//! a connection whose framing is in any doubt is not used again.

use std::fmt;

use bytes::{Bytes, BytesMut};
use hyper::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use hyper::http::response::Parts;
use hyper::{HeaderMap, Response, StatusCode, Version};

/// The longest response head (and trailer section) taken from a backend:
/// 64 KiB, eight times nginx's `proxy_buffer_size`.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// The most fields a head may have (hyper's bound).
const MAX_FIELDS: usize = 100;

/// Why a backend's answer could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Not an HTTP/1.x response head.
    Head,
    /// A head or trailer section past [`MAX_HEAD`] or [`MAX_FIELDS`].
    TooLarge,
    /// `Content-Length`s that differ, or one that is not a number.
    ContentLength,
    /// A transfer coding on an HTTP/1.0 response.
    TransferEncoding,
    /// A chunked body that does not follow RFC 9112 §7.1.
    Chunk,
    /// More interim (1xx) responses than any exchange needs.
    Interim,
    /// The connection closed before the head was whole.
    ClosedBeforeHead,
    /// The connection closed before the body was whole.
    Truncated,
    /// A request target that cannot go on a request line as it is.
    Target,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Head => "the backend's response head is malformed",
            Self::TooLarge => "the backend's response head is too large",
            Self::ContentLength => "the backend's Content-Length is invalid",
            Self::TransferEncoding => "the backend sent Transfer-Encoding with HTTP/1.0",
            Self::Chunk => "the backend's chunked body is malformed",
            Self::Interim => "the backend sent too many interim responses",
            Self::ClosedBeforeHead => "the backend closed the connection before its response",
            Self::Truncated => "the backend closed the connection mid-body",
            Self::Target => "the request target is not visible ASCII",
        })
    }
}

impl std::error::Error for WireError {}

/// How a response's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (a `HEAD` request's answer, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes.
    Close,
    /// A `101`: the connection now speaks another protocol.
    Switch,
}

/// A response head read whole.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) parts: Parts,
    pub(super) framing: Framing,
    /// Whether the connection may carry another request after the body.
    pub(super) reusable: bool,
}

impl Head {
    /// An interim response (1xx but 101), to be read past.
    pub(super) fn interim(&self) -> bool {
        self.parts.status.is_informational() && self.parts.status != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// The head at the start of `buf` if it is whole (taken from `buf`), or
/// `None` if more bytes are needed; `scanned` is how far a previous call
/// looked, so a head that arrives in pieces is searched once.
pub(super) fn parse(
    buf: &mut BytesMut,
    scanned: &mut usize,
    head_request: bool,
) -> Result<Option<Head>, WireError> {
    let Some(end) = head_end(buf, *scanned) else {
        if buf.len() > MAX_HEAD {
            return Err(WireError::TooLarge);
        }
        *scanned = buf.len();
        return Ok(None);
    };
    *scanned = 0;
    if end > MAX_HEAD {
        return Err(WireError::TooLarge);
    }
    let bytes = buf.split_to(end).freeze();
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(&bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(WireError::Head),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooLarge),
        Err(_) => return Err(WireError::Head),
    }
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(WireError::Head),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(WireError::Head)?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    fill(&mut headers, response.headers, &bytes)?;
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    let (framing, reusable) = framing(status, version, &mut headers, head_request)?;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        reusable,
    }))
}

/// Where the head (or trailer section) at the start of `buf` ends, just
/// past its empty line (CRLF, or a bare LF as hyper and nginx also take
/// from a backend), looking from about `scanned` on.
pub(super) fn head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let from = scanned.saturating_sub(2);
    let mut at = from;
    // Each turn moves past one LF.
    while let Some(lf) = buf[at..].iter().position(|&b| b == b'\n') {
        let lf = at + lf;
        match &buf[lf + 1..] {
            [b'\n', ..] => return Some(lf + 2),
            [b'\r', b'\n', ..] => return Some(lf + 3),
            _ => at = lf + 1,
        }
    }
    None
}

/// A chunked body's trailer section (its fields and the empty line).
pub(super) fn trailers(section: &Bytes) -> Result<HeaderMap, WireError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            fill(&mut trailers, fields, section)?;
            Ok(trailers)
        }
        Ok(httparse::Status::Partial) => Err(WireError::Head),
        Err(httparse::Error::TooManyHeaders) => Err(WireError::TooLarge),
        Err(_) => Err(WireError::Head),
    }
}

/// `fields`, parsed out of `bytes`, into `headers`: each value a slice of
/// `bytes`, not a copy.
fn fill(
    headers: &mut HeaderMap,
    fields: &[httparse::Header<'_>],
    bytes: &Bytes,
) -> Result<(), WireError> {
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| WireError::Head)?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(field.value))
            .map_err(|_| WireError::Head)?;
        headers.append(name, value);
    }
    Ok(())
}

/// How the body of a response with `status` and `headers` to a request
/// (`HEAD` or not) is framed, and whether the connection may be used
/// again after it (RFC 9112 §6.3, §9.3).
fn framing(
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
    head_request: bool,
) -> Result<(Framing, bool), WireError> {
    let close = tokens(headers, &CONNECTION).any(|t| t.eq_ignore_ascii_case(b"close"));
    let reusable = version == Version::HTTP_11 && !close;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok((Framing::Switch, false));
    }
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, reusable));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(WireError::TransferEncoding);
        }
        let chunked = tokens(headers, &TRANSFER_ENCODING)
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        // Both framings given: the coding wins, the length goes, and the
        // connection is not trusted with another request (§6.3).
        let both = headers.remove(CONTENT_LENGTH).is_some();
        return Ok(if chunked {
            (Framing::Chunked, reusable && !both)
        } else {
            (Framing::Close, false)
        });
    }
    match content_length(headers)? {
        Some(length) => Ok((Framing::Length(length), reusable)),
        None => Ok((Framing::Close, false)),
    }
}

/// The comma-separated tokens of every `name` field.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// The body's length, if given: every `Content-Length` value (fields and
/// list members) the same decimal number (§6.3 rule 5), else an error.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, WireError> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for member in value.as_bytes().split(|&b| b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() || member.len() > 19 || !member.iter().all(u8::is_ascii_digit) {
                return Err(WireError::ContentLength);
            }
            let n = std::str::from_utf8(member)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(WireError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, head_request: bool) -> Result<Option<Head>, WireError> {
        let mut buf = BytesMut::from(text.as_bytes());
        let mut scanned = 0;
        parse(&mut buf, &mut scanned, head_request)
    }

    fn whole(text: &str) -> Head {
        read(text, false).expect("valid").expect("whole")
    }

    #[test]
    fn a_head_gives_its_status_fields_and_framing() {
        let head = whole("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello");
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.reusable);
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn a_head_in_pieces_is_searched_once_and_read_when_whole() {
        let text = b"HTTP/1.1 204 No Content\r\nA: b\r\n\r\nrest";
        let mut buf = BytesMut::new();
        let mut scanned = 0;
        for (i, byte) in text.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let head = parse(&mut buf, &mut scanned, false).expect("valid");
            if i + 1 < text.len() - 4 {
                assert!(head.is_none(), "whole at byte {i}");
            } else {
                let head = head.expect("whole");
                assert_eq!(head.framing, Framing::Empty);
                return;
            }
        }
        panic!("never whole");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |text: &str, head| {
            let head = read(text, head).expect("valid").expect("whole");
            (head.framing, head.reusable)
        };
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            (Framing::Chunked, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            (Framing::Close, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::Close, false)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive, Close\r\n\r\n",
                false
            ),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
                false
            ),
            (Framing::Length(7), true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                false
            ),
            (Framing::Switch, false)
        );
        // Both: the coding frames, the length is dropped, no reuse.
        let head =
            whole("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((head.framing, head.reusable), (Framing::Chunked, false));
        assert!(!head.parts.headers.contains_key(CONTENT_LENGTH));
        assert!(whole("HTTP/1.1 100 Continue\r\n\r\n").interim());
        assert!(!whole("HTTP/1.1 101 Switching Protocols\r\n\r\n").interim());
    }

    #[test]
    fn what_cannot_be_framed_one_way_is_an_error() {
        for (bad, error) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                WireError::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
                WireError::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
                WireError::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
                WireError::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                WireError::ContentLength,
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                WireError::TransferEncoding,
            ),
            ("HTTP/2 200 OK\r\n\r\n", WireError::Head),
            ("HTTP/1.1 99 Low\r\n\r\n", WireError::Head),
            ("HTTP/1.1 200 OK\r\nA b: c\r\n\r\n", WireError::Head),
            ("HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", WireError::Head),
            ("HTTP/1.1 200 OK\r\nA: \x01\r\n\r\n", WireError::Head),
        ] {
            assert_eq!(read(bad, false).err(), Some(error), "{bad:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_FIELDS + 1)
        );
        assert_eq!(read(&many, false).err(), Some(WireError::TooLarge));
        let long = format!("HTTP/1.1 200 OK\r\nA: {}", "b".repeat(MAX_HEAD));
        assert_eq!(read(&long, false).err(), Some(WireError::TooLarge));
    }
}
