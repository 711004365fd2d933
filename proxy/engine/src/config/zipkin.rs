//! The HCM tracing provider `envoy.tracers.zipkin` (`config.trace.v3.ZipkinConfig`): where
//! finished spans are sent (a cluster, a path, a Host and extra headers: the legacy
//! `collector_cluster` / `collector_endpoint` / `collector_hostname`, or `collector_service`,
//! which istiod ≥ 1.29 writes) and how span ids are made. Envoy 1.40's rules: the collector
//! cluster must exist when the config loads, `collector_endpoint_version` must be set (only
//! HTTP_JSON is made here), and `collector_service` wins over the legacy fields.

use serde::Deserialize;
use serde_norway::Value;

use super::{path::FieldPath, raw::typed_config, ConfigError};

/// The `@type` of the Zipkin provider's config.
pub const ZIPKIN_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig";

/// `config.trace.v3.ZipkinConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZipkinConfig {
    collector_cluster: Option<String>,
    collector_endpoint: Option<String>,
    trace_id_128bit: Option<bool>,
    shared_span_context: Option<bool>,
    collector_endpoint_version: Option<String>,
    collector_hostname: Option<String>,
    split_spans_for_request: Option<bool>,
    trace_context_option: Option<String>,
    collector_service: Option<Value>,
}

/// `core.v3.HttpService`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpService {
    http_uri: Option<RawHttpUri>,
    #[serde(default)]
    request_headers_to_add: Vec<RawHeaderValueOption>,
}

/// `core.v3.HttpUri`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpUri {
    uri: Option<String>,
    cluster: Option<String>,
    timeout: Option<String>,
}

/// `core.v3.HeaderValueOption` (the collector sets each header, whatever `append_action`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderValueOption {
    header: Option<super::raw_route::RawHeaderValue>,
    #[allow(dead_code)]
    append: Option<bool>,
    #[allow(dead_code)]
    append_action: Option<String>,
    #[allow(dead_code)]
    keep_empty_value: Option<bool>,
}

/// Where spans go and how they are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zipkin {
    /// The collector's cluster.
    pub cluster: String,
    /// The path spans are POSTed to.
    pub path: String,
    /// The Host of that request.
    pub host: String,
    /// `collector_service.request_headers_to_add`: set on that request (lower-case names).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `trace_id_128bit`: a new trace gets a 128-bit id.
    pub trace_id_128bit: bool,
    /// `shared_span_context` (default true): a server span joining a trace keeps the caller's
    /// span id, and says so (`"shared": true`).
    pub shared_span_context: bool,
    /// `split_spans_for_request`: the connection manager's span is always a server span.
    pub split_spans_for_request: bool,
    /// `trace_context_option: USE_B3_WITH_W3C_PROPAGATION`: `traceparent` is read when no B3
    /// header came, and sent beside the B3 headers.
    pub w3c: bool,
}

