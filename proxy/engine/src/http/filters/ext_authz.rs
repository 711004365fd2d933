//! `envoy.filters.http.ext_authz` (extensions.filters.http.ext_authz.v3.ExtAuthz) with an HTTP
//! or a gRPC authorization service: Istio's `envoyExtAuthzHttp` / `envoyExtAuthzGrpc`
//! extension providers, which a CUSTOM AuthorizationPolicy turns on for the requests its shadow
//! RBAC rules match (`filter_enabled_metadata`). One check is [`check`] (HTTP) or [`grpc`]
//! (`envoy.service.auth.v3.Authorization/Check`); this module is their config.
//!
//! `with_request_body` sends the request body with the check ([`body`]); the fields only
//! Envoy's gRPC client reads (metadata and TLS context) are no-ops
//! with the HTTP service, as in Envoy, and refused with the gRPC one when they ask for more
//! than sluice sends.

pub mod body;
pub(crate) mod call;
mod check;
pub(crate) mod grpc;

pub(crate) use grpc::{grpc_service, RawGrpcService};

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::{
    local_ratelimit::{http_status, RawHttpStatus},
    metadata::{self, MetadataMatcher, RawMetadataMatcher},
};
use crate::{
    config::{
        duration::parse_duration,
        raw_route::{RawHeaderValue, RawStringMatcher},
        ConfigError, FieldPath,
    },
    route::{build_match::string_matcher, StringMatcher},
};

/// `@type` of the filter's config.
pub const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";

/// `@type` of its per-route config.
pub const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

/// `extensions.filters.http.ext_authz.v3.ExtAuthz`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtAuthz {
    grpc_service: Option<RawGrpcService>,
    http_service: Option<RawHttpService>,
    transport_api_version: Option<String>,
    failure_mode_allow: Option<bool>,
    failure_mode_allow_header_add: Option<bool>,
    with_request_body: Option<body::RawBufferSettings>,
    clear_route_cache: Option<bool>,
    status_on_error: Option<RawHttpStatus>,
    validate_mutations: Option<bool>,
    #[serde(default)]
    metadata_context_namespaces: Vec<String>,
    #[serde(default)]
    typed_metadata_context_namespaces: Vec<String>,
    #[serde(default)]
    route_metadata_context_namespaces: Vec<String>,
    #[serde(default)]
    route_typed_metadata_context_namespaces: Vec<String>,
    filter_enabled: Option<crate::config::raw_route::RawRuntimeFractionalPercent>,
    filter_enabled_metadata: Option<RawMetadataMatcher>,
    deny_at_disable: Option<RawRuntimeFeatureFlag>,
    include_peer_certificate: Option<bool>,
    stat_prefix: Option<String>,
    bootstrap_metadata_labels_key: Option<String>,
    allowed_headers: Option<RawListStringMatcher>,
    disallowed_headers: Option<RawListStringMatcher>,
    include_tls_session: Option<bool>,
    charge_cluster_response_stats: Option<bool>,
    encode_raw_headers: Option<bool>,
    enable_dynamic_metadata_ingestion: Option<bool>,
    filter_metadata: Option<serde_json::Value>,
    emit_filter_state_stats: Option<bool>,
    max_denied_response_body_bytes: Option<u32>,
    enforce_response_header_limits: Option<bool>,
    shadow_mode: Option<bool>,
    emit_client_span: Option<bool>,
}

/// `ExtAuthz.HttpService`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpService {
    server_uri: Option<RawHttpUri>,
    path_prefix: Option<String>,
    path_override: Option<String>,
    authorization_request: Option<RawAuthorizationRequest>,
    authorization_response: Option<RawAuthorizationResponse>,
    retry_policy: Option<serde_json::Value>,
}

/// `config.core.v3.HttpUri` (also jwt_authn's `remote_jwks.http_uri`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpUri {
    pub(super) uri: Option<String>,
    pub(super) cluster: Option<String>,
    pub(super) timeout: Option<String>,
}

/// `ExtAuthz.AuthorizationRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorizationRequest {
    allowed_headers: Option<RawListStringMatcher>,
    #[serde(default)]
    headers_to_add: Vec<RawHeaderValue>,
}

