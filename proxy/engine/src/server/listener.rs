//! Listeners: bind, accept, find the original destination, detect the protocol on captured
//! listeners, choose the filter chain and hand the connection to HTTP or TCP proxying.

use std::{
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd as _},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tracing::Instrument;

use super::{
    boxed_io::BoxedIo,
    conn_log::{Both, ConnLog},
    observer::{ConnObserver, Metered},
    rbac_gate, ListenerSlot, Server,
};
use crate::{
    config, detect,
    http::{self, ConnInfo, Hcm},
    rbac::network::NetworkRbacRt,
    tcp_proxy::{self, TcpProxy},
    upstream::connector::Connector,
};

/// Backlog of every listener socket.
const BACKLOG: u32 = 1024;
/// Connect timeout of the passthrough used for non-HTTP traffic on a captured listener without a
/// tcp_proxy chain.
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A filter chain's runtime.
#[derive(Debug, Clone)]
pub enum ChainRt {
    /// http_connection_manager.
    Http(Arc<Hcm>),
    /// tcp_proxy.
    Tcp(Arc<TcpProxy>),
}

/// A listener of one config version.
#[derive(Debug)]
pub struct ListenerRt {
    /// The config block.
    pub cfg: config::Listener,
    /// `filter_chains[]` resolved, same order.
    pub chains: Vec<ChainRt>,
    /// Each chain's network RBAC filters (None: it has none), same order.
    pub rbac: Vec<Option<Arc<[NetworkRbacRt]>>>,
    /// Each chain's network ext_authz filters (None: it has none), same order.
    pub ext_authz: Vec<Option<Arc<crate::network_ext_authz::AuthzGate>>>,
    /// The listener's `access_log` (None: it has none).
    pub log: Option<Arc<crate::http::access_log::AccessLogger>>,
    /// Its `envoy.filters.listener.proxy_protocol` filter, if it has one.
    pub proxy_proto: Option<super::proxy_proto::ProxyProtoRt>,
}

impl ListenerRt {
    /// Whether connections arrive redirected (iptables/eBPF) so SO_ORIGINAL_DST is meaningful.
    pub fn captured(&self) -> bool {
        self.cfg.use_original_dst || self.cfg.has_original_dst_filter()
    }
}

/// Why an accepted connection could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No listener with that name in the running config.
    #[error("no listener named {0}")]
    NoListener(String),
}

/// Binds a listener socket (SO_REUSEADDR) on `addr`. An IPv6 one is IPv6 only, as Envoy binds
/// it (`ipv4_compat` false), so `::` and `0.0.0.0` of one port are two sockets (istiod's
/// dual-stack listeners).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking(),
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG as i32)?;
    TcpListener::from_std(sock.into())
}

/// Accepts until the task is aborted (listener removed). The socket is shared: a listener
/// re-bound with this address takes it over (its queued connections included).
pub async fn accept_loop(server: Arc<Server>, slot: Arc<ListenerSlot>, l: Arc<TcpListener>) {
    // Connections taken since the loop last yielded.
    let mut in_a_row = 0u32;
    loop {
        match l.accept().await {
            Ok((stream, _)) => {
                // An abort takes effect at the loop's next yield: a connection it still took
                // from a socket handed to a re-bound listener goes to that listener's slot
                // (none: the listener is gone, and so is the connection).
                let slot = match slot.drain.started() {
                    false => slot.clone(),
                    true => match l.local_addr().ok().and_then(|a| server.slot_for_addr(a)) {
                        Some(now) => now,
                        None => continue,
                    },
                };
                let max = slot.rt.load().cfg.max_accepts_per_event;
                tokio::spawn(handle_connection(server.clone(), slot, stream));
                in_a_row += 1;
                if max.is_some_and(|m| in_a_row >= m) {
                    in_a_row = 0;
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => crate::accept::failed(&e).await,
        }
    }
}

/// SO_ORIGINAL_DST (IPv4) / IP6T_SO_ORIGINAL_DST (IPv6) of an accepted socket, chosen by the
/// socket's family: the same call behind iptables REDIRECT (answered by conntrack) and under
/// sluice's eBPF capture (answered by its cgroup/getsockopt program).
pub fn original_dst(stream: &impl AsFd) -> std::io::Result<SocketAddr> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrLike as _, SockaddrStorage};
    let fd = stream.as_fd();
    let local: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    if local.family() == Some(nix::sys::socket::AddressFamily::Inet6) {
        let sin6 = getsockopt(&fd, sockopt::Ip6tOriginalDst)?;
        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
        return Ok(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)));
    }
    let sin = getsockopt(&fd, sockopt::OriginalDst)?;
    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
    Ok(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
}

