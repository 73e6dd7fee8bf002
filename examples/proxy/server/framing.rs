// TEMPORARY pass-through until the framing helper's module lands (not committed).
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
pub(crate) struct Framing<IO> {
    io: IO,
}
impl<IO> Framing<IO> {
    pub(crate) fn new(io: IO, _max: usize) -> (Self, Heads) {
        (Self { io }, Heads)
    }
}
#[derive(Clone)]
pub(crate) struct Heads;
impl Heads {
    pub(crate) fn next(&self) -> Head {
        Head::Clean
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Clean,
    Conflicting,
}
impl<IO: AsyncRead + Unpin> AsyncRead for Framing<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
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
}
