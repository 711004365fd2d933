//! The steps a request goes through before anything goes upstream. [`before_routing`] (head
//! limits, missing Host, request-target checks, upgrade policy, header sanitation,
//! `x-request-id`, the HCM's path options and Host port stripping) is the one
//! implementation: [`super::handle`] calls it. [`preroute`] adds route selection, the forward plan
//! and the route's header mutations as one pure function over any body type, so a test or the
//! fuzz target `route` (fuzz/, docs/fuzzing.md) can drive them with arbitrary requests.
//! [`for_explain`] runs [`before_routing`] for `sluice explain`, so it routes what the router sees.

use http::{header, HeaderMap, HeaderValue, Request, Uri, Version};

use super::{
    forward, limits, normalize, sanitize, target, upgrade_policy, uuid_v4, Authority, ConnInfo,
};
use crate::{
    config,
    route::{
        format::{FormatContext, RequestLine},
        HeaderMutations, RequestView, Selection,
    },
};

/// Why a request was refused before routing.
pub(super) enum Refused {
    /// HTTP/1.0 without `accept_http_10` (Envoy's codec: 426 `Upgrade Required`).
    Http10,
    /// HTTP/1.1, or HTTP/1.0 without `default_host_for_http_10`, without Host (Envoy's
    /// codec: 400).
    MissingHost,
    /// CONNECT, authority-form targets ([`target::normalize`]); a head over the HCM's limits
    /// or with a refused underscore ([`limits::check`]).
    Target(target::Refusal),
    /// An upgrade `upgrade_configs` does not enable (403).
    Upgrade,
    /// A path the HCM's path options refuse (400, connection closed).
    Path,
    /// `UNESCAPE_AND_REDIRECT` found an escaped slash: 307 to this path.
    PathRedirect(String),
}

impl Refused {
    /// Envoy's `%RESPONSE_CODE_DETAILS%` for it, and whether its codec refused it (no request
    /// in the log line, flag `DPE`).
    pub(super) fn details(&self) -> (&'static str, bool) {
        match self {
            Refused::Http10 => ("low_version", true),
            Refused::MissingHost => ("missing_host_header", false),
            Refused::Target(r) => (r.details, r.codec),
            Refused::Upgrade => ("upgrade_failed", false),
            Refused::Path | Refused::PathRedirect(_) => ("path_normalization_failed", false),
        }
    }

    /// The status Envoy answers with.
    pub(super) fn status(&self) -> u16 {
        match self {
            Refused::Http10 => 426,
            Refused::MissingHost => 400,
            Refused::Target(r) => r.status,
            Refused::Upgrade => 403,
            Refused::Path => 400,
            Refused::PathRedirect(_) => 307,
        }
    }
}

/// The steps before routing, in Envoy's order, shared by [`super::handle`] and [`preroute`]:
/// the missing-Host refusal, the request-target checks (CONNECT, authority form, userinfo,
/// repeated Host), the upgrade policy, header sanitation, `x-request-id` (regenerated for
/// external requests under `use_remote_address` unless `preserve_external_request_id`), then
/// the path options and the Host's port ([`normalize`]).
pub(super) fn before_routing<B>(
    cfg: &config::HttpConnectionManager,
    conn: &ConnInfo,
    scheme: &'static str,
    req: &mut Request<B>,
) -> Result<(), Refused> {
    let version = req.version();
    if version == Version::HTTP_10 {
        http10(cfg, req)?;
    }
    limits::check(&cfg.head_limits, req).map_err(Refused::Target)?;
    if version == Version::HTTP_11
        && req.uri().authority().is_none()
        && !req.headers().contains_key(header::HOST)
    {
        return Err(Refused::MissingHost);
    }
    target::normalize(req).map_err(Refused::Target)?;
    // Upgrades: h2c is stripped and served as plain HTTP/1.1; whether another upgrade may
    // become a tunnel is decided once the route is known ([`upgrade_refused`]).
    upgrade_policy::strip_h2c(version, req.headers_mut());
    let tls = req
        .extensions()
        .get::<std::sync::Arc<crate::downstream_tls::TlsFacts>>()
        .cloned();
    let origin = sanitize::request(cfg, conn, scheme, tls.as_deref(), req.headers_mut());
    let h = req.headers_mut();
    // Envoy regenerates an edge request's id (external, under `use_remote_address`) unless
    // `preserve_external_request_id`. `generate_request_id: false` neither adds nor replaces
    // one. An empty id counts as none. An edge id that is kept loses its packed trace reason.
    let edge = origin == sanitize::Origin::Edge;
    let distrust_id = edge && !cfg.preserve_external_request_id;
    let absent = h.get("x-request-id").is_none_or(HeaderValue::is_empty);
    if cfg.generate_request_id && (distrust_id || absent) {
        if let Ok(v) = HeaderValue::from_str(&uuid_v4()) {
            h.insert("x-request-id", v);
        }
    } else if cfg.generate_request_id && edge {
        super::trace::clear_external_reason(cfg.request_id, h);
    }
    normalize_path(&cfg.path_normalization, req)?;
    if cfg.strip_trailing_host_dot {
        strip_trailing_host_dot(req);
    }
    strip_host_port(cfg.strip_port, conn.orig_dst.port(), req);
    Ok(())
}

