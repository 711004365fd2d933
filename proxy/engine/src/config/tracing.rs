//! The HCM's `tracing` and `request_id_extension`, a route's `tracing` and the bootstrap's
//! `tracing.http`, parsed into what Envoy 1.40 does with them: the trace sampling decision
//! packed into the `x-request-id` (`ConnectionManagerUtility::mutateTracingRequestHeader`, the
//! UUID request id extension) and the route decorator's `x-envoy-decorator-operation`
//! (`http::trace`), and with the Zipkin provider (`zipkin.rs`) the custom tags and span options
//! `http::spans` reads. docs/config.md ("Tracing") says which fields are no-ops and why.

use std::sync::Arc;

use serde::Deserialize;
use serde_norway::Value;

use super::{
    path::FieldPath, raw::typed_config, raw_cluster_options::RawPercent,
    raw_route::RawFractionalPercent, ConfigError,
};
use crate::route::FractionalPercent;

pub use super::{
    otel::{OpenTelemetry, OtelExport},
    zipkin::Zipkin,
};

/// The `@type` of the UUID request id extension's config.
pub const UUID_REQUEST_ID_TYPE: &str =
    "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";

/// `HttpConnectionManager.Tracing`. Without a provider the span data (`verbose`,
/// `max_path_tag_length`, `custom_tags`, `spawn_upstream_span`, `operation`,
/// `upstream_operation`, `no_context_propagation`) is checked and never read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct RawHcmTracing {
    pub client_sampling: Option<RawPercent>,
    pub random_sampling: Option<RawPercent>,
    pub overall_sampling: Option<RawPercent>,
    pub verbose: Option<bool>,
    pub max_path_tag_length: Option<u32>,
    #[serde(default)]
    pub custom_tags: Vec<Value>,
    /// Rejected when set: a provider injects propagation headers sluice does not make.
    pub provider: Option<Value>,
    pub spawn_upstream_span: Option<bool>,
    pub operation: Option<String>,
    pub upstream_operation: Option<String>,
    pub no_context_propagation: Option<bool>,
}

/// The bootstrap's `tracing` (`config.trace.v3.Tracing`): its `http` provider serves every
/// HCM `tracing` that names none (Istio's bootstrap for `proxyConfig.tracing.zipkin`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBootstrapTracing {
    http: Option<Value>,
}

/// The bootstrap's tracer: the provider block, and where it is (for errors).
#[derive(Debug)]
pub(crate) struct BootstrapTracer {
    provider: Value,
    path: FieldPath,
}

/// The bootstrap's `tracing` at `p` (None: no `http`); its provider is read by each HCM that
/// uses it, as Envoy builds it per connection manager.
pub(crate) fn bootstrap_tracer(
    raw: RawBootstrapTracing,
    p: &FieldPath,
) -> Result<Option<BootstrapTracer>, ConfigError> {
    Ok(raw.http.map(|provider| BootstrapTracer {
        provider,
        path: p.field("http"),
    }))
}

/// `config.route.v3.Tracing` (`operation`, `upstream_operation`: span names, never read).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct RawRouteTracing {
    pub operation: Option<String>,
    pub upstream_operation: Option<String>,
    #[serde(default)]
    pub custom_tags: Vec<Value>,
    pub client_sampling: Option<RawFractionalPercent>,
    pub random_sampling: Option<RawFractionalPercent>,
    pub overall_sampling: Option<RawFractionalPercent>,
}

/// `extensions.request_id.uuid.v3.UuidRequestIdConfig` (both fields BoolValues), the
/// `typed_config` of the HCM's `request_id_extension`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUuidRequestIdConfig {
    pack_trace_reason: Option<bool>,
    use_request_id_for_trace_sampling: Option<bool>,
}

