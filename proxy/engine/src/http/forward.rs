//! The upstream half of a request: host choice, circuit breakers, attempts with retries and
//! timeouts, outlier bookkeeping, and the response headers Envoy adds.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    header, request::Parts, uri::PathAndQuery, HeaderMap, HeaderValue, Method, Request, Response,
    Uri, Version,
};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use super::{
    access_log::ResponseDetails,
    internal_redirect,
    local_reply::{self, Flag},
    request_body_tap::Tapped,
    retry::{self, Outcome as Try},
    upgrade, Body, ConnInfo, Outcome,
};
use crate::{
    config::RoutingPriority,
    route::{
        format::{FormatContext, RequestLine},
        internal_redirect::InternalRedirectPolicy,
        Forward, HeaderMutations, HostRewriteResult, RetryPolicy,
    },
    upstream::{
        lb::hash_bytes,
        pool::{ConnectError, ReturnOnEnd, SendError},
        transport_options::KeyedTransport,
        Cluster, Host, LbContext,
    },
};

/// Largest request body (of a known length, within the request's buffer limit) read whole
/// before the first attempt when it may be sent again: as Envoy's router buffers the body while
/// the upstream connects, a client that sent it is not held to a slow connect, and it can be
/// mirrored and redirected. A larger or unknown-length body is streamed to the first attempt,
/// retained for a retry up to the buffer limit ([`retained_body`]).
pub const MAX_RETRY_BODY: u64 = 64 * 1024;

mod attempts;
mod hash_policy;
mod hedge;
mod host;
pub(crate) mod mirror;
mod retained_body;
mod router_headers;
mod shadow_body;
#[cfg(test)]
mod test_bodies;
mod timeouts;
mod transport;

use attempts::{classify, send_shadows, Attempts, Final};
use host::{apply_request_mutations, HostPlan, Hosting};
use retained_body::Retained;
use timeouts::{grpc_timeout_value, is_grpc_request};

/// Hop-by-hop headers never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
];

