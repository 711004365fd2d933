//! The HCM's HTTP filters before the router (`http_filters`): fault, cors, local_ratelimit, rbac,
//! ext_authz, jwt_authn.
//!
//! Parsed once at config load (`parse`), with per-route overrides from
//! `typed_per_filter_config` on the virtual host, route and weighted cluster (the most
//! specific wins). At run time [`HttpFilters::decode`] runs them in order after route
//! selection: each may answer locally (abort, preflight, 429) or delay the request, and the
//! ones that ran add their response headers ([`Encode::apply`]) to whatever response follows,
//! as Envoy's encoder filters do. A filter that clears the route cache has the route chosen
//! again ([`reroute`]). An HCM with only the router has an empty chain: `handle` skips all of
//! this.

mod buffer;
mod cors;
pub use throttle::Throttled;
pub(crate) mod ext_authz;
mod fault;
pub mod grpc_web;
pub(crate) mod health_check;
pub(crate) mod istio_alpn;
pub(crate) mod jwt_authn;
mod local_ratelimit;
pub(crate) mod metadata;
mod parse;
mod rbac;
pub(crate) mod reroute;
#[cfg(test)]
mod tests;
mod throttle;

use std::{collections::HashMap, sync::Arc, time::Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};

pub use crate::rbac::rules::RulesStats as RbacStats;
pub use cors::CorsPolicy;
pub use ext_authz::{ExtAuthz, ExtAuthzPerRoute};
pub use fault::Fault;
pub use local_ratelimit::{ConnBuckets, LocalRateLimit, VhRateLimits};
pub(crate) use parse::{http_filters, legacy_cors, per_filter_configs};
pub use rbac::Rbac;
pub use reroute::RouteSnapshot;

use super::{local_reply, local_reply::Flag, Body};
use smallvec::SmallVec;

use crate::route::{
    rate_limits::{Descriptor, RateLimitEntry, RequestFacts},
    Selection,
};

/// One filter's per-route config (`typed_per_filter_config` value), by its `@type`.
#[derive(Debug, Clone)]
pub enum PerRoute {
    /// `HTTPFault`: replaces the filter's config.
    Fault(Arc<Fault>),
    /// `CorsPolicy`.
    Cors(Arc<CorsPolicy>),
    /// `LocalRateLimit`: replaces the filter's config (its own bucket).
    LocalRateLimit(Arc<LocalRateLimit>),
    /// `RBACPerRoute`: replaces the filter's rules (none: the filter is off).
    Rbac(Arc<Rbac>),
    /// `ExtAuthzPerRoute`: turns the check off (`disabled`).
    ExtAuthz(Arc<ExtAuthzPerRoute>),
    /// jwt_authn's `PerRouteConfig`: off, or a requirement by name.
    JwtAuthn(Arc<jwt_authn::JwtPerRoute>),
    /// `BufferPerRoute`: off, or another limit.
    Buffer(buffer::Buffer),
}

/// `typed_per_filter_config` of one level (filter name -> config), and the level's deprecated
/// `cors` policy.
#[derive(Debug, Clone, Default)]
pub struct PerFilterConfigs {
    by_name: Vec<(String, PerFilter)>,
    legacy_cors: Option<Arc<CorsPolicy>>,
}

/// One entry of a level's `typed_per_filter_config`.
#[derive(Debug, Clone)]
enum PerFilter {
    /// A filter's per-route config (enables the filter).
    Config(PerRoute),
    /// `config.route.v3.FilterConfig` with an empty `config`: enables the filter.
    Enabled,
    /// `config.route.v3.FilterConfig` with `disabled: true`.
    Disabled,
}

impl PerFilterConfigs {
    fn get(&self, name: &str) -> Option<&PerRoute> {
        match self.by_name.iter().find(|(n, _)| n == name)? {
            (_, PerFilter::Config(c)) => Some(c),
            _ => None,
        }
    }

    /// Envoy's `PerFilterConfigs::disabled`: whether this level disables (true) or enables
    /// (false) the filter; None when it does not name it.
    fn disabled(&self, name: &str) -> Option<bool> {
        self.by_name
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| matches!(c, PerFilter::Disabled))
    }

    /// Whether the level configures nothing.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.legacy_cors.is_none()
    }
}

/// One configured filter.
#[derive(Debug)]
enum Kind {
    Fault(Arc<Fault>),
    Cors,
    LocalRateLimit(Arc<LocalRateLimit>),
    Rbac(Arc<Rbac>),
    ExtAuthz(Arc<ExtAuthz>),
    JwtAuthn(Arc<jwt_authn::JwtAuthn>),
    GrpcWeb,
    HealthCheck(Arc<health_check::HealthCheck>),
    Buffer(buffer::Buffer),
}

#[derive(Debug)]
struct Filter {
    name: String,
    kind: Kind,
    /// `HttpFilter.disabled`: off unless a per-route entry enables it.
    disabled: bool,
}

impl Filter {
    /// Whether the filter is off for a request with these config `levels`: the most specific
    /// level naming it decides, else `HttpFilter.disabled`.
    fn disabled_at(&self, levels: &[Option<&PerFilterConfigs>; 4]) -> bool {
        levels
            .iter()
            .flatten()
            .find_map(|l| l.disabled(&self.name))
            .unwrap_or(self.disabled)
    }
}