/// The three sampling rates of a trace decision (HCM or route level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// `client_sampling`: a request with `x-client-trace-id` is traced at this rate (drawn at
    /// random, not from the request id).
    pub client: FractionalPercent,
    /// `random_sampling`: against the request id's integer modulo 10000.
    pub random: FractionalPercent,
    /// `overall_sampling`: the cap every traced request must also pass (same integer).
    pub overall: FractionalPercent,
}

/// The HCM's `tracing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    /// The rates (a route's `tracing` replaces all three).
    pub sampling: Sampling,
    /// The listener's `traffic_direction` is OUTBOUND: the decorator goes on the upstream
    /// request (egress); otherwise on the response (ingress, Envoy's default).
    pub egress: bool,
    /// `provider`: spans are made, propagated and reported (None: only the trace decision).
    pub provider: Option<Arc<TraceProvider>>,
}

/// `tracing.provider` (`envoy.tracers.zipkin` or `envoy.tracers.opentelemetry`) and the HCM
/// fields that shape its spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceProvider {
    /// The tracer's config.
    pub tracer: TracerConfig,
    /// `custom_tags`, set on every span.
    pub custom_tags: Vec<CustomTag>,
    /// `max_path_tag_length` (default 256): the path's share of the `http.url` tag.
    pub max_path_tag_length: usize,
    /// `no_context_propagation`: no trace header goes upstream (spans are still reported).
    pub no_context_propagation: bool,
    /// `spawn_upstream_span`, or the router's `start_child_span`: each upstream attempt gets
    /// its own client span.
    pub upstream_spans: bool,
}

/// Which tracer, with its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TracerConfig {
    /// `envoy.tracers.zipkin`.
    Zipkin(Zipkin),
    /// `envoy.tracers.opentelemetry`.
    OpenTelemetry(OpenTelemetry),
}

impl TraceProvider {
    /// The Zipkin tracer's config, when it is one.
    pub fn zipkin(&self) -> Option<&Zipkin> {
        match &self.tracer {
            TracerConfig::Zipkin(z) => Some(z),
            TracerConfig::OpenTelemetry(_) => None,
        }
    }
}

/// A route's `tracing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTracing {
    /// Replaces the HCM's rates (each unset one 100%).
    pub sampling: Sampling,
    /// `custom_tags`, added to the HCM's (shared by the requests that take the route).
    pub custom_tags: Arc<[CustomTag]>,
}

/// `type.tracing.v3.CustomTag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomTag {
    /// `tag`.
    pub tag: String,
    /// Where its value comes from.
    pub value: TagValue,
}

/// A custom tag's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagValue {
    /// `literal`, and `environment` (read when the config loads, as Envoy does).
    Fixed(String),
    /// `request_header`: the request's header, else `default_value`.
    RequestHeader {
        /// `name`.
        name: http::HeaderName,
        /// `default_value`.
        default: String,
    },
    /// `metadata` of kind `request`: the request's dynamic metadata at the key's path (a
    /// string as is, other values as JSON), else `default_value`.
    Metadata {
        /// `metadata_key.key`: the namespace.
        namespace: String,
        /// `metadata_key.path[].key`.
        path: Vec<String>,
        /// `default_value`.
        default: String,
    },
}

/// `request_id_extension` (the UUID extension; Envoy's default when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestIdExtension {
    /// `pack_trace_reason` (default true): the trace reason is read from and written to the
    /// UUID's 15th character.
    pub pack_trace_reason: bool,
    /// `use_request_id_for_trace_sampling` (default true): false traces every request and
    /// leaves the id alone.
    pub use_request_id_for_trace_sampling: bool,
}

impl Default for RequestIdExtension {
    fn default() -> Self {
        Self {
            pack_trace_reason: true,
            use_request_id_for_trace_sampling: true,
        }
    }
}

