//! tcp_proxy: pick a cluster (single or weighted) and a host, connect, and copy bytes both ways
//! until either side closes, the connection is idle for `idle_timeout`, it reaches
//! `max_downstream_connection_duration`, or its listener's drain time ends.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

mod tunnel;

use crate::upstream::outlier::HostResult;
use crate::{
    config,
    http::{
        access_log::{AccessLogger, Entry, ResponseDetails},
        local_reply::Flag,
    },
    server::{conn_log::ConnLog, istio::TcpSeries, stats::TcpStats},
    upstream::{Cluster, LbContext},
};

/// Copy buffer per direction.
const BUF: usize = 16 * 1024;

/// A tcp_proxy filter with its clusters resolved.
#[derive(Debug)]
pub struct TcpProxy {
    /// The config block.
    pub cfg: Arc<config::TcpProxy>,
    /// Counters for `tcp.<stat_prefix>`.
    pub stats: Arc<TcpStats>,
    /// Clusters: one for `cluster`, or one per weighted entry in config order; `None` where
    /// the configuration has no cluster of that name (as in Envoy, which looks the cluster up
    /// per connection: a connection that picks it is closed, `NC`).
    pub clusters: Vec<Option<Arc<Cluster>>>,
    /// Istio's TCP series, one per entry of `clusters` (`None` with it).
    pub istio: Vec<Option<Arc<TcpSeries>>>,
    /// The filter's `access_log`.
    pub log: Arc<AccessLogger>,
}

/// The downstream side of a proxied connection.
#[derive(Debug)]
pub struct Downstream {
    /// The peer.
    pub peer: SocketAddr,
    /// The directly connected peer (the load balancer behind a PROXY header; else `peer`).
    pub direct: SocketAddr,
    /// The local address (the original destination of a captured connection).
    pub local: SocketAddr,
    /// The SNI the listener's tls_inspector read.
    pub sni: Option<Arc<str>>,
}

/// What the access log tells of a connection, filled in as it goes.
#[derive(Debug, Default)]
struct Session {
    cluster: Option<String>,
    /// The cluster's `alt_stat_name`, if any.
    cluster_alt_name: Option<Arc<str>>,
    host: Option<SocketAddr>,
    local: Option<SocketAddr>,
    /// Envoy's transport failure reason of a failed connect.
    transport: Option<Box<str>>,
    /// Closed at `max_downstream_connection_duration` while copying (flag `DT`).
    duration_reached: bool,
    /// A connect attempt failed before one succeeded (Envoy keeps its flag `UF`).
    connect_failed: bool,
    rx: u64,
    tx: u64,
}

/// Why a TCP proxy session ended early.
#[derive(Debug, thiserror::Error)]
pub enum TcpProxyError {
    /// The cluster has no usable host.
    #[error("cluster {0}: no healthy upstream")]
    NoHealthyUpstream(String),
    /// The configuration has no cluster of that name (Envoy's `NC`: the connection is closed).
    #[error("cluster {0}: not found")]
    NoCluster(String),
    /// `max_downstream_connection_duration` passed before the copy began (Envoy's `DT`).
    #[error("max_downstream_connection_duration reached")]
    DurationReached,
    /// Connecting upstream failed.
    #[error("upstream {addr}: connect failed: {reason}")]
    Connect {
        /// Upstream address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl TcpProxyError {
    /// Whether the upstream side failed (not a missing cluster: nothing was tried).
    pub fn is_upstream_failure(&self) -> bool {
        matches!(self, Self::NoHealthyUpstream(_) | Self::Connect { .. })
    }
}

impl TcpProxy {
    /// The index in `clusters` a connection goes to, and that cluster's name.
    fn pick_cluster(&self) -> (usize, &str) {
        match &self.cfg.cluster {
            config::TcpProxyCluster::Single(c) => (0, c.as_str()),
            config::TcpProxyCluster::Weighted(w) => {
                let picked = w.pick(rand::random());
                let i = w
                    .clusters
                    .iter()
                    .position(|c| std::ptr::eq(c, picked))
                    .unwrap_or(0);
                (i, picked.name.as_str())
            }
        }
    }