/// The filters before the router, in `http_filters` order (empty: the router alone).
#[derive(Debug, Default)]
pub struct HttpFilters {
    filters: Vec<Filter>,
    /// Whether a filter reads the request's dynamic metadata (an ext_authz
    /// `filter_enabled_metadata`): only then do the RBAC filters write it.
    reads_metadata: bool,
    /// The router's `suppress_envoy_headers`.
    suppress_envoy_headers: bool,
    /// Istio's `istio.alpn` filter, when the chain has it.
    istio_alpn: Option<Arc<istio_alpn::IstioAlpn>>,
    /// The router's `start_child_span` is set: the router's index.
    pub start_child_span: Option<usize>,
}

/// What the filters that ran add to the response, in reverse order of the chain.
#[derive(Default)]
pub struct Encode {
    cors: Option<cors::Allowed>,
    x_ratelimit: Option<(u32, u32, u64)>,
    /// ext_authz's `allowed_client_headers_on_success`, added.
    authz: Vec<(HeaderName, HeaderValue)>,
    /// A health check filter took the request as a health check: its answer names the node's
    /// cluster (and fills the filter's cache).
    health_checked: Option<(Arc<health_check::HealthCheck>, HeaderValue)>,
    /// A health check filter ran while the server fails its health checks.
    health_check_failed: bool,
}

impl HttpFilters {
    /// Something after the filters reads the request's dynamic metadata (a tracing provider's
    /// metadata custom tags): the RBAC filters write it and it is kept.
    pub fn keep_metadata(&mut self) {
        self.reads_metadata = true;
    }

    /// The router's `suppress_envoy_headers`: it adds none of its own `x-envoy-*` headers
    /// (upstream service time, expected timeout, original path, overloaded).
    pub fn suppress_envoy_headers(&self) -> bool {
        self.suppress_envoy_headers
    }

    /// Istio's `istio.alpn` filter, when the chain has it.
    pub fn istio_alpn(&self) -> Option<&Arc<istio_alpn::IstioAlpn>> {
        self.istio_alpn.as_ref()
    }
}

impl Encode {
    /// Adds the response headers of the filters that ran to a response with `status`.
    pub fn apply(&self, status: u16, h: &mut HeaderMap) {
        if let Some((hc, cluster)) = &self.health_checked {
            hc.seen(status, h.contains_key("x-envoy-degraded"));
            h.insert("x-envoy-upstream-healthchecked-cluster", cluster.clone());
        }
        if self.health_check_failed {
            h.insert(
                "x-envoy-immediate-health-check-fail",
                HeaderValue::from_static("true"),
            );
        }
        for (n, v) in &self.authz {
            h.append(n.clone(), v.clone());
        }
        if let Some(v) = self.x_ratelimit {
            local_ratelimit::apply_x_headers(v, h);
        }
        if let Some(c) = &self.cors {
            c.apply(h);
        }
    }
}

/// The chain's decision for one request.
pub struct Decoded {
    /// A local reply (and its response flag) that replaces routing.
    pub local: Option<(Response<Body>, Flag)>,
    /// Whether a fault delay was injected (response flag DI).
    pub delayed: bool,
    /// The response headers to add.
    pub encode: Encode,
    /// Faults in progress (`max_active_faults`), released with the request (or, with a
    /// response rate limit, with its body).
    pub guards: Vec<fault::ActiveFault>,
    /// A fault's `response_rate_limit`: the response body's KiB/s.
    pub throttle_kbps: Option<u64>,
    /// Rate limiters that let a limited request through: their
    /// `request_headers_to_add_when_not_enforced` go upstream.
    pub not_enforced: Vec<Arc<LocalRateLimit>>,
    /// The request header changes of the ext_authz checks that let it through and of the
    /// jwt_authn filter (a verified token's headers, the token taken out), in order.
    authz: Vec<AuthzChange>,
    /// The request's path with a verified token taken out of its query (jwt_authn, `forward:
    /// false`), when it changed.
    pub path: Option<http::uri::PathAndQuery>,
    /// The request as the last filter that cleared the route cache left it: the route is
    /// chosen again from it ([`RouteSnapshot::view`]).
    pub route_snapshot: Option<Box<RouteSnapshot>>,
    /// The filter that just ran cleared the route cache.
    clear_route: bool,
    /// The request headers after the filters' changes, when a filter changed them (what the
    /// router reads: hash policies, timeouts, mirrors).
    pub headers: Option<HeaderMap>,
    /// The request's dynamic metadata as the filters left it, when something reads it (a
    /// span's metadata custom tags).
    pub metadata: Option<metadata::DynamicMetadata>,
    /// A health check filter took the request as a health check (the access log's
    /// `not_health_check_filter` leaves it out).
    pub health_check: bool,
    /// The gRPC-Web filter took the request as a gRPC-Web call: its body and the answer are
    /// translated (an answer from a filter before it is not).
    pub grpc_web: Option<grpc_web::GrpcWebCall>,
}

/// One request header change a filter made.
enum AuthzChange {
    Remove(HeaderName),
    Set(HeaderName, HeaderValue),
    Append(HeaderName, HeaderValue),
}

