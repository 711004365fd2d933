//! The HCM's `tracing.provider: envoy.tracers.zipkin` against a real Envoy 1.40 with the same
//! config: each proxy forwards the same requests to its own application and reports its spans
//! to its own collector (a test server answering 202). For every request the test compares,
//! with random ids and times replaced by what they are (the caller's trace, span or parent id,
//! the span's own id, a new id), what the application received (`x-b3-*`, `traceparent`) and
//! the reported span (ids, kind, name, tags, local endpoint, `shared`, its end annotation), and
//! the collector requests (path, Host, content type, headers). Covered: a new trace, a shared
//! server span joining a B3 context, the single `b3` header, an unsampled flag, a malformed
//! context, a rewritten route (the `http.url` tag), a decorator and an inbound
//! `x-envoy-decorator-operation`, a direct response, custom tags, an egress listener with
//! istiod's shape (`collector_service`, 128-bit ids, no shared context, W3C propagation).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sluice_tests::{
    admin_run::start_text, conformance::proxy::free_ports, trace_peer, upstream::TestUpstream,
};

fn config(ports: [u16; 4], app: u16, collector: u16) -> String {
    let [ingress, egress, gateway, legacy] = ports;
    let hcm = |name: &str, tracing: &str| {
        format!(
            r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          tracing:
{tracing}
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              shadow_rules_stat_prefix: istio_dry_run_deny_
              shadow_rules: {{action: DENY, policies: {{"ns[default]-policy[deny-x]-rule[0]": {{permissions: [{{header: {{name: x-deny, present_match: true}}}}], principals: [{{any: true}}]}}}}}}
          - {{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {{match: {{prefix: /decorated}}, route: {{cluster: app}}, decorator: {{operation: checkout}}}}
              - {{match: {{prefix: /rw}}, route: {{cluster: app, prefix_rewrite: /rewritten, host_rewrite_literal: backend.test}}, request_headers_to_add: [{{header: {{key: x-tenant, value: from-route}}}}]}}
              - {{match: {{prefix: /direct}}, direct_response: {{status: 503, body: {{inline_string: down}}}}}}
              - {{match: {{prefix: /retry}}, route: {{cluster: app, retry_policy: {{retry_on: 5xx, num_retries: 1}}}}}}
              - {{match: {{prefix: /strip}}, route: {{cluster: app}}, request_headers_to_remove: [x-b3-sampled, x-b3-spanid, traceparent]}}
              - {{match: {{prefix: /}}, route: {{cluster: app}}}}
"#
        )
    };
    let ingress_tracing = r#"            custom_tags:
            - {tag: mesh, literal: {value: m1}}
            - {tag: tenant, request_header: {name: x-tenant, default_value: none}}
            - {tag: home, environment: {name: SLUICE_ZIPKIN_TEST_UNSET, default_value: nowhere}}
            - {tag: istio.authorization.dry_run.deny_policy.name, metadata: {kind: {request: {}}, metadata_key: {key: envoy.filters.http.rbac, path: [{key: istio_dry_run_deny_shadow_effective_policy_id}]}}}
            - {tag: istio.authorization.dry_run.deny_policy.result, metadata: {kind: {request: {}}, metadata_key: {key: envoy.filters.http.rbac, path: [{key: istio_dry_run_deny_shadow_engine_result}]}}}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON"#;
    let egress_tracing = r#"            random_sampling: {value: 100}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                trace_id_128bit: true
                shared_span_context: false
                collector_endpoint_version: HTTP_JSON
                trace_context_option: USE_B3_WITH_W3C_PROPAGATION
                collector_service:
                  http_uri: {uri: "http://zipkin.obs.svc.cluster.local/api/v2/spans", cluster: zipkin, timeout: 5s}
                  request_headers_to_add: [{header: {key: x-scope, value: tenant-1}}]"#;
    // An Istio gateway's: spawn_upstream_span.
    let gateway_tracing = r#"            spawn_upstream_span: true
            custom_tags:
            - {tag: istio.mesh_id, literal: {value: cluster.local}}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                trace_id_128bit: true
                shared_span_context: false
                collector_endpoint_version: HTTP_JSON
                collector_service:
                  http_uri: {uri: "http://zipkin.obs.svc.cluster.local/api/v2/spans", cluster: zipkin, timeout: 5s}"#;
    let cluster = |name: &str, port: u16| {
        format!(
            r#"  - name: {name}
    connect_timeout: 2s
    load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}
"#
        )
    };
    format!(
        r#"node: {{id: node-a, cluster: svc-a}}
tracing:
  http:
    name: envoy.tracers.zipkin
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
      collector_cluster: zipkin
      collector_endpoint: /api/v2/spans
      collector_endpoint_version: HTTP_JSON
      trace_id_128bit: true
      shared_span_context: false
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {ingress}}}}}
    traffic_direction: INBOUND
    filter_chains:
    - filters:
{ih}  - name: egress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {egress}}}}}
    traffic_direction: OUTBOUND
    filter_chains:
    - filters:
{eh}  - name: gateway
    address: {{socket_address: {{address: 127.0.0.1, port_value: {gateway}}}}}
    traffic_direction: OUTBOUND
    filter_chains:
    - filters:
{gh}  - name: legacy
    address: {{socket_address: {{address: 127.0.0.1, port_value: {legacy}}}}}
    traffic_direction: INBOUND
    filter_chains:
    - filters:
{lh}  clusters:
{app}{zipkin}"#,
        ih = hcm("ingress", ingress_tracing),
        eh = hcm("egress", egress_tracing),
        gh = hcm("gateway", gateway_tracing),
        // Istio's legacy tracing (no Telemetry): the bootstrap's tracer.
        lh = hcm("legacy", "            random_sampling: {value: 100}"),
        app = cluster("app", app),
        zipkin = cluster("zipkin", collector),
    )
}