/// Serves one connection accepted by one of the server's own listeners (`sluice proxy`): one
/// span, the original destination looked up here when the listener is a captured one.
pub async fn handle_connection(server: Arc<Server>, slot: Arc<ListenerSlot>, stream: TcpStream) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    server.stats.server.downstream_cx_total.inc();
    let l = slot.rt.load();
    let dst = if l.captured() {
        original_dst(&stream).unwrap_or(local)
    } else {
        local
    };
    let span = tracing::debug_span!("conn", listener = %l.cfg.name, %peer, orig_dst = %dst);
    drop(l);
    dispatch(server, slot, stream, Addrs::new(peer, local, dst), None)
        .instrument(span)
        .await
}

/// Serves a connection the capture side accepted and already resolved (its original
/// destination, its span and its per-listener counters are the capture side's): no second
/// lookup, no second span; bytes and upstream failures go to `observer`.
pub async fn serve_captured(
    server: Arc<Server>,
    slot: Arc<ListenerSlot>,
    stream: TcpStream,
    dst: SocketAddr,
    observer: Arc<dyn ConnObserver>,
) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    dispatch(
        server,
        slot,
        stream,
        Addrs::new(peer, local, dst),
        Some(observer),
    )
    .await
}

/// The three addresses of a downstream connection.
#[derive(Clone, Copy)]
struct Addrs {
    peer: SocketAddr,
    local: SocketAddr,
    dst: SocketAddr,
    /// The directly connected peer, when the proxy_protocol listener filter read a PROXY
    /// header (`peer` is then the source it stated; a LOCAL one states none).
    proxy_direct: Option<SocketAddr>,
}

impl Addrs {
    /// A connection's addresses as it was accepted.
    fn new(peer: SocketAddr, local: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            peer,
            local,
            dst,
            proxy_direct: None,
        }
    }
}

