//! Span ids, propagation headers and the JSON object, against Envoy's rules.

use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue};

use super::*;

fn zipkin(shared: bool, w3c: bool, wide: bool) -> Zipkin {
    Zipkin {
        cluster: "zipkin".into(),
        path: "/api/v2/spans".into(),
        host: "zipkin".into(),
        headers: Vec::new(),
        trace_id_128bit: wide,
        shared_span_context: shared,
        split_spans_for_request: false,
        w3c,
    }
}

fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(*k, HeaderValue::from_str(v).unwrap());
    }
    m
}

fn start_with(
    z: &Zipkin,
    egress: bool,
    traced: bool,
    pairs: &[(&'static str, &str)],
) -> Option<Span> {
    start(
        z,
        false,
        egress,
        traced,
        &h(pairs),
        "svc",
        SystemTime::now(),
        Instant::now(),
    )
}

#[test]
fn a_new_trace_has_its_span_id_as_trace_id() {
    let s = start_with(&zipkin(true, false, false), false, true, &[]).unwrap();
    assert_eq!((s.ids.trace, s.ids.high, s.ids.parent), (s.ids.id, 0, 0));
    assert!(s.ids.sampled && s.shared && s.kind == Kind::Server);
    let s = start_with(&zipkin(true, false, true), true, false, &[]).unwrap();
    assert_ne!(s.ids.high, 0);
    assert!(!s.ids.sampled && !s.shared && s.kind == Kind::Client);
}

#[test]
fn joining_shares_the_server_span_or_makes_a_child() {
    let ctx = [
        ("x-b3-traceid", "0000000000000001"),
        ("x-b3-spanid", "0000000000000002"),
        ("x-b3-parentspanid", "0000000000000003"),
    ];
    let s = start_with(&zipkin(true, false, false), false, false, &ctx).unwrap();
    assert_eq!((s.ids.trace, s.ids.id, s.ids.parent), (1, 2, 3));
    // The incoming flag is absent: the context takes the local decision.
    assert!(!s.ids.sampled);
    let s = start_with(&zipkin(false, false, false), false, true, &ctx).unwrap();
    assert_eq!((s.ids.trace, s.ids.parent), (1, 2));
    assert_ne!(s.ids.id, 2);
    let s = start_with(&zipkin(true, false, false), true, true, &ctx).unwrap();
    assert_eq!((s.kind, s.ids.parent), (Kind::Client, 2));
    // The request's flag beats the decision both ways.
    let s = start_with(
        &zipkin(true, false, false),
        false,
        true,
        &[("x-b3-sampled", "0")],
    )
    .unwrap();
    assert!(!s.ids.sampled);
    assert!(start_with(&zipkin(true, false, false), false, true, &[("b3", "zz")]).is_none());
}

#[test]
fn injected_headers_are_envoys() {
    let ids = Ids {
        high: 0,
        trace: 0xab,
        id: 0xcd,
        parent: 0,
        sampled: true,
    };
    let mut m = h(&[("x-b3-sampled", "0"), ("b3", "1")]);
    inject(&ids, false, true, &mut m);
    assert_eq!(m["x-b3-traceid"], "00000000000000ab");
    assert_eq!(m["x-b3-spanid"], "00000000000000cd");
    assert!(m.get("x-b3-parentspanid").is_none());
    assert_eq!(m.get_all("x-b3-sampled").iter().count(), 1);
    assert_eq!(m["x-b3-sampled"], "1");
    assert_eq!(m["b3"], "1");
    assert_eq!(
        m["traceparent"],
        "00-000000000000000000000000000000ab-00000000000000cd-01"
    );
    let ids = Ids {
        high: 1,
        parent: 7,
        sampled: false,
        ..ids
    };
    inject(&ids, false, false, &mut m);
    assert_eq!(m["x-b3-traceid"], "000000000000000100000000000000ab");
    assert_eq!(m["x-b3-parentspanid"], "0000000000000007");
    assert_eq!(m["x-b3-sampled"], "0");
    // A context that came in `b3` goes on in `b3`.
    let mut m = h(&[("b3", "1")]);
    inject(&ids, true, false, &mut m);
    assert_eq!(
        m["b3"],
        "000000000000000100000000000000ab-00000000000000cd-0-0000000000000007"
    );
    assert!(m.get("x-b3-traceid").is_none());
}

#[test]
fn the_json_object_has_envoys_fields() {
    let mut s = start_with(&zipkin(true, false, false), false, true, &[]).unwrap();
    s.ids = Ids {
        high: 0,
        trace: 1,
        id: 2,
        parent: 3,
        sampled: true,
    };
    s.timestamp_us = 1000;
    s.start = Instant::now() - Duration::from_millis(2);
    s.tag("component", "proxy");
    s.tag("empty", "");
    s.tag("http.status_code", "500");
    s.tag("http.status_code", "200");
    s.custom.push(("istio.mesh_id".into(), "m\"x".into()));
    let local = Local {
        node_id: "n".into(),
        cluster: "c".into(),
        address: "10.0.0.1".parse().unwrap(),
    };
    let v: serde_json::Value = serde_json::from_str(&s.finish(&local)).unwrap();
    assert_eq!(v["traceId"], "0000000000000001");
    assert_eq!(v["parentId"], "0000000000000003");
    assert_eq!(v["kind"], "SERVER");
    assert_eq!(v["name"], "svc");
    assert_eq!(v["timestamp"], 1000);
    assert!(v["duration"].as_u64().unwrap() >= 2000);
    assert_eq!(
        v["localEndpoint"],
        serde_json::json!({"serviceName": "c", "ipv4": "10.0.0.1", "port": 0})
    );
    assert_eq!(
        v["tags"],
        serde_json::json!({"component": "proxy", "http.status_code": "200", "istio.mesh_id": "m\"x"})
    );
    assert_eq!(v["shared"], true);
    assert_eq!(v["annotations"][0]["value"], "ss");
}
