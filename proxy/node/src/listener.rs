//! Proxy listeners: the accept loop, the original destination, and the handler seam for L7.
//!
//! A listener accepts on 15001 (outbound) or 15006 (inbound), asks the kernel where the connection
//! was really going (`SO_ORIGINAL_DST`, answered by conntrack behind iptables REDIRECT or by
//! sluice's cgroup/getsockopt program under eBPF: the same call), opens one tracing span per
//! connection and hands an [`Accepted`] to a [`ConnectionHandler`]. The TCP passthrough
//! ([`crate::outbound::Passthrough`], [`crate::inbound::InboundPassthrough`]) is one handler; the
//! L7 engine (HTTP routing) plugs in as another.

use std::{
    collections::VecDeque,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, info_span, warn, Instrument as _};

use sluice_engine::{
    server::{original_dst, ConnObserver},
    workers::Placement,
};

use crate::{drain::Watch, upstream_factory::UpstreamFactory};

/// Which way a listener's connections flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// App -> somewhere (15001).
    Outbound,
    /// Somewhere -> app (15006).
    Inbound,
}

/// Errors of one proxied connection, classified the way an access log needs them.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The original destination could not be read (downstream fault: not a redirected socket).
    #[error("downstream: no original destination: {0}")]
    OrigDst(io::Error),
    /// The upstream refused, was unreachable or timed out.
    #[error("upstream {addr}: connect: {source}")]
    UpstreamConnect { addr: SocketAddr, source: io::Error },
    /// Copying bytes failed after both sides were connected.
    #[error("copy between downstream and upstream {addr}: {source}")]
    Copy { addr: SocketAddr, source: io::Error },
    /// The proxy could not open its own socket (internal fault).
    #[error("internal: upstream socket for {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
}

/// Who is at fault for a [`ConnectionError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client side.
    Downstream,
    /// The server side.
    Upstream,
    /// sluice itself.
    Internal,
}

impl ConnectionError {
    /// Who is at fault.
    pub fn source_side(&self) -> ErrorSource {
        match self {
            ConnectionError::OrigDst(_) => ErrorSource::Downstream,
            ConnectionError::UpstreamConnect { .. } | ConnectionError::Copy { .. } => {
                ErrorSource::Upstream
            }
            ConnectionError::Socket { .. } => ErrorSource::Internal,
        }
    }
}

/// How many recent original destinations a listener remembers for `sluice status`.
pub const RECENT_DESTINATIONS: usize = 8;

/// Per-listener statistics, shown by `sluice status` (updated once per connection, never per byte).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections currently open.
    pub active: AtomicU64,
    /// Connections whose upstream connect failed.
    pub upstream_failures: AtomicU64,
    /// Bytes app -> upstream (summed at close).
    pub bytes_out: AtomicU64,
    /// Bytes upstream -> app (summed at close).
    pub bytes_in: AtomicU64,
    /// Last original destinations seen, newest last.
    pub recent: Mutex<VecDeque<SocketAddr>>,
}

impl ListenerStats {
    fn record(&self, orig_dst: SocketAddr) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT_DESTINATIONS {
            r.pop_front();
        }
        r.push_back(orig_dst);
    }

    /// Snapshot of the recent destinations.
    pub fn recent(&self) -> Vec<SocketAddr> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().copied().collect()
    }
}

/// What every connection of a listener shares: its name, its pod, how to reach upstreams.
#[derive(Debug)]
pub struct ListenerContext {
    /// Listener name for logs (`outbound`, `inbound`).
    pub name: &'static str,
    /// Outbound or inbound.
    pub direction: Direction,
    /// The pod's netns, for logs (path as given).
    pub netns: String,
    /// Opens upstream sockets inside the pod's netns, marked with the proxy mark.
    pub upstream: UpstreamFactory,
    /// Counters for `sluice status`.
    pub stats: ListenerStats,
    /// The agent's workers the pod's connections run on (node mode with `--pod-workers`; see
    /// [`sluice_engine::workers`]). `None`: any worker (round robin).
    pub placement: Option<Arc<Placement>>,
}

