//! Per-host connection pools: HTTP/1.1 keep-alive reuse, multiplexed HTTP/2 connections (one, or
//! as many as `max_concurrent_streams` needs: `h2_conns.rs`), and the
//! max_connections / max_pending_requests circuit breakers of the pool's routing priority (a host
//! has one pool per priority, as Envoy's).
//!
//! The pool is generic over the request body type `B` (any [`PoolBody`]); it never sees the HTTP
//! connection manager's types. Requests go through [`HostPool::send`] (in `pool/send.rs`), which
//! also owns the stale keep-alive retry.

mod h2_conns;
mod send;
pub(crate) use send::add_empty_content_length;
#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

pub use self::h2_conns::StreamSlot;
pub use self::send::{ReturnOnEnd, SendError};
use super::{
    resources::Resources,
    transport_options::{KeyedTransport, OptionsRef, TransportOptions},
    Cluster,
};
use crate::config::RoutingPriority;

/// A boxed error, what a [`PoolBody`]'s errors become.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body the pool can send on HTTP/1.1 and HTTP/2 connections.
pub trait PoolBody:
    http_body::Body<Data: Send, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<T> PoolBody for T where
    T: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

/// Idle HTTP/1 connections kept per host.
pub const MAX_IDLE_PER_HOST: usize = 1024;
/// Envoy's default `max_response_headers_kb` for HTTP/1 upstreams.
const DEFAULT_H1_RESPONSE_HEADERS_KB: u32 = 80;
/// Envoy's default `max_response_headers_kb` for HTTP/2 upstreams.
const DEFAULT_H2_RESPONSE_HEADERS_KB: u32 = 60;
/// HTTP/2's default (and here smallest) flow-control window.
const MIN_H2_WINDOW: u32 = 65_535;
/// How often a pending request re-checks for a free connection.
const PENDING_POLL: Duration = Duration::from_millis(2);

/// A ready sender for one request.
pub enum Sender<B> {
    /// HTTP/1.1 connection (exclusive while the request runs) and what the pool knows of it.
    H1(http1::SendRequest<B>, Meta),
    /// HTTP/2 connection (shared) and what the pool knows of it.
    H2(http2::SendRequest<B>, Meta),
}

/// A connection's local address (`%UPSTREAM_LOCAL_ADDRESS%`), when the socket reported one.
pub type Local = Option<SocketAddr>;

/// What the pool knows of one of its connections.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Its local address.
    pub local: Local,
    /// When it reaches the cluster's `max_connection_duration`: from then on it takes no new
    /// request and closes once its requests end (Envoy's drain of an upstream connection).
    pub expires: Option<Instant>,
}

impl Meta {
    /// Past its `max_connection_duration` at `now`.
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

impl<B> Sender<B> {
    /// The connection's local address.
    pub fn local(&self) -> Local {
        match self {
            Sender::H1(_, m) | Sender::H2(_, m) => m.local,
        }
    }
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
    /// max_pending_requests already pending (circuit breaker).
    #[error("overflow")]
    Overflow,
}

/// Idle HTTP/1 connections of one host (shared with the response bodies that give theirs back),
/// each with the requests it may still carry (`max_requests_per_connection`).
struct Idle<B>(Mutex<Vec<(IdleConn<B>, Instant)>>);

/// An idle HTTP/1 connection, the requests it may still carry and what the pool knows of it.
type IdleConn<B> = (http1::SendRequest<B>, u32, Meta);

impl<B> Idle<B> {
    /// The most recently released open connection idle for less than `timeout` (the
    /// cluster's upstream `idle_timeout`) and not past its `max_connection_duration`; the
    /// others are dropped, which closes them.
    fn take(&self, timeout: Option<Duration>) -> Option<IdleConn<B>> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        idle.retain(|((s, _, m), since)| {
            !s.is_closed()
                && !m.expired(now)
                && timeout.is_none_or(|t| now.duration_since(*since) < t)
        });
        idle.pop().map(|(c, _)| c)
    }