impl Decoded {
    /// Adds the request headers the filters decided on.
    pub fn apply_request_headers(&self, h: &mut HeaderMap) {
        for l in &self.not_enforced {
            l.not_enforced_headers(h);
        }
        for c in &self.authz {
            c.apply(h);
        }
    }
}

impl AuthzChange {
    fn apply(&self, h: &mut HeaderMap) {
        match self {
            AuthzChange::Remove(n) => {
                h.remove(n);
            }
            AuthzChange::Set(n, v) => {
                h.insert(n.clone(), v.clone());
            }
            AuthzChange::Append(n, v) => {
                h.append(n.clone(), v.clone());
            }
        }
    }
}

/// The request as the filters see it.
#[derive(Clone, Copy)]
pub struct Request<'a, 'r> {
    /// The route selection.
    pub selection: &'a Selection<'r>,
    /// The route table the selection came from (to choose again after a filter cleared the
    /// route cache).
    pub table: &'r crate::route::RouteTable,
    /// `:method`.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request line and headers as routing saw them.
    pub view: &'a crate::route::RequestView<'a, HeaderMap>,
    /// The route configuration's `typed_per_filter_config`.
    pub route_config: &'a PerFilterConfigs,
    /// The connection's rate limit buckets.
    pub conn: Option<&'a ConnBuckets>,
    /// The stream's deadline (`max_stream_duration`), which a delay cannot outlive.
    pub deadline: Option<Instant>,
    /// How to find the downstream remote address after `x-forwarded-for` processing (rate
    /// limit descriptors' `remote_address`, RBAC's `remote_ip`).
    pub remote: super::sanitize::RemoteAddress,
    /// The connection's peer.
    pub peer: std::net::SocketAddr,
    /// The directly connected peer's address (RBAC's `direct_remote_ip`).
    pub direct: std::net::IpAddr,
    /// The connection's destination (the original destination of a captured connection).
    pub local: std::net::SocketAddr,
    /// The filters' counters (resolved when the HCM was built).
    pub stats: &'a FilterStats,
    /// What the downstream TLS handshake established (None: plaintext).
    pub tls: Option<&'a crate::downstream_tls::TlsFacts>,
    /// The request's HTTP version.
    pub version: http::Version,
    /// The HCM's clusters by name (an ext_authz service's cluster).
    pub clusters: &'a HashMap<String, Arc<crate::upstream::Cluster>>,
    /// The server fails its health checks (admin `/healthcheck/fail`).
    pub health_check_failed: bool,
    /// The node's cluster (`node.cluster`), which a health check's answer names.
    pub local_cluster: &'a str,
}

/// The counters of a chain's filters, by position (None: a filter that keeps none).
#[derive(Debug, Default)]
pub struct FilterStats(Vec<Option<Counters>>);

/// One filter's counters.
#[derive(Debug)]
enum Counters {
    HealthCheck(health_check::HealthCheckStats),
    Rbac(RbacStats),
    ExtAuthz(ext_authz::ExtAuthzStats),
    JwtAuthn(jwt_authn::JwtAuthnStats),
}

impl HttpFilters {
    /// Whether only the router is configured.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Whether a connection may need its own rate limit buckets: a local rate limit filter is
    /// configured (its per-route configs may count per connection even when its own does not).
    pub fn per_connection(&self) -> bool {
        self.filters
            .iter()
            .any(|f| matches!(&f.kind, Kind::LocalRateLimit(_)))
    }

    /// The filters' counters in `store` for an HCM with `stat_prefix` and route table `table`.
    pub fn stats(
        &self,
        table: &crate::route::RouteTable,
        store: &crate::server::stats::StatsStore,
        stat_prefix: &str,
    ) -> FilterStats {
        FilterStats(
            self.filters
                .iter()
                .map(|f| match &f.kind {
                    Kind::Rbac(r) => {
                        let routes =
                            per_filter_levels(table).filter_map(|l| match l.get(&f.name) {
                                Some(PerRoute::Rbac(r)) => Some(&**r),
                                _ => None,
                            });
                        let counter = |name: &str, lazy: bool| {
                            store.http_filter_counter(stat_prefix, name, lazy)
                        };
                        Some(Counters::Rbac(r.stats(routes, &counter)))
                    }
                    Kind::ExtAuthz(a) => {
                        Some(Counters::ExtAuthz(a.stats(&|name: &str| {
                            store.http_filter_counter(stat_prefix, name, false)
                        })))
                    }
                    Kind::JwtAuthn(j) => {
                        Some(Counters::JwtAuthn(j.stats(&|name: &str| {
                            store.http_filter_counter(stat_prefix, name, false)
                        })))
                    }
                    Kind::HealthCheck(_) => {
                        Some(Counters::HealthCheck(health_check::HealthCheckStats::new(
                            &|name: &str| store.http_filter_counter(stat_prefix, name, false),
                        )))
                    }
                    _ => None,
                })
                .collect(),
        )
    }

