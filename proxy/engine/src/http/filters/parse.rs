//! Parses `http_filters` (each by its typed_config `@type`; the router last) and the
//! `typed_per_filter_config` / deprecated `cors` of a virtual host, route or weighted cluster.

use std::{collections::BTreeMap, sync::Arc};

use serde_norway::Value;

use serde::Deserialize;

use super::{
    buffer, cors, ext_authz, fault, grpc_web, health_check, istio_alpn, jwt_authn, local_ratelimit,
    rbac, Filter, HttpFilters, Kind, PerFilter, PerFilterConfigs, PerRoute,
};
use crate::config::{
    istio_filters::{is_istio_alpn, is_telemetry_noop, Place},
    raw::{type_url, typed_config, Empty, RawHttpFilter},
    ConfigError, FieldPath,
};

/// The router's `@type`.
pub const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// `extensions.filters.http.router.v3.Router`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    /// `false` stops the cluster's and route's per-code response stats, which sluice keeps
    /// regardless: only `true` (the default) is accepted.
    dynamic_stats: Option<bool>,
    /// A child span per upstream request: without a tracing provider a no-op; with one,
    /// accepted only beside the HCM's `spawn_upstream_span` (config/validate.rs).
    start_child_span: Option<bool>,
    #[serde(default)]
    upstream_log: Vec<Value>,
    upstream_log_options: Option<Value>,
    suppress_envoy_headers: Option<bool>,
    #[serde(default)]
    strict_check_headers: Vec<String>,
    respect_expected_rq_timeout: Option<bool>,
    /// `true` drops a gRPC request's per-code stats, which sluice keeps: only `false`.
    suppress_grpc_request_failure_code_stats: Option<bool>,
    #[serde(default)]
    upstream_http_filters: Vec<Value>,
    /// No request arrives as TLS early data here (no downstream 0-RTT): a no-op.
    #[allow(dead_code)]
    reject_connect_request_early_data: Option<bool>,
}

impl RawRouter {
    /// Refuses the options sluice does not implement, naming them.
    fn check(&self, p: &FieldPath) -> Result<(), ConfigError> {
        let refused = [
            ("dynamic_stats", self.dynamic_stats == Some(false)),
            (
                "suppress_grpc_request_failure_code_stats",
                self.suppress_grpc_request_failure_code_stats == Some(true),
            ),
            ("upstream_log", !self.upstream_log.is_empty()),
            ("upstream_log_options", self.upstream_log_options.is_some()),
            (
                "strict_check_headers",
                !self.strict_check_headers.is_empty(),
            ),
            (
                "respect_expected_rq_timeout",
                self.respect_expected_rq_timeout == Some(true),
            ),
            (
                "upstream_http_filters",
                !self.upstream_http_filters.is_empty(),
            ),
        ];
        match refused.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(p.field(field).unsupported("not implemented")),
            None => Ok(()),
        }
    }
}

/// The supported filters, for error messages.
const SUPPORTED: &str = "envoy.filters.http.fault, envoy.filters.http.cors, \
                         envoy.filters.http.local_ratelimit, envoy.filters.http.rbac, \
                         envoy.filters.http.ext_authz, envoy.filters.http.jwt_authn, \
                         envoy.filters.http.grpc_web, envoy.filters.http.health_check, \
                         envoy.filters.http.buffer, \
                         envoy.filters.http.router";