    /// Keeps an HTTP/1 connection whose response body was read to the end (see
    /// [`ReturnOnEnd`]) while it may carry `left` more requests; the next user waits for
    /// hyper to report it ready. At `left == 0` the sender is dropped, which closes the
    /// connection (Envoy's `max_requests_per_connection`), and so it is past its
    /// `max_connection_duration`.
    fn release(&self, s: http1::SendRequest<B>, left: u32, meta: Meta) {
        let now = Instant::now();
        if s.is_closed() || left == 0 || meta.expired(now) {
            return;
        }
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_HOST {
            idle.push(((s, left, meta), now));
        }
    }
}

/// Requests a new connection may carry: `max_requests_per_connection`, else no limit.
fn requests_left(cluster: &Cluster) -> u32 {
    cluster
        .spec
        .options
        .max_requests_per_connection
        .unwrap_or(u32::MAX)
}

/// Connections of one host for the requests of one routing priority.
///
/// Under the agent's workers ([`crate::workers`]) the pool has a [`Slot`] per worker, made when
/// the worker first uses it (a pod uses only the workers it is placed on), as each of Envoy's
/// workers has its own pools: a connection's driver runs on the worker that opened it, and that
/// worker's requests use it, so a request does not wait on another worker's thread. Elsewhere it
/// has one slot.
pub struct HostPool<B> {
    /// Whose circuit breakers (the cluster's resources of this priority) the pool counts in.
    priority: RoutingPriority,
    /// By worker index; 16 bytes for a worker that never used the pool.
    slots: Box<[OnceLock<Box<Slot<B>>>]>,
    /// Its host's transport socket ([`Cluster::tls`]).
    transport: u8,
    /// The transport options its connections are made with (a keyed pool,
    /// [`super::Host::pool_for`]); `None`: the cluster's own handshake.
    options: Option<Box<KeyedTransport>>,
}

/// One worker's connections of a [`HostPool`].
struct Slot<B> {
    idle: Arc<Idle<B>>,
    /// The pooled HTTP/2 connections ([`h2_conns::H2Conns`]).
    h2: Mutex<h2_conns::H2Conns<B>>,
    /// The open or opening HTTP/1 connections (idle, busy or connecting).
    cx: Arc<AtomicUsize>,
}

impl<B> HostPool<B> {
    /// An empty pool for requests of priority `priority` to a host of transport `transport`.
    pub fn new(priority: RoutingPriority, transport: u8) -> Self {
        let n = crate::workers::get().map_or(1, crate::workers::Workers::count);
        Self {
            priority,
            transport,
            slots: (0..n).map(|_| OnceLock::new()).collect(),
            options: None,
        }
    }

    /// An empty pool whose connections are made with `options`.
    pub fn keyed(priority: RoutingPriority, transport: u8, options: TransportOptions) -> Self {
        Self {
            options: Some(Box::new(KeyedTransport::new(options))),
            ..Self::new(priority, transport)
        }
    }

    /// Its options, when it is a keyed pool.
    pub fn keyed_transport(&self) -> Option<&KeyedTransport> {
        self.options.as_deref()
    }

    /// Whether it is the keyed pool of requests of priority `p` with options `o`.
    pub fn is_for(&self, p: RoutingPriority, o: &OptionsRef<'_>) -> bool {
        self.priority == p && self.options.as_ref().is_some_and(|x| x.options.is(o))
    }

