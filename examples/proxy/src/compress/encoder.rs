//! A response body compressed as it streams: each piece the backend sends
//! goes through the encoder, and what the encoder has ready is sent
//! whenever the backend pauses, so a slow stream (server-sent events) is
//! never held back, and a fast one is compressed in large steps. Nothing
//! is ever buffered whole.

use std::cell::RefCell;
use std::io::Write;

use std::pin::Pin;
use std::task::{Context, Poll};
use zstd::stream::raw::Operation as _;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::negotiate::Coding;
use crate::body::{BoxError, Layer, ProxyBody};
use crate::idle::BusyGuard;

/// Bytes of compressed output gathered before they are sent even while
/// the backend keeps sending.
const SEND_AT: usize = 64 * 1024;

/// The levels of each coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Levels {
    pub(crate) gzip: u32,
    pub(crate) brotli: u32,
    pub(crate) zstd: i32,
}

/// Idle encoder states a worker thread keeps per coding: deflate's and
/// zstd's tables are hundreds of KiB, which a fresh encoder per response
/// would have the allocator hand back to the system and fault in, zeroed,
/// again (measured: eight times the CPU of nginx's gzip a response, most
/// of it page faults and `madvise`). A response's encoder is reset and
/// kept here when it ends.
const KEEP: usize = 16;
/// zstd contexts a thread keeps, and the highest level kept (a context
/// of level 9 is a few MiB).
const KEEP_ZSTD: usize = 4;
const KEEP_ZSTD_LEVEL: i32 = 9;

#[derive(Default)]
struct Idle {
    deflate: Vec<(u32, flate2::Compress)>,
    zstd: Vec<(i32, zstd::stream::raw::Encoder<'static>)>,
}

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle::default());
}

/// One coding's encoder, writing into a buffer the body drains.
pub(crate) enum Encoder {
    Gzip(Gzip),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(Zstd),
}

impl Encoder {
    /// An encoder for `coding`; an error when it cannot start (zstd's
    /// context out of memory).
    pub(crate) fn new(coding: Coding, levels: Levels) -> std::io::Result<Self> {
        Ok(match coding {
            Coding::Gzip => Self::Gzip(Gzip::new(levels.gzip.min(9))),
            // A 4 KiB internal buffer, a 22-bit window (Brotli's default).
            Coding::Brotli => Self::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                levels.brotli.min(11),
                22,
            ))),
            Coding::Zstd => Self::Zstd(Zstd::new(levels.zstd.clamp(1, 19))?),
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.write(data),
            Self::Brotli(e) => e.write_all(data),
            Self::Zstd(e) => e.write(data),
        }
    }

    /// Makes everything written so far decodable by the client.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.run(&[], flate2::FlushCompress::Sync),
            Self::Brotli(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }

    /// The output ready so far, taken.
    fn take(&mut self) -> Vec<u8> {
        match self {
            Self::Gzip(e) => std::mem::take(&mut e.out),
            Self::Brotli(e) => std::mem::take(e.get_mut()),
            Self::Zstd(e) => e.out().map(std::mem::take).unwrap_or_default(),
        }
    }

    fn ready(&mut self) -> usize {
        match self {
            Self::Gzip(e) => e.out.len(),
            Self::Brotli(e) => e.get_ref().len(),
            Self::Zstd(e) => e.out().map_or(0, |out| out.len()),
        }
    }

    /// Ends the stream: the rest of the output.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Gzip(e) => e.finish(),
            Self::Brotli(e) => Ok(e.into_inner()),
            Self::Zstd(e) => e.finish(),
        }
    }
}

/// gzip (RFC 1952) over a deflate state kept between responses: a fixed
/// header, the deflate stream, the CRC-32 and length of the input.
pub(crate) struct Gzip {
    deflate: Option<flate2::Compress>,
    level: u32,
    crc: flate2::Crc,
    out: Vec<u8>,
}