    /// What the chain's RBAC filters say of a request (`sluice explain`): each enabled one in
    /// order, with where its rules come from, up to the first that denies.
    pub fn explain_rbac<H: crate::route::HeaderLookup + ?Sized>(
        &self,
        selection: &Selection<'_>,
        route_config: &PerFilterConfigs,
        facts: &crate::rbac::Facts<'_, H>,
    ) -> Vec<(String, &'static str, crate::rbac::rules::Explained)> {
        let levels = levels(selection, route_config);
        let mut out = Vec::new();
        for f in &self.filters {
            let Kind::Rbac(base) = &f.kind else { continue };
            if f.disabled_at(&levels) {
                continue;
            }
            let (rules, from) = match levels.iter().flatten().find_map(|l| l.get(&f.name)) {
                Some(PerRoute::Rbac(r)) => (&**r, "RBACPerRoute"),
                _ => (&**base, "filter"),
            };
            let e = rules.explain(facts);
            let denied = e.denied;
            out.push((f.name.clone(), from, e));
            if denied {
                break;
            }
        }
        out
    }

    /// The filter names in order (for tests and the explain output).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.filters.iter().map(|f| f.name.as_str())
    }

    /// Runs the chain's request side (Envoy's decodeHeaders of each filter); an ext_authz
    /// filter with `with_request_body` reads what it needs of `body` when its turn comes.
    pub async fn decode(
        &self,
        orig: Request<'_, '_>,
        body_slot: &mut ext_authz::body::BodySlot,
    ) -> Decoded {
        let mut out = Decoded {
            local: None,
            delayed: false,
            encode: Encode::default(),
            guards: Vec::new(),
            throttle_kbps: None,
            not_enforced: Vec::new(),
            authz: Vec::new(),
            path: None,
            route_snapshot: None,
            clear_route: false,
            headers: None,
            metadata: None,
            grpc_web: None,
            health_check: false,
        };
        let mut metadata = metadata::DynamicMetadata::default();
        // The request headers after an ext_authz check changed them, as the later filters see
        // them (the changes themselves go upstream from `out.authz`).
        let mut changed: Option<HeaderMap> = None;
        // The path after a jwt_authn filter took a token out of its query.
        let mut new_path: Option<http::uri::PathAndQuery> = None;
        // The request as the last filter that cleared the route cache left it.
        let mut route_snapshot: Option<Box<RouteSnapshot>> = None;
        // Which filters run is decided by the first route (Envoy builds the chain on arrival).
        let first_levels = levels(orig.selection, orig.route_config);
        // A failing server's health check filter marks every answer through it, also one a
        // filter before it makes (a local reply passes all the encoder filters).
        out.encode.health_check_failed = orig.health_check_failed
            && self
                .filters
                .iter()
                .any(|f| matches!(f.kind, Kind::HealthCheck(_)) && !f.disabled_at(&first_levels));
        'chain: for (i, f) in self.filters.iter().enumerate() {
            if std::mem::take(&mut out.clear_route) {
                route_snapshot = Some(snapshot(&changed, orig.headers, &new_path, &metadata));
            }
            if f.disabled_at(&first_levels) {
                continue;
            }
            // The route chosen again when a filter before cleared the route cache.
            let chosen_again;
            let selection = match &route_snapshot {
                Some(s) => {
                    chosen_again = orig.table.select(&s.view(orig.view));
                    &chosen_again
                }
                None => orig.selection,
            };
            let levels = levels(selection, orig.route_config);
            // The request as the filters before changed it: headers (ext_authz, jwt_authn)
            // and the path (a token taken out of the query).
            let view;
            let req = match (&changed, &new_path) {
                (None, None) => Request { selection, ..orig },
                (h, p) => {
                    let headers = h.as_ref().unwrap_or(orig.headers);
                    view = crate::route::RequestView {
                        headers,
                        path: p.as_ref().map_or(orig.view.path, |p| p.as_str()),
                        ..*orig.view
                    };
                    Request {
                        selection,
                        headers,
                        view: &view,
                        ..orig
                    }
                }
            };
            let authz_before = out.authz.len();
            let specific = levels.iter().flatten().find_map(|l| l.get(&f.name));
            match &f.kind {
                Kind::Fault(base) => {
                    let cfg = match specific {
                        Some(PerRoute::Fault(c)) => c,
                        _ => base,
                    };
                    let cluster = match req.selection {
                        Selection::Forward(fw) => fw.cluster.name(),
                        _ => None,
                    };
                    let Some(inj) = cfg.decide(req.headers, cluster, rand::random) else {
                        continue;
                    };
                    out.guards.push(inj.guard);
                    out.throttle_kbps = inj.throttle_kbps.or(out.throttle_kbps);
                    if let Some(d) = inj.delay {
                        out.delayed = true;
                        let until = Instant::now() + d;
                        match req.deadline {
                            Some(dl) if dl <= until => {
                                tokio::time::sleep_until(dl.into()).await;
                                out.local = Some((
                                    local_reply::for_flag(Flag::DurationTimeout),
                                    Flag::DurationTimeout,
                                ));
                                break 'chain;
                            }
                            _ => tokio::time::sleep_until(until.into()).await,
                        }
                    }
                    if let Some(a) = inj.abort {
                        out.local = Some((abort_reply(a), Flag::FaultInjected));
                        break 'chain;
                    }
                }
                Kind::Cors => {
                    let Selection::Forward(_) = req.selection else {
                        continue;
                    };
                    let pol = cors_policies(&levels, &f.name);
                    match cors::decide(&pol, req.method, req.headers, rand::random()) {
                        cors::Decision::None => {}
                        cors::Decision::Allowed(a) => out.encode.cors = Some(a),
                        cors::Decision::Preflight(h) => {
                            // Envoy encodes the preflight answer itself, not as a local reply:
                            // local_reply_config and the gRPC conversion leave it alone.
                            let mut r = http::Response::new(local_reply::empty());
                            r.headers_mut().insert(
                                http::header::CONTENT_LENGTH,
                                http::HeaderValue::from_static("0"),
                            );
                            r.headers_mut().extend(h);
                            out.local = Some((r, Flag::None));
                            break 'chain;
                        }
                    }
                }
                Kind::Rbac(base) => {
                    let cfg = match specific {
                        Some(PerRoute::Rbac(c)) => c,
                        _ => base,
                    };
                    // The x-forwarded-for walk only when a `remote_ip` principal reads it.
                    let remote = match cfg.needs_remote() {
                        true => req.remote.resolve(req.headers),
                        false => req.peer.ip(),
                    };
                    let facts = crate::rbac::Facts {
                        request: Some(req.view),
                        peer: req.peer,
                        direct: req.direct,
                        remote,
                        local: req.local,
                        sni: req.tls.and_then(|t| t.sni.as_deref()).unwrap_or(""),
                        tls: req.tls,
                        metadata: Some(&metadata),
                    };
                    let stats = match req.stats.0.get(i) {
                        Some(Some(Counters::Rbac(s))) => Some(s),
                        _ => None,
                    };
                    let d = cfg.decide(&facts, stats);
                    if self.reads_metadata {
                        d.write_metadata(cfg, |k, v| metadata.set(metadata::RBAC_NAMESPACE, k, v));
                    }
                    if let Some(policy) = d.denied {
                        tracing::debug!(
                            filter = %f.name,
                            policy = policy.unwrap_or("none"),
                            "rbac: enforced denied"
                        );
                        let mut r = local_reply::reply(403, rbac::DENIED_BODY);
                        r.extensions_mut().insert(
                            crate::http::access_log::ResponseDetails::RbacDenied(
                                policy.map(Into::into),
                            ),
                        );
                        out.local = Some((r, Flag::None));
                        break 'chain;
                    }
                }
                Kind::ExtAuthz(cfg) => {
                    // Envoy checks nothing for a request without a route (`getPerRouteFlags`).
                    if matches!(req.selection, Selection::NoRoute)
                        || matches!(specific, Some(PerRoute::ExtAuthz(r)) if r.disabled)
                    {
                        continue;
                    }
                    let no_body = matches!(specific, Some(PerRoute::ExtAuthz(r)) if r.no_body);
                    let stats = match req.stats.0.get(i) {
                        Some(Some(Counters::ExtAuthz(s))) => Some(s),
                        _ => None,
                    };
                    // Envoy's `filterEnabled`: the runtime share and the metadata both.
                    let enabled = cfg.enabled_share.is_none_or(|f| f.holds(rand::random()))
                        && cfg
                            .enabled_metadata
                            .as_ref()
                            .is_none_or(|m| m.matches(&metadata));
                    if !enabled {
                        if let Some(s) = stats {
                            s.disabled.inc();
                        }
                        if cfg.deny_at_disable {
                            out.local = Some(ext_authz_error_reply(cfg));
                            break 'chain;
                        }
                        continue;
                    }
                    // Envoy buffers for a filter that runs (the slot never reads an upgrade's).
                    if let (Some(s), false) = (&cfg.with_body, no_body) {
                        if let Err(e) = body_slot.fill(s, req.deadline).await {
                            out.local = Some(body_read_failed(e));
                            break 'chain;
                        }
                    }
                    let body = match (&cfg.with_body, no_body) {
                        (Some(s), false) => match body_slot.take(s) {
                            Some(ext_authz::body::ForCheck::TooLarge) => {
                                out.local = Some((payload_too_large(), Flag::None));
                                break 'chain;
                            }
                            Some(ext_authz::body::ForCheck::Send { data, partial }) => {
                                Some(ext_authz::CheckBody {
                                    data,
                                    partial,
                                    pack_as_bytes: s.pack_as_bytes,
                                })
                            }
                            None => None,
                        },
                        _ => None,
                    };
                    let received = body_slot.received();
                    let context = context_extensions(&levels, &f.name);
                    if let Some(local) =
                        ext_authz_decide(cfg, &req, &context, body, received, stats, &mut out).await
                    {
                        out.local = Some(local);
                        break 'chain;
                    }
                }
                Kind::JwtAuthn(cfg) => {
                    let per_route = match specific {
                        Some(PerRoute::JwtAuthn(r)) => Some(&**r),
                        _ => None,
                    };
                    let stats = match req.stats.0.get(i) {
                        Some(Some(Counters::JwtAuthn(s))) => Some(s),
                        _ => None,
                    };
                    let decide = Box::pin(cfg.decide(
                        req.view,
                        per_route,
                        stats,
                        &mut metadata,
                        req.clusters,
                    ));
                    // The stream's deadline bounds a key set fetch too.
                    let decided = match req.deadline {
                        None => decide.await,
                        Some(dl) => match tokio::time::timeout_at(dl.into(), decide).await {
                            Ok(d) => d,
                            Err(_) => {
                                out.local = Some((
                                    local_reply::for_flag(Flag::DurationTimeout),
                                    Flag::DurationTimeout,
                                ));
                                break 'chain;
                            }
                        },
                    };
                    match decided {
                        jwt_authn::Outcome::Deny(r) => {
                            out.local = Some((r, Flag::None));
                            break 'chain;
                        }
                        jwt_authn::Outcome::Pass {
                            changes,
                            path,
                            clear_route,
                        } => {
                            out.authz.extend(changes);
                            if let Some(p) = path {
                                new_path = p.parse().ok();
                            }
                            out.clear_route = clear_route;
                        }
                    }
                }
                Kind::Buffer(base) => {
                    let cfg = match specific {
                        Some(PerRoute::Buffer(c)) => c,
                        _ => base,
                    };
                    if cfg.disabled {
                        continue;
                    }
                    let s = cfg.body();
                    if let Err(e) = body_slot.fill(&s, req.deadline).await {
                        out.local = Some(body_read_failed(e));
                        break 'chain;
                    }
                    if body_slot.buffer_overflows(cfg.max) {
                        out.local = Some((payload_too_large(), Flag::None));
                        break 'chain;
                    }
                    // The whole body goes on with its length, as Envoy's
                    // `maybeAddContentLength` (the request's, as the filters before left it).
                    let length_known = out.authz.iter().rev().find_map(|c| match c {
                        AuthzChange::Set(n, _) if n == http::header::CONTENT_LENGTH => Some(true),
                        AuthzChange::Remove(n) if n == http::header::CONTENT_LENGTH => Some(false),
                        _ => None,
                    });
                    if body_slot.had_body()
                        && !length_known.unwrap_or_else(|| {
                            req.headers.contains_key(http::header::CONTENT_LENGTH)
                        })
                    {
                        let len = HeaderValue::from(body_slot.received());
                        out.authz
                            .push(AuthzChange::Set(http::header::CONTENT_LENGTH, len));
                        body_slot.set_sized();
                    }
                }
                Kind::HealthCheck(hc) => {
                    if !hc.matches(req.view) {
                        continue;
                    }
                    out.health_check = true;
                    let cluster = HeaderValue::from_str(req.local_cluster)
                        .unwrap_or_else(|_| HeaderValue::from_static(""));
                    out.encode.health_checked = Some((hc.clone(), cluster));
                    let answer = hc.answer(req.health_check_failed, req.clusters);
                    let stats = match req.stats.0.get(i) {
                        Some(Some(Counters::HealthCheck(s))) => Some(s),
                        _ => None,
                    };
                    if let Some(local) = health_check::reply(answer, stats) {
                        out.local = Some(local);
                        break 'chain;
                    }
                }
                Kind::GrpcWeb => {
                    if out.grpc_web.is_none() {
                        out.grpc_web = grpc_web::decode(req.headers, &mut out.authz);
                    }
                }
                Kind::LocalRateLimit(base) => {
                    let cfg = match specific {
                        Some(PerRoute::LocalRateLimit(c)) => c,
                        _ => base,
                    };
                    let random = rand::random();
                    if !cfg.enabled(random) {
                        continue;
                    }
                    let descriptors = if cfg.has_descriptors() {
                        request_descriptors(cfg, &req)
                    } else {
                        SmallVec::new()
                    };
                    let Some(v) = cfg.check(req.conn, random, &descriptors) else {
                        continue;
                    };
                    out.encode.x_ratelimit = v.x_headers.or(out.encode.x_ratelimit);
                    if v.not_enforced {
                        out.not_enforced.push(cfg.clone());
                    }
                    if let Some(status) = v.limited {
                        let mut r = local_reply::reply(status, "local_rate_limited");
                        cfg.limited_headers(r.headers_mut(), v.retry_after);
                        if cfg.resource_exhausted {
                            if let Some(l) = r.extensions_mut().get_mut::<local_reply::LocalReply>()
                            {
                                l.grpc_status = Some(8);
                            }
                        }
                        out.local = Some((r, Flag::RateLimited));
                        break 'chain;
                    }
                }
            }
            if out.authz.len() > authz_before {
                let h = changed.get_or_insert_with(|| orig.headers.clone());
                for c in &out.authz[authz_before..] {
                    c.apply(h);
                }
            }
        }
        if std::mem::take(&mut out.clear_route) {
            route_snapshot = Some(snapshot(&changed, orig.headers, &new_path, &metadata));
        }
        out.route_snapshot = route_snapshot;
        out.headers = changed;
        out.path = new_path;
        out.metadata = self.reads_metadata.then_some(metadata);
        out
    }
}