/// `tracing` of the HCM at `p`; `egress` from the listener's `traffic_direction`;
/// `cluster_known` checks the provider's collector cluster.
pub(crate) fn hcm_tracing(
    raw: &RawHcmTracing,
    p: &FieldPath,
    egress: bool,
    bootstrap: Option<&BootstrapTracer>,
    cluster_known: impl Fn(&str) -> bool,
) -> Result<Tracing, ConfigError> {
    let tags = custom_tags(&raw.custom_tags, &p.field("custom_tags"))?;
    // The HCM's own provider, else the bootstrap's (errors in it name its place there).
    let own = raw.provider.as_ref().map(|v| (v, p.field("provider")));
    let given = own.or_else(|| bootstrap.map(|b| (&b.provider, b.path.clone())));
    let provider = match given {
        None => None,
        Some((v, pp)) => Some(Arc::new(provider(raw, v, p, &pp, tags, cluster_known)?)),
    };
    let pct = |raw: &Option<RawPercent>, f: &str| -> Result<Option<f64>, ConfigError> {
        match raw.as_ref().map(|r| r.value.unwrap_or(0.0)) {
            Some(v) if !(0.0..=100.0).contains(&v) => Err(p
                .field(f)
                .field("value")
                .err(format!("{v} is not in 0..100"))),
            v => Ok(v),
        }
    };
    // Envoy's HCM config: client sampling is the percent truncated to an integer out of 100;
    // random and overall are `convertPercent(value, 10000)`, truncated out of 10000.
    let ten_thousandths = |v: Option<f64>| FractionalPercent {
        numerator: v.map_or(10_000, |v| (10_000.0 * (v / 100.0)) as u32),
        denominator: 10_000,
    };
    Ok(Tracing {
        sampling: Sampling {
            client: FractionalPercent {
                numerator: pct(&raw.client_sampling, "client_sampling")?.map_or(100, |v| v as u32),
                denominator: 100,
            },
            random: ten_thousandths(pct(&raw.random_sampling, "random_sampling")?),
            overall: ten_thousandths(pct(&raw.overall_sampling, "overall_sampling")?),
        },
        egress,
        provider,
    })
}

/// `tracing.provider` at `p.provider`, with the HCM tracing fields it reads.
fn provider(
    raw: &RawHcmTracing,
    v: &Value,
    p: &FieldPath,
    pp: &FieldPath,
    tags: Vec<ParsedTag>,
    cluster_known: impl Fn(&str) -> bool,
) -> Result<TraceProvider, ConfigError> {
    let Value::Mapping(m) = v else {
        return Err(pp.err("must be a mapping"));
    };
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), Some("name" | "typed_config")))
    {
        return Err(pp.field(k.as_str().unwrap_or("?")).err("unknown field"));
    }
    let tc = m
        .get("typed_config")
        .ok_or_else(|| pp.field("typed_config").err("required"))?;
    let ty = match tc {
        Value::Mapping(t) => t.get("@type").and_then(Value::as_str).unwrap_or(""),
        _ => "",
    };
    let tp = pp.field("typed_config");
    let tracer = match ty {
        super::zipkin::ZIPKIN_CONFIG_TYPE => {
            TracerConfig::Zipkin(super::zipkin::parse(tc, &tp, cluster_known)?)
        }
        super::otel::OTEL_CONFIG_TYPE => {
            TracerConfig::OpenTelemetry(super::otel::parse(tc, &tp, cluster_known)?)
        }
        _ => {
            return Err(tp.field("@type").unsupported(&format!(
                "the tracer {ty:?} (envoy.tracers.zipkin and envoy.tracers.opentelemetry are \
                 implemented)"
            )))
        }
    };
    if raw.verbose == Some(true) {
        return Err(p
            .field("verbose")
            .unsupported("verbose spans (timing annotations) with a provider"));
    }
    for (f, v) in [
        ("operation", &raw.operation),
        ("upstream_operation", &raw.upstream_operation),
    ] {
        if v.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(p.field(f).unsupported(
                "a span name format with a provider (the route decorator names spans)",
            ));
        }
    }
    let custom_tags = tags
        .into_iter()
        .enumerate()
        .map(|(i, t)| match t {
            ParsedTag::Tag(t) => Ok(t),
            ParsedTag::Unsupported(why) => Err(p.field("custom_tags").index(i).unsupported(why)),
        })
        .collect::<Result<_, _>>()?;
    Ok(TraceProvider {
        tracer,
        custom_tags,
        max_path_tag_length: raw.max_path_tag_length.map_or(256, |n| n as usize),
        no_context_propagation: raw.no_context_propagation.unwrap_or(false),
        upstream_spans: raw.spawn_upstream_span.unwrap_or(false),
    })
}

