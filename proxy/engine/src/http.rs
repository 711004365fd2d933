//! HTTP connection manager: serves HTTP/1.1 and HTTP/2 downstream connections with hyper and
//! forwards each request along its route (retries, timeouts, circuit breakers, outlier
//! detection, header handling like Envoy's defaults, access log).
//!
//! Header defaults (Envoy 1.40): every request is external, so Envoy's router-control headers
//! are stripped ([`retry::EXTERNAL_STRIPPED_HEADERS`]); with `use_remote_address: false`
//! `x-forwarded-for` is passed through unmodified and `x-forwarded-proto` added when absent
//! (with `true`: XFF appended, XFP overwritten, `x-envoy-external-address` set); `x-request-id`
//! is generated (UUID v4) when absent; `x-envoy-expected-rq-timeout-ms` is sent upstream;
//! `x-envoy-upstream-service-time` is added to responses; Host/`:authority` is kept unless the
//! route rewrites it.

pub mod access_log;
pub(crate) mod body_prefix;
mod conn_timers;
mod delayed_close;
mod expect_continue;
pub mod filters;
mod forward;
mod h2_flood;
mod head_timer;
pub use head_timer::HeadTimeout;
#[cfg(test)]
mod header_timeout_tests;
pub mod idle;
mod internal_redirect;
mod limits;
pub mod local_reply;
mod local_reply_map;
mod normalize;
pub(crate) mod preroute;
pub(crate) mod query_decode;
mod reason_phrase;
pub mod request_body_tap;
mod request_timeout;
pub mod retry;
mod route_reply;
pub(crate) mod sanitize;
mod server_header;
pub mod spans;
mod target;
mod trace;
mod upgrade;
mod upgrade_policy;
mod via;
mod xfcc;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use hyper::body::Body as _;
use hyper::body::Incoming;

use self::filters::ext_authz::body::Upstream;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::io::{AsyncRead, AsyncWrite};

pub use self::preroute::{preroute, PreRoute};
use self::{
    access_log::{AccessLogger, Entry, ResponseDetails},
    local_reply::Flag,
};
use crate::{
    config,
    route::{
        format::{FormatContext, RequestLine},
        RequestView, SelectedCluster, Selection,
    },
    server::{drain::DrainWatch, istio::ClusterSeries, stats::HttpStats, ConnObserver},
    upstream::Cluster,
};

/// Looked up per request under `internal_address_config` (a `&str` name is parsed at each
/// lookup).
const FORCE_TRACE: http::HeaderName = http::HeaderName::from_static("x-envoy-force-trace");

/// Error of a [`Body`]: hyper's, or the proxy's own (stream idle timeout).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Body type used for everything sent upstream or downstream.
pub type Body = BoxBody<Bytes, BodyError>;

/// Time allowed to receive a request's headers when the HCM sets no `request_timeout`
/// (slowloris guard; Envoy's request_headers_timeout is off by default, hyper's default is 30 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The clusters a route can forward to, resolved when the config is loaded.
#[derive(Debug, Clone)]
enum RouteClusters {
    /// Not a forwarding route, or a cluster_header route.
    None,
    /// `cluster`.
    Single(Arc<Cluster>),
    /// `weighted_clusters`, in config order (None: no such cluster, `validate_clusters: false`).
    Weighted(Vec<Option<Arc<Cluster>>>),
}

/// A route's runtime: its clusters and its `stat_prefix` counters.
#[derive(Debug)]
struct RouteRt {
    clusters: RouteClusters,
    stats: Option<Arc<crate::server::stats::RouteStats>>,
}

/// An HTTP connection manager with its routes resolved to running clusters.
#[derive(Debug)]
pub struct Hcm {
    /// The config block.
    pub cfg: Arc<config::HttpConnectionManager>,
    /// `http.<stat_prefix>` counters.
    pub stats: Arc<HttpStats>,
    log: AccessLogger,
    /// `[vhost][route]` -> clusters and counters.
    routes: Vec<Vec<RouteRt>>,
    /// All clusters by name (cluster_header routes only).
    by_name: HashMap<String, Arc<Cluster>>,
    /// Istio's request series of the config version's clusters (for this HCM's reporter).
    istio: Arc<ClusterSeries>,
    /// The HTTP filters' counters.
    filter_stats: filters::FilterStats,
    /// The `tracing.provider`'s tracer.
    tracer: Option<Arc<spans::Tracer>>,
    /// The server fails its health checks (admin `/healthcheck/fail`), shared by the server.
    health_failed: Arc<std::sync::atomic::AtomicBool>,
    /// `node.cluster`, which a health check filter's answer names.
    local_cluster: String,
}

/// The downstream connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Peer address.
    pub peer: SocketAddr,
    /// Local address of the accepted socket.
    pub local: SocketAddr,
    /// Original destination (captured connections), else the local address.
    pub orig_dst: SocketAddr,
    /// Whether the downstream connection is TLS.
    pub tls: bool,
    /// The directly connected peer, when its `proxy_protocol` listener filter read a PROXY
    /// header (`peer` is then the source the header stated; a LOCAL one states none). An
    /// `upstream_proxy_protocol` transport socket then states the connection's addresses
    /// whatever the connection manager's `add_proxy_protocol_connection_state` (Envoy's filter
    /// sets the state first).
    pub proxy_direct: Option<SocketAddr>,
}

impl Hcm {
    /// Resolves every route's clusters against `clusters` and starts the access loggers;
    /// `istio`: the version's Istio series for the side of the listener the HCM serves.
    pub fn build(
        cfg: Arc<config::HttpConnectionManager>,
        clusters: &HashMap<String, Arc<Cluster>>,
        stats: &crate::server::stats::StatsStore,
        istio: Arc<ClusterSeries>,
        local: &Arc<spans::Local>,
    ) -> Self {
        use crate::route::{ClusterSpecifier, RouteAction};
        let routes = cfg
            .route_table
            .virtual_hosts
            .iter()
            .map(|vh| {
                vh.routes
                    .iter()
                    .map(|r| RouteRt {
                        stats: r.stat_prefix.as_ref().map(|p| stats.route(&vh.name, p)),
                        clusters: match &r.action {
                            RouteAction::Forward(f) => match &f.cluster {
                                ClusterSpecifier::Cluster(c) => clusters
                                    .get(c.as_str())
                                    .map(|c| RouteClusters::Single(c.clone()))
                                    .unwrap_or(RouteClusters::None),
                                ClusterSpecifier::Weighted(w) => RouteClusters::Weighted(
                                    w.clusters
                                        .iter()
                                        .map(|wc| clusters.get(wc.name.as_str()).cloned())
                                        .collect(),
                                ),
                                ClusterSpecifier::Header(_) => RouteClusters::None,
                            },
                            _ => RouteClusters::None,
                        },
                    })
                    .collect()
            })
            .collect();
        let tracer = cfg
            .tracing
            .as_ref()
            .and_then(|t| t.provider.clone())
            .map(|p| Arc::new(spans::Tracer::new(p, local.clone(), clusters, stats)));
        Self {
            tracer,
            health_failed: stats.health_check_failed.clone(),
            local_cluster: local.cluster.clone(),
            istio,
            filter_stats: cfg
                .http_filters
                .stats(&cfg.route_table, stats, &cfg.stat_prefix),
            stats: stats.http(&cfg.stat_prefix),
            log: AccessLogger::start(&cfg.access_log),
            cfg,
            routes,
            by_name: clusters.clone(),
        }
    }