/// Original-destination hand-off, protocol detection, filter chain choice, then HTTP or TCP.
async fn dispatch(
    server: Arc<Server>,
    mut slot: Arc<ListenerSlot>,
    mut stream: TcpStream,
    mut a: Addrs,
    observer: Option<Arc<dyn ConnObserver>>,
) {
    let mut l = slot.rt.load_full();
    // The proxy_protocol listener filter runs first: the connection's addresses become the
    // ones its PROXY header states (Envoy restores the local address and sets the remote one).
    if let Some(pp) = &l.proxy_proto {
        match pp.run(&mut stream).await {
            super::proxy_proto::Verdict::Restore(src, dst) => {
                a = Addrs {
                    peer: src,
                    local: dst,
                    dst,
                    proxy_direct: Some(a.peer),
                };
            }
            super::proxy_proto::Verdict::Header => a.proxy_direct = Some(a.peer),
            super::proxy_proto::Verdict::Keep => {}
            super::proxy_proto::Verdict::Close => return,
        }
    }
    // use_original_dst: hand the connection to the listener owning the original destination
    // (never with proxy_protocol: the config refuses the two together).
    if l.cfg.use_original_dst && a.dst != a.local {
        if let Some(other) = server.slot_for_addr(a.dst) {
            if !Arc::ptr_eq(&other, &slot) {
                slot = other;
                l = slot.rt.load_full();
            }
        }
    }
    let started = l.log.as_ref().map(|_| (Instant::now(), SystemTime::now()));
    let proto = if l.cfg.detects_protocol() {
        Some(detect::detect(&stream).await)
    } else {
        None
    };
    // The SNI the tls_inspector reports (network RBAC's requested_server_name).
    let sni = conn_facts(&l.cfg, proto.as_ref(), a)
        .server_name
        .map(Arc::<str>::from);
    // The listener's access log of this connection.
    let conn_log = l.log.clone().zip(started).map(|(logger, started)| {
        let peers = (a.peer, a.proxy_direct.unwrap_or(a.peer));
        Arc::new(ConnLog::new(logger, peers, a.dst, sni.clone(), started))
    });
    let Some((mut idx, mut passthrough_only)) = choose_chain(&l, proto.as_ref(), a) else {
        tracing::debug!("no filter chain matches; closing");
        if let Some(log) = conn_log.and_then(Arc::into_inner) {
            log.no_chain();
        }
        return;
    };
    let mut id = ChainId::of(&l, idx);
    // Not held while the connection lives: a replaced config must be freed after a reload.
    drop(l);
    // Nothing sent within DETECT_TIMEOUT and headed for the passthrough: connect to the original
    // destination now (a server-speaks-first protocol gets its greeting, as with Envoy's
    // continue_on_listener_filters_timeout), and let the side that speaks first decide. A client
    // whose first bytes are HTTP after all (slow to start on a busy node) gets its HTTP chain.
    let mut up = None;
    if passthrough_only && proto == Some(detect::Protocol::Silent) {
        match first_speaker(&server.connector, &stream, a.dst).await {
            Late::Upstream(u) => up = Some(u),
            Late::Client(u) => {
                let p = detect::detect(&stream).await;
                let rt = slot.rt.load_full();
                match (choose_chain(&rt, Some(&p), a), u) {
                    (Some((i, false)), _) if p.is_http() => {
                        (idx, passthrough_only) = (i, false);
                        id = ChainId::of(&rt, i);
                    }
                    // Not HTTP: the passthrough, over the upstream when it is connected (else
                    // it connects now).
                    (_, u) => up = u,
                }
            }
            Late::Idle => return,
            Late::ConnectFailed => return upstream_failed(observer.as_deref()),
        }
    }
    let _ = stream.set_nodelay(true);
    // The listener's log counts the connection's bytes as the capture side's observer does.
    let observer = match (observer, conn_log.clone()) {
        (Some(o), Some(l)) => Some(Arc::new(Both(o, l)) as Arc<dyn ConnObserver>),
        (o, l) => o.or(l.map(|l| l as Arc<dyn ConnObserver>)),
    };
    let chain = Chain {
        conn_log,
        server: &server,
        slot,
        idx,
        id,
        passthrough_only,
        up,
        a,
        observer: observer.clone(),
        sni,
    };
    match observer {
        Some(o) => chain.serve(Metered::new(stream, o)).await,
        None => chain.serve(stream).await,
    }
}

fn upstream_failed(observer: Option<&dyn ConnObserver>) {
    if let Some(o) = observer {
        o.upstream_failed();
    }
}

/// The filter chain for a connection to `a.dst` whose first bytes look like `proto` (`None`:
/// no detection on this listener; the choice is the config's, shared with `sluice explain`),
/// and whether it goes to the passthrough instead: detected non-HTTP on a captured listener
/// with no TCP chain admitting the connection (a client whose first bytes come after
/// DETECT_TIMEOUT must not land in another port's tcp_proxy).
fn choose_chain(
    l: &ListenerRt,
    proto: Option<&detect::Protocol>,
    a: Addrs,
) -> Option<(usize, bool)> {
    let want_http = proto.map(|p| p.is_http());
    let facts = conn_facts(&l.cfg, proto, a);
    let (idx, fits) = l.cfg.choose_chain(&facts, want_http)?;
    let passthrough_only = !fits && want_http == Some(false) && l.captured() && a.dst != a.local;
    Some((idx, passthrough_only))
}