/// Everything taken from the route selection (owned, so the request can be mutated after).
pub(crate) struct Plan {
    original_path: PathAndQuery,
    /// The rewritten path, when the route rewrote it.
    rewritten: Option<String>,
    /// `path_rewrite`: sets `rewritten` once the request header mutations are applied.
    path_format: Option<Arc<crate::route::format::HeaderValueFormat>>,
    host_rewrite: Option<HostPlan>,
    /// A weighted cluster's `host_rewrite_literal` and how many leading request header levels
    /// (its own: 0 or 1) apply before it.
    cluster_host: Option<(usize, String)>,
    req_mutations: Vec<HeaderMutations>,
    resp_mutations: Vec<HeaderMutations>,
    /// The route timeout of this request (`None`: none).
    timeout: Option<Duration>,
    /// `max_grpc_timeout` applies to this gRPC request: the expected timeout is sent upstream
    /// as its `grpc-timeout`.
    grpc_expected: bool,
    /// Response body idle timeout (route `idle_timeout`, else the HCM's stream_idle_timeout).
    idle: Option<Duration>,
    retry: Option<RetryPolicy>,
    /// The route's `max_stream_duration` limit for this request, from the plan's start.
    stream_deadline: Option<tokio::time::Instant>,
    /// `grpc-timeout` to send upstream (a gRPC request on a route with `max_stream_duration`).
    grpc_timeout: Option<HeaderValue>,
    /// `append_x_forwarded_host`.
    append_xfh: bool,
    /// The `Set-Cookie` of a cookie hash policy that made the request's cookie.
    set_cookie: Option<HeaderValue>,
    /// `retriable_request_headers` allow retrying this request.
    retry_allowed: bool,
    hash: Option<u64>,
    /// `include_request_attempt_count`, `include_attempt_count_in_response` (the virtual
    /// host's).
    attempt_count: (bool, bool),
    /// `include_is_timeout_retry_header` (the virtual host's).
    timeout_retry_header: bool,
    /// The router adds its own `x-envoy-*` headers (not `suppress_envoy_headers`).
    envoy_headers: bool,
    /// The route's `priority`: whose circuit breakers and host pools the request uses.
    priority: RoutingPriority,
    /// `hedge_policy.hedge_on_per_try_timeout` (or an internal request's
    /// `x-envoy-hedge-on-per-try-timeout`).
    hedge: bool,
    /// An internal request's `x-envoy-upstream-rq-timeout-alt-response`: a timeout is answered
    /// 204 instead of 504.
    timeout_alt_response: bool,
    /// The request carries router-control headers the router consumes (an internal request's):
    /// removed before it goes upstream.
    consume_router_headers: bool,
    /// Mirror targets of this request (`request_mirror_policies`), set by the caller; empty
    /// (no allocation) without mirror policies.
    pub(crate) shadows: Vec<mirror::Shadow>,
    /// The request's `:scheme` (the connection's, or `scheme_to_overwrite`).
    scheme: &'static str,
    /// `scheme_header_transformation.match_upstream`: response formats see the upstream's
    /// transport as `:scheme`.
    scheme_match_upstream: bool,
    /// The route's `internal_redirect_policy`.
    redirect: Option<Arc<InternalRedirectPolicy>>,
    /// How much of a streamed request body is kept for a retry or redirect: the route's
    /// `request_body_buffer_limit`, else the listener's `per_connection_buffer_limit_bytes`.
    buffer_limit: u64,
    /// Set when the request body has been read to its end (the HCM's `request_timeout` is
    /// then disarmed); `None` without that timer.
    pub(crate) body_end: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Counts the request body bytes received (the access log's `%BYTES_RECEIVED%`).
    pub(crate) body_bytes: Option<Arc<super::request_body_tap::BodyTally>>,
    /// `body_bytes` counts the body as the client sent it, before a filter changed it (a
    /// gRPC-Web text body, decoded): the forward path adds nothing.
    pub(crate) body_tallied: bool,
    /// Raised by a filter that refused the body as it streamed (a gRPC-Web body that is not
    /// base64): the attempt that failed on it is not the host's fault and is not retried.
    pub(crate) refused_body: Option<Arc<std::sync::atomic::AtomicU8>>,
    /// A sampled span's: each attempt records the request it sends.
    pub(crate) trace: Option<Arc<super::spans::upstream::UpstreamTrace>>,
    /// The route's `stat_prefix` counters, when it has one.
    pub(crate) route_stats: Option<Arc<crate::server::stats::RouteStats>>,
    /// The connection manager's `istio.alpn` filter, when it has one.
    istio_alpn: Option<Arc<crate::http::filters::istio_alpn::IstioAlpn>>,
    /// The downstream connection's peer and (original) destination: the addresses an
    /// `upstream_proxy_protocol` transport socket states (`None`: the HCM's
    /// `add_proxy_protocol_connection_state` is false).
    downstream: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

/// The request body as [`run`] gets it: the downstream stream, or a body already read (the
/// request of an internal redirect).
pub(crate) enum Input {
    Stream(Incoming),
    Replay(Option<Bytes>),
    /// A part read before the filters (an ext_authz check's body), then the rest.
    Prefixed(crate::http::filters::ext_authz::body::Prefixed),
    /// The body as a filter turned it (a gRPC-Web call's, decoded), without a length.
    Filtered(Body),
}

impl Input {
    /// The body as it came, whichever way it was kept.
    pub(crate) fn into_body(self) -> Body {
        match self {
            Input::Stream(b) => b.map_err(Into::into).boxed(),
            Input::Replay(None) => local_reply::empty(),
            Input::Replay(Some(b)) => local_reply::full(b),
            Input::Prefixed(p) => p.map_err(Into::into).boxed(),
            Input::Filtered(b) => b,
        }
    }
}

impl Plan {
    pub(crate) fn new(
        fwd: &Forward<'_>,
        conn: &ConnInfo,
        path: &PathAndQuery,
        headers: &HeaderMap,
        hcm: &crate::config::HttpConnectionManager,
    ) -> Self {
        let stream_idle = hcm.stream_idle_timeout;
        let mut set_cookie = None;
        let hash = crate::route::request_hash::request_hash(
            &fwd.action.hash_policy,
            headers,
            path.as_str(),
            Some(conn.peer.ip()),
            &mut |name, generate| {
                let (value, set) = hash_policy::new_cookie(name, generate, conn);
                set_cookie = Some(set);
                Some(hash_bytes(value.as_bytes()))
            },
        );
        let grpc = is_grpc_request(headers);
        // An internal request's `x-envoy-*` router controls; only an HCM with
        // `internal_address_config` has internal requests.
        let overrides = hcm
            .internal_addresses
            .as_ref()
            .and_then(|_| router_headers::read(headers));
        let stream_limit = fwd
            .action
            .max_stream_duration
            .and_then(|m| m.limit(headers.get("grpc-timeout").and_then(|v| v.to_str().ok())));
        Self {
            original_path: path.clone(),
            rewritten: match &fwd.path {
                std::borrow::Cow::Owned(p) => Some(p.clone()),
                std::borrow::Cow::Borrowed(_) => None,
            },
            host_rewrite: fwd.host_rewrite.as_ref().map(|h| match h {
                HostRewriteResult::Literal(s) => HostPlan::Literal(s.to_string()),
                HostRewriteResult::Computed(s) => HostPlan::Literal(s.clone()),
                HostRewriteResult::Auto => HostPlan::Auto,
                HostRewriteResult::Header(n) => HostPlan::Header(n.to_string()),
                HostRewriteResult::Format(f) => HostPlan::Format(Arc::clone(f)),
            }),
            path_format: fwd.action.path_format.clone(),
            cluster_host: fwd
                .cluster_host_rewrite
                .map(|h| (usize::from(fwd.cluster_request_headers), h.to_string())),
            req_mutations: fwd.request_headers.iter().cloned().collect(),
            resp_mutations: fwd.response_headers.iter().cloned().collect(),
            timeout: match overrides.as_ref().and_then(|o| o.timeout) {
                Some(t) => (!t.is_zero()).then_some(t),
                None => timeouts::route_timeout(fwd.action, headers, grpc),
            },
            grpc_expected: grpc && fwd.action.grpc_timeout.is_some(),
            idle: match fwd.action.idle_timeout {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => stream_idle,
            },
            retry: match &overrides {
                Some(o) => o.retry(fwd.action.retry_policy.clone()),
                None => fwd.action.retry_policy.clone(),
            },
            retry_allowed: fwd.retry_allowed,
            append_xfh: fwd.action.append_x_forwarded_host,
            set_cookie,
            stream_deadline: stream_limit.map(|d| tokio::time::Instant::now() + d),
            grpc_timeout: fwd
                .action
                .max_stream_duration
                .filter(|_| grpc)
                .and(stream_limit)
                .map(grpc_timeout_value),
            hash,
            attempt_count: (
                fwd.vhost.include_request_attempt_count,
                fwd.vhost.include_attempt_count_in_response,
            ),
            timeout_retry_header: fwd.vhost.include_is_timeout_retry_header,
            envoy_headers: !hcm.http_filters.suppress_envoy_headers(),
            priority: fwd.action.priority,
            hedge: overrides
                .as_ref()
                .and_then(|o| o.hedge)
                .unwrap_or(fwd.action.hedge_on_per_try_timeout),
            timeout_alt_response: overrides.as_ref().is_some_and(|o| o.alt_response),
            consume_router_headers: overrides.is_some(),
            shadows: Vec::new(),
            scheme: hcm.request_scheme(conn.tls),
            scheme_match_upstream: hcm.scheme_match_upstream,
            redirect: fwd.action.internal_redirect.clone(),
            buffer_limit: fwd
                .action
                .buffer_limit
                .or(hcm.buffer_limit)
                .unwrap_or(u64::MAX),
            body_end: None,
            body_bytes: None,
            body_tallied: false,
            refused_body: None,
            trace: None,
            route_stats: None,
            istio_alpn: hcm.http_filters.istio_alpn().cloned(),
            downstream: (hcm.proxy_protocol_state || conn.proxy_direct.is_some())
                .then_some((conn.peer, conn.orig_dst)),
        }
    }
}

impl Plan {
    /// Counts on the route's `stat_prefix` counters, when it has them.
    pub(crate) fn count_route(&self, f: impl FnOnce(&crate::server::stats::RouteStats)) {
        if let Some(r) = &self.route_stats {
            f(r);
        }
    }
}

/// Decrements a counter when dropped.
struct Gauge<'a>(&'a AtomicUsize);
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The downstream body as the attempts take it: read whole when it may be sent again
/// (`replay`) and is small, retained as it streams when a retry or redirect may want it again
/// (`retain`: the request's buffer limit), else streamed once; tapped when the request timeout
/// (`end`) or the access log (`count`, taken then) wants to know; a streamed body is copied to
/// the `shadows` as it is read. `Err` when the client's body broke off while read whole.
async fn req_body<B>(body: B, how: &BodyHow<'_>, plan: &mut Plan) -> Result<ReqBody, ()>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    B::Error: Into<crate::http::BodyError>,
{
    let BodyHow {
        replay,
        retain,
        end,
    } = *how;
    let (shadows, count) = (&mut plan.shadows, &mut plan.body_bytes);
    let limit = retain.map_or(u64::MAX, |(l, _)| l);
    if replay
        && body
            .size_hint()
            .upper()
            .is_some_and(|u| u <= MAX_RETRY_BODY && u <= limit)
    {
        return match body.collect().await {
            Ok(c) => Ok(ReqBody::Buffered(c.to_bytes())),
            Err(_) => Err(()),
        };
    }
    let mut streamed = match (end.clone(), count.take()) {
        (None, None) => body.map_err(Into::into).boxed(),
        (end, count) => Tapped::new(body, end, count).map_err(Into::into).boxed(),
    };
    if !shadows.is_empty() {
        let (main, copies) = shadow_body::tee(streamed, shadows.len());
        streamed = main;
        for (s, c) in shadows.iter_mut().zip(copies) {
            s.streamed = Some(c);
        }
    }
    Ok(match retain {
        Some((limit, stats)) => {
            ReqBody::Retained(Retained::new(streamed, limit, Arc::clone(stats)))
        }
        None => ReqBody::Once(Some(streamed)),
    })
}

/// How [`req_body`] takes the request body.
#[derive(Clone, Copy)]
struct BodyHow<'a> {
    replay: bool,
    retain: Option<(u64, &'a Arc<crate::server::stats::ClusterStats>)>,
    end: &'a Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// The request body: read whole, retained as it streams, or streamed once.
enum ReqBody {
    Empty,
    /// No body, and no length either (a filter took the client's `content-length` out).
    EmptyUnsized,
    Buffered(Bytes),
    /// Read whole, sent without a length (a chunked request's body, redirected).
    Unsized(Bytes),
    /// The downstream body, streamed and kept for a retry up to the buffer limit.
    Retained(Retained),
    /// The downstream body, streamed (boxed once, when the request is planned).
    Once(Option<Body>),
}

impl ReqBody {
    fn take(&mut self) -> Option<Body> {
        match self {
            ReqBody::Once(b) => b.take(),
            _ => self.copy(),
        }
    }
    /// Whether another attempt can be given the whole body.
    fn replayable(&self) -> bool {
        match self {
            ReqBody::Retained(r) => r.replayable(),
            ReqBody::Once(_) => false,
            ReqBody::Empty | ReqBody::EmptyUnsized | ReqBody::Buffered(_) | ReqBody::Unsized(_) => {
                true
            }
        }
    }
    /// Whether the body was read to its end before the first attempt.
    fn read_whole(&self) -> bool {
        self.whole().is_some()
    }
    /// The body, when it was read to its end before the first attempt (`None` for no body).
    fn whole(&self) -> Option<Option<&Bytes>> {
        match self {
            ReqBody::Empty | ReqBody::EmptyUnsized => Some(None),
            ReqBody::Buffered(b) | ReqBody::Unsized(b) => Some(Some(b)),
            ReqBody::Retained(_) | ReqBody::Once(_) => None,
        }
    }
    /// Another copy of a replayable body (`None` for a streamed one, or one no longer
    /// retained).
    fn copy(&self) -> Option<Body> {
        match self {
            ReqBody::Empty => Some(local_reply::empty()),
            ReqBody::EmptyUnsized => Some(retained_body::ended_unsized()),
            ReqBody::Buffered(b) => Some(local_reply::full(b.clone())),
            ReqBody::Unsized(b) => Some(retained_body::unsized_body(b.clone())),
            ReqBody::Retained(r) => r.reader(),
            ReqBody::Once(_) => None,
        }
    }
}

/// RFC 9110 §9.2.2: a request that may be sent again without changing its effect, so a request
/// that went out on a connection the upstream had closed can be replayed.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_upgrade(parts: &Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && parts
            .headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Envoy keeps TE's exact `trailers` token (gRPC needs it end to end) and drops the rest.
    let te_trailers = h.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == "trailers"))
    });
    let listed: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty())
        .collect();
    for n in listed {
        h.remove(n.as_str());
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Runs the forward path for one request.
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    plan: Plan,
    conn: ConnInfo,
    fmt: FormatContext<'_>,
    parts: Parts,
    input: Input,
) -> Outcome {
    let envoy_headers = plan.envoy_headers;
    let mut o = run_planned(cluster, plan, conn, fmt, parts, input).await;
    // The overflow's local reply carries the router's `x-envoy-overloaded` unless suppressed
    // (an upstream's own is kept: only a local overflow answer is touched).
    if !envoy_headers && o.flag == Flag::Overflow && o.upstream_ms.is_none() {
        o.resp.headers_mut().remove("x-envoy-overloaded");
    }
    o
}

