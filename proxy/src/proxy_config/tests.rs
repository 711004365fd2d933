//! istioctl's descriptions on small inputs (the golden tests in `tests/tests/proxy_config.rs`
//! cover whole views on real dumps from sluice and Envoy).

use serde_json::json;

use super::{dump, listener, route};

#[test]
fn domains_are_described_like_istioctl() {
    let d = [
        "sample-service.default.svc.cluster.local",
        "sample-service",
        "sample-service.default.svc",
        "sample-service.default",
        "10.96.0.10",
    ];
    assert_eq!(
        route::describe_domains(&d),
        "sample-service, sample-service.default + 1 more..."
    );
    assert_eq!(route::describe_domains(&["a.b:80"]), "a.b:80");
    assert_eq!(route::describe_domains(&["a", "a:80"]), "a");
}

#[test]
fn matches_and_chains_are_described_like_istioctl() {
    assert_eq!(
        route::describe_match(&json!({"prefix": "/notebook/"})),
        "/notebook/*"
    );
    assert_eq!(
        route::describe_match(&json!({"safe_regex": {"regex": "/a.*"}})),
        "regex /a.*"
    );
    assert_eq!(listener::describe_chain_match(&json!(null)), "ALL");
    assert_eq!(
        listener::describe_chain_match(&json!({"destination_port": 8080})),
        "Addr: *:8080"
    );
    assert_eq!(
        listener::describe_chain_match(
            &json!({"transport_protocol": "tls", "application_protocols": ["istio-peer-exchange", "istio"]})
        ),
        "Trans: tls; App: TCP TLS"
    );
}

#[test]
fn subset_keys_and_management() {
    assert_eq!(
        dump::subset_key("outbound|80|v1|sample-service.default.svc.cluster.local"),
        (
            "outbound".into(),
            "v1".into(),
            "sample-service.default.svc.cluster.local".into(),
            80
        )
    );
    assert_eq!(
        dump::subset_key("BlackHoleCluster"),
        (String::new(), String::new(), "BlackHoleCluster".into(), 0)
    );
    let r = json!({"metadata": {"filter_metadata": {"istio": {"config": "/apis/networking.istio.io/v1alpha3/namespaces/default/virtual-service/sample-virtualservice"}}}});
    assert_eq!(dump::management(&r), "sample-virtualservice.default");
}

#[test]
fn numeric_route_names_sort_like_istioctl() {
    let rs = vec![
        json!({"name": "8080"}),
        json!({"name": "x"}),
        json!({"name": "80"}),
    ];
    let names: Vec<String> = route::sorted(rs)
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").into())
        .collect();
    assert_eq!(names, ["8080", "x", "80"]);
}