/// `http_filters` at `hp`: supported filters, then the router, last.
pub(crate) fn http_filters(
    raw: &[RawHttpFilter],
    hp: &FieldPath,
) -> Result<HttpFilters, ConfigError> {
    if raw.is_empty() {
        return Err(hp.err("must end with the router filter (envoy.filters.http.router)"));
    }
    let mut filters = Vec::new();
    let mut alpn = None;
    for (i, f) in raw.iter().enumerate() {
        let fp = hp.index(i);
        let tp = fp.field("typed_config");
        let ty = f.typed_config.as_ref().and_then(type_url);
        let is_router = match ty {
            Some(t) => t == ROUTER_TYPE,
            None => f.name.as_deref() == Some("envoy.filters.http.router"),
        };
        if is_router {
            if i + 1 != raw.len() {
                return Err(hp.index(i + 1).unsupported("HTTP filters after the router"));
            }
            let router: RawRouter = match &f.typed_config {
                Some(tc) => typed_config(tc, &tp, ROUTER_TYPE)?,
                None => RawRouter::default(),
            };
            router.check(&tp)?;
            if f.disabled == Some(true) {
                return Err(fp
                    .field("disabled")
                    .unsupported("true on the router (the terminal filter)"));
            }
            let reads_metadata = filters.iter().any(
                |f: &Filter| matches!(&f.kind, Kind::ExtAuthz(a) if a.enabled_metadata.is_some()),
            );
            return Ok(HttpFilters {
                filters,
                reads_metadata,
                suppress_envoy_headers: router.suppress_envoy_headers.unwrap_or(false),
                istio_alpn: alpn,
                start_child_span: router.start_child_span.unwrap_or(false).then_some(i),
            });
        }
        if is_istio_alpn(f.name.as_deref(), f.typed_config.as_ref()) {
            if alpn.is_some() {
                return Err(fp.unsupported("a second istio.alpn filter"));
            }
            if f.disabled == Some(true) {
                return Err(fp.field("disabled").unsupported("true on istio.alpn"));
            }
            alpn = Some(Arc::new(istio_alpn::build(f.typed_config.as_ref(), &tp)?));
            continue;
        }
        // Istio's telemetry-only filters are no-ops. `is_optional` changes nothing here: Envoy
        // runs the optional filters it knows, so one sluice does not implement is refused either way.
        if is_telemetry_noop(Place::Http, f.name.as_deref(), f.typed_config.as_ref()) {
            continue;
        }
        let name = f.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(fp.field("name").err("required"));
        }
        let kind = match (ty, &f.typed_config) {
            (Some(fault::TYPE), Some(tc)) => Kind::Fault(Arc::new(fault::build(
                typed_config(tc, &tp, fault::TYPE)?,
                &tp,
            )?)),
            (Some(cors::FILTER_TYPE), Some(tc)) => {
                let _: Empty = typed_config(tc, &tp, cors::FILTER_TYPE)?;
                Kind::Cors
            }
            (Some(local_ratelimit::TYPE), Some(tc)) => Kind::LocalRateLimit(Arc::new(
                local_ratelimit::build(typed_config(tc, &tp, local_ratelimit::TYPE)?, &tp)?,
            )),
            (Some(rbac::TYPE), Some(tc)) => Kind::Rbac(Arc::new(rbac::build(
                typed_config(tc, &tp, rbac::TYPE)?,
                &tp,
            )?)),
            (Some(ext_authz::TYPE), Some(tc)) => Kind::ExtAuthz(Arc::new(ext_authz::build(
                typed_config(tc, &tp, ext_authz::TYPE)?,
                &tp,
            )?)),
            (Some(buffer::TYPE), Some(tc)) => {
                Kind::Buffer(buffer::build(typed_config(tc, &tp, buffer::TYPE)?, &tp)?)
            }
            (Some(health_check::TYPE), Some(tc)) => Kind::HealthCheck(Arc::new(
                health_check::build(typed_config(tc, &tp, health_check::TYPE)?, &tp)?,
            )),
            (Some(grpc_web::TYPE), Some(tc)) => {
                let _: Empty = typed_config(tc, &tp, grpc_web::TYPE)?;
                Kind::GrpcWeb
            }
            (Some(jwt_authn::TYPE), Some(tc)) => Kind::JwtAuthn(Arc::new(jwt_authn::build(
                typed_config(tc, &tp, jwt_authn::TYPE)?,
                &tp,
            )?)),
            _ => {
                let what = ty.unwrap_or(&name);
                return Err(
                    fp.unsupported(&format!("HTTP filter {what:?}; supported: {SUPPORTED}"))
                );
            }
        };
        // Names may repeat, as in Envoy: istiod names its DENY and ALLOW RBAC filters both
        // `envoy.filters.http.rbac`; each runs, and a per-route config under that name is
        // given to both.
        filters.push(Filter {
            name,
            kind,
            disabled: f.disabled == Some(true),
        });
    }
    Err(hp.err("must end with the router filter (envoy.filters.http.router)"))
}