/// `ExtAuthz.AuthorizationResponse`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorizationResponse {
    allowed_upstream_headers: Option<RawListStringMatcher>,
    allowed_upstream_headers_to_append: Option<RawListStringMatcher>,
    allowed_client_headers: Option<RawListStringMatcher>,
    allowed_client_headers_on_success: Option<RawListStringMatcher>,
    dynamic_metadata_from_headers: Option<RawListStringMatcher>,
}

/// `type.matcher.v3.ListStringMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListStringMatcher {
    #[serde(default)]
    patterns: Vec<RawStringMatcher>,
}

/// `ExtAuthzPerRoute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtAuthzPerRoute {
    disabled: Option<bool>,
    check_settings: Option<RawCheckSettings>,
}

/// `config.core.v3.RuntimeFeatureFlag` (no runtime here: its `default_value`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntimeFeatureFlag {
    default_value: Option<bool>,
    #[allow(dead_code)]
    runtime_key: Option<String>,
}

/// `ExtAuthzPerRoute.CheckSettings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckSettings {
    /// Sent only to a gRPC service: a no-op with the HTTP one, as in Envoy.
    #[serde(default)]
    context_extensions: std::collections::BTreeMap<String, String>,
    disable_request_body_buffering: Option<bool>,
    with_request_body: Option<serde_json::Value>,
    grpc_service: Option<serde_json::Value>,
    http_service: Option<serde_json::Value>,
    /// Spans are not emitted here.
    #[allow(dead_code)]
    emit_client_span: Option<bool>,
}

/// Header names matched by a `ListStringMatcher` (names are lower-case).
#[derive(Debug, Default)]
pub(crate) struct NameList(Vec<StringMatcher>);

impl NameList {
    fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|m| m.matches(name))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where the check goes and what it carries (`http_service`).
#[derive(Debug)]
pub(crate) struct HttpService {
    /// `server_uri.cluster`, looked up per check (a cluster CDS removed makes it an error).
    pub cluster: String,
    /// `server_uri.timeout` (`0s`: none, as Envoy).
    pub timeout: Option<Duration>,
    /// `path_prefix`, put before the request's path.
    pub path_prefix: String,
    /// `path_override`, instead of the request's path.
    pub path_override: Option<http::Uri>,
    /// The request headers sent besides the default ones (Host, Method, Path, Authorization):
    /// the filter's `allowed_headers`, else `authorization_request.allowed_headers`.
    pub allowed: NameList,
    /// `disallowed_headers`: never sent.
    pub disallowed: NameList,
    /// `authorization_request.headers_to_add`: set on the check.
    pub headers_to_add: Vec<(HeaderName, HeaderValue)>,
    /// `allowed_upstream_headers`: set on the request on success.
    pub upstream_set: NameList,
    /// `allowed_upstream_headers_to_append`: added to the request on success.
    pub upstream_append: NameList,
    /// `allowed_client_headers` (empty: every header but Host): the denial's headers.
    pub client_denied: NameList,
    /// `allowed_client_headers_on_success`: added to the response on success.
    pub client_success: NameList,
}

/// The filter's config.
#[derive(Debug)]
pub struct ExtAuthz {
    pub(crate) service: Service,
    /// `failure_mode_allow`: a failed check lets the request through.
    pub(crate) failure_mode_allow: bool,
    /// `failure_mode_allow_header_add`: ... marked `x-envoy-auth-failure-mode-allowed: true`.
    pub(crate) failure_header: bool,
    /// `clear_route_cache`: the route is chosen again after an allowed check that changed a
    /// request header.
    pub(crate) clear_route_cache: bool,
    /// `status_on_error` (Envoy: 403).
    pub(crate) status_on_error: u16,
    /// `filter_enabled_metadata`: checks only requests whose metadata matches.
    pub(crate) enabled_metadata: Option<MetadataMatcher>,
    /// `filter_enabled.default_value`: checks only this share of the requests (no runtime
    /// here, as with every runtime key).
    pub(crate) enabled_share: Option<crate::route::FractionalPercent>,
    /// `deny_at_disable`: a request the filter is not enabled for (by `filter_enabled` or
    /// `filter_enabled_metadata`) is denied with `status_on_error`.
    pub(crate) deny_at_disable: bool,
    /// `max_denied_response_body_bytes` (0: the whole body).
    pub(crate) max_denied_body: usize,
    /// `stat_prefix`: the counters' scope below `ext_authz`.
    pub(crate) stat_prefix: String,
    /// `with_request_body`: the request body goes with the check.
    pub(crate) with_body: Option<body::BodySettings>,
}