    /// Where its connections go: `addr` over its transport, with its options.
    fn target(&self, addr: SocketAddr) -> Target<'_> {
        (addr, self.transport, self.options.as_deref())
    }

    /// The calling worker's slot.
    fn here(&self) -> &Slot<B> {
        let i = crate::workers::index().unwrap_or(0);
        self.slots[i % self.slots.len()].get_or_init(|| {
            Box::new(Slot {
                idle: Arc::new(Idle(Mutex::new(Vec::new()))),
                h2: Mutex::new(h2_conns::H2Conns::default()),
                cx: Arc::new(AtomicUsize::new(0)),
            })
        })
    }

    /// Drops (so closes) the connections idle for `timeout` (`None`: no idle timeout) or
    /// more, HTTP/1 ones released that long ago, an HTTP/2 one that took no stream for that
    /// long (it closes once its streams end), and those past their `max_connection_duration`.
    /// The cluster's idle sweep ([`super::Cluster::build`]) calls it.
    /// Returns how many open connections it closed for being idle (a connection closed past
    /// its duration is counted when it closes, [`handshake`]).
    pub fn drop_idle(&self, timeout: Option<Duration>) -> u64 {
        let now = Instant::now();
        let idle_for = |since: Instant| timeout.is_some_and(|t| now.duration_since(since) >= t);
        let mut idle = 0;
        let mut count = |open: bool, expired: bool, stale: bool| {
            idle += u64::from(open && !expired && stale);
            open && !expired && !stale
        };
        for s in self.slots.iter().filter_map(OnceLock::get) {
            s.idle
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|((tx, _, m), since)| {
                    count(!tx.is_closed(), m.expired(now), idle_for(*since))
                });
            s.h2.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|open, m, last| count(open, m.expired(now), idle_for(last)));
        }
        idle
    }

    /// Whether the pool holds a connection: an open HTTP/1 one (idle, busy or connecting) or
    /// an HTTP/2 one not known closed. Envoy keeps an ORIGINAL_DST host while a pool holds
    /// it (`original_dst_rely_on_idle_timeout`).
    pub fn holds_connections(&self) -> bool {
        self.slots.iter().filter_map(OnceLock::get).any(|s| {
            s.cx.load(Ordering::Acquire) > 0 || s.h2.lock().map(|g| g.any_open()).unwrap_or(false)
        })
    }

    /// An idle HTTP/1 connection of another worker's slot: only while the cluster is at
    /// `max_connections`, so a request does not wait for its own worker's connections while
    /// another worker's sit idle (the connection's driver stays on its worker).
    fn idle_elsewhere(&self, timeout: Option<Duration>) -> Option<IdleConn<B>> {
        self.slots
            .iter()
            .filter_map(OnceLock::get)
            .find_map(|s| s.idle.take(timeout))
    }
}

impl<B> std::fmt::Debug for HostPool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostPool")
    }
}

impl<B: PoolBody> HostPool<B> {
    /// Gets a sender to `addr`: a ready pooled connection, a new one, or a wait while the cluster is
    /// at the pool's priority's max_connections. The flag says whether the connection was reused
    /// (a reused HTTP/1 connection may have been closed by the upstream meanwhile).
    ///
    /// Envoy's connection pool semantics: a request that finds no ready connection is pending
    /// until it has one, and fails with [`ConnectError::Overflow`] at once when
    /// max_pending_requests are already pending (so `max_pending_requests: 0` refuses every
    /// request that would need a new connection). A pool with no connection at all opens one
    /// even past max_connections, so a pending request always has a connection coming
    /// (`max_connections: 0` still serves, one connection per host).
    async fn acquire(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        purpose: Purpose,
    ) -> Result<(Sender<B>, bool, u32, StreamSlot), ConnectError> {
        let resources = &cluster.resources[self.priority];
        let here = self.here();
        let timeout = cluster.spec.options.upstream_idle_timeout;
        if purpose == Purpose::Pool && cluster.spec.http2 {
            let limit = cluster.spec.options.h2_max_concurrent_streams;
            let taken = here.h2().take(timeout, limit);
            if let Some((s, meta, stream)) = taken {
                return Ok((Sender::H2(s, meta), true, 0, stream));
            }
            let _pending = resources.pending().ok_or(ConnectError::Overflow)?;
            let s = connect(cluster, self.target(addr), purpose, self.priority).await?;
            let stream = here.pool_h2(cluster, &s);
            return Ok((s, false, 0, stream));
        }
        let none = StreamSlot::uncounted;
        if let Some((s, left, meta)) = here.idle.take(timeout) {
            return Ok((Sender::H1(s, meta), true, left, none()));
        }
        let _pending = resources.pending().ok_or(ConnectError::Overflow)?;
        loop {
            if let Some((s, left, meta)) = here.idle.take(timeout) {
                return Ok((Sender::H1(s, meta), true, left, none()));
            }
            if here.reserve(resources) {
                let slots = (self.priority, Some(here.cx.clone()));
                return connect_reserved(cluster, self.target(addr), purpose, slots)
                    .await
                    .map(|s| (s, false, requests_left(cluster), none()));
            }
            if let Some((s, left, meta)) = self.idle_elsewhere(timeout) {
                return Ok((Sender::H1(s, meta), true, left, none()));
            }
            tokio::time::sleep(PENDING_POLL).await;
        }
    }

