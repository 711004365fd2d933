//! Per-host connection pools: HTTP/1.1 keep-alive reuse, one multiplexed HTTP/2 connection, and the
//! max_connections / max_pending_requests circuit breakers.

use std::{
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Cluster, Host};
use crate::http::Body;

/// Idle HTTP/1 connections kept per host.
pub const MAX_IDLE_PER_HOST: usize = 1024;
/// How often a pending request re-checks for a free connection.
const PENDING_POLL: Duration = Duration::from_millis(2);

/// A ready sender for one request.
pub enum Sender {
    /// HTTP/1.1 connection (exclusive while the request runs).
    H1(http1::SendRequest<Body>),
    /// HTTP/2 connection (shared).
    H2(http2::SendRequest<Body>),
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// connect_timeout elapsed.
    #[error("connection timeout")]
    Timeout,
    /// TCP connect failed.
    #[error("connection failure: {0}")]
    Io(std::io::Error),
    /// TLS handshake failed.
    #[error("TLS error: {0}")]
    Tls(std::io::Error),
    /// HTTP handshake failed.
    #[error("protocol error: {0}")]
    Handshake(hyper::Error),
    /// max_connections reached and max_pending_requests full.
    #[error("overflow")]
    Overflow,
}

/// Connections of one host.
#[derive(Default)]
pub struct HostPool {
    idle: Mutex<Vec<http1::SendRequest<Body>>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
}

impl std::fmt::Debug for HostPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostPool")
    }
}

impl HostPool {
    fn take_idle(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|s| !s.is_closed());
        idle.pop()
    }

    /// Returns an HTTP/1 connection whose response body was read to the end (see
    /// [`ReturnOnEnd`]); the next user waits for hyper to report it ready.
    pub fn release(&self, s: Sender) {
        if let Sender::H1(s) = s {
            if s.is_closed() {
                return;
            }
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_PER_HOST {
                idle.push(s);
            }
        }
    }
}

/// An HTTP/1 connection's sender, exclusive while its request/response runs.
pub type H1Sender = http1::SendRequest<Body>;

/// A response body that gives its HTTP/1 connection back to the pool once the body has been
/// read to the end (a body abandoned midway closes the connection instead).
pub struct ReturnOnEnd {
    inner: Body,
    slot: Option<(H1Sender, Arc<Host>)>,
}

impl ReturnOnEnd {
    /// Wraps the upstream response body `inner` of connection `sender` to `host`.
    pub fn wrap(inner: Body, sender: H1Sender, host: Arc<Host>) -> Body {
        use http_body_util::BodyExt;
        Self {
            inner,
            slot: Some((sender, host)),
        }
        .boxed()
    }

    fn give_back(&mut self) {
        if let Some((s, host)) = self.slot.take() {
            host.pool.release(Sender::H1(s));
        }
    }
}

impl http_body::Body for ReturnOnEnd {
    type Data = bytes::Bytes;
    type Error = crate::http::BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.slot = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ReturnOnEnd {
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.inner) {
            self.give_back();
        }
    }
}

/// Gets a sender for `host`: a ready pooled connection, a new one, or a wait while the cluster is
/// at max_connections (bounded by max_pending_requests and the caller's timeout). The flag says
/// whether the connection was reused (a reused HTTP/1 connection may have been closed by the
/// upstream meanwhile).
pub async fn acquire(cluster: &Cluster, host: &Host) -> Result<(Sender, bool), ConnectError> {
    if cluster.spec.http2 {
        let existing = host
            .pool
            .h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(s) = existing.filter(|s| !s.is_closed()) {
            return Ok((Sender::H2(s), true));
        }
        let s = connect(cluster, host, false).await?;
        if let Sender::H2(h2) = &s {
            *host.pool.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(h2.clone());
        }
        return Ok((s, false));
    }
    let mut pending = false;
    let result = loop {
        if let Some(s) = host.pool.take_idle() {
            break Ok((Sender::H1(s), true));
        }
        let max = cluster.spec.breakers.max_connections;
        if cluster
            .cx_active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
        {
            break connect_reserved(cluster, host, false)
                .await
                .map(|s| (s, false));
        }
        if !pending {
            if cluster.rq_pending.fetch_add(1, Ordering::Relaxed)
                >= cluster.spec.breakers.max_pending_requests
            {
                cluster.rq_pending.fetch_sub(1, Ordering::Relaxed);
                return Err(ConnectError::Overflow);
            }
            pending = true;
        }
        tokio::time::sleep(PENDING_POLL).await;
    };
    if pending {
        cluster.rq_pending.fetch_sub(1, Ordering::Relaxed);
    }
    result
}

/// Opens a new connection (TCP, optional TLS, HTTP handshake) outside the max_connections
/// check (health checks, upgrades, replacing a stale pooled connection). `force_h1` is for
/// upgrades.
pub async fn connect(
    cluster: &Cluster,
    host: &Host,
    force_h1: bool,
) -> Result<Sender, ConnectError> {
    cluster.cx_active.fetch_add(1, Ordering::AcqRel);
    connect_reserved(cluster, host, force_h1).await
}

/// Opens a connection whose `cx_active` slot the caller already took; the slot is released when
/// the connection closes, or at once when connecting fails.
async fn connect_reserved(
    cluster: &Cluster,
    host: &Host,
    force_h1: bool,
) -> Result<Sender, ConnectError> {
    let r = open(cluster, host, force_h1).await;
    if r.is_err() {
        cluster.cx_active.fetch_sub(1, Ordering::AcqRel);
    }
    r
}

async fn open(cluster: &Cluster, host: &Host, force_h1: bool) -> Result<Sender, ConnectError> {
    let timeout = cluster.spec.connect_timeout;
    let tcp = match tokio::time::timeout(timeout, cluster.connector.connect(host.addr)).await {
        Err(_) => {
            cluster.stats.upstream_cx_connect_timeout.inc();
            cluster.stats.upstream_cx_connect_fail.inc();
            return Err(ConnectError::Timeout);
        }
        Ok(Err(e)) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            return Err(ConnectError::Io(e));
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    cluster.stats.upstream_cx_total.inc();
    match &cluster.tls {
        Some(tls) => match tokio::time::timeout(timeout, tls.connect(tcp)).await {
            Err(_) => {
                cluster.stats.upstream_cx_connect_fail.inc();
                Err(ConnectError::Timeout)
            }
            Ok(Err(e)) => {
                cluster.stats.upstream_cx_connect_fail.inc();
                Err(ConnectError::Tls(e))
            }
            Ok(Ok((s, alpn_h2))) => {
                let h2 = !force_h1 && (alpn_h2 || cluster.spec.http2);
                handshake(cluster, s, h2).await
            }
        },
        None => handshake(cluster, tcp, cluster.spec.http2 && !force_h1).await,
    }
}

async fn handshake<T>(cluster: &Cluster, io: T, h2: bool) -> Result<Sender, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let active = cluster.cx_active.clone();
    let stats = cluster.stats.clone();
    let io = TokioIo::new(io);
    let sender = if h2 {
        let (s, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(ConnectError::Handshake)?;
        stats.upstream_cx_active.inc();
        tokio::spawn(async move {
            let _ = conn.await;
            active.fetch_sub(1, Ordering::Relaxed);
            stats.upstream_cx_active.dec();
        });
        Sender::H2(s)
    } else {
        let (s, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ConnectError::Handshake)?;
        stats.upstream_cx_active.inc();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            active.fetch_sub(1, Ordering::Relaxed);
            stats.upstream_cx_active.dec();
        });
        Sender::H1(s)
    };
    Ok(sender)
}