/// The HCM's reply to a body over an ext_authz filter's `max_request_bytes` (Envoy's decoder
/// buffer overflowing): 413 `Payload Too Large`.
fn payload_too_large() -> Response<Body> {
    let mut r = local_reply::reply(413, "Payload Too Large");
    // Envoy answers while the request is still coming (its HTTP/1 codec ends a body with a
    // frame of its own), so the connection closes, whatever of the body came.
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r.extensions_mut()
        .insert(crate::http::access_log::ResponseDetails::Named(
            "request_payload_too_large",
        ));
    r
}

/// The reply when the body an ext_authz check needs could not be read: the client's body broke
/// off (400, the connection closes), no frame within `stream_idle_timeout` (408 `stream
/// timeout`), `request_timeout` (408) or the stream's deadline passed.
fn body_read_failed(e: ext_authz::body::ReadError) -> (Response<Body>, Flag) {
    use ext_authz::body::ReadError;
    match e {
        ReadError::Broken => (local_reply::reply(400, ""), Flag::DownstreamTermination),
        ReadError::Idle => (
            local_reply::reply(408, "stream timeout"),
            Flag::StreamIdleTimeout,
        ),
        ReadError::RequestTimeout => (local_reply::reply(408, "request timeout"), Flag::None),
        ReadError::Deadline => (
            local_reply::for_flag(Flag::DurationTimeout),
            Flag::DurationTimeout,
        ),
    }
}