/// What Envoy's filter chain match sees of a connection: its (original) destination and peer,
/// and what the configured inspectors report of `proto` (tls_inspector: `tls`, SNI, ALPN;
/// http_inspector: `http/1.1`, `http/1.0` or `h2c`); `raw_buffer` otherwise.
fn conn_facts<'p>(
    l: &config::Listener,
    proto: Option<&'p detect::Protocol>,
    a: Addrs,
) -> config::ConnFacts<'p> {
    use config::{AppProtocols, ConnFacts, ListenerFilter};
    let mut facts = ConnFacts {
        dst: a.dst,
        src: a.peer,
        direct_src: a.proxy_direct.map(|d| d.ip()),
        server_name: None,
        transport_protocol: "raw_buffer",
        application_protocols: AppProtocols::None,
    };
    match proto {
        Some(detect::Protocol::Tls { sni, alpn })
            if l.runs_filter(ListenerFilter::TlsInspector, a.dst.port()) =>
        {
            facts.transport_protocol = "tls";
            facts.server_name = sni.as_deref();
            facts.application_protocols = AppProtocols::List(alpn);
        }
        Some(p) if l.runs_filter(ListenerFilter::HttpInspector, a.dst.port()) => {
            if let Some(ap) = p.http_inspector_protocol() {
                facts.application_protocols = AppProtocols::One(ap);
            }
        }
        _ => {}
    }
    facts
}

/// Who spoke first on a connection that was silent through detection.
enum Late {
    /// The original destination (its greeting, or its close): opaque TCP.
    Upstream(TcpStream),
    /// The client, at last: its bytes decide (the upstream, when connected, serves them if they
    /// are not HTTP).
    Client(Option<TcpStream>),
    /// Neither, for the passthrough's idle timeout.
    Idle,
    /// The original destination could not be reached, and the client stayed silent.
    ConnectFailed,
}

/// Connects to `dst` and waits for the first side to speak (or close). The client is watched
/// throughout: its first bytes may come while the connect is under way, or after it failed (an
/// HTTP client's route may not need the original destination at all; it gets the HTTP header
/// timeout to speak).
async fn first_speaker(connector: &Connector, down: &TcpStream, dst: SocketAddr) -> Late {
    let connect = tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, connector.connect(dst));
    let up = tokio::select! {
        biased;
        _ = down.readable() => return Late::Client(None),
        r = connect => r.ok().and_then(Result::ok),
    };
    let Some(up) = up else {
        return match tokio::time::timeout(http::DEFAULT_HEADER_READ_TIMEOUT, down.readable()).await
        {
            Ok(_) => Late::Client(None),
            Err(_) => Late::ConnectFailed,
        };
    };
    tokio::select! {
        biased;
        _ = down.readable() => Late::Client(Some(up)),
        _ = up.readable() => Late::Upstream(up),
        _ = tokio::time::sleep(config::DEFAULT_TCP_PROXY_IDLE_TIMEOUT) => Late::Idle,
    }
}

/// The filter chain a connection was given, ready to serve it over any stream type (the
/// accepted socket, or the socket wrapped in a byte counter for the capture side).
/// Which filter chain a connection was given, across config versions: its name and match
/// (the default chain by being the default). A reload that adds, removes or reorders chains
/// moves the index; the connection keeps following its own chain, as Envoy's connections keep
/// theirs.
#[derive(Debug, Clone, PartialEq)]
struct ChainId {
    name: Option<String>,
    matcher: config::ChainMatch,
    is_default: bool,
}

impl ChainId {
    /// The identity of chain `idx` of `l` (None: no such chain).
    fn of(l: &ListenerRt, idx: usize) -> Option<Self> {
        let c = l.cfg.filter_chains.get(idx)?;
        Some(Self {
            name: c.name.clone(),
            matcher: c.matcher.clone(),
            is_default: c.is_default,
        })
    }

    fn is(&self, c: &config::FilterChain) -> bool {
        self.is_default == c.is_default && self.name == c.name && self.matcher == c.matcher
    }

    /// Where this chain is in `l`: `hint` (its index when chosen) when it is still there,
    /// else wherever it moved (None: gone).
    fn index_in(&self, l: &ListenerRt, hint: usize) -> Option<usize> {
        let chains = &l.cfg.filter_chains;
        if chains.get(hint).is_some_and(|c| self.is(c)) {
            return Some(hint);
        }
        chains.iter().position(|c| self.is(c))
    }
}

