//! The IO wrapper that rewrites bodiless error answers (see the module doc).
use super::{code_for, error_answer};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An IO whose bodiless error answers are rewritten in the contract's shape.
pub(crate) struct ContractErrors<T> {
    inner: T,
    /// A rewritten answer still to be written, and how much of it went.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> ContractErrors<T> {
    /// `inner`, its bodiless error answers rewritten.
    pub(crate) fn new(inner: T) -> Self {
        ContractErrors { inner, pending: Vec::new(), sent: 0 }
    }
}

/// The rewrite of one write, if it is a whole bodiless error head.
pub(crate) fn contract_errors(buf: &[u8]) -> Option<Vec<u8>> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    // The hot path (every 2xx answer) stops here, after one byte compare.
    if !matches!(rest.first(), Some(b'4' | b'5')) {
        return None;
    }
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let head_end = memchr_crlfcrlf(buf)?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?.to_ascii_lowercase();
    let bodiless = head.contains("\r\ncontent-length: 0\r\n") || !head.contains("\r\ncontent-length:");
    if status < 400 || !bodiless || head.contains("\r\ntransfer-encoding:") || head_end + 4 != buf.len() {
        return None;
    }
    let (code, message) = code_for(status);
    Some(error_answer(status, code, message))
}

fn memchr_crlfcrlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

impl<T: AsyncWrite + Unpin> ContractErrors<T> {
    fn flush_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ContractErrors<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ContractErrors<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.flush_pending(cx))?;
        if let Some(answer) = contract_errors(buf) {
            self.pending = answer;
            // Claim the original as written; the rewrite goes out in its place.
            let _ = self.flush_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.flush_pending(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if first.len() == total {
                if let Some(answer) = contract_errors(first) {
                    self.pending = answer;
                    let _ = self.flush_pending(cx)?;
                    return Poll::Ready(Ok(total));
                }
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.flush_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.flush_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