/// The request as the filters so far left it, to choose the route again from.
fn snapshot(
    changed: &Option<HeaderMap>,
    orig: &HeaderMap,
    path: &Option<http::uri::PathAndQuery>,
    metadata: &metadata::DynamicMetadata,
) -> Box<RouteSnapshot> {
    Box::new(RouteSnapshot::new(
        changed.as_ref(),
        orig,
        path.clone(),
        metadata.clone(),
    ))
}

/// The `context_extensions` of a filter's `ExtAuthzPerRoute` levels, merged from the least
/// specific to the most (the more specific wins a key), as Envoy merges them.
fn context_extensions(
    levels: &[Option<&PerFilterConfigs>; 4],
    name: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in levels.iter().rev().flatten() {
        let Some(PerRoute::ExtAuthz(r)) = l.get(name) else {
            continue;
        };
        for (k, v) in &r.context_extensions {
            match out.iter_mut().find(|(ck, _)| ck == k) {
                Some(e) => e.1 = v.clone(),
                None => out.push((k.clone(), v.clone())),
            }
        }
    }
    out
}

/// Runs one ext_authz check: None when the request goes on (with the check's header changes
/// in `out`), else the local reply.
async fn ext_authz_decide(
    cfg: &ExtAuthz,
    req: &Request<'_, '_>,
    context_extensions: &[(String, String)],
    body: Option<ext_authz::CheckBody<'_>>,
    received: u64,
    stats: Option<&ext_authz::ExtAuthzStats>,
    out: &mut Decoded,
) -> Option<(Response<Body>, Flag)> {
    use crate::http::access_log::ResponseDetails;
    let checked = ext_authz::Checked {
        method: req.method,
        authority: req.view.authority,
        path: req.view.path,
        scheme: req.view.scheme,
        version: req.version,
        headers: req.headers,
        peer: req.peer,
        local: req.local,
        tls: req.tls,
        context_extensions,
        body,
        received,
    };
    let count = |f: fn(&ext_authz::ExtAuthzStats) -> &crate::server::stats::Counter| {
        if let Some(s) = stats {
            f(s).inc();
        }
    };
    // Boxed: only a chain with ext_authz carries the check's state.
    let check = Box::pin(ext_authz::run(cfg, &checked, req.clusters));
    // The stream's deadline bounds the check too, as it bounds a fault delay.
    let verdict = match req.deadline {
        None => check.await,
        Some(dl) => match tokio::time::timeout_at(dl.into(), check).await {
            Ok(v) => v,
            Err(_) => {
                return Some((
                    local_reply::for_flag(Flag::DurationTimeout),
                    Flag::DurationTimeout,
                ))
            }
        },
    };
    match verdict {
        ext_authz::Verdict::Ok {
            remove,
            set,
            append,
            response,
        } => {
            count(|s| &s.ok);
            // Envoy clears the route cache for a check that changes a request header.
            out.clear_route = cfg.clear_route_cache
                && !(set.is_empty() && append.is_empty() && remove.is_empty());
            // Envoy's order: set, add, then remove.
            out.authz
                .extend(set.into_iter().map(|(n, v)| AuthzChange::Set(n, v)));
            out.authz
                .extend(append.into_iter().map(|(n, v)| AuthzChange::Append(n, v)));
            out.authz
                .extend(remove.into_iter().map(AuthzChange::Remove));
            out.encode.authz.extend(response);
            None
        }
        ext_authz::Verdict::Denied {
            status,
            headers,
            body,
        } => {
            count(|s| &s.denied);
            let mut r = local_reply::reply_bytes(status, body);
            for (n, _) in &headers {
                r.headers_mut().remove(n);
            }
            for (n, v) in headers {
                r.headers_mut().append(n, v);
            }
            r.extensions_mut()
                .insert(ResponseDetails::Named("ext_authz_denied"));
            Some((r, Flag::UnauthorizedExternalService))
        }
        ext_authz::Verdict::Error if cfg.failure_mode_allow => {
            count(|s| &s.error);
            count(|s| &s.failure_mode_allowed);
            if cfg.failure_header {
                out.authz.push(AuthzChange::Set(
                    HeaderName::from_static("x-envoy-auth-failure-mode-allowed"),
                    HeaderValue::from_static("true"),
                ));
            }
            None
        }
        ext_authz::Verdict::Error => {
            count(|s| &s.error);
            Some(ext_authz_error_reply(cfg))
        }
    }
}