/// A route's `tracing` at `p`: each unset rate is 100% (Envoy's `RouteTracingImpl`).
pub(crate) fn route_tracing(
    raw: &RawRouteTracing,
    p: &FieldPath,
) -> Result<RouteTracing, ConfigError> {
    let tags = custom_tags(&raw.custom_tags, &p.field("custom_tags"))?;
    // A kind made only with a provider: the route cannot know its connection manager's (RDS),
    // so such a tag is left out (docs/config.md "Tracing").
    let custom_tags = tags
        .into_iter()
        .filter_map(|t| match t {
            ParsedTag::Tag(t) => Some(t),
            ParsedTag::Unsupported(_) => None,
        })
        .collect();
    let rate = |raw: &Option<RawFractionalPercent>, f: &str| match raw {
        None => Ok(FractionalPercent {
            numerator: 100,
            denominator: 100,
        }),
        Some(r) => crate::route::build_match::percent(r, &p.field(f)),
    };
    Ok(RouteTracing {
        sampling: Sampling {
            client: rate(&raw.client_sampling, "client_sampling")?,
            random: rate(&raw.random_sampling, "random_sampling")?,
            overall: rate(&raw.overall_sampling, "overall_sampling")?,
        },
        custom_tags,
    })
}

/// `request_id_extension` at `p` (only the UUID extension exists in Envoy 1.40).
/// (`RequestIDExtension`: a mapping whose one field is `typed_config`).
pub(crate) fn request_id_extension(
    raw: Option<&Value>,
    p: &FieldPath,
) -> Result<RequestIdExtension, ConfigError> {
    let Some(raw) = raw else {
        return Ok(RequestIdExtension::default());
    };
    let Value::Mapping(m) = raw else {
        return Err(p.err("must be a mapping"));
    };
    if let Some(k) = m.keys().find(|k| k.as_str() != Some("typed_config")) {
        return Err(p.field(k.as_str().unwrap_or("?")).err("unknown field"));
    }
    let tp = p.field("typed_config");
    let tc = m.get("typed_config").ok_or_else(|| tp.err("required"))?;
    let c: RawUuidRequestIdConfig = typed_config(tc, &tp, UUID_REQUEST_ID_TYPE)?;
    Ok(RequestIdExtension {
        pack_trace_reason: c.pack_trace_reason.unwrap_or(true),
        use_request_id_for_trace_sampling: c.use_request_id_for_trace_sampling.unwrap_or(true),
    })
}

/// A custom tag as parsed: one made here, or one of a kind not made here (why).
#[derive(Debug)]
enum ParsedTag {
    Tag(CustomTag),
    Unsupported(&'static str),
}

/// `type.tracing.v3.CustomTag.Literal` / `Environment` / `Header` / `Metadata`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTagSource {
    value: Option<String>,
    name: Option<String>,
    default_value: Option<String>,
    kind: Option<serde_json::Value>,
    metadata_key: Option<RawMetadataKey>,
}

/// `type.metadata.v3.MetadataKey`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadataKey {
    key: Option<String>,
    #[serde(default)]
    path: Vec<RawPathSegment>,
}

/// `MetadataKey.PathSegment`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathSegment {
    key: Option<String>,
}