    /// Proxies `down` (from `from`) to an upstream host until done, or until `stop` resolves
    /// (the listener's drain time ended): both sides are then closed. The access log gets one
    /// line when the connection ends.
    pub async fn serve<D>(
        &self,
        mut down: D,
        from: Downstream,
        stop: impl Future<Output = ()>,
        conn_log: Option<&ConnLog>,
    ) -> Result<(), TcpProxyError>
    where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        let started = (Instant::now(), SystemTime::now());
        let mut session = Session::default();
        // Envoy starts the timer when the connection reaches the filter, before the upstream
        // connect; when it fires the downstream (and with it the upstream) is closed.
        let deadline = self
            .cfg
            .max_downstream_connection_duration
            .map(|d| tokio::time::Instant::from_std(started.0 + d));
        let r = self
            .proxy(&mut down, &from, stop, deadline, &mut session)
            .await;
        // Before `down` is dropped: the listener's line (written when the connection closes)
        // carries what the session learned.
        if self.log.enabled() || conn_log.is_some() {
            let e = self.entry(from, session, r.as_ref().err(), started);
            match conn_log {
                Some(l) => l.adopt(e, self.log.enabled().then(|| self.log.clone())),
                None => self.log.log(&e),
            }
        }
        r
    }

    /// The connection's access log entry.
    fn entry(
        &self,
        from: Downstream,
        s: Session,
        err: Option<&TcpProxyError>,
        (start, start_wall): (Instant, SystemTime),
    ) -> Entry {
        let flags = match err {
            None if s.duration_reached => Flag::DurationTimeout.as_str(),
            None if s.connect_failed => Flag::ConnectFailure.as_str(),
            None => Flag::None.as_str(),
            Some(TcpProxyError::DurationReached) => Flag::DurationTimeout.as_str(),
            Some(TcpProxyError::NoCluster(_)) => Flag::NoCluster.as_str(),
            Some(TcpProxyError::NoHealthyUpstream(_)) => Flag::NoHealthyUpstream.as_str(),
            // Envoy's tcp_proxy has made its one connect attempt (`max_connect_attempts`):
            // the connect failure and the attempts exhausted, in its flag order.
            Some(TcpProxyError::Connect { .. }) => "UF,URX",
        };
        Entry {
            start: Some(start_wall),
            flags,
            bytes_rx: s.rx,
            bytes_tx: s.tx,
            duration: start.elapsed(),
            upstream_host: s.host,
            upstream_local: s.local,
            downstream_remote: Some(from.peer),
            downstream_local: Some(from.local),
            downstream_direct: Some(from.direct),
            sni: from.sni.map(|n| n.to_string()),
            cluster: s.cluster,
            cluster_alt_name: s.cluster_alt_name,
            details: s.transport.map(ResponseDetails::Transport),
            ..Entry::default()
        }
    }