/// A route's `ExtAuthzPerRoute`.
#[derive(Debug)]
pub struct ExtAuthzPerRoute {
    /// `disabled`: no check for the route.
    pub(crate) disabled: bool,
    /// `check_settings.context_extensions` (sent to a gRPC service), merged over the levels.
    pub(crate) context_extensions: Vec<(String, String)>,
    /// `check_settings.disable_request_body_buffering`: the check goes without the body.
    pub(crate) no_body: bool,
}

/// What the service said.
pub(crate) enum Verdict {
    /// 200: the request goes on with these changes.
    Ok {
        /// Request headers to remove (`x-envoy-auth-headers-to-remove`).
        remove: Vec<HeaderName>,
        /// Request headers to set (`allowed_upstream_headers`).
        set: Vec<(HeaderName, HeaderValue)>,
        /// Request headers to add (`allowed_upstream_headers_to_append`).
        append: Vec<(HeaderName, HeaderValue)>,
        /// Response headers to add (`allowed_client_headers_on_success`).
        response: Vec<(HeaderName, HeaderValue)>,
    },
    /// Another status below 500: the client's answer.
    Denied {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
    /// No answer, a 5xx, or no such cluster.
    Error,
}

/// The request as a check sees it.
pub(crate) struct Checked<'a> {
    pub method: &'a http::Method,
    /// `:authority` (None: the request had none).
    pub authority: Option<&'a str>,
    /// `:path` with the query.
    pub path: &'a str,
    pub scheme: &'a str,
    pub version: http::Version,
    pub headers: &'a http::HeaderMap,
    /// The connection's peer.
    pub peer: std::net::SocketAddr,
    /// The connection's destination.
    pub local: std::net::SocketAddr,
    pub tls: Option<&'a crate::downstream_tls::TlsFacts>,
    /// The route's `context_extensions` (gRPC only).
    pub context_extensions: &'a [(String, String)],
    /// The body the check carries (`with_request_body`) and how it is packed (gRPC
    /// `pack_as_bytes`).
    pub body: Option<CheckBody<'a>>,
    /// The request body's bytes received so far (a gRPC check's `size`).
    pub received: u64,
}

/// The request body a check carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckBody<'a> {
    pub data: &'a [u8],
    /// More had come than `data` (`x-envoy-auth-partial-body: true`).
    pub partial: bool,
    /// gRPC: in `raw_body` instead of `body`.
    pub pack_as_bytes: bool,
}

/// Runs one check against the filter's service.
pub(crate) async fn run(
    cfg: &ExtAuthz,
    req: &Checked<'_>,
    clusters: &std::collections::HashMap<String, Arc<crate::upstream::Cluster>>,
) -> Verdict {
    match &cfg.service {
        Service::Http(s) => check::check(s, req, clusters, cfg.max_denied_body).await,
        Service::Grpc(s) => grpc::check(s, req, clusters).await,
    }
}

/// The authorization service.
#[derive(Debug)]
pub(crate) enum Service {
    Http(HttpService),
    Grpc(grpc::GrpcService),
}