async fn run_planned(
    cluster: Arc<Cluster>,
    mut plan: Plan,
    conn: ConnInfo,
    fmt: FormatContext<'_>,
    mut parts: Parts,
    input: Input,
) -> Outcome {
    // `%REQ(:path)%` and friends read the request as it came until the path is rewritten
    // (a shared-bytes clone; a standard method is not allocated).
    let (method, original_path) = (parts.method.clone(), plan.original_path.clone());
    let fmt = FormatContext {
        line: Some(RequestLine::new(
            &method,
            original_path.as_str(),
            plan.scheme,
        )),
        ..fmt
    };
    if plan.consume_router_headers {
        // Read into the plan; Envoy's router removes them before its header mutations.
        router_headers::remove(&mut parts.headers);
    }
    apply_request_mutations(&plan, &fmt, &mut parts);
    // Envoy 1.40's router takes the auto_sni / auto_san_validation host after the route's
    // header mutations, before the endpoint's host rewrite.
    let auto_host = transport::auto_host(&plan, &cluster, &parts);
    if let Some(f) = &plan.path_format {
        plan.rewritten = host::render_path(f, &fmt, &parts, &original_path);
    }
    if let Some(v) = &plan.grpc_timeout {
        parts.headers.insert("grpc-timeout", v.clone());
    }
    let upgrade = is_upgrade(&parts);
    if !upgrade {
        strip_hop_by_hop(&mut parts.headers);
    }
    if plan.rewritten.is_some() && plan.envoy_headers {
        if let Ok(v) = HeaderValue::from_str(plan.original_path.as_str()) {
            parts.headers.insert("x-envoy-original-path", v);
        }
    }
    let path: PathAndQuery = match &plan.rewritten {
        Some(p) => p.parse().unwrap_or_else(|_| plan.original_path.clone()),
        None => plan.original_path.clone(),
    };
    let authority = match &plan.cluster_host {
        Some((_, h)) => h.clone(),
        None => parts
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| super::header_str(&parts.headers, header::HOST))
            .unwrap_or_default(),
    };
    // `host_rewrite_header` reads the header after the mutations, once per request.
    let host_rewrite = match &plan.host_rewrite {
        Some(HostPlan::Header(n)) => super::header_str(&parts.headers, n.as_str())
            .filter(|v| !v.is_empty())
            .map(HostPlan::Literal),
        Some(HostPlan::Format(f)) => host::render_host(f, &fmt, &parts).map(HostPlan::Literal),
        Some(HostPlan::Literal(l)) => Some(HostPlan::Literal(l.clone())),
        Some(HostPlan::Auto) => Some(HostPlan::Auto),
        None => None,
    };
    // `append_x_forwarded_host`: the value a rewrite sets, computed once for every attempt
    // (Envoy's `appendForwardedHost`: the original Host after any client value, `,`-joined).
    let xfh =
        plan.append_xfh.then(
            || match super::header_str(&parts.headers, "x-forwarded-host") {
                Some(e) if !e.is_empty() => format!("{e},{authority}"),
                _ => authority.clone(),
            },
        );
    let hosting = Hosting {
        authority,
        xfh,
        rewrite: host_rewrite,
    };
    timeouts::set_headers(&plan, &mut parts.headers, None);
    // ORIGINAL_DST `use_http_header`: the header names the destination (an unparsable value
    // gives no host, as Envoy); without it, the connection's original destination.
    let orig_dst = match cluster
        .spec
        .orig_dst_header
        .as_ref()
        .and_then(|n| parts.headers.get(n))
    {
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse().ok()),
        None => Some(conn.orig_dst),
    };
    let lb = LbContext {
        hash: plan.hash,
        orig_dst,
    };

    // Circuit breakers of the route's priority: max_requests here, max_retries below.
    let resources = &cluster.resources[plan.priority];
    let Some(_active) = resources.request() else {
        cluster.stats.upstream_rq_pending_overflow.inc();
        return Outcome::local(Flag::Overflow);
    };

    if upgrade {
        let Some(host) = cluster.choose_host(&lb) else {
            cluster.stats.upstream_cx_none_healthy.inc();
            return Outcome::local(Flag::NoHealthyUpstream);
        };
        hosting.apply(&mut parts, &host);
        parts.uri = origin_form(&path);
        // An internal redirect is never offered for an upgrade (it has no replayable body).
        let Input::Stream(body) = input else {
            return Outcome::local(Flag::ConnectionTermination);
        };
        plan.count_route(|r| r.total.inc());
        let o = transport::options(&plan, &cluster, parts.version, auto_host.as_deref(), true)
            .used_by(
                cluster.tls(host.transport).is_some(),
                cluster.proxy_protocol(host.transport).is_some(),
            );
        let options = (!o.is_none()).then(|| KeyedTransport::new(o.to_owned()));
        let (idle, priority) = (plan.idle, plan.priority);
        return upgrade::run(&cluster, &host, parts, body, idle, priority, options).await;
    }

    let body_end = plan.body_end.take();
    // The HCM has an access log (it counts the body): attempts note their connection's address.
    let logged = plan.body_bytes.is_some();
    if plan.body_tallied {
        plan.body_bytes = None;
    }
    let replay = plan.retry.is_some()
        || !plan.shadows.is_empty()
        || plan.redirect.is_some()
        || body_end.is_some();
    // Envoy's router keeps a streamed body for a retry or redirect, up to the buffer limit.
    let retain = (plan.retry.is_some() || plan.redirect.is_some())
        .then_some((plan.buffer_limit, &cluster.stats));
    let how = BodyHow {
        replay,
        retain,
        end: &body_end,
    };
    let mut body = match input {
        Input::Replay(None) => ReqBody::Empty,
        // A redirected request's body goes as it came: with its length, or chunked.
        Input::Replay(Some(b)) if parts.headers.contains_key(header::CONTENT_LENGTH) => {
            ReqBody::Buffered(b)
        }
        Input::Replay(Some(b)) => ReqBody::Unsized(b),
        Input::Stream(body) if body.is_end_stream() => ReqBody::Empty,
        // Buffered when it may be sent again (retries, mirrors, redirects), and under the HCM's
        // `request_timeout`: Envoy's router reads a small body while the upstream connects, so
        // a client that sent it whole is not timed out by a slow connect.
        Input::Stream(body) => match req_body(body, &how, &mut plan).await {
            Ok(b) => b,
            Err(()) => return Outcome::local(Flag::DownstreamTermination),
        },
        // What an ext_authz check read, then the rest: on the same terms.
        Input::Prefixed(body) => match req_body(body, &how, &mut plan).await {
            Ok(b) => b,
            Err(()) => return Outcome::local(Flag::DownstreamTermination),
        },
        Input::Filtered(body) if body.is_end_stream() => ReqBody::EmptyUnsized,
        Input::Filtered(body) => match req_body(body, &how, &mut plan).await {
            Ok(b) => b,
            Err(()) => return Outcome::local(Flag::DownstreamTermination),
        },
    };
    if let Some(Some(b)) = body.whole() {
        if let Some(tally) = plan.body_bytes.take() {
            tally.add(b.len() as u64);
            tally.end();
        }
    }
    if let Some(end) = body_end.filter(|_| body.read_whole()) {
        end.store(true, std::sync::atomic::Ordering::Release);
    }

    // Mirrored once, with the first attempt's headers.
    let mut shadows = Some(std::mem::take(&mut plan.shadows)).filter(|s| !s.is_empty());
    let ctx = Attempts {
        cluster: &cluster,
        lb: &lb,
        plan: &plan,
        hosting: &hosting,
        path: &path,
        // The route timeout, from the time the request is ready to go (its body read when it is
        // buffered), as Envoy's from the downstream request's end.
        deadline: plan.timeout.map(|t| tokio::time::Instant::now() + t),
        local: logged.then(Default::default),
        auto_host: auto_host.as_deref(),
    };
    let per_try = plan.retry.as_ref().and_then(|r| r.per_try_timeout);
    let per_try_idle = plan.retry.as_ref().and_then(|r| r.per_try_idle_timeout);
    let attempts = async {
        // `hedge_on_per_try_timeout`: a per-try (or per-try idle) timeout leaves its attempt
        // running.
        if plan.hedge && (per_try.is_some() || per_try_idle.is_some()) {
            let timers = hedge::Timers {
                per_try,
                idle: per_try_idle,
            };
            return hedge::race(&ctx, &mut parts, &mut body, &mut shadows, timers, fmt).await;
        }
        let mut retries_done = 0u32;
        // Hosts tried so far, for the previous_hosts retry predicate (only then kept).
        let mut tried: Vec<SocketAddr> = Vec::new();
        // Whether the last attempt ended at its per-try timeout.
        let mut timed_out = false;
        // The max_retries slot of the retry under way: held from the decision to retry until
        // the retried attempt has its outcome (Envoy's `RetryStateImpl` gives it back at its
        // next `shouldRetry` or when it ends).
        let mut retrying = None;
        // A retry was refused by the retry circuit breaker (UO).
        let mut overflowed = false;
        // An attempt of this request went out (Envoy's sticky `upstream_request_started`).
        let mut started = false;
        loop {
            let Some(host) = ctx.prepare(&mut tried, &mut parts, retries_done, timed_out) else {
                cluster.stats.upstream_cx_none_healthy.inc();
                return Outcome::local(Flag::NoHealthyUpstream);
            };
            if retries_done > 0 {
                ctx.retry_timeout_headers(&mut parts);
            }
            if let Some(s) = shadows.take() {
                send_shadows(s, &parts, &path, &body, &lb, plan.timeout);
            }
            let Some(b) = body.take() else {
                // A retry whose body outgrew the buffer while it waited (a failed attempt's
                // body still read on): Envoy's answer then.
                if retries_done > 0 {
                    let mut o = Outcome::answered(local_reply::reply(
                        507,
                        "exceeded request buffer limit while retrying upstream",
                    ));
                    o.attempts = retries_done;
                    return o;
                }
                return Outcome::local(Flag::ConnectionTermination);
            };
            let t0 = Instant::now();
            let sent = attempt(&ctx, &host, &parts, b, &body, per_try, per_try_idle);
            let Some(result) = ctx.within(sent).await else {
                return ctx.route_timeout(Some(host.addr), 1, retries_done + 1);
            };
            // A filter refused the body as it went: the client's fault, not the host's.
            if plan
                .refused_body
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Acquire) != 0)
            {
                return attempts::ended(Flag::DownstreamProtocolError, host.addr, retries_done + 1);
            }
            let upstream_ms = t0.elapsed().as_millis() as u64;
            let (outcome, host_result) = match classify(&cluster, &result) {
                Ok((Try::Reset(r), h)) => (Try::Reset(r.after(started)), h),
                Ok(c) => c,
                Err(flag) => return attempts::ended(flag, host.addr, retries_done + 1),
            };
            started |= match outcome {
                Try::ConnectFailure => false,
                Try::Reset(r) => r.sent,
                Try::Status(_) | Try::PerTryTimeout => true,
            };
            timed_out = matches!(outcome, Try::PerTryTimeout);
            drop(retrying.take());
            cluster.record_outcome(&host, host_result);
            let retriable = plan.retry.as_ref().filter(|p| {
                plan.retry_allowed
                    && body.replayable()
                    && retry::should_retry(p, outcome, result.as_ref().ok().map(|r| r.headers()))
            });
            let retry = retriable.filter(|p| retries_done < p.num_retries);
            // Envoy's per-route counters: a retriable answer past `num_retries`, and a retried
            // request ending with an answer that is not retried.
            match (retriable.is_some(), retry.is_some()) {
                (true, false) => plan.count_route(|r| r.retry_limit_exceeded.inc()),
                (false, _) if retries_done > 0 => plan.count_route(|r| r.retry_success.inc()),
                _ => {}
            }
            if let Some(policy) = retry {
                if let Some(slot) = resources.retry() {
                    let wait = retry::backoff_after(
                        policy,
                        retries_done,
                        result.as_ref().ok().map(|r| r.headers()),
                    );
                    drop(result);
                    let waited = ctx.within(tokio::time::sleep(wait)).await;
                    if waited.is_none() {
                        return ctx.route_timeout(Some(host.addr), 0, retries_done + 1);
                    }
                    retrying = Some(slot);
                    retries_done += 1;
                    cluster.stats.upstream_rq_retry.inc();
                    plan.count_route(|r| r.retry.inc());
                    continue;
                }
                cluster.stats.upstream_rq_retry_overflow.inc();
                plan.count_route(|r| r.retry_overflow.inc());
                overflowed = true;
            }
            let fin = Final {
                result,
                host,
                upstream_ms,
                attempts: retries_done + 1,
                flag: match () {
                    () if overflowed => Flag::Overflow,
                    () if retries_done > 0 && host_result.failed() => Flag::RetryLimitExceeded,
                    () => Flag::None,
                },
            };
            return ctx.respond(fin, &parts, &body, fmt);
        }
    };
    // The stream idle timeout while no response has started (Envoy's stream idle timer; the
    // response body is guarded by `IdleBody`); the route timeout is the attempts' own.
    let after = |d: Option<Duration>| async move {
        match d {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        o = attempts => o,
        () = after(plan.idle) => Outcome::local(Flag::StreamIdleTimeout),
        () = until(plan.stream_deadline) => Outcome::local(Flag::DurationTimeout),
    }
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Picks the host of an attempt: with the previous_hosts predicate, a host already tried is
/// picked again up to `host_selection_retry_max_attempts` times, and the last pick stands
/// (Envoy's `LoadBalancerContext::shouldSelectAnotherHost`).
fn choose_retry_host(
    cluster: &Cluster,
    lb: &LbContext,
    retry: Option<&RetryPolicy>,
    tried: &[SocketAddr],
) -> Option<Arc<Host>> {
    let mut host = cluster.choose_host(lb)?;
    if let Some(r) = retry.filter(|r| r.previous_hosts) {
        for _ in 0..r.host_selection_max_attempts {
            if !tried.contains(&host.addr) {
                break;
            }
            host = cluster.choose_host(lb)?;
        }
    }
    Some(host)
}

pub(super) fn origin_form(path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// Why an attempt produced no response.
enum AttemptError {
    Connect(ConnectError),
    Reset,
    /// Reset before the request went out (Envoy's `upstream_request_started` false).
    NotSent,
    /// The upstream reset the HTTP/2 stream (REFUSED_STREAM when `refused`): Envoy's UR.
    StreamReset {
        refused: bool,
    },
    /// The upstream's response head did not parse: Envoy's 502 `protocol error` (UPE).
    Protocol,
    Timeout,
    /// The client's request body failed (a downstream protocol error).
    Downstream,
}

impl AttemptError {
    /// The response flag of a request this failure ended.
    fn flag(&self) -> Flag {
        match self {
            AttemptError::Connect(_) => Flag::ConnectFailure,
            AttemptError::Reset | AttemptError::NotSent => Flag::ConnectionTermination,
            AttemptError::StreamReset { .. } => Flag::UpstreamRemoteReset,
            AttemptError::Protocol => Flag::UpstreamProtocolError,
            AttemptError::Timeout => Flag::Timeout,
            AttemptError::Downstream => Flag::DownstreamProtocolError,
        }
    }

    /// Envoy's reset reason in the local reply for this failure, if it answers with one.
    fn reset_reason(&self) -> Option<&'static str> {
        match self {
            // Envoy's pool failure Timeout: flag UF, its own reset reason.
            AttemptError::Connect(ConnectError::Timeout) => Some(local_reply::CONNECT_TIMEOUT),
            AttemptError::Connect(_) => Some("remote connection failure"),
            AttemptError::Reset | AttemptError::NotSent => Some("connection termination"),
            AttemptError::StreamReset { refused: true } => Some("remote refused stream reset"),
            AttemptError::StreamReset { refused: false } => Some("remote reset"),
            AttemptError::Protocol => Some("protocol error"),
            AttemptError::Timeout | AttemptError::Downstream => None,
        }
    }

    /// Envoy's response code details for a request this failure ended (the access log).
    fn details(&self) -> Option<ResponseDetails> {
        match self {
            AttemptError::Connect(ConnectError::Io(e)) => {
                Some(ResponseDetails::connect_failed(self.reset_reason()?, e))
            }
            AttemptError::Timeout => Some(ResponseDetails::Named("upstream_per_try_timeout")),
            AttemptError::Downstream => None,
            _ => Some(ResponseDetails::Reset {
                reason: self.reset_reason()?,
                transport: None,
            }),
        }
    }
}

/// One attempt on `host`'s pool of the plan's priority, within its `per_try_timeout`, and
/// reset when `idle` (`per_try_idle_timeout`) passes without a response head once its
/// connection is ready.
async fn attempt(
    ctx: &Attempts<'_>,
    host: &Arc<Host>,
    parts: &Parts,
    body: Body,
    again: &ReqBody,
    per_try: Option<Duration>,
    idle: Option<Duration>,
) -> Result<Upstream, AttemptError> {
    let (cluster, path) = (&**ctx.cluster, ctx.path);
    host.active_rq.fetch_add(1, Ordering::Relaxed);
    let _active = Gauge(&host.active_rq);
    host.rq_total.fetch_add(1, Ordering::Relaxed);
    cluster.stats.upstream_rq_total.inc();
    ctx.plan.count_route(|r| r.total.inc());
    // The pool sends it once more on a fresh connection when a reused one turns out closed;
    // a request that already went out is replayed only when safe to repeat.
    let mut req = upstream_request(parts, path, body);
    // A traced request: the attempt is noted, and with upstream spans gets its own span,
    // whose context its request (and a replay of it) carries.
    let child = ctx
        .plan
        .trace
        .as_ref()
        .and_then(|t| t.attempt(req.headers_mut(), path.as_str(), host.addr));
    let replay = || {
        idempotent(&parts.method)
            .then(|| again.copy())
            .flatten()
            .map(|b| {
                let mut r = upstream_request(parts, path, b);
                match (&child, &ctx.plan.trace) {
                    (Some(c), _) => c.inject(r.headers_mut()),
                    (None, Some(t)) => t.inject_own(r.headers_mut()),
                    (None, None) => {}
                }
                r
            })
    };
    let fut = async {
        let options = transport::options(ctx.plan, cluster, parts.version, ctx.auto_host, false);
        host.pool_for(ctx.plan.priority, options, cluster)
            .send(cluster, host.addr, req, replay, idle, &|l| {
                if let Some(m) = &ctx.local {
                    *m.lock().unwrap_or_else(|p| p.into_inner()) = l;
                }
            })
            .await
            .map_err(|e| match e {
                SendError::Connect(c) => AttemptError::Connect(c),
                SendError::Reset => AttemptError::Reset,
                SendError::NotSent => AttemptError::NotSent,
                SendError::StreamReset { refused } => AttemptError::StreamReset { refused },
                SendError::Protocol => AttemptError::Protocol,
                SendError::Downstream => AttemptError::Downstream,
                // Envoy's `onPerTryIdleTimeout`: a per-try timeout of its own counter.
                SendError::IdleTimeout => {
                    cluster.stats.upstream_rq_per_try_idle_timeout.inc();
                    AttemptError::Timeout
                }
            })
    };
    let result = match per_try {
        Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
            cluster.stats.upstream_rq_timeout.inc();
            Err(AttemptError::Timeout)
        }),
        None => fut.await,
    };
    let mut result = result;
    if let Ok(r) = &mut result {
        super::reason_phrase::from_upstream(r, cluster);
    }
    if let Some(c) = child {
        match &mut result {
            Ok(r) => {
                c.answered(host.addr, r.version(), r.status().as_u16(), r.headers());
                r.extensions_mut().insert(c);
            }
            Err(e) => c.failed(host.addr, e.flag()),
        }
    }
    if let Ok(r) = &result {
        match r.status().as_u16() {
            200..=299 => cluster.stats.upstream_rq_2xx.inc(),
            300..=399 => cluster.stats.upstream_rq_3xx.inc(),
            400..=499 => cluster.stats.upstream_rq_4xx.inc(),
            500..=599 => cluster.stats.upstream_rq_5xx.inc(),
            _ => {}
        }
    }
    result
}