/// The provider's `typed_config` at `p` (the `provider` block's), with the collector cluster
/// checked against `clusters`.
pub(crate) fn parse(
    tc: &Value,
    p: &FieldPath,
    cluster_known: impl Fn(&str) -> bool,
) -> Result<Zipkin, ConfigError> {
    let raw: RawZipkinConfig = typed_config(tc, p, ZIPKIN_CONFIG_TYPE)?;
    match raw.collector_endpoint_version.as_deref() {
        Some("HTTP_JSON") => {}
        None | Some("DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE") => {
            return Err(p
                .field("collector_endpoint_version")
                .err("must be HTTP_JSON (Envoy refuses the deprecated default, JSON v1, as well)"))
        }
        Some("HTTP_PROTO") => {
            return Err(p
                .field("collector_endpoint_version")
                .unsupported("HTTP_PROTO (protobuf span reports); use HTTP_JSON"))
        }
        Some("GRPC") => {
            return Err(p
                .field("collector_endpoint_version")
                .err("GRPC is not implemented by Envoy either"))
        }
        Some(v) => {
            return Err(p
                .field("collector_endpoint_version")
                .err(format!("unknown version {v:?}")))
        }
    }
    let w3c = match raw.trace_context_option.as_deref() {
        None | Some("USE_B3") => false,
        Some("USE_B3_WITH_W3C_PROPAGATION") => true,
        Some(v) => {
            return Err(p
                .field("trace_context_option")
                .err(format!("unknown option {v:?}")))
        }
    };
    let via_service = raw.collector_service.is_some();
    let (cluster, path, host, headers) = match raw.collector_service {
        Some(s) => collector_service(s, &p.field("collector_service"))?,
        None => {
            let cluster = raw.collector_cluster.unwrap_or_default();
            let endpoint = raw.collector_endpoint.unwrap_or_default();
            for (f, v) in [
                ("collector_cluster", &cluster),
                ("collector_endpoint", &endpoint),
            ] {
                if v.is_empty() {
                    return Err(p.field(f).err(
                        "required: collector_cluster and collector_endpoint must be set when \
                         collector_service is not",
                    ));
                }
            }
            let host = raw
                .collector_hostname
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| cluster.clone());
            (cluster, endpoint, host, Vec::new())
        }
    };
    let cluster_path = match via_service {
        true => p
            .field("collector_service")
            .field("http_uri")
            .field("cluster"),
        false => p.field("collector_cluster"),
    };
    if !cluster_known(&cluster) {
        return Err(cluster_path.err(format!(
            "unknown cluster {cluster:?} (envoy.tracers.zipkin's collector must be a configured \
             cluster)"
        )));
    }
    let (host_field, path_field) = match via_service {
        true => {
            let u = p.field("collector_service").field("http_uri").field("uri");
            (u.clone(), u)
        }
        false => (p.field("collector_hostname"), p.field("collector_endpoint")),
    };
    http::HeaderValue::from_str(&host)
        .map_err(|_| host_field.err(format!("collector host {host:?} is not a valid Host")))?;
    path.parse::<http::uri::PathAndQuery>()
        .ok()
        .filter(|_| path.starts_with('/'))
        .ok_or_else(|| path_field.err(format!("collector path {path:?} is not a valid path")))?;
    Ok(Zipkin {
        cluster,
        path,
        host,
        headers,
        trace_id_128bit: raw.trace_id_128bit.unwrap_or(false),
        shared_span_context: raw.shared_span_context.unwrap_or(true),
        split_spans_for_request: raw.split_spans_for_request.unwrap_or(false),
        w3c,
    })
}

type Collector = (
    String,
    String,
    String,
    Vec<(http::HeaderName, http::HeaderValue)>,
);

/// `collector_service`: the cluster, and the Zipkin driver's reading of the URI (no `://`: all
/// of it is the path and the Host is the cluster's name; else the Host is what follows the
/// scheme up to the first `/`, and the path the rest, `/` when none).
fn collector_service(v: Value, p: &FieldPath) -> Result<Collector, ConfigError> {
    let s = http_service(v, p)?;
    let (host, path) = match s.uri.find("://") {
        None => (s.cluster.clone(), s.uri),
        Some(i) => {
            let rest = &s.uri[i + 3..];
            match rest.find('/') {
                None => (rest.to_string(), "/".to_string()),
                Some(j) => (rest[..j].to_string(), rest[j..].to_string()),
            }
        }
    };
    Ok((s.cluster, path, host, s.headers))
}