/// Compiles the filter config at `p`.
pub(crate) fn build(raw: RawExtAuthz, p: &FieldPath) -> Result<ExtAuthz, ConfigError> {
    let with_body = raw
        .with_request_body
        .as_ref()
        .map(|b| body::settings(b, &p.field("with_request_body")))
        .transpose()?;
    transport_api_version(raw.transport_api_version.as_deref(), p)?;
    let refuse_true = [
        (
            "validate_mutations",
            raw.validate_mutations,
            "mutation validation",
        ),
        (
            "charge_cluster_response_stats",
            raw.charge_cluster_response_stats,
            "charging the route's cluster stats",
        ),
        (
            "enable_dynamic_metadata_ingestion",
            raw.enable_dynamic_metadata_ingestion,
            "dynamic metadata from the service",
        ),
        (
            "emit_filter_state_stats",
            raw.emit_filter_state_stats,
            "filter state stats",
        ),
        (
            "enforce_response_header_limits",
            raw.enforce_response_header_limits,
            "response header limits",
        ),
        ("shadow_mode", raw.shadow_mode, "shadow mode"),
    ];
    for (f, v, what) in refuse_true {
        if v == Some(true) {
            return Err(p
                .field(f)
                .unsupported(&format!("true ({what} is not implemented)")));
        }
    }
    if raw.filter_metadata.is_some() {
        return Err(p.field("filter_metadata").unsupported("(not implemented)"));
    }
    let enabled_share = raw
        .filter_enabled
        .as_ref()
        .map(|f| crate::route::fractional_percent(f, &p.field("filter_enabled")))
        .transpose()?;
    let deny_at_disable = match &raw.deny_at_disable {
        None => false,
        Some(f) => f.default_value.ok_or_else(|| {
            p.field("deny_at_disable")
                .field("default_value")
                .err("required")
        })?,
    };
    let top_allowed = match &raw.allowed_headers {
        Some(l) => Some(name_list(l, &p.field("allowed_headers"))?),
        None => None,
    };
    let disallowed = match &raw.disallowed_headers {
        Some(l) => name_list(l, &p.field("disallowed_headers"))?,
        None => NameList::default(),
    };
    let service = match (raw.grpc_service, raw.http_service) {
        (Some(_), Some(_)) => {
            return Err(p.err("only one of grpc_service and http_service may be set"))
        }
        (None, None) => return Err(p.err("one of grpc_service or http_service is required")),
        (None, Some(hs)) => {
            // Read only by Envoy's gRPC client: no-ops with the HTTP service.
            let _ = (
                raw.metadata_context_namespaces,
                raw.typed_metadata_context_namespaces,
                raw.route_metadata_context_namespaces,
                raw.route_typed_metadata_context_namespaces,
                raw.include_peer_certificate,
                raw.include_tls_session,
                raw.bootstrap_metadata_labels_key,
                raw.encode_raw_headers,
                raw.emit_client_span,
            );
            Service::Http(http_service(
                hs,
                &p.field("http_service"),
                top_allowed,
                disallowed,
            )?)
        }
        (Some(gs), None) => {
            let refused = [
                (
                    "metadata_context_namespaces",
                    !raw.metadata_context_namespaces.is_empty(),
                ),
                (
                    "typed_metadata_context_namespaces",
                    !raw.typed_metadata_context_namespaces.is_empty(),
                ),
                (
                    "route_metadata_context_namespaces",
                    !raw.route_metadata_context_namespaces.is_empty(),
                ),
                (
                    "route_typed_metadata_context_namespaces",
                    !raw.route_typed_metadata_context_namespaces.is_empty(),
                ),
                (
                    "include_peer_certificate",
                    raw.include_peer_certificate == Some(true),
                ),
                ("include_tls_session", raw.include_tls_session == Some(true)),
                (
                    "bootstrap_metadata_labels_key",
                    raw.bootstrap_metadata_labels_key
                        .as_deref()
                        .is_some_and(|k| !k.is_empty()),
                ),
                ("encode_raw_headers", raw.encode_raw_headers == Some(true)),
            ];
            for (f, set) in refused {
                if set {
                    return Err(p.field(f).unsupported(
                        "with grpc_service (the check request carries the request's attributes, headers and context_extensions only)",
                    ));
                }
            }
            Service::Grpc(grpc_service(
                gs,
                &p.field("grpc_service"),
                top_allowed,
                disallowed,
            )?)
        }
    };
    let sp = p.field("status_on_error");
    let status_on_error = match &raw.status_on_error {
        Some(s) => http_status(s, &sp)?.unwrap_or(403),
        None => 403,
    };
    if !(100..=599).contains(&status_on_error) {
        return Err(sp
            .field("code")
            .err(format!("{status_on_error} is not an HTTP status")));
    }
    let enabled_metadata = match &raw.filter_enabled_metadata {
        Some(m) => Some(metadata::build(m, &p.field("filter_enabled_metadata"))?),
        None => None,
    };
    Ok(ExtAuthz {
        service,
        failure_mode_allow: raw.failure_mode_allow == Some(true),
        failure_header: raw.failure_mode_allow_header_add == Some(true),
        clear_route_cache: raw.clear_route_cache == Some(true),
        status_on_error,
        enabled_metadata,
        enabled_share,
        deny_at_disable,
        max_denied_body: raw.max_denied_response_body_bytes.unwrap_or(0) as usize,
        stat_prefix: raw.stat_prefix.unwrap_or_default(),
        with_body,
    })
}