/// `strip_trailing_host_dot` on the `:authority` (HTTP/2) or Host, before its port is stripped
/// (Envoy's `maybeNormalizeHost` order).
fn strip_trailing_host_dot<B>(req: &mut Request<B>) {
    if let Some(a) = req.uri().authority() {
        let Some(host) = normalize::strip_trailing_dot(a.as_str()) else {
            return;
        };
        let mut parts = req.uri().clone().into_parts();
        parts.authority = host.parse().ok();
        if let Ok(u) = Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
        return;
    }
    let stripped = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(normalize::strip_trailing_dot);
    if let Some(v) = stripped.and_then(|h| HeaderValue::from_str(&h).ok()) {
        req.headers_mut().insert(header::HOST, v);
    }
}

/// An HTTP/1.0 request: refused unless `accept_http_10`; one without Host takes
/// `default_host_for_http_10`, else it is refused as Envoy's codec does.
fn http10<B>(cfg: &config::HttpConnectionManager, req: &mut Request<B>) -> Result<(), Refused> {
    let Some(h10) = &cfg.http10 else {
        return Err(Refused::Http10);
    };
    if req.uri().authority().is_none() && !req.headers().contains_key(header::HOST) {
        let host = h10.default_host.clone().ok_or(Refused::MissingHost)?;
        req.headers_mut().insert(header::HOST, host);
    }
    Ok(())
}

/// The upgrade decision once the route is selected (Envoy's `ActiveStream::decodeHeaders`
/// after `createFilterChain`): whether the request is refused (403, as [`Refused::Upgrade`]).
/// A forwarding route's `upgrade_configs` decide for their types, else the HCM's; without a
/// route nothing is refused (the request goes on to its 404).
pub(crate) fn upgrade_refused(
    cfg: &config::HttpConnectionManager,
    selection: &Selection<'_>,
    version: Version,
    headers: &HeaderMap,
) -> bool {
    let route: &[(String, bool)] = match selection {
        Selection::Forward(f) => &f.action.upgrades,
        Selection::NoRoute => return false,
        _ => &[],
    };
    upgrade_policy::for_route(&cfg.upgrade_configs, route, version, headers)
        == upgrade_policy::Decision::Refuse
}

/// The HCM's path options on `req`'s path (the URI is replaced only when the path changes).
fn normalize_path<B>(cfg: &config::PathNormalization, req: &mut Request<B>) -> Result<(), Refused> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let new = match normalize::path(cfg, pq) {
        normalize::PathVerdict::Keep => return Ok(()),
        normalize::PathVerdict::Reject => return Err(Refused::Path),
        normalize::PathVerdict::Redirect(p) => return Err(Refused::PathRedirect(p)),
        normalize::PathVerdict::Rewrite(p) => p,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(new.try_into().map_err(|_| Refused::Path)?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| Refused::Path)?;
    Ok(())
}

/// `strip_matching_host_port` / `strip_any_host_port` on the `:authority` (HTTP/2) or Host.
fn strip_host_port<B>(mode: config::StripPort, local_port: u16, req: &mut Request<B>) {
    if mode == config::StripPort::Keep {
        return;
    }
    if let Some(a) = req.uri().authority() {
        let Some(host) = normalize::strip_port(mode, a.as_str(), local_port) else {
            return;
        };
        let mut parts = req.uri().clone().into_parts();
        parts.authority = host.parse().ok();
        if let Ok(u) = Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
        return;
    }
    let Some(v) = req.headers().get(header::HOST) else {
        return;
    };
    let Some(host) = v
        .to_str()
        .ok()
        .and_then(|h| normalize::strip_port(mode, h, local_port))
    else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(host) {
        req.headers_mut().insert(header::HOST, v);
    }
}