    async fn proxy<D>(
        &self,
        down: &mut D,
        from: &Downstream,
        stop: impl Future<Output = ()>,
        deadline: Option<tokio::time::Instant>,
        session: &mut Session,
    ) -> Result<(), TcpProxyError>
    where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        self.stats.downstream_cx_total.inc();
        let (i, name) = self.pick_cluster();
        let Some(cluster) = self.clusters.get(i).and_then(Option::as_ref) else {
            self.stats.downstream_cx_no_route.inc();
            return Err(TcpProxyError::NoCluster(name.to_string()));
        };
        session.cluster = Some(cluster.spec.name.clone());
        session.cluster_alt_name = cluster.spec.alt_stat_name.clone();
        let ctx = LbContext {
            hash: self
                .cfg
                .hash_source_ip
                .then(|| crate::upstream::lb::hash_bytes(from.peer.ip().to_string().as_bytes())),
            orig_dst: Some(from.local),
        };
        // `max_connect_attempts` (default 1): a failed connect tries again, each time with a
        // host the balancer picks anew, as Envoy's `establishUpstreamConnection`.
        let mut attempts_left = self.cfg.max_connect_attempts;
        let (host, up) = loop {
            attempts_left = attempts_left.saturating_sub(1);
            let Some(host) = cluster.choose_host(&ctx) else {
                cluster.stats.upstream_cx_none_healthy.inc();
                return Err(TcpProxyError::NoHealthyUpstream(cluster.spec.name.clone()));
            };
            session.host = Some(host.addr);
            let connect = tokio::time::timeout(
                cluster.spec.connect_timeout,
                cluster.connect_transport(host.addr, host.transport, Some((from.peer, from.local))),
            );
            let Some(connected) = by(deadline, connect).await else {
                return Err(self.duration_reached());
            };
            let failed = match connected {
                Ok(Ok(s)) => break (host, s),
                Ok(Err(e)) => {
                    cluster.stats.upstream_cx_connect_fail.inc();
                    cluster.record_outcome(&host, HostResult::LocalOrigin { timeout: false });
                    session.transport = Some(ResponseDetails::connect_error(&e));
                    TcpProxyError::Connect {
                        addr: host.addr,
                        reason: e.to_string(),
                    }
                }
                Err(_) => {
                    cluster.stats.upstream_cx_connect_timeout.inc();
                    cluster.record_outcome(&host, HostResult::LocalOrigin { timeout: true });
                    session.transport = None;
                    TcpProxyError::Connect {
                        addr: host.addr,
                        reason: "timeout".into(),
                    }
                }
            };
            if attempts_left == 0 {
                return Err(failed);
            }
            session.connect_failed = true;
        };
        session.local = up.local_addr().ok();
        cluster.stats.upstream_cx_total.inc();
        cluster.stats.upstream_cx_active.inc();
        let series = self.istio.get(i).and_then(Option::as_ref);
        if let Some(s) = series {
            s.open();
        }
        let _ = up.set_nodelay(true);
        // The drain's end or the connection's deadline, whichever comes first.
        let reached = std::sync::atomic::AtomicBool::new(false);
        let stop = async {
            match deadline {
                None => stop.await,
                Some(at) => tokio::select! {
                    () = stop => {}
                    () = tokio::time::sleep_until(at) => reached.store(true, Relaxed),
                },
            }
        };
        // The host's transport socket: TLS (its cluster's, or its transport_socket_matches
        // entry's) or plaintext.
        // A tunnel (`tunneling_config`) over the transport: a refusal closes the connection as
        // a failed connect (`UF`) whose transport failure reason is Envoy's
        // `tunnel_response:<status>`, counted against the host as a local-origin connect
        // failure (the connection itself had succeeded); None: the connection's deadline came
        // first.
        let fail = |session: &mut Session, refused: Option<u16>| {
            cluster.stats.upstream_cx_active.dec();
            if let Some(s) = series {
                s.close(0, 0);
            }
            let Some(status) = refused else {
                return self.duration_reached();
            };
            cluster.record_outcome(&host, HostResult::LocalOrigin { timeout: false });
            session.transport = (status != 0).then(|| format!("tunnel_response:{status}").into());
            TcpProxyError::Connect {
                addr: host.addr,
                reason: match status {
                    0 => "tunnel: no answer".into(),
                    s => format!("tunnel refused: {s}"),
                },
            }
        };
        let idle = self.cfg.idle_timeout;
        let (rx, tx, idled) = match (cluster.tls(host.transport), &self.cfg.tunneling) {
            (None, None) => copy_bidirectional_idle(down, up, idle, stop).await,
            (None, Some(t)) => match self.tunnel(up, t, cluster, from, deadline).await {
                Ok(up) => copy_streams_idle(down, up, idle, stop).await,
                Err(reason) => return Err(fail(session, reason)),
            },
            (Some(tls), tunneling) => {
                // A tunnel's TLS offers its HTTP version by ALPN, as Envoy's HTTP pool.
                let shake = async {
                    match tunneling {
                        None => tls.connect_raw(up).await,
                        Some(_) => {
                            let h1 = !cluster.spec.tunnel_http2;
                            tls.connect(up, h1, None).await.map(|(s, _)| s)
                        }
                    }
                };
                let shake = tokio::time::timeout(cluster.spec.connect_timeout, shake);
                let Some(shaken) = by(deadline, shake).await else {
                    cluster.stats.upstream_cx_active.dec();
                    if let Some(s) = series {
                        s.close(0, 0);
                    }
                    return Err(self.duration_reached());
                };
                let up = match shaken {
                    Ok(Ok(s)) => s,
                    failed => {
                        cluster.stats.upstream_cx_active.dec();
                        cluster.stats.upstream_cx_connect_fail.inc();
                        let timeout = failed.is_err();
                        cluster.record_outcome(&host, HostResult::LocalOrigin { timeout });
                        if let Some(s) = series {
                            s.close(0, 0);
                        }
                        session.transport = None;
                        let reason = match failed {
                            Ok(Err(e)) => format!("TLS: {e}"),
                            _ => "TLS handshake timeout".into(),
                        };
                        return Err(TcpProxyError::Connect {
                            addr: host.addr,
                            reason,
                        });
                    }
                };
                match tunneling {
                    None => copy_streams_idle(down, up, idle, stop).await,
                    Some(t) => match self.tunnel(up, t, cluster, from, deadline).await {
                        Ok(up) => copy_streams_idle(down, up, idle, stop).await,
                        Err(reason) => return Err(fail(session, reason)),
                    },
                }
            }
        };
        cluster.stats.upstream_cx_active.dec();
        (session.rx, session.tx) = (rx, tx);
        if let Some(s) = series {
            s.close(rx, tx);
        }
        self.stats.downstream_cx_rx_bytes_total.add(rx);
        self.stats.downstream_cx_tx_bytes_total.add(tx);
        if idled {
            self.stats.idle_timeout.inc();
        }
        if reached.load(Relaxed) {
            self.stats.max_downstream_connection_duration.inc();
            session.duration_reached = true;
        }
        Ok(())
    }

    /// Opens the tunnel over `up`, waiting for the answer no longer than the connection's idle
    /// timeout (Envoy has no other timer on it): the stream, or why not (`Err(None)`: the
    /// connection's `deadline` came first; `Err(Some(status))`: refused with that status, 0
    /// for no answer).
    async fn tunnel<S>(
        &self,
        up: S,
        t: &config::Tunneling,
        cluster: &Cluster,
        from: &Downstream,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, Option<u16>>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let open = tunnel::open(up, t, cluster.spec.tunnel_http2, from.local, from.peer);
        let open = async {
            match self.cfg.idle_timeout {
                None => Ok(open.await),
                Some(idle) => tokio::time::timeout(idle, open).await,
            }
        };
        match by(deadline, open).await {
            None => Err(None),
            Some(Ok(opened)) => opened.map_err(Some),
            Some(Err(_)) => Err(Some(0)),
        }
    }

    /// Counts a connection closed at `max_downstream_connection_duration` before its copy began.
    fn duration_reached(&self) -> TcpProxyError {
        self.stats.max_downstream_connection_duration.inc();
        TcpProxyError::DurationReached
    }
}