fn http_service(
    hs: RawHttpService,
    hp: &FieldPath,
    top_allowed: Option<NameList>,
    disallowed: NameList,
) -> Result<HttpService, ConfigError> {
    if hs.retry_policy.is_some() {
        return Err(hp
            .field("retry_policy")
            .unsupported("(checks are not retried here)"));
    }
    let up = hp.field("server_uri");
    let uri = hs.server_uri.ok_or_else(|| up.err("required"))?;
    if uri.uri.as_deref().is_none_or(str::is_empty) {
        return Err(up.field("uri").err("required"));
    }
    let cluster = uri
        .cluster
        .filter(|c| !c.is_empty())
        .ok_or_else(|| up.field("cluster").err("required"))?;
    let tp = up.field("timeout");
    let timeout = parse_duration(uri.timeout.as_deref().ok_or_else(|| tp.err("required"))?)
        .map_err(|e| tp.err(e))?;
    let timeout = (!timeout.is_zero()).then_some(timeout);
    let path_prefix = hs.path_prefix.unwrap_or_default();
    let path_override = hs.path_override.filter(|p| !p.is_empty());
    if !path_prefix.is_empty() && path_override.is_some() {
        return Err(hp.err("only one of path_prefix and path_override may be set"));
    }
    for (f, v) in [
        ("path_prefix", Some(&path_prefix)),
        ("path_override", path_override.as_ref()),
    ] {
        // Both must make a URI path: the prefix in front of any request path, the override
        // alone.
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            continue;
        };
        if !v.starts_with('/') || format!("{v}/").parse::<http::Uri>().is_err() {
            return Err(hp.field(f).err(format!("{v:?} is not a URI path")));
        }
    }
    let path_override = path_override.map(|p| p.parse().expect("checked above"));
    let rp = hp.field("authorization_request");
    let (req_allowed, headers_to_add) = match hs.authorization_request {
        None => (None, Vec::new()),
        Some(r) => {
            let allowed = match &r.allowed_headers {
                Some(l) => Some(name_list(l, &rp.field("allowed_headers"))?),
                None => None,
            };
            let add = header_pairs(&r.headers_to_add, &rp.field("headers_to_add"))?;
            (allowed, add)
        }
    };
    let sp = hp.field("authorization_response");
    let resp = hs.authorization_response;
    let list = |f: &str, l: Option<&RawListStringMatcher>| match l {
        Some(l) => name_list(l, &sp.field(f)),
        None => Ok(NameList::default()),
    };
    let r = resp.as_ref();
    if r.and_then(|r| r.dynamic_metadata_from_headers.as_ref())
        .is_some_and(|l| !l.patterns.is_empty())
    {
        return Err(sp
            .field("dynamic_metadata_from_headers")
            .unsupported("(dynamic metadata from the service is not kept)"));
    }
    Ok(HttpService {
        cluster,
        timeout,
        path_prefix,
        path_override,
        allowed: top_allowed.or(req_allowed).unwrap_or_default(),
        disallowed,
        headers_to_add,
        upstream_set: list(
            "allowed_upstream_headers",
            r.and_then(|r| r.allowed_upstream_headers.as_ref()),
        )?,
        upstream_append: list(
            "allowed_upstream_headers_to_append",
            r.and_then(|r| r.allowed_upstream_headers_to_append.as_ref()),
        )?,
        client_denied: list(
            "allowed_client_headers",
            r.and_then(|r| r.allowed_client_headers.as_ref()),
        )?,
        client_success: list(
            "allowed_client_headers_on_success",
            r.and_then(|r| r.allowed_client_headers_on_success.as_ref()),
        )?,
    })
}