/// An upstream response; its body gives an HTTP/1 connection back to the pool when it ends.
type Upstream = Response<ReturnOnEnd<Body>>;

/// The upstream request in origin form (the pool rewrites it for an HTTP/2 connection).
fn upstream_request(parts: &Parts, path: &PathAndQuery, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = origin_form(path);
    // HTTP/2 stays HTTP/2 (a cluster that uses the downstream's protocol reads it); the pool
    // sends over the protocol its connection speaks.
    *req.version_mut() = if parts.version == Version::HTTP_2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = parts.headers.clone();
    // The case the client wrote the header names in, when the HTTP connection manager keeps it
    // (`preserve_case`: hyper recorded it in the extensions, and writes it upstream); nothing
    // to copy otherwise.
    *req.extensions_mut() = parts.extensions.clone();
    req
}

/// The upstream's response as it goes downstream: its body under the plan's idle timeout,
/// `per_try_idle` and stream deadline, hop-by-hop headers out, the router's service time
/// (unless suppressed) and the route's response header mutations in.
fn finish_response(
    resp: Upstream,
    upstream_ms: u64,
    plan: &Plan,
    fmt: &FormatContext<'_>,
    per_try_idle: Option<Duration>,
) -> Response<Body> {
    let mut resp = resp;
    let child = resp
        .extensions_mut()
        .remove::<Arc<super::spans::upstream::ChildSpan>>();
    let mut resp = resp.map(|b| {
        let b = super::idle::IdleBody::wrap_upstream(
            b.map_err(Into::into).boxed(),
            plan.idle,
            per_try_idle,
            plan.stream_deadline,
        );
        match child {
            Some(c) => super::spans::upstream::ChildBody::wrap(b, c),
            None => b,
        }
    });
    strip_hop_by_hop(resp.headers_mut());
    if plan.envoy_headers {
        resp.headers_mut().insert(
            "x-envoy-upstream-service-time",
            HeaderValue::from(upstream_ms),
        );
    }
    for m in &plan.resp_mutations {
        m.apply_with(resp.headers_mut(), fmt);
    }
    resp
}