/// The steps before routing for `sluice explain`: `req` as routing sees it (headers sanitized,
/// repeated Hosts joined) and its authority, or the refusal's status and why.
pub fn for_explain<B>(
    cfg: &config::HttpConnectionManager,
    conn: &ConnInfo,
    req: &mut Request<B>,
) -> Result<Option<String>, (u16, String)> {
    let scheme = cfg.request_scheme(conn.tls);
    before_routing(cfg, conn, scheme, req).map_err(|r| {
        let why = match &r {
            Refused::Http10 => "HTTP/1.0 without accept_http_10".to_string(),
            Refused::MissingHost => "request without Host".to_string(),
            Refused::Target(t) if t.body.is_empty() => "CONNECT (no route takes it)".to_string(),
            Refused::Target(t) => format!("request target or Host refused ({})", t.body),
            Refused::Upgrade => "an upgrade upgrade_configs does not enable".to_string(),
            Refused::Path => "path refused by the HCM's path normalization".to_string(),
            Refused::PathRedirect(p) => format!("escaped slashes: redirected to {p}"),
        };
        (r.status(), why)
    })?;
    Ok(Authority::of(req).map(|a| a.as_str().to_string()))
}

/// What the pre-forward steps decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreRoute {
    /// Refused before routing (400 missing Host or bad target, 404 CONNECT, 403 upgrade).
    Refused(u16),
    /// No virtual host or route matched (404 NR).
    NoRoute,
    /// A direct response with this status.
    DirectResponse(u16),
    /// A redirect with this status.
    Redirect(u16),
    /// Forwarded to this cluster (`None`: `cluster_header` absent).
    Forward(Option<String>),
}

/// Runs the pre-forward steps on `req` (headers are sanitized and mutated in place, as they
/// would go upstream); `random` picks among weighted clusters.
pub fn preroute<B>(
    cfg: &config::HttpConnectionManager,
    conn: &ConnInfo,
    req: &mut Request<B>,
    random: u64,
) -> PreRoute {
    let scheme = cfg.request_scheme(conn.tls);
    if let Err(r) = before_routing(cfg, conn, scheme, req) {
        return PreRoute::Refused(r.status());
    }
    let version = req.version();
    let authority = Authority::of(req);
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let fmt = FormatContext {
        request: Some(req.headers()),
        line: Some(RequestLine::new(req.method(), path.as_str(), scheme)),
        downstream_remote: Some(conn.peer),
        downstream_local: Some(conn.local),
        upstream_remote: None,
        protocol: Some(super::protocol_str(version)),
        start: None,
        response_code: None,
        log: None,
    };
    let view = RequestView {
        authority: authority.as_ref().map(Authority::as_str),
        path: path.as_str(),
        method: req.method().as_str(),
        scheme,
        headers: req.headers(),
        random,
        peer: Some(conn.peer.ip()),
        metadata: None,
    };
    let mut resp = HeaderMap::new();
    let selection = cfg.route_table.select(&view);
    if upgrade_refused(cfg, &selection, version, req.headers()) {
        return PreRoute::Refused(Refused::Upgrade.status());
    }
    let (decision, mutations) = match selection {
        Selection::NoRoute => return PreRoute::NoRoute,
        Selection::DirectResponse {
            response,
            response_headers,
            ..
        } => {
            response_headers.apply_with(&mut resp, &fmt);
            return PreRoute::DirectResponse(response.status);
        }
        Selection::Redirect {
            status,
            response_headers,
            ..
        } => {
            response_headers.apply_with(&mut resp, &fmt);
            return PreRoute::Redirect(status);
        }
        Selection::SslRedirect { .. } => {
            return PreRoute::Redirect(crate::route::require_tls::SSL_REDIRECT_STATUS)
        }
        Selection::Forward(fwd) => {
            forward::Plan::new(&fwd, conn, &path, req.headers(), cfg);
            fwd.response_headers.apply_with(&mut resp, &fmt);
            let cluster = fwd.cluster.name().map(str::to_string);
            let m: Vec<HeaderMutations> = fwd.request_headers.iter().cloned().collect();
            (PreRoute::Forward(cluster), m)
        }
    };
    if mutations.iter().any(HeaderMutations::has_format) {
        let request = req.headers().clone();
        let method = req.method().clone();
        let fmt = FormatContext {
            request: Some(&request),
            line: Some(RequestLine::new(&method, path.as_str(), scheme)),
            downstream_remote: Some(conn.peer),
            downstream_local: Some(conn.local),
            upstream_remote: None,
            protocol: Some(super::protocol_str(version)),
            start: None,
            response_code: None,
            log: None,
        };
        for m in &mutations {
            m.apply_with(req.headers_mut(), &fmt);
        }
    } else {
        for m in &mutations {
            m.apply(req.headers_mut());
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_yaml_str, NetworkFilter};

    fn hcm() -> std::sync::Arc<config::HttpConnectionManager> {
        let b = from_yaml_str(
            r#"{"static_resources": {
              "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                  "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "s", "use_remote_address": true,
                    "http_filters": [{"name": "envoy.filters.http.router"}],
                    "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                      {"match": {"prefix": "/direct"}, "direct_response": {"status": 204}},
                      {"match": {"prefix": "/"}, "route": {"cluster": "c"},
                       "request_headers_to_add": [{"header": {"key": "x-peer", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}]}]}]}}}]}]}],
              "clusters": [{"name": "c", "type": "STATIC", "load_assignment": {"cluster_name": "c", "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 2}}}}]}]}}]}}"#,
        )
        .expect("valid");
        match &b.listeners[0].filter_chains[0].filter {
            NetworkFilter::Http(h) => h.clone(),
            NetworkFilter::Tcp(_) => panic!("not an HCM"),
        }
    }

    fn run(req: &str, host: Option<&str>, extra: &[(&str, &str)]) -> (PreRoute, HeaderMap) {
        let local = "10.1.1.1:80".parse().unwrap();
        let conn = ConnInfo {
            peer: "203.0.113.7:4000".parse().unwrap(),
            local,
            orig_dst: local,
            tls: false,
            proxy_direct: None,
        };
        let mut b = Request::builder().uri(req);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let mut r = b.body(()).unwrap();
        (preroute(&hcm(), &conn, &mut r, 0), r.headers().clone())
    }

    #[test]
    fn decides_like_handle_and_keeps_the_proxys_headers() {
        assert_eq!(run("/", None, &[]).0, PreRoute::Refused(400));
        let upgrade = [("connection", "upgrade"), ("upgrade", "websocket")];
        assert_eq!(run("/", Some("a"), &upgrade).0, PreRoute::Refused(403));
        assert_eq!(
            run("/direct", Some("a"), &[]).0,
            PreRoute::DirectResponse(204)
        );
        let nominate = [
            ("connection", "x-forwarded-for, x-request-id, x-drop"),
            ("x-drop", "1"),
            ("x-envoy-retry-on", "5xx"),
        ];
        let (d, h) = run("/x", Some("a"), &nominate);
        assert_eq!(d, PreRoute::Forward(Some("c".into())));
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(h["x-peer"], "203.0.113.7");
        assert!(h.contains_key("x-request-id"));
        assert!(!h.contains_key("x-drop") && !h.contains_key("connection"));
        assert!(!h.contains_key("x-envoy-retry-on"));
    }
}