/// A level's `typed_per_filter_config` (at `p`) and its deprecated `cors` policy (`legacy`).
pub(crate) fn per_filter_configs(
    raw: Option<&BTreeMap<String, Value>>,
    p: &FieldPath,
    legacy: Option<Arc<cors::CorsPolicy>>,
) -> Result<PerFilterConfigs, ConfigError> {
    let mut by_name = Vec::new();
    for (name, v) in raw.into_iter().flatten() {
        let vp = p.field(name);
        let c = if type_url(v) == Some(FILTER_CONFIG_TYPE) {
            let fc: RawFilterConfig = typed_config(v, &vp, FILTER_CONFIG_TYPE)?;
            match (fc.disabled, fc.config) {
                (Some(true), _) => PerFilter::Disabled,
                (_, None) => {
                    return Err(vp.field("config").err(format!(
                        "required unless disabled (Envoy: empty route/virtual host per filter configuration for {name})"
                    )))
                }
                (_, Some(c)) if type_url(&c).is_none() => PerFilter::Enabled,
                (_, Some(c)) => PerFilter::Config(per_route(&c, &vp.field("config"))?),
            }
        } else {
            PerFilter::Config(per_route(v, &vp)?)
        };
        by_name.push((name.clone(), c));
    }
    Ok(PerFilterConfigs {
        by_name,
        legacy_cors: legacy,
    })
}

/// `@type` of `config.route.v3.FilterConfig` (enables, disables or wraps a per-route config).
const FILTER_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// `config.route.v3.FilterConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilterConfig {
    config: Option<Value>,
    /// Only skips filter types Envoy does not know; sluice rejects the ones it lacks anyway.
    #[allow(dead_code)]
    is_optional: Option<bool>,
    disabled: Option<bool>,
}

/// One filter's per-route config at `vp`, by its `@type`.
fn per_route(v: &Value, vp: &FieldPath) -> Result<PerRoute, ConfigError> {
    Ok(match type_url(v) {
        Some(fault::TYPE) => {
            PerRoute::Fault(Arc::new(fault::build(typed_config(v, vp, fault::TYPE)?, vp)?))
        }
        Some(cors::POLICY_TYPE) => PerRoute::Cors(Arc::new(cors::build(
            typed_config(v, vp, cors::POLICY_TYPE)?,
            vp,
        )?)),
        Some(local_ratelimit::TYPE) => PerRoute::LocalRateLimit(Arc::new(local_ratelimit::build(
            typed_config(v, vp, local_ratelimit::TYPE)?,
            vp,
        )?)),
        Some(rbac::PER_ROUTE_TYPE) => PerRoute::Rbac(Arc::new(rbac::build_per_route(
            typed_config(v, vp, rbac::PER_ROUTE_TYPE)?,
            vp,
        )?)),
        Some(ext_authz::PER_ROUTE_TYPE) => PerRoute::ExtAuthz(Arc::new(ext_authz::build_per_route(
            typed_config(v, vp, ext_authz::PER_ROUTE_TYPE)?,
            vp,
        )?)),
        Some(jwt_authn::PER_ROUTE_TYPE) => PerRoute::JwtAuthn(Arc::new(jwt_authn::build_per_route(
            typed_config(v, vp, jwt_authn::PER_ROUTE_TYPE)?,
            vp,
        )?)),
        Some(buffer::PER_ROUTE_TYPE) => PerRoute::Buffer(buffer::build_per_route(
            typed_config(v, vp, buffer::PER_ROUTE_TYPE)?,
            vp,
        )?),
        Some(other) => {
            return Err(vp.field("@type").unsupported(&format!(
                "per-route config {other:?}; supported: HTTPFault, CorsPolicy, LocalRateLimit, RBACPerRoute, ExtAuthzPerRoute, jwt_authn PerRouteConfig, BufferPerRoute, FilterConfig"
            )))
        }
        None => return Err(vp.field("@type").err("missing")),
    })
}

/// The deprecated `cors` field (config.route.v3.CorsPolicy) of a virtual host or route at `p`.
pub(crate) fn legacy_cors(
    raw: Option<&Value>,
    p: &FieldPath,
) -> Result<Option<Arc<cors::CorsPolicy>>, ConfigError> {
    let Some(v) = raw else { return Ok(None) };
    let mut m = serde_norway::Mapping::new();
    m.insert(Value::from("@type"), Value::from(cors::POLICY_TYPE));
    if let Value::Mapping(fields) = v {
        m.extend(fields.clone());
    } else {
        return Err(p.err("must be a mapping"));
    }
    let raw = typed_config(&Value::Mapping(m), p, cors::POLICY_TYPE)?;
    Ok(Some(Arc::new(cors::build(raw, p)?)))
}