const T: &str = "463ac35c9f6413ad";
const T128: &str = "463ac35c9f6413ad48485a3953bb6124";
const S: &str = "a2fb4a1d1a96d312";
const P: &str = "0020000000000001";

/// Which listener a case goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Ingress,
    Egress,
    Gateway,
    Legacy,
}

/// One request: name, listener, path, headers.
type Case = (&'static str, To, &'static str, Vec<(&'static str, String)>);

fn cases() -> Vec<Case> {
    let b3 = |pairs: &[(&'static str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect::<Vec<_>>()
    };
    vec![
        ("new-trace", To::Ingress, "/a?x=1", vec![]),
        (
            "joins-b3",
            To::Ingress,
            "/a",
            b3(&[
                ("x-b3-traceid", T),
                ("x-b3-spanid", S),
                ("x-b3-parentspanid", P),
                ("x-b3-sampled", "1"),
            ]),
        ),
        (
            "single-b3",
            To::Ingress,
            "/a",
            vec![("b3", format!("{T128}-{S}-1-{P}"))],
        ),
        (
            "single-b3-no-parent",
            To::Ingress,
            "/a",
            vec![("b3", format!("{T}-{S}-d"))],
        ),
        (
            "single-b3-egress",
            To::Egress,
            "/a",
            vec![("b3", format!("{T}-{S}"))],
        ),
        ("b3-flag-only", To::Ingress, "/a", b3(&[("b3", "1")])),
        ("unsampled", To::Ingress, "/a", b3(&[("x-b3-sampled", "0")])),
        (
            "malformed",
            To::Ingress,
            "/a",
            b3(&[("x-b3-traceid", "zz"), ("x-b3-spanid", S)]),
        ),
        ("rewritten", To::Ingress, "/rw/x", vec![]),
        ("decorated", To::Ingress, "/decorated", vec![]),
        (
            "named-by-caller",
            To::Ingress,
            "/decorated",
            b3(&[("x-envoy-decorator-operation", "caller-op")]),
        ),
        ("direct", To::Ingress, "/direct", vec![]),
        (
            "tagged",
            To::Ingress,
            "/a",
            b3(&[("x-tenant", "t-9"), ("x-client-trace-id", "c-1")]),
        ),
        ("dry-run-deny", To::Ingress, "/a", b3(&[("x-deny", "1")])),
        ("client-gone", To::Ingress, "/a", vec![]),
        // The route's header changes come before the context is set.
        ("route-strips", To::Ingress, "/strip", vec![]),
        ("egress-route-strips", To::Egress, "/strip", vec![]),
        ("egress-new", To::Egress, "/a", vec![]),
        (
            "egress-b3",
            To::Egress,
            "/decorated",
            b3(&[
                ("x-b3-traceid", T),
                ("x-b3-spanid", S),
                ("x-b3-sampled", "1"),
            ]),
        ),
        (
            "egress-w3c",
            To::Egress,
            "/a",
            vec![("traceparent", format!("00-{T128}-{S}-01"))],
        ),
        ("gw-new", To::Gateway, "/a", vec![]),
        (
            "gw-b3",
            To::Gateway,
            "/a",
            b3(&[
                ("x-b3-traceid", T),
                ("x-b3-spanid", S),
                ("x-b3-sampled", "1"),
            ]),
        ),
        ("gw-retry", To::Gateway, "/retry", vec![]),
        (
            "gw-unsampled",
            To::Gateway,
            "/a",
            b3(&[("x-b3-sampled", "0")]),
        ),
        (
            "legacy-b3",
            To::Legacy,
            "/a",
            b3(&[
                ("x-b3-traceid", T),
                ("x-b3-spanid", S),
                ("x-b3-sampled", "1"),
            ]),
        ),
    ]
}

/// One proxy's run: per case, what the application got and the spans reported for it, and
/// the collector requests' heads.
struct Run {
    spans_sent: usize,
    ports: [u16; 4],
    app: u16,
    upstream: BTreeMap<String, Value>,
    spans: BTreeMap<String, Vec<Value>>,
    collector: Vec<Value>,
}

async fn run(envoy: bool) -> Run {
    let app = TestUpstream::start("app").await;
    let collector = TestUpstream::start("zipkin").await;
    collector
        .state
        .status
        .store(202, std::sync::atomic::Ordering::SeqCst);
    let ports = free_ports::<4>();
    let [ingress, egress, gateway, legacy] = ports;
    let proxy = start_text(
        "zipkin-interop",
        &config(ports, app.port(), collector.port()),
        envoy,
    );
    let mut upstream = BTreeMap::new();
    for (i, (name, to, path, headers)) in cases().into_iter().enumerate() {
        let port = match to {
            To::Ingress => ingress,
            To::Egress => egress,
            To::Gateway => gateway,
            To::Legacy => legacy,
        };
        if name == "gw-retry" {
            app.state
                .fail_next
                .store(1, std::sync::atomic::Ordering::SeqCst);
        }
        let keep =
            |k: &str| k.starts_with("x-b3-") || matches!(k, "b3" | "traceparent" | "x-request-id");
        // The client that leaves while the upstream takes its time.
        let gone = name == "client-gone";
        app.state.delay_ms.store(
            if gone { 1500 } else { 0 },
            std::sync::atomic::Ordering::SeqCst,
        );
        let max_time = if gone { "0.5" } else { "5" };
        let (status, trace_headers) = trace_peer::send(
            max_time,
            port,
            i,
            None,
            path,
            &headers,
            "zipkin-test",
            &app,
            keep,
        );
        upstream.insert(
            name.to_string(),
            json!({"status": status, "headers": trace_headers}),
        );
    }
    // Every span comes within Envoy's 5 s flush interval.
    let want = expected_spans();
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all: Vec<Value> = collector
            .state
            .bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                serde_json::from_slice::<Vec<Value>>(b)
                    .unwrap_or_else(|e| panic!("a report that is no JSON array ({e}): {b:?}"))
            })
            .collect();
        if all.len() >= want || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A case's spans: the connection manager's (by its request id), then its attempts'
    // (children of that one), by retry count.
    let mut spans: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in all
        .iter()
        .filter(|s| s["tags"]["guid:x-request-id"].is_string())
    {
        let rid = s["tags"]["guid:x-request-id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let i = usize::from_str_radix(rid.get(..8).unwrap_or("0"), 16).unwrap_or(0);
        let name = cases()
            .get(i.wrapping_sub(1))
            .map_or("?", |c| c.0)
            .to_string();
        let mut children: Vec<Value> = all
            .iter()
            .filter(|c| {
                !c["tags"]["guid:x-request-id"].is_string()
                    && c["parentId"] == s["id"]
                    && c["traceId"] == s["traceId"]
            })
            .cloned()
            .collect();
        children.sort_by_key(|c| c["tags"]["retry.count"].as_str().unwrap_or("0").to_string());
        let v = spans.entry(name).or_default();
        v.push(s.clone());
        v.extend(children);
    }
    let orphans = all
        .iter()
        .filter(|s| !spans.values().flatten().any(|k| k == *s))
        .count();
    assert_eq!(orphans, 0, "spans of no case: {all:?}");
    // Envoy's `tracing.zipkin.spans_sent` counts every span sent (its other counters count
    // batches, which are cut differently).
    let spans_sent = trace_peer::counter(&proxy.admin, "tracing.zipkin.spans_sent") as usize;
    let collector = collector
        .state
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            let h = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
            json!({"method": r.method, "path": r.path, "host": h("host"),
                   "content-type": h("content-type"), "x-scope": h("x-scope")})
        })
        .collect();
    Run {
        spans_sent,
        ports,
        app: app.port(),
        upstream,
        spans,
        collector,
    }
}