/// `custom_tags[]` (type.tracing.v3.CustomTag) at `p`, checked as Envoy does: a non-empty `tag`
/// and exactly one of its kinds.
fn custom_tags(tags: &[Value], p: &FieldPath) -> Result<Vec<ParsedTag>, ConfigError> {
    const KINDS: &[&str] = &[
        "literal",
        "environment",
        "request_header",
        "metadata",
        "value",
    ];
    let mut out = Vec::with_capacity(tags.len());
    for (i, t) in tags.iter().enumerate() {
        let tp = p.index(i);
        let Value::Mapping(m) = t else {
            return Err(tp.err("must be a mapping"));
        };
        for k in m.keys() {
            let k = k.as_str().unwrap_or("");
            if k != "tag" && !KINDS.contains(&k) {
                return Err(tp.field(k).err("unknown field"));
            }
        }
        let tag = match m.get("tag").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => return Err(tp.field("tag").err("must not be empty")),
        };
        let Some(kind) = KINDS.iter().copied().find(|k| m.contains_key(*k)) else {
            return Err(tp.err(format!("exactly one of {} is required", KINDS.join(", "))));
        };
        if KINDS.iter().filter(|k| m.contains_key(**k)).count() != 1 {
            return Err(tp.err(format!("exactly one of {} is required", KINDS.join(", "))));
        }
        let kp = tp.field(kind);
        if kind == "value" {
            out.push(ParsedTag::Unsupported(
                "a custom tag from a format string (`value`)",
            ));
            continue;
        }
        // Each kind's own fields (`CustomTag.Literal` / `Environment` / `Header` / `Metadata`).
        let allowed: &[&str] = match kind {
            "literal" => &["value"],
            "environment" | "request_header" => &["name", "default_value"],
            _ => &["kind", "metadata_key", "default_value"],
        };
        if let Value::Mapping(km) = &m[kind] {
            if let Some(k) = km
                .keys()
                .filter_map(Value::as_str)
                .find(|k| !allowed.contains(k))
            {
                return Err(kp.field(k).err("unknown field"));
            }
        }
        let src: RawTagSource =
            serde_norway::from_value(m[kind].clone()).map_err(|e| kp.err(e.to_string()))?;
        let default = src.default_value.clone().unwrap_or_default();
        let value = match kind {
            "literal" => TagValue::Fixed(src.value.unwrap_or_default()),
            "environment" => {
                let name = src.name.filter(|n| !n.is_empty());
                let name = name.ok_or_else(|| kp.field("name").err("must not be empty"))?;
                TagValue::Fixed(std::env::var(&name).unwrap_or(default))
            }
            "request_header" => {
                let name = src.name.unwrap_or_default();
                let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    kp.field("name")
                        .err(format!("{name:?} is not a header name"))
                })?;
                TagValue::RequestHeader { name, default }
            }
            _ => {
                let request = match &src.kind {
                    Some(serde_json::Value::Object(k)) => k.len() == 1 && k.contains_key("request"),
                    _ => false,
                };
                if !request {
                    out.push(ParsedTag::Unsupported(
                        "a metadata custom tag of a kind other than `request`",
                    ));
                    continue;
                }
                let mk = src
                    .metadata_key
                    .ok_or_else(|| kp.field("metadata_key").err("required"))?;
                let namespace = mk.key.filter(|k| !k.is_empty()).ok_or_else(|| {
                    kp.field("metadata_key")
                        .field("key")
                        .err("must not be empty")
                })?;
                let path = mk
                    .path
                    .into_iter()
                    .enumerate()
                    .map(|(j, s)| {
                        s.key.filter(|k| !k.is_empty()).ok_or_else(|| {
                            kp.field("metadata_key")
                                .field("path")
                                .index(j)
                                .field("key")
                                .err("must not be empty")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if path.is_empty() {
                    return Err(kp
                        .field("metadata_key")
                        .field("path")
                        .err("must not be empty"));
                }
                TagValue::Metadata {
                    namespace,
                    path,
                    default,
                }
            }
        };
        out.push(ParsedTag::Tag(CustomTag { tag, value }));
    }
    Ok(out)
}