/// `transport_api_version` at `p`: V3 (or AUTO), as Envoy 1.40 accepts.
pub(crate) fn transport_api_version(v: Option<&str>, p: &FieldPath) -> Result<(), ConfigError> {
    match v {
        None | Some("AUTO") | Some("V3") => Ok(()),
        Some(v) => Err(p
            .field("transport_api_version")
            .err(format!("{v:?}: only V3 is supported (as Envoy 1.40)"))),
    }
}

/// `config.core.v3.HeaderValue`s at `p` as header pairs.
pub(super) fn header_pairs(
    raw: &[RawHeaderValue],
    p: &FieldPath,
) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    let mut out = Vec::new();
    for (i, h) in raw.iter().enumerate() {
        let hp = p.index(i);
        let key = h.key.as_deref().unwrap_or_default();
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| hp.field("key").err(format!("{key:?} is not a header name")))?;
        let value = h.value.as_deref().unwrap_or_default();
        let value = HeaderValue::from_str(value).map_err(|_| {
            hp.field("value")
                .err(format!("{value:?} is not a header value"))
        })?;
        out.push((name, value));
    }
    Ok(out)
}

fn name_list(raw: &RawListStringMatcher, p: &FieldPath) -> Result<NameList, ConfigError> {
    raw.patterns
        .iter()
        .enumerate()
        .map(|(i, m)| string_matcher(m, &p.field("patterns").index(i)))
        .collect::<Result<_, _>>()
        .map(NameList)
}

/// Compiles a route's `ExtAuthzPerRoute` at `p`.
pub(crate) fn build_per_route(
    raw: RawExtAuthzPerRoute,
    p: &FieldPath,
) -> Result<ExtAuthzPerRoute, ConfigError> {
    match (raw.disabled, raw.check_settings) {
        (Some(_), Some(_)) => Err(p.err("only one of disabled and check_settings may be set")),
        (None, None) => Err(p.err("one of disabled or check_settings is required")),
        (Some(d), None) => Ok(ExtAuthzPerRoute {
            disabled: d,
            context_extensions: Vec::new(),
            no_body: false,
        }),
        (None, Some(cs)) => {
            let cp = p.field("check_settings");
            for (f, set) in [
                ("with_request_body", cs.with_request_body.is_some()),
                ("grpc_service", cs.grpc_service.is_some()),
                ("http_service", cs.http_service.is_some()),
            ] {
                if set {
                    return Err(cp.field(f).unsupported("(not implemented)"));
                }
            }
            Ok(ExtAuthzPerRoute {
                disabled: false,
                context_extensions: cs.context_extensions.into_iter().collect(),
                no_body: cs.disable_request_body_buffering == Some(true),
            })
        }
    }
}

/// The filter's counters: `http.<stat_prefix>.ext_authz[.<filter stat_prefix>].*`.
#[derive(Debug)]
pub struct ExtAuthzStats {
    pub(crate) ok: Arc<crate::server::stats::Counter>,
    pub(crate) denied: Arc<crate::server::stats::Counter>,
    pub(crate) error: Arc<crate::server::stats::Counter>,
    pub(crate) disabled: Arc<crate::server::stats::Counter>,
    pub(crate) failure_mode_allowed: Arc<crate::server::stats::Counter>,
}

impl ExtAuthz {
    /// The counters, each made by `counter(name)` below the HCM's scope.
    pub(crate) fn stats(
        &self,
        counter: &dyn Fn(&str) -> Arc<crate::server::stats::Counter>,
    ) -> ExtAuthzStats {
        let scope = match self.stat_prefix.as_str() {
            "" => "ext_authz".to_string(),
            p => format!("ext_authz.{}", p.strip_suffix('.').unwrap_or(p)),
        };
        let c = |n: &str| counter(&format!("{scope}.{n}"));
        ExtAuthzStats {
            ok: c("ok"),
            denied: c("denied"),
            error: c("error"),
            disabled: c("disabled"),
            failure_mode_allowed: c("failure_mode_allowed"),
        }
    }
}