/// Sampled requests' spans: all but the unsampled ones and the malformed one, and the
/// gateway's attempts (two for the retried one).
fn expected_spans() -> usize {
    cases().len() - 3 + 4
}

/// Ids replaced by what they are: the caller's trace / span / parent id, the span's own id
/// ("self"), its parent's, or "new".
fn label(v: &str, span: Option<&Value>, family: &[Value]) -> String {
    let own = |k: &str| span.and_then(|s| s[k].as_str()).unwrap_or("-");
    if let Some(k) = family.iter().position(|f| f["id"].as_str() == Some(v)) {
        if span.is_none_or(|s| s["id"] != family[k]["id"]) {
            return format!("span{k}");
        }
    }
    let v = v.to_ascii_lowercase();
    if v == T || v == T128 {
        return "caller-trace".into();
    }
    if v == format!("0000000000000000{T}") {
        return "caller-trace-padded".into();
    }
    match v.as_str() {
        _ if v == S => "caller-span".into(),
        _ if v == P => "caller-parent".into(),
        _ if v == own("id") => "self".into(),
        _ if v == own("traceId") => "own-trace".into(),
        _ if v == own("parentId") => "own-parent".into(),
        _ if v.len() == 16 || v.len() == 32 => format!("new/{}", v.len()),
        _ => v,
    }
}

