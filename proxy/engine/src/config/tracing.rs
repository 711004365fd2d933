//! The HCM's `tracing` and `request_id_extension` and a route's `tracing`, parsed into what
//! Envoy 1.40 does with them when no span is exported: the trace sampling decision packed into
//! the `x-request-id` (`ConnectionManagerUtility::mutateTracingRequestHeader`, the UUID request
//! id extension) and the route decorator's `x-envoy-decorator-operation`. Applied by
//! `http::trace`; docs/config.md ("Tracing") says which fields are no-ops and why.

use serde::Deserialize;
use serde_norway::Value;

use super::{
    path::FieldPath, raw::typed_config, raw_cluster_options::RawPercent,
    raw_route::RawFractionalPercent, ConfigError,
};
use crate::route::FractionalPercent;

/// The `@type` of the UUID request id extension's config.
pub const UUID_REQUEST_ID_TYPE: &str =
    "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";

/// `HttpConnectionManager.Tracing`. Span data (`verbose`, `max_path_tag_length`,
/// `spawn_upstream_span`, `operation`, `upstream_operation`, `no_context_propagation`) is
/// accepted and never read: no span is exported. `custom_tags` is checked only.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracing {
    /// The rates (a route's `tracing` replaces all three).
    pub sampling: Sampling,
    /// The listener's `traffic_direction` is OUTBOUND: the decorator goes on the upstream
    /// request (egress); otherwise on the response (ingress, Envoy's default).
    pub egress: bool,
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

/// `tracing` of the HCM at `p`; `egress` from the listener's `traffic_direction`.
pub(crate) fn hcm_tracing(
    raw: &RawHcmTracing,
    p: &FieldPath,
    egress: bool,
) -> Result<Tracing, ConfigError> {
    if raw.provider.is_some() {
        return Err(p.field("provider").unsupported(
            "a tracer provider (sluice exports no spans, and a provider's propagation headers \
             such as b3 or traceparent are not made); leave it unset",
        ));
    }
    custom_tags(&raw.custom_tags, &p.field("custom_tags"))?;
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
    })
}

/// A route's `tracing` at `p`: each unset rate is 100% (Envoy's `RouteTracingImpl`).
pub(crate) fn route_tracing(raw: &RawRouteTracing, p: &FieldPath) -> Result<Sampling, ConfigError> {
    custom_tags(&raw.custom_tags, &p.field("custom_tags"))?;
    let rate = |raw: &Option<RawFractionalPercent>, f: &str| match raw {
        None => Ok(FractionalPercent {
            numerator: 100,
            denominator: 100,
        }),
        Some(r) => crate::route::build_match::percent(r, &p.field(f)),
    };
    Ok(Sampling {
        client: rate(&raw.client_sampling, "client_sampling")?,
        random: rate(&raw.random_sampling, "random_sampling")?,
        overall: rate(&raw.overall_sampling, "overall_sampling")?,
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

/// `custom_tags[]` (type.tracing.v3.CustomTag): span tags, a no-op here, but checked as Envoy
/// does: a non-empty `tag` and exactly one of its kinds.
fn custom_tags(tags: &[Value], p: &FieldPath) -> Result<(), ConfigError> {
    const KINDS: &[&str] = &[
        "literal",
        "environment",
        "request_header",
        "metadata",
        "value",
    ];
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
        if m.get("tag")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(tp.field("tag").err("must not be empty"));
        }
        if KINDS.iter().filter(|k| m.contains_key(**k)).count() != 1 {
            return Err(tp.err(format!("exactly one of {} is required", KINDS.join(", "))));
        }
    }
    Ok(())
}