/// No name, no time, no extra flags, "unknown" system.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl Gzip {
    fn new(level: u32) -> Self {
        let kept = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let at = idle.deflate.iter().position(|(l, _)| *l == level)?;
            Some(idle.deflate.swap_remove(at).1)
        });
        Self {
            deflate: Some(
                kept.unwrap_or_else(|| {
                    flate2::Compress::new(flate2::Compression::new(level), false)
                }),
            ),
            level,
            crc: flate2::Crc::new(),
            out: GZIP_HEADER.to_vec(),
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc.update(data);
        self.run(data, flate2::FlushCompress::None)
    }

    /// Deflates `input` into `out` with `flush`, until all of it is taken
    /// and, for a flush, all of its output written. Each turn either takes
    /// input or fills the room it was given, so the loop ends.
    fn run(&mut self, mut input: &[u8], flush: flate2::FlushCompress) -> std::io::Result<()> {
        let Some(deflate) = self.deflate.as_mut() else {
            return Ok(());
        };
        loop {
            self.out.reserve(input.len() / 2 + 1024);
            let before = deflate.total_in();
            let status = deflate
                .compress_vec(input, &mut self.out, flush)
                .map_err(std::io::Error::other)?;
            let taken = usize::try_from(deflate.total_in() - before).unwrap_or(input.len());
            input = &input[taken.min(input.len())..];
            let room_left = self.out.len() < self.out.capacity();
            if status == flate2::Status::StreamEnd || (input.is_empty() && room_left) {
                return Ok(());
            }
        }
    }

    fn finish(mut self) -> std::io::Result<Vec<u8>> {
        self.run(&[], flate2::FlushCompress::Finish)?;
        self.out.extend_from_slice(&self.crc.sum().to_le_bytes());
        self.out.extend_from_slice(&self.crc.amount().to_le_bytes());
        Ok(std::mem::take(&mut self.out))
    }
}

impl Drop for Gzip {
    fn drop(&mut self) {
        if let Some(mut deflate) = self.deflate.take() {
            deflate.reset();
            let level = self.level;
            // Not during the thread's own teardown.
            let _ = IDLE.try_with(|idle| {
                let mut idle = idle.borrow_mut();
                if idle.deflate.len() < KEEP {
                    idle.deflate.push((level, deflate));
                }
            });
        }
    }
}

/// zstd over a compression context kept between responses.
pub(crate) struct Zstd {
    writer: Option<zstd::stream::zio::Writer<Vec<u8>, zstd::stream::raw::Encoder<'static>>>,
    level: i32,
}

impl Zstd {
    fn new(level: i32) -> std::io::Result<Self> {
        let kept = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let at = idle.zstd.iter().position(|(l, _)| *l == level)?;
            Some(idle.zstd.swap_remove(at).1)
        });
        let encoder = match kept {
            Some(encoder) => encoder,
            None => zstd::stream::raw::Encoder::new(level)?,
        };
        Ok(Self {
            writer: Some(zstd::stream::zio::Writer::new(Vec::new(), encoder)),
            level,
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some(writer) => writer.write_all(data),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some(writer) => writer.flush(),
            None => Ok(()),
        }
    }

    /// The output so far (none once finished).
    fn out(&mut self) -> Option<&mut Vec<u8>> {
        self.writer.as_mut().map(|writer| writer.writer_mut())
    }

    fn finish(mut self) -> std::io::Result<Vec<u8>> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(Vec::new());
        };
        writer.finish()?;
        Ok(std::mem::take(writer.writer_mut()))
    }
}

impl Drop for Zstd {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let (_, mut encoder) = writer.into_inner();
            // High levels' contexts are tens of MiB: not kept.
            if self.level <= KEEP_ZSTD_LEVEL && encoder.reinit().is_ok() {
                let level = self.level;
                let _ = IDLE.try_with(|idle| {
                    let mut idle = idle.borrow_mut();
                    if idle.zstd.len() < KEEP_ZSTD {
                        idle.zstd.push((level, encoder));
                    }
                });
            }
        }
    }
}