/// `fut`'s output, or `None` when `deadline` passes first.
async fn by<F: Future>(deadline: Option<tokio::time::Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        None => Some(fut.await),
        Some(at) => tokio::time::timeout_at(at, fut).await.ok(),
    }
}

/// Copies both ways until both sides closed, the copy was idle for `idle`, or `stop` resolved;
/// returns (bytes down->up, bytes up->down, closed for idleness). A half close is forwarded as a
/// shutdown of the other side's write half.
pub async fn copy_bidirectional_idle<D>(
    down: &mut D,
    mut up: TcpStream,
    idle: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> (u64, u64, bool)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    // The TCP side splits without a lock (borrowed halves); the other through tokio's split.
    let (ur, uw) = up.split();
    let (dr, dw) = tokio::io::split(down);
    copy_halves_idle(dr, dw, ur, uw, idle, stop).await
}

/// [`copy_bidirectional_idle`] between any two streams (an upgraded HTTP tunnel).
pub async fn copy_streams_idle<D, U>(
    down: D,
    up: U,
    idle: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> (u64, u64, bool)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (dr, dw) = tokio::io::split(down);
    let (ur, uw) = tokio::io::split(up);
    copy_halves_idle(dr, dw, ur, uw, idle, stop).await
}

async fn copy_halves_idle(
    mut dr: impl AsyncRead + Unpin,
    mut dw: impl AsyncWrite + Unpin,
    mut ur: impl AsyncRead + Unpin,
    mut uw: impl AsyncWrite + Unpin,
    idle: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> (u64, u64, bool) {
    tokio::pin!(stop);
    let mut b1 = vec![0u8; BUF];
    let mut b2 = vec![0u8; BUF];
    let (mut up_open, mut down_open) = (true, true);
    let (mut rx, mut tx) = (0u64, 0u64);
    let idle = idle.unwrap_or(Duration::from_secs(u64::MAX / 4));
    loop {
        if !up_open && !down_open {
            return (rx, tx, false);
        }
        // A write blocked on a peer that does not read still ends when `stop` resolves (the
        // drain's end, `max_downstream_connection_duration`).
        tokio::select! {
            // A read error (a reset, or a network RBAC denial) ends both sides; an end of
            // stream is a half close, forwarded.
            r = dr.read(&mut b1), if down_open => match r {
                Ok(0) => { down_open = false; let _ = uw.shutdown().await; }
                Err(_) => return (rx, tx, false),
                Ok(n) => {
                    tokio::select! {
                        w = uw.write_all(&b1[..n]) => if w.is_err() { return (rx, tx, false); },
                        () = &mut stop => return (rx, tx, false),
                    }
                    rx += n as u64;
                }
            },
            r = ur.read(&mut b2), if up_open => match r {
                Ok(0) => { up_open = false; let _ = dw.shutdown().await; }
                Err(_) => return (rx, tx, false),
                Ok(n) => {
                    tokio::select! {
                        w = dw.write_all(&b2[..n]) => if w.is_err() { return (rx, tx, false); },
                        () = &mut stop => return (rx, tx, false),
                    }
                    tx += n as u64;
                }
            },
            _ = tokio::time::sleep(idle) => return (rx, tx, true),
            () = &mut stop => return (rx, tx, false),
        }
    }
}
