//! The HCM's `tracing.provider: envoy.tracers.opentelemetry` against a real Envoy 1.40 with the
//! same config, as istiod writes it: an inbound listener exporting over OTLP/HTTP, an outbound
//! one over OTLP/gRPC (an HTTP/2 collector cluster), a gateway with `spawn_upstream_span`. Each
//! proxy forwards the same requests to its own application and exports to its own collectors
//! (test servers that record what they get). Per request the test compares, ids replaced by
//! what they are, what the application received (`traceparent`, `tracestate`) and the exported
//! spans (ids, kind, name, attributes, status), then the export requests (path, Host, content
//! type, headers) and the resource (`service.name`, the SDK attributes).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value, trace::v1::Span,
};
use prost::Message;
use serde_json::{json, Value};
use sluice_tests::{
    admin_run::start_text, conformance::proxy::free_ports, trace_peer, upstream::TestUpstream,
};

const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const P: &str = "00f067aa0ba902b7";

#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Ingress,
    Egress,
    Gateway,
}

/// name, listener, path, request headers.
type Case = (&'static str, To, &'static str, Vec<(&'static str, String)>);

fn cases() -> Vec<Case> {
    let tp = |flags: &str| vec![("traceparent", format!("00-{T}-{P}-{flags}"))];
    vec![
        ("new-trace", To::Ingress, "/a?q=1", vec![]),
        ("joins", To::Ingress, "/a", {
            let mut h = tp("01");
            h.push(("tracestate", "vendor=1".into()));
            h
        }),
        ("caller-unsampled", To::Ingress, "/a", tp("00")),
        (
            "bad-traceparent",
            To::Ingress,
            "/a",
            vec![("traceparent", "00-xyz".into())],
        ),
        ("decorated", To::Ingress, "/decorated", vec![]),
        (
            "odd-method",
            To::Ingress,
            "/a",
            vec![("x-method", "PROPFIND".into())],
        ),
        ("server-error", To::Ingress, "/fail", vec![]),
        ("egress-new", To::Egress, "/a", vec![]),
        ("egress-joins", To::Egress, "/a", tp("01")),
        ("egress-not-found", To::Egress, "/missing", vec![]),
        ("gw-new", To::Gateway, "/a", vec![]),
        ("gw-joins", To::Gateway, "/a", tp("01")),
    ]
}

fn config(ports: [u16; 3], app: u16, http_collector: u16, grpc_collector: u16) -> String {
    let [ingress, egress, gateway] = ports;
    let hcm = |name: &str, tracing: &str| {
        format!(
            r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          tracing:
            random_sampling: {{value: 100}}
            custom_tags: [{{tag: istio.mesh_id, literal: {{value: cluster.local}}}}]
{tracing}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {{match: {{prefix: /decorated}}, route: {{cluster: app}}, decorator: {{operation: checkout}}}}
              - {{match: {{prefix: /fail}}, direct_response: {{status: 503}}}}
              - {{match: {{prefix: /missing}}, direct_response: {{status: 404}}}}
              - {{match: {{prefix: /}}, route: {{cluster: app}}}}
"#
        )
    };
    let http = r#"            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: reviews.default
                http_service:
                  http_uri: {uri: "otel-collector.observability.svc.cluster.local/v1/traces", cluster: otlp-http, timeout: 3s}
                  request_headers_to_add: [{header: {key: x-tenant, value: t1}}]"#;
    let grpc = |extra: &str| {
        format!(
            r#"{extra}            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: productpage.default
                grpc_service:
                  envoy_grpc: {{cluster_name: otlp-grpc, authority: opentelemetry-collector.observability.svc.cluster.local}}
                  initial_metadata: [{{key: x-scope, value: s1}}]"#
        )
    };
    let listener = |name: &str, port: u16, dir: &str, tracing: &str| {
        format!(
            r#"  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    traffic_direction: {dir}
    filter_chains:
    - filters:
{}"#,
            hcm(name, tracing)
        )
    };
    let cluster = |name: &str, port: u16, h2: bool| {
        let proto = if h2 {
            "    typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}\n"
        } else {
            ""
        };
        format!(
            r#"  - name: {name}
    connect_timeout: 2s
{proto}    load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}
"#
        )
    };
    format!(
        r#"node: {{id: "sidecar~10.0.0.1~reviews-1.default~default.svc.cluster.local", cluster: reviews.default}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
{}{}{}  clusters:
{}{}{}"#,
        listener("ingress", ingress, "INBOUND", http),
        listener("egress", egress, "OUTBOUND", &grpc("")),
        listener(
            "gateway",
            gateway,
            "OUTBOUND",
            &grpc("            spawn_upstream_span: true\n")
        ),
        cluster("app", app, false),
        cluster("otlp-http", http_collector, false),
        cluster("otlp-grpc", grpc_collector, true),
    )
}

/// One proxy's run: per case what the application got and the exported spans; the export
/// requests' heads and resources.
struct Run {
    upstream: BTreeMap<&'static str, Value>,
    spans: Vec<Span>,
    exports: Vec<Value>,
    spans_sent: u64,
    ports: [u16; 3],
    app: u16,
}

async fn run(envoy: bool) -> Run {
    let app = TestUpstream::start("app").await;
    let http_collector = TestUpstream::start("otlp-http").await;
    let grpc_collector = TestUpstream::start("otlp-grpc").await;
    let ports = free_ports::<3>();
    let proxy = start_text(
        "otel-interop",
        &config(
            ports,
            app.port(),
            http_collector.port(),
            grpc_collector.port(),
        ),
        envoy,
    );
    let mut upstream = BTreeMap::new();
    for (i, (name, to, path, headers)) in cases().into_iter().enumerate() {
        let port = match to {
            To::Ingress => ports[0],
            To::Egress => ports[1],
            To::Gateway => ports[2],
        };
        let (method, headers): (Vec<_>, Vec<_>) =
            headers.into_iter().partition(|(k, _)| *k == "x-method");
        let method = method.first().map(|(_, m)| m.as_str());
        let keep = |k: &str| matches!(k, "traceparent" | "tracestate");
        let (status, got) = trace_peer::send(
            "5",
            port,
            i,
            method,
            path,
            &headers,
            "otel-test",
            &app,
            keep,
        );
        upstream.insert(name, json!({"status": status, "headers": got}));
    }
    let want = expected_spans();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (spans, exports) = loop {
        let (spans, exports) = exported(&http_collector, &grpc_collector);
        if spans.len() >= want || Instant::now() > deadline {
            break (spans, exports);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spans_sent = trace_peer::counter(&proxy.admin, "tracing.opentelemetry.spans_sent");
    Run {
        upstream,
        spans,
        exports,
        spans_sent,
        ports,
        app: app.port(),
    }
}

/// The spans both collectors received, and each export's head and resource.
fn exported(http: &TestUpstream, grpc: &TestUpstream) -> (Vec<Span>, Vec<Value>) {
    let mut spans = Vec::new();
    let mut exports = Vec::new();
    for (c, framed) in [(http, false), (grpc, true)] {
        let reqs = c.state.requests.lock().unwrap().clone();
        let bodies = c.state.bodies.lock().unwrap().clone();
        for (r, b) in reqs.iter().zip(bodies.iter()) {
            let b = if framed { &b[5.min(b.len())..] } else { &b[..] };
            let m = ExportTraceServiceRequest::decode(b).expect("an OTLP export");
            let h = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
            let rs = &m.resource_spans[0];
            let resource: BTreeMap<String, String> = rs
                .resource
                .as_ref()
                .map(|r| {
                    r.attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(a)))
                        .collect()
                })
                .unwrap_or_default();
            exports.push(json!({
                "path": r.path, "host": h("host"), "content-type": h("content-type"),
                "te": h("te"), "x-tenant": h("x-tenant"), "x-scope": h("x-scope"),
                "user-agent": h("user-agent").split('/').next(),
                "resource": resource.into_iter()
                    .filter(|(k, _)| k != "telemetry.sdk.version").collect::<BTreeMap<_, _>>(),
                "scope": rs.scope_spans[0].scope.as_ref().map(|s| s.name.clone()),
            }));
            spans.extend(rs.scope_spans.iter().flat_map(|s| s.spans.clone()));
        }
    }
    (spans, exports)
}

fn text(a: &opentelemetry_proto::tonic::common::v1::KeyValue) -> String {
    match a.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Sampled requests' spans (all but the unsampled caller's and the bad traceparent's, plus
/// the gateway's two attempts).
fn expected_spans() -> usize {
    cases().len() - 2 + 2
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Per case: the application's headers and the spans, ids replaced by what they are.
fn normalize(r: &Run) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    for (i, (name, ..)) in cases().into_iter().enumerate() {
        let rid = trace_peer::request_id(i);
        let main = r.spans.iter().find(|s| {
            s.attributes
                .iter()
                .any(|a| a.key == "guid:x-request-id" && text(a).starts_with(&rid[..8]))
        });
        let mut family: Vec<&Span> = main.into_iter().collect();
        if let Some(m) = main {
            family.extend(r.spans.iter().filter(|c| c.parent_span_id == m.span_id));
        }
        let label = |v: &str| -> String {
            if v == T {
                return "caller-trace".into();
            }
            if v == P {
                return "caller-span".into();
            }
            if let Some(k) = family.iter().position(|s| hex(&s.span_id) == v) {
                return format!("span{k}");
            }
            if family.first().is_some_and(|s| hex(&s.trace_id) == v) {
                return "own-trace".into();
            }
            format!("new/{}", v.len())
        };
        let spans: Vec<Value> = family
            .iter()
            .map(|s| {
                let attrs: BTreeMap<String, String> = s
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(a)))
                    .collect();
                assert!(
                    s.start_time_unix_nano > 0 && s.end_time_unix_nano >= s.start_time_unix_nano
                );
                json!({
                    "trace": label(&hex(&s.trace_id)), "id": label(&hex(&s.span_id)),
                    "parent": label(&hex(&s.parent_span_id)), "name": s.name, "kind": s.kind,
                    "trace_state": s.trace_state, "attributes": attrs,
                    "status": s.status.as_ref().map(|st| st.code),
                })
            })
            .collect();
        let up = &r.upstream[name];
        let headers: BTreeMap<String, String> = up["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let v = v.as_str().unwrap_or("");
                let v = match k.as_str() {
                    "traceparent" => v
                        .split('-')
                        .map(|p| {
                            if p.len() >= 16 {
                                label(p)
                            } else {
                                p.to_string()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("-"),
                    _ => v.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
        let mut v =
            json!({"status": up["status"], "upstream": headers, "spans": spans}).to_string();
        for p in r.ports {
            v = v.replace(&format!("127.0.0.1:{p}"), "127.0.0.1:PORT");
        }
        v = v.replace(&format!("127.0.0.1:{}", r.app), "127.0.0.1:APP");
        out.insert(name, serde_json::from_str(&v).expect("JSON"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_spans_and_headers_match_envoy() {
    let envoy = run(true).await;
    let sluice = run(false).await;
    let (e, s) = (normalize(&envoy), normalize(&sluice));
    let diffs = trace_peer::differences(&e, &s);
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    let counts: Vec<(&str, usize)> = e
        .iter()
        .map(|(n, v)| (*n, v["spans"].as_array().map_or(0, Vec::len)))
        .collect();
    assert_eq!(
        envoy.spans.len(),
        expected_spans(),
        "Envoy's spans: {counts:?}"
    );
    assert_eq!(
        trace_peer::distinct(&sluice.exports),
        trace_peer::distinct(&envoy.exports),
        "export requests"
    );
    assert_eq!(
        (sluice.spans_sent, envoy.spans_sent),
        (expected_spans() as u64, expected_spans() as u64),
        "tracing.opentelemetry.spans_sent"
    );
}