/// A body compressed on its way.
pub(crate) struct Compressing {
    inner: ProxyBody,
    encoder: Option<Encoder>,
    /// Written to the encoder since its last flush.
    unflushed: bool,
    /// Trailers held until the encoded stream has ended.
    trailers: Option<hyper::HeaderMap>,
}

impl Compressing {
    /// `inner` compressed by `encoder`.
    pub(crate) fn new(inner: ProxyBody, encoder: Encoder) -> Self {
        Self {
            inner,
            encoder: Some(encoder),
            unflushed: false,
            trailers: None,
        }
    }

    fn failed(error: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

impl Layer for Compressing {
    fn hold(&mut self, busy: BusyGuard) {
        self.inner.hold(busy);
    }
}

impl Body for Compressing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(encoder) = this.encoder.as_mut() else {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(e) = encoder.write(&data) {
                            return Self::failed(e);
                        }
                        this.unflushed = true;
                        if this.inner.is_end_stream() {
                            // The last piece: one frame with the end.
                            break;
                        }
                        if encoder.ready() >= SEND_AT {
                            return Poll::Ready(Some(Ok(Frame::data(encoder.take().into()))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => break,
                Poll::Pending => {
                    // The backend paused: what was written goes out now.
                    if this.unflushed {
                        this.unflushed = false;
                        if let Err(e) = encoder.flush() {
                            return Self::failed(e);
                        }
                        let ready = encoder.take();
                        if !ready.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(ready.into()))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
        let Some(encoder) = this.encoder.take() else {
            return Poll::Ready(None);
        };
        match encoder.finish() {
            Ok(rest) => Poll::Ready(Some(Ok(Frame::data(rest.into())))),
            Err(e) => Self::failed(e),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const LEVELS: Levels = Levels {
        gzip: 6,
        brotli: 4,
        zstd: 3,
    };

    /// Compresses `pieces` through the body, as they would stream.
    fn compress(coding: Coding, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = Encoder::new(coding, LEVELS).expect("an encoder");
        for piece in pieces {
            encoder.write(piece).expect("writes");
            encoder.flush().expect("flushes");
            out.extend(encoder.take());
        }
        out.extend(encoder.finish().expect("finishes"));
        out
    }

    #[test]
    fn each_coding_round_trips_through_other_decoders() {
        let text: Vec<u8> = (0..2_000)
            .flat_map(|i| format!("line {i} of a compressible text\n").into_bytes())
            .collect();
        let pieces: Vec<&[u8]> = text.chunks(7_919).collect();
        assert!(pieces.len() > 5, "several pieces");
        // Each coding three times: the later ones on the state the earlier
        // left to this thread, after one abandoned mid-stream.
        let runs = [Coding::Gzip, Coding::Brotli, Coding::Zstd].repeat(3);
        for (run, coding) in runs.into_iter().enumerate() {
            if run == 3 {
                for coding in [Coding::Gzip, Coding::Zstd] {
                    let mut abandoned = Encoder::new(coding, LEVELS).expect("an encoder");
                    abandoned.write(b"never finished").expect("writes");
                }
            }
            let encoded = compress(coding, &pieces);
            assert!(encoded.len() < text.len() / 4, "{coding:?}");
            let mut decoded = Vec::new();
            match coding {
                Coding::Gzip => {
                    flate2::read::GzDecoder::new(&encoded[..])
                        .read_to_end(&mut decoded)
                        .expect("gzip decodes");
                }
                Coding::Brotli => {
                    brotli::Decompressor::new(&encoded[..], 4096)
                        .read_to_end(&mut decoded)
                        .expect("br decodes");
                }
                Coding::Zstd => {
                    decoded = zstd::stream::decode_all(&encoded[..]).expect("zstd decodes");
                }
            }
            assert_eq!(decoded, text, "{coding:?}");
        }
    }
}