    /// Whether the server fails its health checks (admin `/healthcheck/fail`).
    fn health_check_failed(&self) -> bool {
        self.health_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The `stat_prefix` counters of the route `fwd` took, when it has one.
    fn route_stats(
        &self,
        fwd: &crate::route::Forward<'_>,
    ) -> Option<&Arc<crate::server::stats::RouteStats>> {
        self.routes
            .get(fwd.route_ref.vhost as usize)?
            .get(fwd.route_ref.route as usize)?
            .stats
            .as_ref()
    }

    /// The access log's route name and upstream cluster for the route `sel` took.
    fn name_route(&self, e: &mut Entry, sel: &Selection<'_>) {
        e.route_name = sel.route().and_then(|r| r.name.clone());
        let cluster = match sel {
            Selection::Forward(fwd) => self.resolve(fwd),
            _ => None,
        };
        e.cluster = cluster.as_ref().map(|c| c.spec.name.clone());
        e.cluster_alt_name = cluster.and_then(|c| c.spec.alt_stat_name.clone());
    }

    fn resolve(&self, fwd: &crate::route::Forward<'_>) -> Option<Arc<Cluster>> {
        let rc = self
            .routes
            .get(fwd.route_ref.vhost as usize)?
            .get(fwd.route_ref.route as usize)?;
        match (fwd.cluster, &rc.clusters) {
            (SelectedCluster::Named(_), RouteClusters::Single(c)) => Some(c.clone()),
            (SelectedCluster::Named(name), RouteClusters::Weighted(cs)) => {
                if let crate::route::ClusterSpecifier::Weighted(w) = &fwd.action.cluster {
                    let i = w
                        .clusters
                        .iter()
                        .position(|wc| std::ptr::eq(&wc.name, name))?;
                    cs.get(i).cloned().flatten()
                } else {
                    None
                }
            }
            (SelectedCluster::FromHeader(name), _) => self.by_name.get(name).cloned(),
            _ => None,
        }
    }
}

/// How one downstream connection is served, fixed when it starts.
#[derive(Debug)]
pub struct ConnOptions {
    /// The HCM's `codec_type`.
    pub codec: config::CodecType,
    /// Time allowed from accept to the first request (a connection that sends no byte of a
    /// request head, or only the HTTP/2 preface, is closed then).
    pub header_timeout: Duration,
    /// How long an HTTP/1 request head may take from its first byte.
    pub head: HeadTimeout,
    /// The drain of the listener the connection arrived on.
    pub drain: DrainWatch,
    /// What the downstream TLS handshake established (None: plaintext); every request carries
    /// it in its extensions.
    pub tls: Option<Arc<crate::downstream_tls::TlsFacts>>,
    /// The listener's access log of the connection, told each request's HTTP version.
    pub(crate) conn_log: Option<Arc<crate::server::conn_log::ConnLog>>,
}

/// Serves one downstream connection until it closes; each request is handled by the HCM
/// `current()` returns at that moment (so a reload applies to the next request). `None`: the
/// connection's filter chain is gone (its listener was reconfigured and the old config freed);
/// the request gets a 503 and an HTTP/1 connection is closed.
///
/// When the listener drains (removed or re-bound, module `server::drain`), the connection takes
/// Envoy's drain path (observed against Envoy 1.40 with `--drain-strategy immediate`): every
/// HTTP/1 response from then on carries `connection: close` (the request in flight's too) and
/// the connection closes after it; HTTP/2 sends GOAWAY with its next response and finishes its
/// open streams; a connection that carries no request meanwhile stays open, and whatever is
/// still open when the drain time ends is closed.
pub async fn serve<I, F>(
    io: I,
    conn: ConnInfo,
    opts: ConnOptions,
    current: F,
    observer: Option<Arc<dyn ConnObserver>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Option<Arc<Hcm>> + Send + Sync + 'static,
{
    let ConnOptions {
        codec,
        header_timeout,
        head,
        mut drain,
        tls,
        conn_log,
    } = opts;
    // The head limits of the HCM the connection starts with (hyper's are set above them so the
    // exact check, `limits::check`, decides and answers as Envoy).
    let (head_limits, timeouts, h2, keys) = current()
        .map(|h| {
            let c = &h.cfg;
            (c.head_limits, c.conn_timeouts, c.http2, c.header_key_format)
        })
        .unwrap_or_default();
    let activity = conn_timers::Activity::new();
    let streams = activity.clone();
    // `local_rate_limit_per_downstream_connection`: this connection's buckets.
    let buckets = current()
        .filter(|h| h.cfg.http_filters.per_connection())
        .map(|_| Arc::new(filters::ConnBuckets::default()));
    let current = Arc::new(current);
    // Set by the first request: until then the header timeout runs from accept (hyper's own
    // timer starts at the first byte, and the h2 preface has none).
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = first_request.clone();
    // An upgrade request carries the drain along: its tunnel outlives this connection's task.
    let tunnel_drain = drain.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if !seen.load(Ordering::Relaxed) {
            seen.store(true, Ordering::Relaxed);
        }
        if let Some(l) = &conn_log {
            l.saw_request(req.version());
        }
        if req.headers().contains_key(header::UPGRADE) {
            streams.set_upgraded();
            req.extensions_mut().insert(tunnel_drain.clone());
        }
        if let Some(t) = &tls {
            req.extensions_mut().insert(t.clone());
        }
        let hcm = current();
        let observer = observer.clone();
        let buckets = buckets.clone();
        let last = streams.count_request(timeouts.max_requests);
        // The stream is active (no idle timer, no head timer) until its response body is done.
        let stream = streams.begin();
        let streams = streams.clone();
        async move {
            let Some(hcm) = hcm else {
                return Ok::<_, Infallible>(chain_gone(req.version()));
            };
            let h2 = req.version() == Version::HTTP_2;
            if h2 {
                streams.h2.store(true, Ordering::Relaxed);
            }
            // A request asking to close the connection, and whether it came whole.
            let closing = wants_close(&req).then(|| req.body().is_end_stream());
            let (mut resp, flag, upstream) = handle_with(hcm, conn, req, buckets).await;
            if let Some(whole) = closing {
                // Envoy closes at once after an upstream's answer to a whole request, and
                // delays the close after a reply made while the request head was decoded
                // (its connection check then passes no skip).
                streams.set_closing_request(whole && upstream);
            }
            if let Some(o) = observer.filter(|_| flag.is_upstream_failure()) {
                o.upstream_failed();
            }
            // HTTP/2: GOAWAY with the response that reached max_requests_per_connection, or
            // with the first response after the listener's drain started (as Envoy).
            if h2 && (last || streams.draining.load(Ordering::Relaxed)) {
                streams.drain_now.notify_one();
            }
            // A draining HTTP/1 connection closes after this response (Envoy's drain), as does
            // one that reached max_requests_per_connection.
            if !h2 && (last || streams.draining.load(Ordering::Relaxed)) {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if !h2 {
                reason_phrase::as_envoy(&mut resp);
            }
            Ok::<_, Infallible>(resp.map(|b| conn_timers::Activity::track(b, stream)))
        }
    });
    let mut b = auto::Builder::new(crate::workers::Exec);
    b.http1()
        .timer(TokioTimer::new())
        // Off: it would run from the end of each response, closing idle keep-alive
        // connections (the head timer runs from a head's first byte instead).
        .header_read_timeout(None)
        .max_buf_size(limits::hyper_buf_size(&head_limits))
        .max_headers(limits::hyper_max_headers(&head_limits))
        // header_key_format: responses in proper case unless they keep the upstream's case
        // (hyper writes a message's recorded case first), or the request's case recorded for
        // the upstream request.
        .title_case_headers(keys.proper_case())
        .preserve_header_case(keys.preserves_case())
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(head_limits.max_request_headers_bytes as u32);
    // `http2_protocol_options`: what the connection's SETTINGS advertise (hyper's defaults
    // otherwise).
    if let Some(n) = h2.max_concurrent_streams {
        b.http2().max_concurrent_streams(n);
    }
    if let Some(n) = h2.initial_stream_window_size {
        b.http2().initial_stream_window_size(n);
    }
    if let Some(n) = h2.initial_connection_window_size {
        b.http2().initial_connection_window_size(n);
    }
    let b = match codec {
        config::CodecType::Auto => b,
        config::CodecType::Http1 => b.http1_only(),
        config::CodecType::Http2 => b.http2_only(),
    };
    // The guard also enforces `HTTP2` (hyper-util's upgrade-capable connection ignores
    // `http2_only` and would serve HTTP/1.1).
    let io = h2_flood::FloodGuard::new(io, codec, h2.flood);
    let close = delayed_close::DelayedClose::new(activity.clone(), timeouts.delayed_close);
    let io = head_timer::HeadTimer::new(io, activity.clone(), head, close);
    let io = match codec {
        config::CodecType::Http2 => io.disabled(),
        _ => io,
    };
    let c = b.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(c);
    let header_deadline = tokio::time::sleep(header_timeout);
    tokio::pin!(header_deadline);
    let drain_end = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain_end);
    let listener_drain = drain.started();
    tokio::pin!(listener_drain);
    let force_close = tokio::time::sleep(Duration::MAX);
    tokio::pin!(force_close);
    let (mut header_checked, mut draining, mut closing) = (false, false, false);
    let mut listener_draining = false;
    let result = loop {
        tokio::select! {
            r = &mut c => break r,
            () = &mut header_deadline, if !header_checked => {
                header_checked = true;
                if !first_request.load(Ordering::Relaxed) && !activity.head_seen() {
                    tracing::debug!(peer = %conn.peer, "no request within the header timeout of accept");
                    return;
                }
            }
            // `idle_timeout` / `max_connection_duration`: Envoy's drain (module conn_timers).
            () = activity.expired(timeouts), if !draining => {
                draining = true;
                activity.draining.store(true, Ordering::Relaxed);
                if activity.h2.load(Ordering::Relaxed) {
                    closing = true;
                    c.as_mut().graceful_shutdown();
                } else {
                    drain_end
                        .as_mut()
                        .reset(tokio::time::Instant::now() + timeouts.drain);
                }
            }
            // max_requests_per_connection on HTTP/2: GOAWAY at once.
            () = activity.drain_now.notified(), if !closing => {
                closing = true;
                c.as_mut().graceful_shutdown();
            }
            () = &mut drain_end, if draining && !closing => {
                closing = true;
                c.as_mut().graceful_shutdown();
            }
            // The listener drains: the next response closes the connection (HTTP/1) or sends
            // GOAWAY (HTTP/2); what is still open when the drain time ends is closed.
            end = &mut listener_drain, if !listener_draining => {
                listener_draining = true;
                activity.draining.store(true, Ordering::Relaxed);
                force_close.as_mut().reset(end);
            }
            () = &mut force_close, if listener_draining => {
                tracing::debug!(peer = %conn.peer, "listener drain time over; closing");
                return;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %conn.peer, error = %e, "downstream connection ended with error");
    }
}

/// The reply on a connection whose filter chain a reload removed: 503, and HTTP/1 closes.
fn chain_gone(version: Version) -> Response<Body> {
    let mut r = local_reply::reply(503, "");
    if version != Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("envoy"));
    r
}

