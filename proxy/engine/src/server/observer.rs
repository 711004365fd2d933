//! What the capture side learns about a connection it handed to the engine
//! ([`Server::serve_captured`](super::Server::serve_captured)): the bytes each way and the
//! upstream failures, reported into its own per-listener counters (`sluice status`), so a pod
//! served by the L7 engine shows the same numbers as one served by the TCP passthrough.
//!
//! Counting costs two integer additions per read or write on the connection's own task and one
//! report when it ends: no atomics, locks or allocations per byte or per request.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Receives one connection's outcome.
pub trait ConnObserver: Send + Sync + 'static {
    /// The connection ended: `from_downstream` bytes were read from the client,
    /// `to_downstream` bytes written to it.
    fn closed(&self, from_downstream: u64, to_downstream: u64);
    /// An upstream attempt on behalf of this connection failed: a TCP connect (tcp_proxy,
    /// passthrough), or an HTTP request answered for a connect failure or no healthy host.
    fn upstream_failed(&self);
}

/// An observer that keeps nothing (for callers without counters of their own).
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl ConnObserver for Discard {
    fn closed(&self, _from_downstream: u64, _to_downstream: u64) {}
    fn upstream_failed(&self) {}
}

/// A downstream stream that counts what passes through it and reports the totals to its
/// observer once, when it is dropped (the connection's end, also after an upgrade tunnel).
pub struct Metered<S> {
    inner: S,
    read: u64,
    written: u64,
    observer: Arc<dyn ConnObserver>,
}

impl<S> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, observer: Arc<dyn ConnObserver>) -> Self {
        Self {
            inner,
            read: 0,
            written: 0,
            observer,
        }
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        self.observer.closed(self.read, self.written);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.read += (buf.filled().len() - before) as u64;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Default)]
    struct Totals {
        read: AtomicU64,
        written: AtomicU64,
        closes: AtomicU64,
    }

    impl ConnObserver for Totals {
        fn closed(&self, from_downstream: u64, to_downstream: u64) {
            self.read.fetch_add(from_downstream, Ordering::Relaxed);
            self.written.fetch_add(to_downstream, Ordering::Relaxed);
            self.closes.fetch_add(1, Ordering::Relaxed);
        }
        fn upstream_failed(&self) {}
    }

    #[tokio::test]
    async fn counts_both_ways_and_reports_once_on_drop() {
        let (a, mut b) = tokio::io::duplex(64);
        let totals = Arc::new(Totals::default());
        let mut m = Metered::new(a, totals.clone());
        b.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        m.read_exact(&mut buf).await.unwrap();
        m.write_all(b"world!!").await.unwrap();
        assert_eq!(totals.closes.load(Ordering::Relaxed), 0);
        drop(m);
        assert_eq!(totals.read.load(Ordering::Relaxed), 5);
        assert_eq!(totals.written.load(Ordering::Relaxed), 7);
        assert_eq!(totals.closes.load(Ordering::Relaxed), 1);
    }
}