/// The reply to a check that failed closed, or to a request the filter is disabled for under
/// `deny_at_disable`: `status_on_error`, no body, UAEX.
fn ext_authz_error_reply(cfg: &ExtAuthz) -> (Response<Body>, Flag) {
    let mut r = local_reply::reply(cfg.status_on_error, "");
    r.extensions_mut()
        .insert(crate::http::access_log::ResponseDetails::Named(
            "ext_authz_error",
        ));
    (r, Flag::UnauthorizedExternalService)
}

/// A request's rate limit descriptors for `cfg`: from the filter's own `rate_limits`, else
/// (for a forwarded request) the route's of the filter's stage and, per `vh_rate_limits` (or the
/// route's `include_vh_rate_limits`), the virtual host's; entries with a `disable_key` are
/// skipped (Envoy's `Filter::populateDescriptors`).
fn request_descriptors<'a>(
    cfg: &'a LocalRateLimit,
    req: &Request<'a, '_>,
) -> SmallVec<[Descriptor<'a>; 2]> {
    let fw = match req.selection {
        Selection::Forward(fw) => Some(fw),
        _ => None,
    };
    let remote = || Some(req.remote.resolve(req.headers));
    let facts = RequestFacts {
        request: req.view,
        remote: &remote,
        cluster: fw.and_then(|f| f.cluster.name()),
    };
    let mut out = SmallVec::new();
    if !cfg.rate_limits.is_empty() {
        out.extend(cfg.rate_limits.iter().filter_map(|e| e.descriptor(&facts)));
        return out;
    }
    let Some(fw) = fw else {
        return out;
    };
    let mut add = |entries: &'a [RateLimitEntry]| {
        out.extend(
            entries
                .iter()
                .filter(|e| e.stage == cfg.stage && !e.disabled)
                .filter_map(|e| e.descriptor(&facts)),
        )
    };
    add(&fw.action.rate_limits);
    let vh = if fw.action.include_vh_rate_limits {
        VhRateLimits::Include
    } else {
        cfg.vh_rate_limits
    };
    match vh {
        VhRateLimits::Include => add(&fw.vhost.rate_limits),
        VhRateLimits::Override if fw.action.rate_limits.is_empty() => add(&fw.vhost.rate_limits),
        _ => {}
    }
    out
}