/// A `core.v3.HttpService` as checked: its URI, cluster, timeout and the headers to set.
#[derive(Debug)]
pub(crate) struct HttpService {
    /// `http_uri.uri`.
    pub uri: String,
    /// `http_uri.cluster`.
    pub cluster: String,
    /// `http_uri.timeout`.
    pub timeout: std::time::Duration,
    /// `request_headers_to_add`, each set on the request (whatever its `append_action`).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// The `core.v3.HttpService` `v` at `p` (`http_uri` with a non-empty `uri` and `cluster` and a
/// `timeout`, as its proto requires).
pub(crate) fn http_service(v: Value, p: &FieldPath) -> Result<HttpService, ConfigError> {
    let s: RawHttpService = serde_path_to_error::deserialize(v)
        .map_err(|e| p.join_serde(e.path()).err(e.into_inner().to_string()))?;
    let up = p.field("http_uri");
    let u = s.http_uri.ok_or_else(|| up.err("required"))?;
    let uri = u
        .uri
        .filter(|u| !u.is_empty())
        .ok_or_else(|| up.field("uri").err("must not be empty"))?;
    let cluster = u
        .cluster
        .filter(|c| !c.is_empty())
        .ok_or_else(|| up.field("cluster").err("must not be empty"))?;
    let timeout = u
        .timeout
        .ok_or_else(|| up.field("timeout").err("required"))?;
    let timeout =
        super::duration::parse_duration(&timeout).map_err(|e| up.field("timeout").err(e))?;
    let mut headers = Vec::new();
    for (i, h) in s.request_headers_to_add.iter().enumerate() {
        let hp = p.field("request_headers_to_add").index(i).field("header");
        let hv = h.header.as_ref().ok_or_else(|| hp.err("required"))?;
        let key = hv.key.as_deref().unwrap_or("");
        let name = http::HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| hp.field("key").err(format!("{key:?} is not a header name")))?;
        let value = http::HeaderValue::from_str(hv.value.as_deref().unwrap_or(""))
            .map_err(|_| hp.field("value").err("not a valid header value"))?;
        headers.push((name, value));
    }
    Ok(HttpService {
        uri,
        cluster,
        timeout,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Zipkin, ConfigError> {
        let v: Value = serde_norway::from_str(yaml).unwrap();
        parse(&v, &FieldPath::root().field("typed_config"), |c| {
            c == "zipkin" || c.starts_with("outbound|")
        })
    }

    #[test]
    fn istiods_collector_service_gives_host_and_path() {
        let z = load(
            r#"{"@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig,
                trace_id_128bit: true, shared_span_context: false,
                collector_endpoint_version: HTTP_JSON,
                collector_service: {http_uri: {uri: "http://zipkin.istio-system.svc.cluster.local/api/v2/spans",
                  cluster: "outbound|9411||zipkin.istio-system.svc.cluster.local", timeout: 5s},
                  request_headers_to_add: [{header: {key: X-Tenant, value: a}}]}}"#,
        )
        .unwrap();
        assert_eq!(z.host, "zipkin.istio-system.svc.cluster.local");
        assert_eq!(z.path, "/api/v2/spans");
        assert!(z.trace_id_128bit && !z.shared_span_context && !z.w3c);
        assert_eq!(z.headers[0].0.as_str(), "x-tenant");
    }

    #[test]
    fn legacy_fields_and_uri_without_scheme() {
        let z = load(
            r#"{"@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig,
                collector_cluster: zipkin, collector_endpoint: /api/v2/spans,
                collector_endpoint_version: HTTP_JSON}"#,
        )
        .unwrap();
        assert_eq!(
            (z.host.as_str(), z.path.as_str()),
            ("zipkin", "/api/v2/spans")
        );
        assert!(z.shared_span_context);
        let z = load(
            r#"{"@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig,
                collector_endpoint_version: HTTP_JSON,
                collector_service: {http_uri: {uri: /spans, cluster: zipkin, timeout: 1s}}}"#,
        )
        .unwrap();
        assert_eq!((z.host.as_str(), z.path.as_str()), ("zipkin", "/spans"));
    }

    #[test]
    fn refusals_name_the_field() {
        for (yaml, want) in [
            (
                "{collector_cluster: zipkin, collector_endpoint: /x}",
                "typed_config.collector_endpoint_version",
            ),
            (
                "{collector_cluster: zipkin, collector_endpoint: /x, collector_endpoint_version: HTTP_PROTO}",
                "typed_config.collector_endpoint_version",
            ),
            (
                "{collector_cluster: ghost, collector_endpoint: /x, collector_endpoint_version: HTTP_JSON}",
                "typed_config.collector_cluster",
            ),
            (
                "{collector_cluster: zipkin, collector_endpoint_version: HTTP_JSON}",
                "collector_endpoint must be set",
            ),
            (
                "{collector_endpoint_version: HTTP_JSON, collector_service: {http_uri: {uri: /x, cluster: zipkin}}}",
                "typed_config.collector_service.http_uri.timeout",
            ),
        ] {
            let y = format!(
                r#"{{"@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, {}"#,
                &yaml[1..]
            );
            let e = load(&y).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