/// The L7 engine reports the connections it serves for a capture listener here, so `sluice
/// status` shows the same counters whichever handler served the pod.
impl ConnObserver for ListenerContext {
    fn closed(&self, from_downstream: u64, to_downstream: u64) {
        self.stats
            .bytes_out
            .fetch_add(from_downstream, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(to_downstream, Ordering::Relaxed);
    }

    fn upstream_failed(&self) {
        self.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// One accepted, not yet proxied connection.
#[derive(Debug)]
pub struct Accepted {
    /// The downstream (app side) socket.
    pub stream: TcpStream,
    /// The downstream peer.
    pub peer: SocketAddr,
    /// Where the downstream was really going.
    pub orig_dst: SocketAddr,
    /// Connection number (unique within the process).
    pub id: u64,
    /// The listener it came from.
    pub ctx: Arc<ListenerContext>,
}

/// Future returned by [`ConnectionHandler::handle`].
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), ConnectionError>> + Send>>;

/// What a listener does with each connection. The TCP passthrough implements it now; the L7
/// engine (HTTP connection manager -> routes -> clusters) implements it to take over a listener.
/// The future runs inside the connection's span; it owns the stream and must end it (a dropped
/// stream is closed; call [`reset`] to abort with RST).
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Proxies one connection to completion.
    fn handle(&self, conn: Accepted) -> HandlerFuture;
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accepts until `stop` fires, spawning one instrumented task per connection. Connections in
/// flight keep running after the listener closes.
pub async fn serve(
    listener: Arc<TcpListener>,
    ctx: Arc<ListenerContext>,
    handler: Arc<dyn ConnectionHandler>,
    stop: Watch,
) {
    let local = listener.local_addr().ok();
    // Root spans: a listener outlives whatever request started it (e.g. an enroll call).
    let span = info_span!(parent: None, "listener", listener = ctx.name, netns = %ctx.netns, addr = ?local);
    async move {
        info!("listening");
        let stopped = stop.signaled();
        tokio::pin!(stopped);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut stopped => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off a little instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            accept_one(stream, peer, local.map(|l| l.port()), &ctx, &handler);
        }
        info!("listener closed");
    }
    .instrument(span)
    .await
}

fn accept_one(
    stream: TcpStream,
    peer: SocketAddr,
    listener_port: Option<u16>,
    ctx: &Arc<ListenerContext>,
    handler: &Arc<dyn ConnectionHandler>,
) {
    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    // Like the upstream side: without TCP_NODELAY a response the proxy relays in two writes
    // (nginx's headers, then the sendfile body) waits for the app's delayed ACK (~40 ms) whenever
    // the app<->proxy hop goes through TCP (iptables path, eBPF with the fast path off).
    if let Err(e) = stream.set_nodelay(true) {
        debug!(conn = id, %peer, error = %e, "TCP_NODELAY on the accepted socket");
    }
    let orig_dst = match original_dst(&stream) {
        Ok(d) => d,
        Err(e) if ctx.direction == Direction::Inbound => {
            // sk_lookup steering keeps the original local address: no NAT, nothing to ask.
            debug!(error = %e, "no SO_ORIGINAL_DST, using the local address");
            match stream.local_addr() {
                Ok(a) => a,
                Err(e) => return warn!(conn = id, %peer, error = %e, "no local address"),
            }
        }
        Err(e) => {
            warn!(conn = id, %peer, error = %ConnectionError::OrigDst(e), "rejecting connection");
            return reset(stream);
        }
    };
    // A connection made straight to the listener (not redirected) would be proxied to ourselves
    // forever. Inbound, only the port tells: an sk_lookup-captured connection's local address
    // *is* its original destination (no NAT), so comparing addresses would reject them all (and
    // sk_lookup never steers the listener's own port). Outbound, a redirected connection to a
    // remote host's port 15001 is legitimate: only a destination equal to the listener's own
    // address is a loop.
    let to_itself = match ctx.direction {
        Direction::Inbound => listener_port == Some(orig_dst.port()),
        Direction::Outbound => stream.local_addr().is_ok_and(|l| l == orig_dst),
    };
    if to_itself {
        warn!(conn = id, %peer, %orig_dst, "rejecting connection addressed to the listener itself");
        return reset(stream);
    }
    ctx.stats.record(orig_dst);
    let Some(workers) = sluice_engine::workers::get() else {
        tokio::spawn(connection(stream, peer, orig_dst, id, ctx, handler));
        return;
    };
    // The agent's workers: the connection moves to its pod's next worker (in the pod's lane
    // there) and stays there.
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            ctx.stats.active.fetch_sub(1, Ordering::Relaxed);
            return warn!(conn = id, %peer, error = %e, "handing the connection to a worker");
        }
    };
    let placement = ctx.placement.as_deref();
    let (ctx, handler) = (ctx.clone(), handler.clone());
    let fut = async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => connection(stream, peer, orig_dst, id, &ctx, &handler).await,
            Err(e) => {
                ctx.stats.active.fetch_sub(1, Ordering::Relaxed);
                warn!(conn = id, %peer, error = %e, "registering the connection on a worker");
            }
        }
    };
    match placement {
        Some(p) => p.spawn(fut),
        None => drop(workers.spawn_on(workers.next_any(), fut)),
    }
}

/// One connection's task: the handler's future inside the connection's span, counted out of the
/// listener's active connections when it ends.
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    orig_dst: SocketAddr,
    id: u64,
    ctx: &Arc<ListenerContext>,
    handler: &Arc<dyn ConnectionHandler>,
) -> impl Future<Output = ()> + Send + 'static {
    let span = info_span!(
        parent: None,
        "conn",
        conn = id,
        listener = ctx.name,
        orig_dst = %orig_dst,
        netns = %ctx.netns
    );
    let conn = Accepted {
        stream,
        peer,
        orig_dst,
        id,
        ctx: ctx.clone(),
    };
    let fut = handler.handle(conn);
    let ctx = ctx.clone();
    async move {
        info!(%peer, "accepted");
        match fut.await {
            Ok(()) => {}
            Err(e) => {
                if matches!(e, ConnectionError::UpstreamConnect { .. }) {
                    ctx.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
                }
                warn!(error = %e, side = ?e.source_side(), "connection failed");
            }
        }
        ctx.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
    .instrument(span)
}

/// Aborts a connection with a TCP RST (SO_LINGER 0, then close) so the client sees
/// ECONNRESET at once instead of waiting.
pub fn reset(stream: TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        debug!(error = %e, "SO_LINGER 0 failed; closing normally");
    }
    drop(stream);
}