struct Chain<'a> {
    server: &'a Arc<Server>,
    slot: Arc<ListenerSlot>,
    idx: usize,
    /// The chain's identity (None for the passthrough).
    id: Option<ChainId>,
    passthrough_only: bool,
    /// The passthrough's upstream, when it was connected during detection.
    up: Option<TcpStream>,
    a: Addrs,
    observer: Option<Arc<dyn ConnObserver>>,
    /// The SNI the tls_inspector reported.
    sni: Option<Arc<str>>,
    /// The listener's access log of the connection (None: the listener has none).
    conn_log: Option<Arc<ConnLog>>,
}

impl Chain<'_> {
    async fn serve<S>(mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The chain's TLS termination, then its network RBAC filters (on the decrypted bytes,
        // with the handshake's SNI and peer certificate), as Envoy's transport socket and
        // network filters; all three from one config version, read once (a reload during the
        // handshake does not mix versions). A chain gone in a reload closes the connection.
        let (chain, tls, gate, authz) = match self.passthrough_only {
            true => (None, None, None, None),
            false => {
                let rt = self.slot.rt.load();
                let Some(idx) = self.id.as_ref().and_then(|id| id.index_in(&rt, self.idx)) else {
                    return;
                };
                self.idx = idx;
                let Some(chain) = rt.chains.get(idx).cloned() else {
                    return;
                };
                (
                    Some(chain),
                    rt.cfg.filter_chains.get(idx).and_then(|c| c.tls.clone()),
                    rt.rbac.get(idx).cloned().flatten(),
                    rt.ext_authz.get(idx).cloned().flatten(),
                )
            }
        };
        match (tls, gate) {
            (None, None) if authz.is_none() => self.serve_chain(stream, chain, None).await,
            (None, gate) => {
                if !self.authz_allows(authz.as_deref(), None).await {
                    return;
                }
                let Some(filters) = gate else {
                    return self.serve_chain(stream, chain, None).await;
                };
                let sni = self.sni.clone();
                let io = rbac_gate::RbacGate::new(stream, filters, self.gate_addrs(), sni, None);
                self.serve_chain(BoxedIo::new(io), chain, None).await
            }
            (Some(tls), gate) => {
                let (io, mut facts) = match tls.accept(stream).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, peer = %self.a.peer, "downstream TLS handshake failed");
                        return;
                    }
                };
                facts.sni = self.sni.as_deref().map(str::to_string);
                let facts = Arc::new(facts);
                if !self.authz_allows(authz.as_deref(), Some(&facts)).await {
                    return;
                }
                let io = match gate {
                    Some(filters) => {
                        let sni = self.sni.clone();
                        BoxedIo::new(rbac_gate::RbacGate::new(
                            io,
                            filters,
                            self.gate_addrs(),
                            sni,
                            Some(facts.clone()),
                        ))
                    }
                    None => BoxedIo::new(io),
                };
                self.serve_chain(io, chain, Some(facts)).await
            }
        }
    }

    /// The chain's network ext_authz checks (none: allowed).
    async fn authz_allows(
        &self,
        authz: Option<&crate::network_ext_authz::AuthzGate>,
        tls: Option<&crate::downstream_tls::TlsFacts>,
    ) -> bool {
        match authz {
            None => true,
            Some(a) => {
                // Boxed: only a chain with the filter carries the check's state. A listener
                // drained meanwhile ends a check still pending (the connection closes).
                let direct = self.a.proxy_direct.unwrap_or(self.a.peer).ip();
                let check =
                    Box::pin(a.allows(self.a.peer, direct, self.a.dst, self.sni.as_deref(), tls));
                let drain = self.slot.drain.watch();
                tokio::select! {
                    allowed = check => allowed,
                    () = drain.ended() => false,
                }
            }
        }
    }

    fn gate_addrs(&self) -> rbac_gate::ConnAddrs {
        rbac_gate::ConnAddrs {
            peer: self.a.peer,
            direct: self.a.proxy_direct.unwrap_or(self.a.peer).ip(),
            dst: self.a.dst,
        }
    }

    /// Serves the (decrypted) `stream` with the chain's terminal filter `chain` (None: the
    /// passthrough); `tls`: what a terminated handshake established.
    async fn serve_chain<S>(
        mut self,
        stream: S,
        chain: Option<ChainRt>,
        tls: Option<Arc<crate::downstream_tls::TlsFacts>>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Addrs {
            peer,
            local,
            dst,
            proxy_direct,
        } = self.a;
        // Once per connection: the drain of the listener that serves it.
        let drain = self.slot.drain.watch();
        if self.passthrough_only {
            let up = self.up.take();
            let stop = drain.ended();
            if !passthrough(&self.server.connector, stream, dst, up, stop).await {
                self.upstream_failed();
            }
            return;
        }
        let conn = ConnInfo {
            peer,
            local,
            orig_dst: dst,
            tls: tls.is_some(),
            proxy_direct,
        };
        let (slot, idx) = (self.slot.clone(), self.idx);
        let Some(chain) = chain else { return };
        match chain {
            ChainRt::Http(hcm) => {
                hcm.stats.downstream_cx_total.inc();
                let codec = hcm.cfg.codec_type;
                let header_timeout = hcm
                    .cfg
                    .request_timeout
                    .unwrap_or(http::DEFAULT_HEADER_READ_TIMEOUT);
                let head = http::HeadTimeout::of(&hcm.cfg);
                // Weak: a long-lived connection must not keep a replaced config (and its route
                // tables) alive; it only serves when the chain is no longer HTTP.
                let fallback = Arc::downgrade(&hcm);
                drop(hcm);
                // Each request takes the newest version of the connection's own chain (found
                // by its identity: a reload may move it), else the one it started with.
                let id = self.id.clone();
                let current = move || {
                    let rt = slot.rt.load();
                    let now = id.as_ref().and_then(|id| id.index_in(&rt, idx));
                    match now.and_then(|i| rt.chains.get(i)) {
                        Some(ChainRt::Http(h)) => Some(h.clone()),
                        _ => fallback.upgrade(),
                    }
                };
                let observer = self.observer.clone();
                let opts = http::ConnOptions {
                    codec,
                    header_timeout,
                    head,
                    drain,
                    tls,
                    conn_log: self.conn_log.clone(),
                };
                http::serve(stream, conn, opts, current, observer).await;
            }
            ChainRt::Tcp(tp) => {
                let addrs = crate::tcp_proxy::Downstream {
                    peer,
                    direct: proxy_direct.unwrap_or(peer),
                    local: dst,
                    sni: self.sni.clone(),
                };
                let conn_log = self.conn_log.as_deref();
                if let Err(e) = tp.serve(stream, addrs, drain.ended(), conn_log).await {
                    tracing::debug!(error = %e, "tcp proxy");
                    if e.is_upstream_failure() {
                        self.upstream_failed();
                    }
                }
            }
        }
    }

    fn upstream_failed(&self) {
        if let Some(o) = &self.observer {
            o.upstream_failed();
        }
    }
}

/// Opaque TCP to the original destination (Istio's PassthroughCluster) for captured non-HTTP
/// traffic when the listener has no tcp_proxy chain, over `up` when it is already connected,
/// until `stop` (the listener's drain time ended). False when the upstream connect failed.
async fn passthrough<S>(
    connector: &Connector,
    mut down: S,
    dst: SocketAddr,
    up: Option<TcpStream>,
    stop: impl std::future::Future<Output = ()>,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let up = match up {
        Some(up) => up,
        None => {
            match tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, connector.connect(dst)).await {
                Ok(Ok(up)) => up,
                _ => return false,
            }
        }
    };
    let _ = tcp_proxy::copy_bidirectional_idle(
        &mut down,
        up,
        Some(config::DEFAULT_TCP_PROXY_IDLE_TIMEOUT),
        stop,
    )
    .await;
    true
}
