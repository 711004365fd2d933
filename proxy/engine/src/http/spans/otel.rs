//! OpenTelemetry spans, as Envoy 1.40's `envoy.tracers.opentelemetry` makes them: the
//! connection manager's span joins a valid `traceparent` (a new span id, the header's as its
//! parent, its `tracestate` kept) or starts a 128-bit trace; an invalid `traceparent` gives no
//! span (the headers go on as they came). Sampled only when the HCM's trace decision traces
//! the request and the `traceparent`'s flag (if any) says so. Named `ingress` or
//! `egress <host>` (the decorator renames it); SERVER on ingress or with upstream spans, else
//! CLIENT. Its context goes upstream as `traceparent` and `tracestate` (always set). Finished
//! as an OTLP span: tags as string attributes (an `http.method` outside the standard ten is
//! `_OTHER`), status ERROR from `http.status_code` (5xx; 4xx on a client span) and
//! `grpc.status_code` (OpenTelemetry's gRPC mapping, last one wins).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{
        span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span as Otlp, Status,
    },
};

use super::{extract, hex16, random_id, Ids, Kind, Span};

/// The connection manager's span (see the module's doc); `upstream_spans`: the HCM's
/// `spawn_upstream_span`.
pub(crate) fn start(
    upstream_spans: bool,
    egress: bool,
    traced: bool,
    headers: &HeaderMap,
    host: &str,
    wall: SystemTime,
    at: Instant,
) -> Option<Span> {
    let (ids, trace_state) = match headers.get("traceparent") {
        None => (
            Ids {
                high: random_id(),
                trace: random_id(),
                id: random_id(),
                parent: 0,
                sampled: traced,
            },
            String::new(),
        ),
        Some(tp) => {
            let tp = extract::traceparent(tp.as_bytes())?;
            // Every `tracestate` value, `,`-joined, as it came.
            let state = headers
                .get_all("tracestate")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(",");
            (
                Ids {
                    high: tp.context.high,
                    trace: tp.context.trace,
                    id: random_id(),
                    parent: tp.context.id,
                    sampled: tp.sampled && traced,
                },
                state,
            )
        }
    };
    let kind = if upstream_spans || !egress {
        Kind::Server
    } else {
        Kind::Client
    };
    let name = if egress {
        format!("egress {host}")
    } else {
        "ingress".to_string()
    };
    Some(Span {
        trace_state,
        otel: true,
        ..Span::new(ids, kind, name, wall, at)
    })
}

/// The trace id as 32 lower-case hex digits.
fn trace_hex32(ids: &Ids) -> String {
    let mut s = String::with_capacity(32);
    s.push_str(std::str::from_utf8(&hex16(ids.high)).unwrap_or_default());
    s.push_str(std::str::from_utf8(&hex16(ids.trace)).unwrap_or_default());
    s
}

/// `00-{trace: 32 digits}-{span}-{01|00}` (a 64-bit trace id zero-padded), as both tracers
/// send it.
pub(crate) fn traceparent(ids: &Ids) -> HeaderValue {
    let mut tp = String::with_capacity(55);
    tp.push_str("00-");
    tp.push_str(&trace_hex32(ids));
    tp.push('-');
    tp.push_str(std::str::from_utf8(&hex16(ids.id)).unwrap_or_default());
    tp.push_str(if ids.sampled { "-01" } else { "-00" });
    HeaderValue::from_str(&tp).expect("hex digits")
}

/// `injectContext`: `traceparent` and `tracestate` (set even when empty), replacing the
/// request's.
pub(crate) fn inject(ids: &Ids, trace_state: &str, h: &mut HeaderMap) {
    h.insert("traceparent", traceparent(ids));
    let state = HeaderValue::from_str(trace_state).unwrap_or(HeaderValue::from_static(""));
    h.insert("tracestate", state);
}

/// The standard methods OpenTelemetry keeps in `http.method`.
const METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE",
];

/// `span` finished now, as its OTLP message.
pub(crate) fn finish(span: &Span) -> Otlp {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let client = span.kind == Kind::Client;
    let mut attributes: Vec<KeyValue> = Vec::with_capacity(span.tags.len() + span.custom.len());
    let mut status: Option<Status> = None;
    let all = span
        .tags
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(span.custom.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (key, value) in all {
        let value = match key {
            "http.method" if !METHODS.contains(&value) => "_OTHER",
            "http.status_code" => {
                if value
                    .parse::<u64>()
                    .is_ok_and(|c| c >= 500 || (client && c >= 400))
                {
                    status = Some(error());
                }
                value
            }
            "grpc.status_code" => {
                let code = match value.parse::<i64>() {
                    Ok(0) | Err(_) => StatusCode::Unset,
                    Ok(_) if client => StatusCode::Error,
                    Ok(2 | 4 | 12 | 13 | 14 | 15) => StatusCode::Error,
                    Ok(_) => StatusCode::Unset,
                };
                status = Some(Status {
                    message: String::new(),
                    code: code as i32,
                });
                value
            }
            _ => value,
        };
        let v = Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        });
        // A key set again keeps its place and takes the new value.
        match attributes.iter_mut().find(|a| a.key == key) {
            Some(a) => a.value = v,
            None => attributes.push(KeyValue {
                key: key.to_string(),
                value: v,
                ..KeyValue::default()
            }),
        }
    }
    let mut trace_id = Vec::with_capacity(16);
    trace_id.extend_from_slice(&span.ids.high.to_be_bytes());
    trace_id.extend_from_slice(&span.ids.trace.to_be_bytes());
    Otlp {
        trace_id,
        span_id: span.ids.id.to_be_bytes().to_vec(),
        trace_state: span.trace_state.clone(),
        parent_span_id: match span.ids.parent {
            0 => Vec::new(),
            p => p.to_be_bytes().to_vec(),
        },
        name: span.name.clone(),
        kind: match span.kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
        } as i32,
        start_time_unix_nano: span.timestamp_us.saturating_mul(1000),
        end_time_unix_nano: end,
        attributes,
        status,
        ..Otlp::default()
    }
}

fn error() -> Status {
    Status {
        message: String::new(),
        code: StatusCode::Error as i32,
    }
}

/// One export: the resource (its string attributes), one scope (`envoy` and the version), the
/// spans in the order they finished.
pub(crate) fn request(
    resource: &[(String, String)],
    spans: Vec<Otlp>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(v.clone())),
                        }),
                        ..KeyValue::default()
                    })
                    .collect(),
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "envoy".to_string(),
                    version: crate::config::otel::sdk_version().to_string(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