fn normalize(r: &Run) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (name, ..) in cases() {
        let spans = r.spans.get(name).cloned().unwrap_or_default();
        let span = spans.first();
        let up = &r.upstream[name];
        let mut headers = BTreeMap::new();
        for (k, v) in up["headers"].as_object().cloned().unwrap_or_default() {
            let v = v.as_str().unwrap_or("").to_string();
            let v = match k.as_str() {
                "x-b3-traceid" | "x-b3-spanid" | "x-b3-parentspanid" => label(&v, span, &spans),
                "traceparent" | "b3" => v
                    .split('-')
                    .map(|p| {
                        if p.len() >= 16 {
                            label(p, span, &spans)
                        } else {
                            p.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("-"),
                _ => v,
            };
            headers.insert(k, v);
        }
        let family = spans.clone();
        let spans: Vec<Value> = spans
            .iter()
            .map(|s| {
                let mut s = s.clone();
                let o = s.as_object_mut().expect("a span object");
                assert!(
                    o.remove("timestamp").is_some_and(|t| t.is_u64()),
                    "{name}: timestamp"
                );
                assert!(
                    o.remove("duration").is_some_and(|t| t.is_u64()),
                    "{name}: duration"
                );
                for a in o
                    .get_mut("annotations")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    assert!(a["timestamp"].is_u64(), "{name}: annotation timestamp");
                    a["timestamp"] = json!("t");
                }
                let orig = Value::Object(o.clone());
                for k in ["traceId", "id", "parentId"] {
                    if let Some(v) = o.get(k).and_then(Value::as_str).map(str::to_string) {
                        let l = label(&v, Some(&orig), &family);
                        o.insert(k.into(), json!(format!("{l}/{}", v.len())));
                    }
                }
                s
            })
            .collect();
        let mut v =
            json!({"status": up["status"], "upstream": headers, "spans": spans}).to_string();
        for p in r.ports {
            v = v.replace(&format!("127.0.0.1:{p}"), "127.0.0.1:PORT");
        }
        v = v.replace(&format!("127.0.0.1:{}", r.app), "127.0.0.1:APP");
        out.insert(name.to_string(), serde_json::from_str(&v).expect("JSON"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_spans_and_headers_match_envoy() {
    let envoy = run(true).await;
    let sluice = run(false).await;
    let (e, s) = (normalize(&envoy), normalize(&sluice));
    let diffs = trace_peer::differences(&e, &s);
    assert_eq!(
        envoy.spans.values().map(Vec::len).sum::<usize>(),
        expected_spans(),
        "Envoy reported {:?}",
        envoy.spans.keys().collect::<Vec<_>>()
    );
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    assert_eq!(
        (sluice.spans_sent, envoy.spans_sent),
        (expected_spans(), expected_spans()),
        "tracing.zipkin.spans_sent"
    );
    // The cases mean what they say: the shadow DENY policy's verdict is in the span.
    let dry = &e["dry-run-deny"]["spans"][0]["tags"];
    assert_eq!(
        dry["istio.authorization.dry_run.deny_policy.name"], "ns[default]-policy[deny-x]-rule[0]",
        "{dry}"
    );
    assert_eq!(
        dry["istio.authorization.dry_run.deny_policy.result"],
        "denied"
    );
    // The collector requests: Envoy may batch differently; each says the same.
    assert_eq!(
        trace_peer::distinct(&sluice.collector),
        trace_peer::distinct(&envoy.collector),
        "collector requests"
    );
}
