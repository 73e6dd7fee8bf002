//! A chunked response body read as it comes (RFC 9112 §7.1): each
//! chunk's size line, its data, its CRLF, then the last chunk and the
//! trailer section. Strict where a lenient reading could frame the
//! connection's next response differently from the backend: a line ends
//! in CRLF, a size is 1 to 16 hex digits, every line is bounded.

use bytes::{Buf, Bytes, BytesMut};
use hyper::HeaderMap;

use super::head::{self, WireError};

/// The longest chunk-size line, extensions included (hyper's limit is
/// also a few KiB; nginx's is its buffer).
const MAX_LINE: usize = 4096;

/// Where a chunked body's reading stands.
#[derive(Debug)]
pub(super) struct Chunked {
    state: State,
    /// Bytes of the trailer section looked through already, so a section
    /// that comes in pieces is searched once.
    scanned: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At a chunk-size line.
    Size,
    /// Within a chunk: this many data bytes to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then the empty line.
    Trailers,
    Done,
}

/// What the bytes read so far give.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body has ended (after its trailers, if any).
    End,
    /// More bytes are needed.
    More,
}

impl Chunked {
    pub(super) fn new() -> Self {
        Self {
            state: State::Size,
            scanned: 0,
        }
    }

    /// The next step from `buf`, whose bytes it takes as it uses them.
    pub(super) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        // Each turn uses a line (or data) or returns.
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Size => {
                    let Some(line) = line(buf)? else {
                        return Ok(Step::More);
                    };
                    let size = size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunk);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.trailers(buf),
            }
        }
    }

    /// The trailer section: none (an empty line at once), or fields up to
    /// an empty line, within a head's bound.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        if buf.len() < 2 {
            return Ok(Step::More);
        }
        if &buf[..2] == b"\r\n" {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Step::End);
        }
        let Some(end) = head::head_end(buf, self.scanned) else {
            if buf.len() > head::MAX_HEAD {
                return Err(WireError::TooLarge);
            }
            self.scanned = buf.len();
            return Ok(Step::More);
        };
        if end > head::MAX_HEAD {
            return Err(WireError::TooLarge);
        }
        let section = buf.split_to(end).freeze();
        let trailers = head::trailers(&section)?;
        self.state = State::Done;
        Ok(Step::Trailers(trailers))
    }
}

/// A whole line at the start of `buf`, without its CRLF, taken from it.
fn line(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(at) if at > 0 && window[at - 1] == b'\r' => {
            let line = buf.split_to(at + 1).freeze();
            Ok(Some(line.slice(..at - 1)))
        }
        // A bare LF ends no line here.
        Some(_) => Err(WireError::Chunk),
        None if buf.len() >= MAX_LINE => Err(WireError::Chunk),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits, then nothing or extensions
/// (`;name=value`, after optional whitespace), which are ignored.
fn size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(WireError::Chunk);
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !rest.is_empty() && (rest[0] != b';' || rest.iter().any(|&b| b < 0x20 && b != b'\t')) {
        return Err(WireError::Chunk);
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        // 16 digits fit in a u64.
        let digit = (b as char).to_digit(16).ok_or(WireError::Chunk)?;
        size = (size << 4) | u64::from(digit);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps `input` gives when it arrives `piece` bytes at a time.
    fn steps(input: &[u8], piece: usize) -> Result<Vec<Step>, WireError> {
        let mut chunked = Chunked::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pieces = input.chunks(piece);
        // Each turn takes a step or a piece; the input is finite.
        loop {
            match chunked.step(&mut buf)? {
                Step::More => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Ok(out),
                },
                Step::End => {
                    out.push(Step::End);
                    assert!(buf.is_empty(), "bytes past the body: {buf:?}");
                    return Ok(out);
                }
                step => out.push(step),
            }
        }
    }

    fn data(steps: &[Step]) -> Vec<u8> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Data(d) => Some(d.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn chunks_give_their_data_in_any_pieces() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n,\r\nA \r\n0123456789\r\n0\r\n\r\n";
        for piece in [1, 2, 3, 7, input.len()] {
            let steps = steps(input, piece).expect("valid");
            assert_eq!(data(&steps), b"hello,0123456789", "pieces of {piece}");
            assert_eq!(steps.last(), Some(&Step::End));
        }
    }

    #[test]
    fn trailers_come_after_the_data() {
        let input = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n";
        for piece in [1, 4, input.len()] {
            let steps = steps(input, piece).expect("valid");
            assert_eq!(data(&steps), b"abc");
            let Some(Step::Trailers(trailers)) =
                steps.iter().find(|s| matches!(s, Step::Trailers(_)))
            else {
                panic!("no trailers in {steps:?}");
            };
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-t"], "1");
        }
    }

    #[test]
    fn malformed_framing_is_an_error_never_a_guess() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than its size
            b"g\r\n",                      // not hex
            b"\r\n",                       // no size
            b"11111111111111111\r\n",      // 17 digits
            b"5 x\r\nhello\r\n",           // junk after the size
            b"5;a\x01b\r\nhello\r\n",      // a control byte in an extension
            b"-1\r\n",
        ] {
            assert!(steps(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A size line that never ends is bounded.
        let long = vec![b'0'; MAX_LINE + 1];
        assert!(steps(&long, 64).is_err());
    }

    #[test]
    fn the_largest_size_is_read_without_overflow() {
        assert_eq!(size(b"ffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(size(b"0;name=\"v\""), Ok(0));
        assert_eq!(size(b"1a \t;x"), Ok(26));
    }
}