/// The request's authority (`:authority` or Host), cheap to clone (shared bytes).
enum Authority {
    Uri(http::uri::Authority),
    Header(HeaderValue),
}

impl Authority {
    fn of<B>(req: &Request<B>) -> Option<Self> {
        if let Some(a) = req.uri().authority() {
            return Some(Self::Uri(a.clone()));
        }
        req.headers()
            .get(header::HOST)
            .filter(|h| h.to_str().is_ok())
            .map(|h| Self::Header(h.clone()))
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Uri(a) => a.as_str(),
            Self::Header(h) => h.to_str().unwrap_or(""),
        }
    }
}

/// A UUID v4 string.
pub fn uuid_v4() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0xf)] as char);
    }
    out
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn protocol_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

/// What the forward path reports back for stats and the access log.
pub(crate) struct Outcome {
    pub(crate) resp: Response<Body>,
    pub(crate) flag: Flag,
    pub(crate) upstream_host: Option<SocketAddr>,
    pub(crate) upstream_ms: Option<u64>,
    /// The local address of the upstream connection the response came on.
    pub(crate) upstream_local: Option<SocketAddr>,
    /// Upstream attempts started (Envoy's attempt count; 0: none).
    pub(crate) attempts: u32,
    /// An upstream redirect the route's `internal_redirect_policy` may follow.
    pub(crate) redirect: Option<Box<internal_redirect::Candidate>>,
}

impl Outcome {
    /// A reply made here, from no upstream and with no flag (a route's own answer).
    fn answered(resp: Response<Body>) -> Self {
        Self {
            resp,
            flag: Flag::None,
            upstream_host: None,
            upstream_ms: None,
            upstream_local: None,
            attempts: 0,
            redirect: None,
        }
    }