/// Every `typed_per_filter_config` level of a route table: the table's, each virtual host's,
/// route's and weighted cluster's.
fn per_filter_levels(t: &crate::route::RouteTable) -> impl Iterator<Item = &PerFilterConfigs> {
    std::iter::once(&t.per_filter).chain(t.virtual_hosts.iter().flat_map(|vh| {
        std::iter::once(&vh.per_filter).chain(vh.routes.iter().flat_map(|r| {
            let weighted = match &r.action {
                crate::route::RouteAction::Forward(f) => match &f.cluster {
                    crate::route::ClusterSpecifier::Weighted(w) => &w.clusters[..],
                    _ => &[],
                },
                _ => &[],
            };
            std::iter::once(&r.per_filter).chain(weighted.iter().map(|w| &w.per_filter))
        }))
    }))
}

/// The per-filter config levels of a selection, most specific first: weighted cluster,
/// route, virtual host, route configuration (only with a route, as Envoy).
fn levels<'a>(
    s: &Selection<'a>,
    route_config: &'a PerFilterConfigs,
) -> [Option<&'a PerFilterConfigs>; 4] {
    let weighted = match s {
        Selection::Forward(f) => f.weighted.map(|w| &w.per_filter),
        _ => None,
    };
    [
        weighted,
        s.route().map(|r| &r.per_filter),
        s.vhost().map(|v| &v.per_filter),
        s.route().map(|_| route_config),
    ]
}

/// Envoy's CORS policies: the typed per-filter ones when any level has one, else the
/// deprecated `cors` fields (route, then virtual host).
fn cors_policies<'a>(levels: &[Option<&'a PerFilterConfigs>; 4], name: &str) -> cors::Policies<'a> {
    let typed = levels.map(|l| match l.and_then(|l| l.get(name)) {
        Some(PerRoute::Cors(c)) => Some(&**c),
        _ => None,
    });
    if typed.iter().any(Option::is_some) {
        return cors::Policies(typed);
    }
    cors::Policies([
        None,
        levels[1].and_then(|l| l.legacy_cors.as_deref()),
        levels[2].and_then(|l| l.legacy_cors.as_deref()),
        None,
    ])
}

/// Envoy's fault abort reply: its body (`fault filter abort` by default); for a gRPC request
/// the configured `grpc_status`, else the one mapped from the HTTP status
/// (`local_reply::to_grpc`).
fn abort_reply(a: fault::AbortReply) -> Response<Body> {
    let mut r = local_reply::reply(a.http, &a.body);
    if let Some(l) = r.extensions_mut().get_mut::<local_reply::LocalReply>() {
        l.grpc_status = a.grpc;
    }
    r
}