    /// The calling worker's idle HTTP/1 connections.
    fn idle_here(&self) -> &Arc<Idle<B>> {
        &self.here().idle
    }
}

impl<B> Slot<B> {
    /// Its pooled HTTP/2 connections.
    fn h2(&self) -> std::sync::MutexGuard<'_, h2_conns::H2Conns<B>> {
        self.h2.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pools `s` when it is a new HTTP/2 connection whose first stream the caller sends;
    /// returns that stream's place.
    fn pool_h2(&self, cluster: &Cluster, s: &Sender<B>) -> StreamSlot {
        match s {
            Sender::H2(h2, meta) => self.h2().add(
                h2,
                *meta,
                requests_left(cluster),
                cluster.spec.options.h2_max_concurrent_streams,
            ),
            Sender::H1(..) => StreamSlot::uncounted(),
        }
    }

    /// Takes a connection slot in the priority's resources (below max_connections) and in
    /// this pool; the pool's first connection is always allowed (Envoy: a pool with no
    /// connection opens one past the circuit breaker, counting `upstream_cx_overflow`).
    fn reserve(&self, resources: &Resources) -> bool {
        if resources.connection() {
            self.cx.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        if self
            .cx
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            resources.connections.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        false
    }
}

/// What a connection is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The pool's requests: HTTP/2 when the cluster speaks it.
    Pool,
    /// The pool's request from an HTTP/1 downstream on a cluster that uses the downstream's
    /// protocol (`use_downstream_protocol_config`): HTTP/1.1, with HTTP/1's ALPN over TLS.
    PoolH1,
    /// An upgraded (WebSocket) request: HTTP/1.1 whatever the cluster speaks.
    Upgrade,
    /// An active health check: HTTP/1.1, and not counted in `upstream_cx_total` (Envoy's checker
    /// connections are not the pool's; the count is how the checker knows whether the cluster
    /// has had traffic, `HealthCheckSpec::intervals`).
    HealthCheck,
    /// An active health check over HTTP/2 (a gRPC check, or `codec_client_type: HTTP2`):
    /// HTTP/2 whatever the cluster speaks, not counted either.
    HealthCheckH2,
}

/// Opens a new connection (TCP, optional TLS, HTTP handshake) outside the max_connections
/// check: a health check's (not counted in the cluster's connections at all), or an upgrade's
/// or the pool's replacing a stale pooled connection (counted in those of `priority`).
pub async fn connect<B: PoolBody>(
    cluster: &Cluster,
    to: Target<'_>,
    purpose: Purpose,
    priority: RoutingPriority,
) -> Result<Sender<B>, ConnectError> {
    if counted(purpose) {
        cluster.resources[priority]
            .connections
            .fetch_add(1, Ordering::AcqRel);
    }
    connect_reserved(cluster, to, purpose, (priority, None)).await
}