    fn local(flag: Flag) -> Self {
        Self {
            resp: local_reply::for_flag(flag),
            flag,
            upstream_host: None,
            upstream_ms: None,
            upstream_local: None,
            attempts: 0,
            redirect: None,
        }
    }
}

/// A local reply for a request refused before routing (counted; `connection: close` when the
/// request cannot be followed on this connection; `location` for a path redirect).
/// What the operators of a request's formats read of its connection.
fn format_context(
    conn: &ConnInfo,
    version: Version,
    start_wall: SystemTime,
) -> FormatContext<'static> {
    FormatContext {
        request: None,
        line: None,
        downstream_remote: Some(conn.peer),
        downstream_local: Some(conn.local),
        upstream_remote: None,
        protocol: Some(protocol_str(version)),
        start: Some(start_wall),
        response_code: None,
        log: None,
    }
}

/// The request as the HTTP filters left it (`decoded`; None: no filter ran): its headers, a
/// `host` one of them set, and its path (a token jwt_authn took out of the query).
fn filtered_request<'a>(
    decoded: Option<&'a filters::Decoded>,
    orig: &'a HeaderMap,
    path: &'a http::uri::PathAndQuery,
) -> (&'a HeaderMap, Option<&'a str>, &'a http::uri::PathAndQuery) {
    let headers = decoded.and_then(|d| d.headers.as_ref()).unwrap_or(orig);
    (
        headers,
        filters::reroute::host_set(headers, orig),
        decoded.and_then(|d| d.path.as_ref()).unwrap_or(path),
    )
}

/// `req` as `local_reply_config` reads it.
fn answered<'a, B>(
    req: &'a Request<B>,
    scheme: &'a str,
    start: Instant,
) -> local_reply_map::Answered<'a> {
    local_reply_map::Answered {
        method: req.method().as_str(),
        path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
        scheme,
        authority: req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        }),
        headers: Some(req.headers()),
        elapsed: start.elapsed(),
        // Refused before the filters ran.
        health_check: false,
    }
}

