//! The HCM tracing provider `envoy.tracers.opentelemetry` (`config.trace.v3.OpenTelemetryConfig`)
//! as Envoy 1.40 reads it: the OTLP exporter (`grpc_service.envoy_grpc`: the
//! `TraceService/Export` call over the cluster; or `http_service`: a protobuf POST), the
//! resource's `service.name` and SDK attributes, the per-tracer span buffer's size. Both
//! exporters at once are refused, as by Envoy; neither is accepted (spans are made and
//! discarded, as Envoy does). Samplers and resource detectors other than `environment` are
//! refused, naming the field.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_norway::Value;

use super::{path::FieldPath, raw::typed_config, ConfigError};

/// The `@type` of the OpenTelemetry provider's config.
pub const OTEL_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";

/// The environment resource detector's config type.
const ENV_DETECTOR_TYPE: &str = "type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.v3.EnvironmentResourceDetectorConfig";

/// `config.trace.v3.OpenTelemetryConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtelConfig {
    grpc_service: Option<crate::http::filters::ext_authz::RawGrpcService>,
    service_name: Option<String>,
    http_service: Option<Value>,
    #[serde(default)]
    resource_detectors: Vec<Value>,
    sampler: Option<Value>,
    max_cache_size: Option<u32>,
    set_telemetry_sdk_resource_attributes: Option<bool>,
    set_service_name_resource_attribute: Option<bool>,
    exporter: Option<Value>,
}

/// Where the spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtelExport {
    /// No exporter: spans are made and discarded.
    None,
    /// `grpc_service.envoy_grpc`: a unary `Export` call.
    Grpc {
        /// `cluster_name`.
        cluster: String,
        /// `authority` (default: the cluster's name).
        authority: HeaderValue,
        /// `initial_metadata`.
        metadata: Vec<(HeaderName, HeaderValue)>,
    },
    /// `http_service`: a POST of the protobuf request.
    Http {
        /// `http_uri.cluster`.
        cluster: String,
        /// The URI's host (the request's Host).
        host: String,
        /// The URI's path.
        path: String,
        /// `request_headers_to_add`, each set.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// `http_uri.timeout` (None: `0s`, no limit).
        timeout: Option<Duration>,
    },
}

/// The OpenTelemetry tracer's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTelemetry {
    /// The exporter.
    pub export: OtelExport,
    /// The resource's attributes (`service.name`, the SDK's, the environment detector's).
    pub resource: Vec<(String, String)>,
    /// `max_cache_size` (default 1024): spans a tracer buffers at most.
    pub max_cache_size: usize,
}

impl OtelExport {
    /// The exporter's cluster, if any.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            OtelExport::None => None,
            OtelExport::Grpc { cluster, .. } | OtelExport::Http { cluster, .. } => Some(cluster),
        }
    }
}

/// The version string sluice reports where Envoy reports its own (`telemetry.sdk.version`,
/// the scope's version, the exporters' user agent).
pub fn sdk_version() -> &'static str {
    concat!("sluice/", env!("CARGO_PKG_VERSION"))
}

/// The provider's `typed_config` at `p`; `cluster_known` checks a gRPC exporter's cluster (an
/// HTTP exporter's is looked up per export, as Envoy does).
pub(crate) fn parse(
    tc: &Value,
    p: &FieldPath,
    cluster_known: impl Fn(&str) -> bool,
) -> Result<OpenTelemetry, ConfigError> {
    let raw: RawOtelConfig = typed_config(tc, p, OTEL_CONFIG_TYPE)?;
    if raw.sampler.is_some() {
        return Err(p
            .field("sampler")
            .unsupported("an OpenTelemetry sampler (the HCM's trace decision samples)"));
    }
    if raw.exporter.is_some() {
        return Err(p
            .field("exporter")
            .unsupported("a custom exporter extension (use grpc_service or http_service)"));
    }
    let export = match (raw.grpc_service, raw.http_service) {
        (Some(_), Some(_)) => {
            return Err(p.err(
                "both grpc_service and http_service are set (Envoy refuses an OpenTelemetry \
                 tracer with both exporters)",
            ))
        }
        (Some(g), None) => {
            let gp = p.field("grpc_service");
            let s =
                crate::http::filters::ext_authz::grpc_service(g, &gp, None, Default::default())?;
            if !cluster_known(&s.cluster) {
                return Err(gp.field("envoy_grpc").field("cluster_name").err(format!(
                    "unknown cluster {:?} (the OpenTelemetry exporter's)",
                    s.cluster
                )));
            }
            OtelExport::Grpc {
                cluster: s.cluster,
                authority: s.authority,
                metadata: s.initial_metadata,
            }
        }
        (None, Some(h)) => {
            let hp = p.field("http_service");
            let s = super::zipkin::http_service(h, &hp)?;
            // Envoy's `extractHostPathFromUri`: after any `scheme://`, the host up to the first
            // `/`, the path from it (`/` when none).
            let rest = s
                .uri
                .find("://")
                .map_or(s.uri.as_str(), |i| &s.uri[i + 3..]);
            let (host, path) = match rest.find('/') {
                None => (rest.to_string(), "/".to_string()),
                Some(j) => (rest[..j].to_string(), rest[j..].to_string()),
            };
            OtelExport::Http {
                cluster: s.cluster,
                host,
                path,
                headers: s.headers,
                timeout: (!s.timeout.is_zero()).then_some(s.timeout),
            }
        }
        (None, None) => OtelExport::None,
    };
    let mut resource = Vec::new();
    if raw.set_service_name_resource_attribute != Some(false) {
        let name = raw
            .service_name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown_service:envoy".to_string());
        resource.push(("service.name".to_string(), name));
    }
    if raw.set_telemetry_sdk_resource_attributes != Some(false) {
        for (k, v) in [
            ("telemetry.sdk.language", "cpp"),
            ("telemetry.sdk.name", "envoy"),
            ("telemetry.sdk.version", sdk_version()),
        ] {
            resource.push((k.to_string(), v.to_string()));
        }
    }
    for (i, d) in raw.resource_detectors.iter().enumerate() {
        let dp = p.field("resource_detectors").index(i);
        let ty = match d {
            Value::Mapping(m) => m
                .get("typed_config")
                .and_then(|t| t.get("@type"))
                .and_then(Value::as_str),
            _ => None,
        };
        if ty != Some(ENV_DETECTOR_TYPE) {
            return Err(dp.field("typed_config").unsupported(&format!(
                "the resource detector {:?} (only the environment detector is implemented)",
                ty.unwrap_or("")
            )));
        }
        // Envoy's environment detector: `OTEL_RESOURCE_ATTRIBUTES`, `k=v` pairs split on `,`
        // (a pair that is not exactly two tokens is skipped); a later value wins.
        let env = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        for pair in env.split(',') {
            let mut it = pair.split('=');
            if let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) {
                match resource.iter_mut().find(|(rk, _)| rk == k) {
                    Some(e) => e.1 = v.to_string(),
                    None => resource.push((k.to_string(), v.to_string())),
                }
            }
        }
    }
    Ok(OpenTelemetry {
        export,
        resource,
        max_cache_size: raw.max_cache_size.map_or(1024, |n| n as usize),
    })
}