/// A connection of `purpose` counts in the cluster's connections (its circuit breaker's
/// `max_connections` and `upstream_cx_active`): all but a health checker's, which Envoy keeps
/// out of the resource manager and the pool's statistics.
fn counted(purpose: Purpose) -> bool {
    !matches!(purpose, Purpose::HealthCheck | Purpose::HealthCheckH2)
}

/// Where a connection goes: the host's address, its transport socket ([`Cluster::tls`]) and
/// the request's transport options (a keyed pool's).
pub type Target<'a> = (SocketAddr, u8, Option<&'a KeyedTransport>);

/// The connection slots a connection holds: one in its priority's `connections`, and, for a
/// pooled HTTP/1 connection, one in its pool's count.
type Slots = (RoutingPriority, Option<Arc<AtomicUsize>>);

/// Opens a connection whose slots the caller already took; they are released when the
/// connection closes, or at once when connecting fails.
async fn connect_reserved<B: PoolBody>(
    cluster: &Cluster,
    to: Target<'_>,
    purpose: Purpose,
    slots: Slots,
) -> Result<Sender<B>, ConnectError> {
    let r = open(cluster, to, purpose, slots.clone()).await;
    if r.is_err() && counted(purpose) {
        cluster.resources[slots.0]
            .connections
            .fetch_sub(1, Ordering::AcqRel);
        if let Some(cx) = slots.1 {
            cx.fetch_sub(1, Ordering::AcqRel);
        }
    }
    r
}