fn refuse_before_routing(
    hcm: &Hcm,
    r: &preroute::Refused,
    body: &str,
    close: bool,
) -> Response<Body> {
    let status = r.status();
    if status < 400 {
        hcm.stats.downstream_rq_3xx.inc();
    } else {
        hcm.stats.downstream_rq_4xx.inc();
    }
    let mut r2 = local_reply::reply(status, body);
    if let preroute::Refused::PathRedirect(p) = r {
        if let Ok(v) = HeaderValue::from_str(p) {
            r2.headers_mut().insert(header::LOCATION, v);
        }
    }
    if close {
        r2.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    server_header::apply(&hcm.cfg.server_header, r2.headers_mut());
    if let Some(v) = &hcm.cfg.via {
        via::append(v, r2.headers_mut());
    }
    r2
}

/// The access log entry of a request refused before routing (`r`), as Envoy logs it: one its
/// HTTP/1 codec refused has no request (`"- - HTTP/1.1"`, flag `DPE`), one refused after
/// parsing its request line and headers (`path` as the connection manager had it).
fn refused_entry<B>(
    hcm: &Hcm,
    conn: &ConnInfo,
    req: &Request<B>,
    r: &preroute::Refused,
    scheme: &'static str,
    start_wall: std::time::SystemTime,
) -> Entry {
    let (details, codec) = r.details();
    // The one codec refusal an HTTP/2 request gets (its codec's own words).
    let details = match (details, req.version()) {
        ("http1.unexpected_underscore", Version::HTTP_2) => "http2.unexpected_underscore",
        (d, _) => d,
    };
    // A CONNECT to an authority finds no route.
    let flags = match details {
        "route_not_found" => Flag::NoRoute.as_str(),
        _ => Flag::None.as_str(),
    };
    let details = Some(ResponseDetails::Named(details));
    if codec {
        return Entry {
            start: Some(start_wall),
            // Envoy's HTTP/1 codec logs a request it refused as HTTP/1.1, an HTTP/1.0 one too.
            protocol: match req.version() {
                Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            },
            flags: "DPE",
            scheme,
            downstream_remote: Some(conn.peer),
            downstream_local: Some(conn.orig_dst),
            downstream_direct: Some(conn.proxy_direct.unwrap_or(conn.peer)),
            details,
            ..Entry::default()
        };
    }
    let path = match r {
        preroute::Refused::PathRedirect(p) => p.as_str(),
        // A CONNECT's authority-form target has no path.
        _ => req.uri().path_and_query().map_or("", |p| p.as_str()),
    };
    Entry {
        flags,
        details,
        ..request_entry(hcm, conn, req, path, scheme, start_wall)
    }
}

/// The access log entry's account of a request as the connection manager has it (`path`: its
/// target), before anything answers it.
fn request_entry<B>(
    hcm: &Hcm,
    conn: &ConnInfo,
    req: &Request<B>,
    path: &str,
    scheme: &'static str,
    start_wall: std::time::SystemTime,
) -> Entry {
    let h = req.headers();
    Entry {
        start: Some(start_wall),
        method: req.method().as_str().to_string(),
        path: path.to_string(),
        protocol: protocol_str(req.version()),
        xff: header_str(h, "x-forwarded-for"),
        user_agent: header_str(h, header::USER_AGENT),
        request_id: header_str(h, "x-request-id"),
        authority: Authority::of(req).map(|a| a.as_str().to_string()),
        request_headers: hcm.log.headers_to_keep(h),
        scheme,
        downstream_remote: Some(
            sanitize::RemoteAddress::of(&hcm.cfg, conn).resolve_addr(h, conn.peer),
        ),
        downstream_local: Some(conn.orig_dst),
        downstream_direct: Some(conn.proxy_direct.unwrap_or(conn.peer)),
        sni: req
            .extensions()
            .get::<Arc<crate::downstream_tls::TlsFacts>>()
            .and_then(|t| t.sni.clone()),
        ..Entry::default()
    }
}

/// `resp` with `e` completed (status, response headers) and logged when its body ends.
fn log_refused(hcm: &Hcm, mut e: Entry, resp: Response<Body>, start: Instant) -> Response<Body> {
    e.status = resp.status().as_u16();
    e.response_headers = hcm.log.response_headers_to_keep(resp.headers());
    resp.map(|b| access_log::LoggedBody::wrap(b, e, hcm.log.clone(), start))
}

/// The HCM's `max_stream_duration` on a forwarded stream: a response not started by `deadline`
/// becomes Envoy's 504 `downstream duration timeout` (DT); a body still streaming then is reset.
async fn with_deadline(
    run: impl std::future::Future<Output = Outcome>,
    deadline: Instant,
) -> Outcome {
    match tokio::time::timeout_at(deadline.into(), run).await {
        Ok(o) => Outcome {
            resp: o.resp.map(|b| idle::IdleBody::until(b, deadline.into())),
            ..o
        },
        Err(_) => Outcome::local(Flag::DurationTimeout),
    }
}

/// Handles one request end to end; the flag is Envoy's response flag of the outcome.
pub async fn handle(
    hcm: Arc<Hcm>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> (Response<Body>, Flag) {
    let (resp, flag, _) = handle_with(hcm, conn, req, None).await;
    (resp, flag)
}

/// [`handle`] with the connection's rate limit buckets (`local_rate_limit_per_downstream_connection`);
/// also whether the request went upstream (its answer is an upstream's, or a reply after an
/// attempt).
pub async fn handle_with(
    hcm: Arc<Hcm>,
    conn: ConnInfo,
    mut req: Request<Incoming>,
    conn_buckets: Option<Arc<filters::ConnBuckets>>,
) -> (Response<Body>, Flag, bool) {
    let start = Instant::now();
    let start_wall = SystemTime::now();
    hcm.stats.downstream_rq_total.inc();
    let version = req.version();
    let h1 = version == Version::HTTP_10 || version == Version::HTTP_11;
    // HTTP/1.0 (`accept_http_10`): the connection stays open only when the client asked.
    let keep_alive_10 = version == Version::HTTP_10
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
            })
        });
    let scheme = hcm.cfg.request_scheme(conn.tls);
    // Envoy's gRPC test: `application/grpc` or `application/grpc+...` (gRPC-Web is not gRPC).
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::route::is_grpc);
    // Missing Host, request-target checks, upgrade policy, sanitation, x-request-id.
    if let Err(r) = preroute::before_routing(&hcm.cfg, &conn, scheme, &mut req) {
        let (body, close) = match &r {
            preroute::Refused::Target(t) => (t.body, true),
            // A refused upgrade closes the connection (what follows may be the new protocol).
            preroute::Refused::Upgrade => ("", true),
            preroute::Refused::Http10 => ("Upgrade Required", true),
            preroute::Refused::MissingHost | preroute::Refused::Path => ("", true),
            preroute::Refused::PathRedirect(_) => ("", !req.body().is_end_stream()),
        };
        let mut resp = refuse_before_routing(&hcm, &r, body, close);
        if let Some(l) = &hcm.cfg.local_reply {
            let fmt = format_context(&conn, version, start_wall);
            local_reply_map::rewrite(
                l,
                &mut resp,
                Flag::None,
                &answered(&req, scheme, start),
                fmt,
            );
        }
        let status = resp.status().as_u16();
        if grpc {
            local_reply::to_grpc(&mut resp);
        }
        hcm.istio.unknown().record(
            status,
            Flag::None,
            false,
            conn.orig_dst.port(),
            start.elapsed(),
        );
        if hcm.log.enabled() {
            let e = refused_entry(&hcm, &conn, &req, &r, scheme, start_wall);
            resp = log_refused(&hcm, e, resp, start);
        }
        return (resp, Flag::None, false);
    }
    let continued = match expect_continue::on_request(hcm.cfg.proxy_100_continue, &mut req).await {
        Ok(c) => c,
        // The client's body broke off (Envoy resets the stream): close the connection.
        Err(()) => {
            let mut resp = local_reply::reply(400, "");
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return (resp, Flag::DownstreamTermination, false);
        }
    };
    let authority = Authority::of(&req);
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // `always_set_request_id_in_response`, or an `x-envoy-force-trace` that sanitation kept
    // (only an internal request keeps it, and only an HCM with `internal_address_config` has
    // those): the id as it goes upstream (a shared-bytes clone).
    let force_trace =
        hcm.cfg.internal_addresses.is_some() && req.headers().contains_key(FORCE_TRACE);
    let response_id = (hcm.cfg.always_set_request_id_in_response || force_trace)
        .then(|| req.headers().get("x-request-id").cloned())
        .flatten();
    // The request body's tally: the access log's bytes received, a span's `request_size`.
    let mut tally = hcm.log.enabled().then(|| {
        let tally = request_body_tap::BodyTally::new(start);
        // A request without a body has come whole with its headers.
        if req.body().is_end_stream() {
            tally.end();
        }
        Arc::new(tally)
    });
    let mut log_entry = hcm.log.enabled().then(|| Entry {
        request_bytes: tally.clone(),
        grpc_request: grpc,
        ..request_entry(&hcm, &conn, &req, path.as_str(), scheme, start_wall)
    });

    let method = req.method().clone();
    let mut series = hcm.istio.unknown();
    // The `stat_prefix` counters of the route taken, when it has one.
    let mut route_stats = None;
    // A local reply leaves a request body unread: Envoy then closes the connection (an
    // upgrade request's too: its codec never sees the request end).
    let body_pending = !req.body().is_end_stream();
    let mut close = false;
    let fmt = format_context(&conn, version, start_wall);
    // The body waits in a slot: an ext_authz filter that sends it with its check
    // (`with_request_body`) reads what it needs when its turn comes; the router takes the rest.
    let (head, incoming) = req.into_parts();
    let mut req = Request::from_parts(head, ());
    let upgrade = upgrade_policy::is_upgrade(version, req.headers());
    let mut body_slot = filters::ext_authz::body::BodySlot::new(
        incoming,
        version,
        upgrade,
        hcm.cfg.request_timeout.map(|d| start + d),
        hcm.cfg.stream_idle_timeout,
    );
    // `local_reply_config`: the request headers its mappers and formats read, kept only then.
    let reply_headers = hcm.cfg.local_reply.as_ref().map(|_| req.headers().clone());
    let trace;
    // The `tracing.provider`'s span, what its tags read when no attempt records the request,
    // what the attempts record, the cluster and the route's custom tags.
    let mut span;
    // A sampled span is reported (flag DC) should the request be dropped before it is answered.
    let mut unanswered: Option<spans::finish::Unanswered> = None;
    let mut upstream_trace: Option<Arc<spans::upstream::UpstreamTrace>> = None;
    let mut span_cluster = None;
    let mut route_tags = None;
    let outcome = {
        let table = hcm.cfg.route_table.clone();
        let view = RequestView {
            authority: authority.as_ref().map(Authority::as_str),
            path: path.as_str(),
            method: method.as_str(),
            scheme,
            headers: req.headers(),
            random: rand::random(),
            peer: Some(conn.peer.ip()),
            metadata: None,
        };
        let selection = table.select(&view);
        if preroute::upgrade_refused(&hcm.cfg, &selection, version, req.headers()) {
            let r = preroute::Refused::Upgrade;
            let mut resp = refuse_before_routing(&hcm, &r, "", true);
            if let Some(l) = &hcm.cfg.local_reply {
                local_reply_map::rewrite(
                    l,
                    &mut resp,
                    Flag::None,
                    &answered(&req, scheme, start),
                    fmt,
                );
            }
            let status = resp.status().as_u16();
            if grpc {
                local_reply::to_grpc(&mut resp);
            }
            let port = conn.orig_dst.port();
            hcm.istio
                .unknown()
                .record(status, Flag::None, false, port, start.elapsed());
            if let Some(mut e) = log_entry {
                hcm.name_route(&mut e, &selection);
                e.flags = Flag::None.as_str();
                e.details = Some(ResponseDetails::Named(r.details().0));
                resp = log_refused(&hcm, e, resp, start);
            }
            return (resp, Flag::None, false);
        }
        crate::route::observe::log_taken(&selection, view.random);
        if let Selection::Forward(fwd) = &selection {
            route_stats = hcm.route_stats(fwd).cloned();
        }
        if let Some(e) = log_entry.as_mut() {
            hcm.name_route(e, &selection);
        }
        // The HCM's `tracing`: the trace reason in x-request-id, the decorator's header.
        trace = trace::decide(
            hcm.cfg.tracing.as_ref(),
            hcm.cfg.request_id,
            selection.route(),
            req.headers(),
            rand::random,
        );
        span = hcm.tracer.as_ref().and_then(|t| {
            let egress = hcm.cfg.tracing.as_ref()?.egress;
            let host = authority.as_ref().map_or("", Authority::as_str);
            let mut s = t.start(egress, trace.traced, req.headers(), host, start_wall, start)?;
            if let Some(op) = trace.operation.as_ref().and_then(|v| v.to_str().ok()) {
                s.rename(op);
            }
            Some(s)
        });
        let sampled = span.as_ref().is_some_and(|s| s.ids.sampled);
        // A sampled span's `request_size`: the body's tally (the access log's, if it keeps
        // one).
        if sampled && tally.is_none() {
            let t = request_body_tap::BodyTally::new(start);
            if !body_pending {
                t.end();
            }
            tally = Some(Arc::new(t));
        }
        // What a sampled span's tags read when no attempt records the request: the request
        // as it came, the new id in.
        let seen_here = sampled.then(|| {
            let mut h = req.headers().clone();
            if let Some(id) = &trace.new_id {
                h.insert("x-request-id", id.clone());
            }
            h
        });
        if let (Some(s), Some(t), Some(h)) = (span.as_ref(), &hcm.tracer, seen_here) {
            unanswered = Some(spans::finish::Unanswered {
                span: Some(s.clone()),
                tracer: t.clone(),
                headers: h,
                path: path.as_str().to_string(),
                authority: authority.as_ref().map_or("", Authority::as_str).to_string(),
                method: method.clone(),
                version,
                peer: conn.peer.ip(),
                cluster: None,
                route_tags: Arc::from([]),
                metadata: None,
            });
        }
        if sampled {
            route_tags = selection
                .route()
                .and_then(|r| r.tracing.as_ref())
                .filter(|t| !t.custom_tags.is_empty())
                .map(|t| t.custom_tags.clone());
        }
        // The HTTP filters before the router (none: the router alone, nothing to do).
        let mut decoded = if hcm.cfg.http_filters.is_empty() {
            None
        } else {
            let tls = req
                .extensions()
                .get::<Arc<crate::downstream_tls::TlsFacts>>()
                .cloned();
            // Boxed: the filters' state (a fault delay's timer) stays out of the request's
            // state machine when no filter is configured.
            let d = Box::pin(hcm.cfg.http_filters.decode(
                filters::Request {
                    selection: &selection,
                    table: &table,
                    route_config: &table.per_filter,
                    method: &method,
                    headers: req.headers(),
                    view: &view,
                    conn: conn_buckets.as_deref(),
                    deadline: hcm.cfg.max_stream_duration.map(|d| start + d),
                    remote: sanitize::RemoteAddress::of(&hcm.cfg, &conn),
                    peer: conn.peer,
                    direct: conn.proxy_direct.unwrap_or(conn.peer).ip(),
                    local: conn.orig_dst,
                    stats: &hcm.filter_stats,
                    tls: tls.as_deref(),
                    clusters: &hcm.by_name,
                    version,
                    health_check_failed: hcm.health_check_failed(),
                    local_cluster: &hcm.local_cluster,
                },
                &mut body_slot,
            ))
            .await;
            Some(d)
        };
        let filtered = decoded.as_ref().and_then(|d| d.local.as_ref()).is_some();
        if let Some(u) = unanswered.as_mut() {
            u.metadata = decoded.as_ref().and_then(|d| d.metadata.clone());
            if let Some(t) = &route_tags {
                u.route_tags = t.clone();
            }
        }
        // A body a filter read whole no longer keeps a local reply from leaving the connection
        // open.
        let local_close = !body_slot.is_complete() || upgrade;
        // The access log counts what a filter read of a body that no upstream will get.
        if filtered && body_slot.was_read() {
            if let Some(t) = log_entry.as_ref().and_then(|e| e.request_bytes.as_ref()) {
                t.add(body_slot.received());
                if body_slot.is_complete() {
                    t.end();
                }
            }
        }
        // A filter cleared the route cache: the route is chosen again from the request as it
        // left it, and the access log and route stats follow the new one.
        let snapshot = decoded.as_mut().and_then(|d| d.route_snapshot.take());
        let selection = match &snapshot {
            None => selection,
            Some(s) => {
                let again = table.select(&s.view(&view));
                crate::route::observe::log_chosen_again(&again, view.random);
                route_stats = match &again {
                    Selection::Forward(fwd) => hcm.route_stats(fwd).cloned(),
                    _ => None,
                };
                if let Some(e) = log_entry.as_mut() {
                    hcm.name_route(e, &again);
                }
                again
            }
        };
        // A redirect is made from the request as the filters left it (a token jwt_authn took
        // out of the query, a header a check set), as Envoy's router makes it when it answers:
        // also after a route chosen again, whose snapshot is the request as the clearing filter
        // left it.
        let selection = match decoded.as_ref() {
            Some(d)
                if (d.headers.is_some() || d.path.is_some())
                    && matches!(selection, Selection::Redirect { .. }) =>
            {
                let (headers, host_set, path) = filtered_request(Some(d), req.headers(), &path);
                selection.answered_for(&RequestView {
                    headers,
                    path: path.as_str(),
                    authority: host_set.or(view.authority),
                    ..view
                })
            }
            _ => selection,
        };
        let o = match selection {
            _ if filtered => {
                close = local_close;
                let (resp, flag) = decoded
                    .as_mut()
                    .and_then(|d| d.local.take())
                    .expect("a filter's local reply");
                Outcome {
                    resp,
                    flag,
                    upstream_host: None,
                    upstream_ms: None,
                    upstream_local: None,
                    attempts: 0,
                    redirect: None,
                }
            }
            Selection::NoRoute => {
                hcm.stats.no_route.inc();
                close = local_close;
                Outcome::local(Flag::NoRoute)
            }
            ref answering @ (Selection::DirectResponse { .. }
            | Selection::Redirect { .. }
            | Selection::SslRedirect { .. }) => {
                close = local_close;
                // The router answers from the request as the filters left it: their headers, a
                // `host` one of them set, the path without a token jwt_authn took out.
                let (seen, host_set, path) =
                    filtered_request(decoded.as_ref(), req.headers(), &path);
                let resp = route_reply::answer(
                    answering,
                    seen,
                    host_set.unwrap_or(authority.as_ref().map_or("", Authority::as_str)),
                    path.as_str(),
                    FormatContext {
                        line: Some(RequestLine::new(&method, path.as_str(), scheme)),
                        ..fmt
                    },
                )
                .expect("a route that answers by itself");
                let mut resp = resp;
                if hcm.log.enabled() {
                    resp.extensions_mut()
                        .insert(ResponseDetails::DirectResponse);
                }
                Outcome::answered(resp)
            }
            Selection::Forward(fwd) => match hcm.resolve(&fwd) {
                None => {
                    close = local_close;
                    let mut o = Outcome::local(Flag::NoCluster);
                    *o.resp.status_mut() =
                        http::StatusCode::from_u16(fwd.action.cluster_not_found_status)
                            .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
                    o
                }
                Some(cluster) => {
                    series = hcm.istio.of(&cluster.spec.name);
                    if let (Some(s), Some(t)) = (&span, &hcm.tracer) {
                        // The cluster's names, for the tags and upstream spans' names.
                        let names = (s.ids.sampled || t.provider.upstream_spans).then(|| {
                            let name = cluster.spec.name.clone();
                            let alt = cluster.spec.alt_stat_name.as_deref().map(str::to_string);
                            (name.clone(), alt.unwrap_or(name))
                        });
                        upstream_trace = Some(Arc::new(spans::upstream::UpstreamTrace::new(
                            s,
                            s.ids.sampled,
                            t,
                            names.clone().unwrap_or_default(),
                            route_tags.clone().unwrap_or_else(|| Arc::from([])),
                        )));
                        if let Some(u) = unanswered.as_mut() {
                            u.cluster.clone_from(&names);
                        }
                        span_cluster = names;
                    }
                    // A jwt_authn filter that took a token out of the query changed the path.
                    let path = decoded
                        .as_ref()
                        .and_then(|d| d.path.as_ref())
                        .unwrap_or(&path);
                    // The router reads the request as the filters left it.
                    let seen = decoded
                        .as_ref()
                        .and_then(|d| d.headers.as_ref())
                        .unwrap_or(req.headers());
                    let mut plan = forward::Plan::new(&fwd, &conn, path, seen, &hcm.cfg);
                    plan.body_bytes = tally.clone();
                    plan.trace = upstream_trace.clone();
                    plan.route_stats = route_stats.clone();
                    // The shadows are chosen here; their copies are made from the request as
                    // it goes upstream, with the filters' header changes.
                    if !fwd.action.mirrors.is_empty() {
                        plan.shadows =
                            forward::mirror::select(&fwd.action.mirrors, seen, &hcm.by_name);
                    }
                    trace.apply_request(req.headers_mut());
                    if let Some(d) = &decoded {
                        d.apply_request_headers(req.headers_mut());
                    }
                    // The span's context goes upstream: set again on each attempt's request after
                    // the route's header changes (an attempt's own span's, with upstream
                    // spans); set here for what takes no attempt (an upgrade, a mirror).
                    if let (Some(t), Some(s)) = (&hcm.tracer, &span) {
                        t.inject(s, req.headers_mut());
                    }
                    let timer = request_timeout::RequestTimer::start(
                        hcm.cfg.request_timeout,
                        body_pending,
                        start,
                    );
                    plan.body_end = timer.as_ref().map(request_timeout::RequestTimer::end_flag);
                    let (parts, ()) = req.into_parts();
                    let grpc_web = decoded.as_ref().and_then(|d| d.grpc_web.clone());
                    let grpc_tally = grpc_web.as_ref().and_then(|_| tally.clone());
                    if let Some(g) = &grpc_web {
                        plan.body_tallied = true;
                        plan.refused_body = Some(g.refused_body());
                    }
                    let run = async {
                        let input = match (continued, body_slot.into_upstream()) {
                            (expect_continue::Continued::Buffered(b), _) => {
                                forward::Input::Replay(Some(b))
                            }
                            (_, Upstream::Untouched(b)) => forward::Input::Stream(b),
                            (_, Upstream::Whole(b)) => forward::Input::Replay(Some(b)),
                            (_, Upstream::Prefixed(p)) => forward::Input::Prefixed(p),
                        };
                        let input = match &grpc_web {
                            Some(g) => {
                                // Counted as the client sent it, before it is decoded.
                                let raw = input.into_body();
                                let raw = match &grpc_tally {
                                    Some(t) => BoxBody::new(request_body_tap::Tapped::new(
                                        raw,
                                        None,
                                        Some(t.clone()),
                                    )),
                                    None => raw,
                                };
                                forward::Input::Filtered(g.request_body(raw))
                            }
                            None => input,
                        };
                        let o = forward::run(cluster, plan, conn, fmt, parts, input).await;
                        // A gRPC-Web body that was not base64: the filter's answer instead.
                        if let Some(r) = grpc_web.as_ref().and_then(|g| g.bad_request()) {
                            return Outcome::answered(r);
                        }
                        // Boxed: following holds a second forward future, which would double
                        // every request's state machine; only a redirect candidate pays for it.
                        if o.redirect.is_none() {
                            return o;
                        }
                        Box::pin(internal_redirect::follow(&hcm, conn, fmt, o)).await
                    };
                    let run = async {
                        match hcm.cfg.max_stream_duration {
                            None => run.await,
                            Some(d) => with_deadline(run, start + d).await,
                        }
                    };
                    match &timer {
                        None => run.await,
                        // Boxed: only a request with the timer and a body pays for its state.
                        Some(t) => match Box::pin(t.bound(run)).await {
                            Some(o) => o,
                            // The body never came whole: 408, and the connection closes.
                            None => {
                                close = true;
                                Outcome::answered(local_reply::reply(408, "request timeout"))
                            }
                        },
                    }
                }
            },
        };
        (o, decoded)
    };

    let (
        Outcome {
            mut resp,
            mut flag,
            upstream_host,
            upstream_ms,
            upstream_local,
            attempts,
            ..
        },
        mut decoded,
    ) = outcome;
    // What a span's metadata custom tags read.
    let metadata = decoded.as_mut().and_then(|d| d.metadata.take());
    // The router's answer to a request it sent upstream, before any local reply mapping.
    if let Some(rs) = route_stats.as_ref().filter(|_| attempts > 0) {
        rs.answered(resp.status().as_u16());
    }
    let health_check = decoded.as_ref().is_some_and(|d| d.health_check);
    if let Some(l) = &hcm.cfg.local_reply {
        let req = local_reply_map::Answered {
            health_check,
            method: method.as_str(),
            path: path.as_str(),
            scheme,
            authority: authority.as_ref().map(Authority::as_str),
            headers: reply_headers.as_ref(),
            elapsed: start.elapsed(),
        };
        local_reply_map::rewrite(l, &mut resp, flag, &req, fmt);
    }
    // A gRPC request's local reply is trailers-only, as Envoy's sendLocalReply makes it.
    if grpc {
        local_reply::to_grpc(&mut resp);
    }
    if let Some(d) = decoded {
        if let Some(g) = &d.grpc_web {
            resp = g.encode(resp).await;
        }
        let status = resp.status().as_u16();
        d.encode.apply(status, resp.headers_mut());
        if d.delayed && flag == Flag::None {
            flag = Flag::DelayInjected;
        }
        // A fault's response rate limit paces the body; its faults stay active until the end.
        if let Some(kbps) = d.throttle_kbps {
            let guards = d.guards;
            let since = tokio::time::Instant::from_std(start);
            resp = resp.map(|b| BoxBody::new(filters::Throttled::new(b, kbps, since, guards)));
        }
    }
    if h1 {
        *resp.version_mut() = version;
        // A server failing its health checks drains its connections: each HTTP/1 answer
        // closes its connection (Envoy's `drainClose` while `healthCheckFailed`).
        if hcm.health_check_failed() {
            close = true;
        }
        if close || (version == Version::HTTP_10 && !keep_alive_10) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if keep_alive_10 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
    } else {
        *resp.version_mut() = Version::HTTP_2;
    }
    // `server_name` (default "envoy") per `server_header_transformation` (default OVERWRITE).
    server_header::apply(&hcm.cfg.server_header, resp.headers_mut());
    if let Some(v) = &hcm.cfg.via {
        via::append(v, resp.headers_mut());
    }
    // Egress: an upstream's `x-envoy-decorator-operation` names the span (and is removed).
    if let Some(s) = span.as_mut().filter(|_| trace.egress) {
        let op = resp.headers().get(trace::DECORATOR_OPERATION);
        if let Some(op) = op.filter(|v| !v.is_empty()).and_then(|v| v.to_str().ok()) {
            s.rename(op);
        }
    }
    trace.apply_response(resp.headers_mut());
    if let Some(new_id) = &trace.new_id {
        if let Some(e) = log_entry.as_mut() {
            e.request_id = new_id.to_str().ok().map(str::to_string);
            if let Some(h) = e.request_headers.as_mut() {
                h.insert("x-request-id", new_id.clone());
            }
        }
    }
    if let Some(id) = trace
        .new_id
        .filter(|_| response_id.is_some())
        .or(response_id)
    {
        resp.headers_mut().insert("x-request-id", id);
    }
    let status = resp.status().as_u16();
    // Envoy leaves health checks out of the connection manager's response classes.
    match status {
        _ if health_check => {}
        200..=299 => hcm.stats.downstream_rq_2xx.inc(),
        300..=399 => hcm.stats.downstream_rq_3xx.inc(),
        400..=499 => hcm.stats.downstream_rq_4xx.inc(),
        500..=599 => hcm.stats.downstream_rq_5xx.inc(),
        _ => {}
    }
    series.record(status, flag, grpc, conn.orig_dst.port(), start.elapsed());
    // Answered: the span is finished with the response (the request as it came kept).
    let seen_here = unanswered.as_mut().map(|u| {
        u.span = None;
        std::mem::take(&mut u.headers)
    });
    if let (Some(mut s), Some(t)) = (span.filter(|s| s.ids.sampled), &hcm.tracer) {
        // The request as the last attempt sent it, else as it came (the new id in).
        let (headers, sent_path) = match upstream_trace.as_ref().and_then(|u| u.take()) {
            Some(seen) => seen,
            None => (seen_here.unwrap_or_default(), path.as_str().to_string()),
        };
        let seen = spans::tags::Seen {
            headers: &headers,
            path: &sent_path,
            authority: authority.as_ref().map_or("", Authority::as_str),
        };
        let p = &t.provider;
        spans::tags::downstream_request(
            &mut s,
            &seen,
            &method,
            version,
            conn.peer.ip(),
            p.max_path_tag_length,
        );
        let answered = spans::tags::Answered {
            status: Some(status),
            flags: flag.as_str(),
            cluster: span_cluster,
        };
        let route: &[config::CustomTag] = route_tags.as_deref().unwrap_or(&[]);
        let md = metadata.as_ref();
        spans::tags::common(&mut s, &answered, &[&p.custom_tags, route], &seen, md);
        let grpc_request = spans::tags::is_grpc(&headers);
        let in_head = grpc_request && resp.headers().contains_key("grpc-status");
        if in_head {
            spans::tags::grpc_response(&mut s, resp.headers());
        }
        let pending = spans::finish::Pending {
            span: s,
            request: tally.clone(),
            grpc_trailers: grpc_request && !in_head,
            tracer: t.clone(),
        };
        resp = resp.map(|b| spans::finish::TracedBody::wrap(b, pending));
    }
    if let Some(mut e) = log_entry {
        e.status = status;
        e.flags = flag.as_str();
        e.health_check = health_check;
        e.upstream_ms = upstream_ms;
        // The response head has just come from the upstream (or was made here).
        e.response_duration = upstream_ms.map(|_| start.elapsed());
        e.attempts = attempts;
        e.grpc_status = local_reply::grpc_status(resp.headers());
        e.upstream_host = upstream_host;
        e.details = ResponseDetails::of_response(
            resp.extensions().get::<ResponseDetails>(),
            upstream_ms.is_some(),
            flag,
        );
        e.upstream_local = upstream_local;
        e.response_headers = hcm.log.response_headers_to_keep(resp.headers());
        // Logged when the response body ends (or the stream is dropped), with the bytes sent.
        let resp = resp.map(|b| access_log::LoggedBody::wrap(b, e, hcm.log.clone(), start));
        return (resp, flag, attempts > 0);
    }
    (resp, flag, attempts > 0)
}

/// Whether an HTTP/1 request asks to close its connection after it: HTTP/1.0 without
/// `connection: keep-alive`, or a `close` token in `connection`.
fn wants_close(req: &Request<Incoming>) -> bool {
    let has = |token: &str| {
        req.headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match req.version() {
        Version::HTTP_10 => !has("keep-alive"),
        Version::HTTP_11 => has("close"),
        _ => false,
    }
}
