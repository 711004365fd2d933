//! A filter chain's network RBAC filters on a downstream connection: the stream is wrapped, and
//! the first read from the client (bytes or its end) runs the check, as Envoy's `onData` (a
//! server that speaks first gets its greeting through before); `CONTINUOUS` filters check again
//! on every read. Allowed: the bytes go on. Denied: the bytes are dropped, and every later read
//! and write fails (after `delay_deny`, reads wait that long), so the terminal filter closes
//! both sides.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    downstream_tls::TlsFacts,
    rbac::{network::NetworkRbacRt, Facts},
};

/// The connection facts the check reads.
#[derive(Debug, Clone, Copy)]
pub struct ConnAddrs {
    /// The client.
    pub peer: SocketAddr,
    /// The directly connected peer's address (the client's, unless a PROXY header stated
    /// another client).
    pub direct: std::net::IpAddr,
    /// The (original) destination.
    pub dst: SocketAddr,
}

enum State {
    /// Not checked yet.
    Pending(Arc<[NetworkRbacRt]>),
    /// Allowed, and some filter checks every read (`CONTINUOUS`).
    Rechecking(Arc<[NetworkRbacRt]>),
    /// Allowed: a plain pass-through.
    Allowed,
    /// Denied with `delay_deny`: reads wait for the timer.
    Delaying(Pin<Box<tokio::time::Sleep>>),
    /// Denied: every read and write fails.
    Denied,
}

/// A downstream stream behind its chain's network RBAC filters.
pub struct RbacGate<S> {
    inner: S,
    state: State,
    addrs: ConnAddrs,
    sni: Option<Arc<str>>,
    tls: Option<Arc<TlsFacts>>,
}

impl<S> RbacGate<S> {
    /// `inner` checked against `filters` (in chain order) on its first bytes; `sni`: what the
    /// tls_inspector reported, `tls`: what a terminated handshake established.
    pub fn new(
        inner: S,
        filters: Arc<[NetworkRbacRt]>,
        addrs: ConnAddrs,
        sni: Option<Arc<str>>,
        tls: Option<Arc<TlsFacts>>,
    ) -> Self {
        Self {
            inner,
            state: State::Pending(filters),
            addrs,
            sni,
            tls,
        }
    }

    /// Runs the filters in order (after the first read, only the `CONTINUOUS` ones); the first
    /// that denies decides.
    fn check(&self, filters: Arc<[NetworkRbacRt]>, first: bool) -> State {
        let facts = Facts::<[(&str, &str)]> {
            request: None,
            peer: self.addrs.peer,
            direct: self.addrs.direct,
            remote: self.addrs.peer.ip(),
            local: self.addrs.dst,
            sni: self.sni.as_deref().unwrap_or(""),
            tls: self.tls.as_deref(),
            metadata: None,
        };
        for f in filters.iter().filter(|f| first || f.cfg.continuous) {
            if let Some(policy) = f.cfg.rules.decide(&facts, Some(&f.stats)).denied {
                tracing::debug!(
                    stat_prefix = %f.cfg.stat_prefix,
                    policy = policy.unwrap_or("none"),
                    peer = %self.addrs.peer,
                    "network rbac: connection denied"
                );
                return match f.cfg.delay_deny {
                    Some(d) => State::Delaying(Box::pin(tokio::time::sleep(d))),
                    None => State::Denied,
                };
            }
        }
        if filters.iter().any(|f| f.cfg.continuous) {
            State::Rechecking(filters)
        } else {
            State::Allowed
        }
    }
}

fn denied() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "rbac: access denied")
}

impl<S: AsyncRead + Unpin> AsyncRead for RbacGate<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Allowed => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::Denied => return Poll::Ready(Err(denied())),
                State::Delaying(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state = State::Denied;
                }
                State::Pending(filters) | State::Rechecking(filters) => {
                    let filters = filters.clone();
                    let first = matches!(this.state, State::Pending(_));
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    this.state = this.check(filters, first);
                    if matches!(this.state, State::Allowed | State::Rechecking(_)) {
                        return Poll::Ready(Ok(()));
                    }
                    buf.set_filled(before);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RbacGate<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.state, State::Denied) {
            return Poll::Ready(Err(denied()));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.state, State::Denied) {
            return Poll::Ready(Err(denied()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
