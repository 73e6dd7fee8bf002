//! A response body compressed as it streams: each piece the backend sends
//! goes through the encoder, and what the encoder has ready is sent
//! whenever the backend pauses, so a slow stream (server-sent events) is
//! never held back, and a fast one is compressed in large steps. Nothing
//! is ever buffered whole.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::negotiate::Coding;
use crate::body::{BoxError, ProxyBody};

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

/// One coding's encoder, writing into a buffer the body drains.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// An encoder for `coding`; an error when it cannot start (zstd's
    /// context out of memory).
    pub(crate) fn new(coding: Coding, levels: Levels) -> std::io::Result<Self> {
        Ok(match coding {
            Coding::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip.min(9)),
            )),
            // A 4 KiB internal buffer, a 22-bit window (Brotli's default).
            Coding::Brotli => Self::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                levels.brotli.min(11),
                22,
            ))),
            Coding::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(
                Vec::new(),
                levels.zstd.clamp(1, 19),
            )?),
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.write_all(data),
            Self::Brotli(e) => e.write_all(data),
            Self::Zstd(e) => e.write_all(data),
        }
    }

    /// Makes everything written so far decodable by the client.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.flush(),
            Self::Brotli(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }

    /// The output ready so far, taken.
    fn take(&mut self) -> Vec<u8> {
        let buffer = match self {
            Self::Gzip(e) => e.get_mut(),
            Self::Brotli(e) => e.get_mut(),
            Self::Zstd(e) => e.get_mut(),
        };
        std::mem::take(buffer)
    }

    fn ready(&mut self) -> usize {
        match self {
            Self::Gzip(e) => e.get_ref().len(),
            Self::Brotli(e) => e.get_ref().len(),
            Self::Zstd(e) => e.get_ref().len(),
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

    pub(crate) fn inner_mut(&mut self) -> &mut ProxyBody {
        &mut self.inner
    }

    fn failed(error: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Err(Box::new(error))))
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
                Poll::Ready(None) => {
                    let Some(encoder) = this.encoder.take() else {
                        return Poll::Ready(None);
                    };
                    return match encoder.finish() {
                        Ok(rest) => Poll::Ready(Some(Ok(Frame::data(rest.into())))),
                        Err(e) => Self::failed(e),
                    };
                }
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
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of a compressible text\n").into_bytes())
            .collect();
        let pieces: Vec<&[u8]> = text.chunks(7_919).collect();
        for coding in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
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