#[cfg(test)]
mod normalize_tests {
    use http::{Request, Version};

    use super::*;
    use crate::config::{EscapedSlashes, StripPort};

    fn h2(uri: &str) -> Request<()> {
        Request::builder()
            .version(Version::HTTP_2)
            .uri(uri)
            .body(())
            .unwrap()
    }

    /// HTTP/2 carries the host in `:authority` (the URI): both rewrites keep the rest of it.
    #[test]
    fn h2_authority_port_and_path() {
        let mut r = h2("http://example.com:8080/a/%2E%2e/b//c?q=%2F");
        let path = config::PathNormalization {
            normalize_path: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        };
        assert!(normalize_path(&path, &mut r).is_ok());
        strip_host_port(StripPort::Matching, 8080, &mut r);
        assert_eq!(r.uri().to_string(), "http://example.com/b/c?q=%2F");
        let mut r = h2("http://[::1]:9/x");
        strip_host_port(StripPort::Matching, 8080, &mut r);
        assert_eq!(r.uri().authority().unwrap().as_str(), "[::1]:9");
        strip_host_port(StripPort::Any, 8080, &mut r);
        assert_eq!(r.uri().authority().unwrap().as_str(), "[::1]");
    }

    #[test]
    fn refusals() {
        let reject = config::PathNormalization {
            escaped_slashes: EscapedSlashes::Reject,
            ..Default::default()
        };
        let mut r = h2("http://a/x%2fy");
        assert!(matches!(
            normalize_path(&reject, &mut r),
            Err(Refused::Path)
        ));
        let redirect = config::PathNormalization {
            escaped_slashes: EscapedSlashes::Redirect,
            ..Default::default()
        };
        match normalize_path(&redirect, &mut r) {
            Err(Refused::PathRedirect(p)) => assert_eq!(p, "/x/y"),
            _ => panic!("no redirect"),
        }
    }
}