async fn open<B: PoolBody>(
    cluster: &Cluster,
    (addr, transport, options): Target<'_>,
    purpose: Purpose,
    slots: Slots,
) -> Result<Sender<B>, ConnectError> {
    // Every purpose but the pool's own speaks HTTP/1.1, and offers HTTP/1's ALPN for it
    // (Envoy's HTTP/1 pool falls back to `http/1.1`).
    let force_h1 = !matches!(purpose, Purpose::Pool | Purpose::HealthCheckH2);
    let force_h2 = purpose == Purpose::HealthCheckH2;
    let timeout = cluster.spec.connect_timeout;
    let downstream = options.and_then(|k| k.options.proxy);
    let connect = cluster.connect_transport(addr, transport, downstream);
    let tcp = match tokio::time::timeout(timeout, connect).await {
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
    let local = tcp.local_addr().ok();
    if let Some(k) = &cluster.spec.options.tcp_keepalive {
        if let Err(e) = super::sockopts::apply_keepalive(&tcp, k) {
            tracing::debug!(cluster = %cluster.spec.name, %addr, error = %e, "tcp_keepalive");
        }
    }
    if !matches!(purpose, Purpose::HealthCheck | Purpose::HealthCheckH2) {
        cluster.stats.upstream_cx_total.inc();
    }
    match cluster.tls(transport) {
        Some(tls) => match tokio::time::timeout(timeout, tls.connect(tcp, force_h1, options)).await
        {
            Err(_) => {
                cluster.stats.upstream_cx_connect_fail.inc();
                Err(ConnectError::Timeout)
            }
            Ok(Err(e)) => {
                cluster.stats.upstream_cx_connect_fail.inc();
                Err(ConnectError::Tls(e))
            }
            Ok(Ok((s, alpn_h2))) => {
                let h2 = force_h2 || (!force_h1 && (alpn_h2 || cluster.spec.http2));
                handshake(cluster, s, h2, slots, (local, purpose)).await
            }
        },
        None => {
            let h2 = force_h2 || (cluster.spec.http2 && !force_h1);
            handshake(cluster, tcp, h2, slots, (local, purpose)).await
        }
    }
}

async fn handshake<T, B>(
    cluster: &Cluster,
    io: T,
    h2: bool,
    (priority, pool_cx): Slots,
    (local, purpose): (Local, Purpose),
) -> Result<Sender<B>, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: PoolBody,
{
    let counted = counted(purpose);
    let active = counted.then(|| cluster.resources[priority].connections.clone());
    let stats = cluster.stats.clone();
    let io = TokioIo::new(io);
    // The pool's connections age; a health checker's and an upgrade's are not the pool's
    // (Envoy's checker has its own connections without the timer).
    let pooled = matches!(purpose, Purpose::Pool | Purpose::PoolH1);
    let meta = Meta {
        local,
        expires: cluster
            .spec
            .options
            .upstream_max_connection_duration
            .filter(|_| pooled)
            .map(|d| Instant::now() + d),
    };
    let expires = meta.expires;
    let closed = move || {
        // Envoy counts each connection its max_connection_duration closed (here: that
        // closed after it, as it then takes no request and is dropped once free).
        if expires.is_some_and(|e| Instant::now() >= e) {
            stats.upstream_cx_max_duration_reached.inc();
        }
        if let Some(a) = &active {
            a.fetch_sub(1, Ordering::Relaxed);
            stats.upstream_cx_active.dec();
        }
        if let Some(cx) = &pool_cx {
            cx.fetch_sub(1, Ordering::Relaxed);
        }
    };
    let limit = cluster.spec.options.buffer_limit_bytes;
    let sender = if h2 {
        let mut b = http2::Builder::new(crate::workers::Exec);
        // connection_keepalive: Envoy PINGs whether or not streams are open.
        if let Some((interval, timeout)) = cluster.spec.options.h2_keepalive {
            b.timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        // max_response_headers_kb (Envoy's HTTP/2 default 60 KiB): a larger header list
        // resets the stream.
        let kb = cluster.spec.options.max_response_headers_kb;
        b.max_header_list_size(kb.unwrap_or(DEFAULT_H2_RESPONSE_HEADERS_KB) * 1024);
        if let Some(n) = limit {
            // per_connection_buffer_limit_bytes: the flow-control windows (as Envoy's codec,
            // at least HTTP/2's minimum window).
            let w = n.max(MIN_H2_WINDOW);
            b.initial_stream_window_size(w)
                .initial_connection_window_size(w);
        }
        let (s, conn) = b.handshake(io).await.map_err(ConnectError::Handshake)?;
        if counted {
            cluster.stats.upstream_cx_active.inc();
        }
        crate::workers::spawn(async move {
            let _ = conn.await;
            closed();
        });
        Sender::H2(s, meta)
    } else {
        // per_connection_buffer_limit_bytes is no bound here: Envoy's limit is a watermark that
        // pauses reading, never a cap on a response head (its codec takes a head of any size up
        // to max_response_headers_kb), and hyper reads an HTTP/1 body piece by piece as the
        // client takes it. Bounding hyper's read buffer by it reset larger heads.
        // max_response_headers_kb (Envoy's HTTP/1 default 80 KiB): hyper's read buffer bounds
        // the head, counted on the wire (status line and line ends too; at least hyper's
        // 8 KiB), and a larger one fails the request as a protocol error.
        let kb = cluster.spec.options.max_response_headers_kb;
        let head_max = (kb.unwrap_or(DEFAULT_H1_RESPONSE_HEADERS_KB) as usize * 1024).max(8192);
        // header_key_format: requests in proper case unless they keep the client's case (the
        // HTTP connection manager's preserve_case), or the response's case recorded for the
        // client.
        let keys = cluster.spec.options.header_key_format;
        let (s, conn) = http1::Builder::new()
            .max_buf_size(head_max)
            .title_case_headers(keys.proper_case())
            .preserve_header_case(keys.preserves_case())
            .handshake(io)
            .await
            .map_err(ConnectError::Handshake)?;
        if counted {
            cluster.stats.upstream_cx_active.inc();
        }
        crate::workers::spawn(async move {
            let _ = conn.with_upgrades().await;
            closed();
        });
        Sender::H1(s, meta)
    };
    Ok(sender)
}
