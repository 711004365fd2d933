//! `explain` on a small config: the listener and chain, the data path's steps before routing
//! (repeated Hosts joined, a missing Host refused, sanitized headers seen by matchers), the
//! weighted draw, and `Request::from_url`'s errors naming the parameter.

use super::{explain, Explanation, Request};
use crate::{config::from_yaml_str, route::explain::Decision};

/// The HCM's route_config (the listener `web` on 127.0.0.1:8080 wraps it, see [`yaml`]).
const ROUTES: &str = r#"{name: rc, virtual_hosts: [
  {name: one, domains: ["one.example"], routes: [{match: {prefix: /}, route: {cluster: a}}]},
  {name: other, domains: ["*"], routes: [
    {name: proto, match: {prefix: /p, headers: [{name: x-forwarded-proto, string_match: {exact: http}}]},
     route: {cluster: a, prefix_rewrite: /q}},
    {name: split, match: {prefix: /},
     route: {weighted_clusters: {clusters: [{name: a, weight: 1}, {name: b, weight: 3}]}}}]}]}"#;

fn yaml() -> String {
    let hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    let cluster = |n: &str, ip: &str| {
        format!("{{name: {n}, type: STATIC, load_assignment: {{cluster_name: {n}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {ip}, port_value: 80}}}}}}}}]}}]}}}}")
    };
    format!(
        "static_resources: {{listeners: [{{name: web, address: {{socket_address: {{address: 127.0.0.1, port_value: 8080}}}}, \
         filter_chains: [{{filters: [{{name: hcm, typed_config: {{'@type': {hcm}, stat_prefix: web, \
         http_filters: [{{name: envoy.filters.http.router}}], route_config: {ROUTES}}}}}]}}]}}], \
         clusters: [{}, {}]}}",
        cluster("a", "127.0.0.2"),
        cluster("b", "127.0.0.3")
    )
}

fn run(url: &str, headers: &[&str], seed: u64) -> Explanation {
    let boot = from_yaml_str(&yaml()).expect("config");
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let req = Request::from_url(url, "GET", &headers, None, seed).expect("request");
    explain(&boot, &req).expect("explain")
}

/// (vhost, route index, cluster) of an explanation.
fn taken(ex: &Explanation) -> (String, Option<usize>, Option<String>) {
    let r = ex.route.as_ref().expect("an HTTP chain");
    let vhost = r.virtual_hosts.iter().find(|v| v.chosen).expect("a vhost");
    let route = r.routes.iter().find(|s| s.matched).map(|s| s.index);
    let cluster = match &r.decision {
        Decision::Forward(f) => f.cluster.clone(),
        _ => None,
    };
    (vhost.name.clone(), route, cluster)
}

#[test]
fn listener_chain_and_host() {
    let ex = run("http://127.0.0.1:8080/x", &["host: one.example"], 0);
    assert_eq!(ex.listener.name, "web");
    assert_eq!(ex.filter_chain.index, 0);
    assert_eq!(taken(&ex), ("one".into(), Some(0), Some("a".into())));
    let c = ex.cluster.expect("cluster");
    assert_eq!(c.endpoints, ["127.0.0.2:80"]);
}

#[test]
fn repeated_hosts_are_joined_as_the_data_path_does() {
    let ex = run(
        "http://127.0.0.1:8080/x",
        &["host: one.example", "host: two.example"],
        0,
    );
    assert_eq!(ex.authority, "one.example,two.example");
    assert_eq!(taken(&ex).0, "other");
}

#[test]
fn an_empty_host_is_refused_before_routing() {
    let ex = run("http://127.0.0.1:8080/x", &["host:"], 0);
    assert!(ex.route.is_none());
    assert_eq!(ex.refused.as_deref(), Some("400: request without Host"));
}

#[test]
fn http10_is_refused_without_accept_http_10() {
    let boot = from_yaml_str(&yaml()).expect("config");
    let mut req =
        Request::from_url("http://127.0.0.1:8080/x", "GET", &[], None, 0).expect("request");
    req.http10 = true;
    let ex = explain(&boot, &req).expect("explain");
    assert!(ex.route.is_none());
    assert_eq!(
        ex.refused.as_deref(),
        Some("426: HTTP/1.0 without accept_http_10")
    );
}

#[test]
fn matchers_see_the_sanitized_headers() {
    // x-forwarded-proto is set by the connection manager before routing.
    let ex = run("http://127.0.0.1:8080/p", &["host: x"], 0);
    assert_eq!(taken(&ex), ("other".into(), Some(0), Some("a".into())));
    let Some(Decision::Forward(f)) = ex.route.map(|r| r.decision) else {
        panic!("forward");
    };
    assert_eq!(f.rewritten_path.as_deref(), Some("/q"));
}

#[test]
fn the_seed_is_the_weighted_draw() {
    for (seed, want) in [(0, "a"), (1, "b"), (3, "b"), (4, "a"), (5, "b")] {
        let ex = run("http://127.0.0.1:8080/z", &["host: x"], seed);
        assert_eq!(taken(&ex).2.as_deref(), Some(want), "seed {seed}");
    }
}

#[test]
fn request_errors_name_the_parameter() {
    let e = Request::from_url("/no-host", "GET", &[], None, 0).expect_err("no host");
    assert_eq!(e.param, "url");
    let e = Request::from_url("http://h/", "GET", &["nocolon".into()], None, 0)
        .expect_err("bad header");
    assert_eq!(e.param, "header");
    assert!(e.to_string().contains("\"nocolon\""), "{e}");
    let e = Request::from_url("http://h/", "GET", &["bad name: x".into()], None, 0)
        .expect_err("bad header name");
    assert_eq!(e.param, "header");
    let e = Request::from_url("http://h/", "BAD METHOD", &[], None, 0).expect_err("bad method");
    assert_eq!(e.param, "method");
}

/// A listener with an HTTP RBAC filter (ALLOW GET from 10/8, a shadow DENY of everything, off
/// for `/open` by an RBACPerRoute) and a TCP listener with a network RBAC DENY of 10/8.
const RBAC: &str = r#"
static_resources:
  listeners:
  - name: web
    address: {socket_address: {address: 127.0.0.1, port_value: 8080}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          http_filters:
          - name: authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              shadow_rules: {action: DENY, policies: {dry: {permissions: [{any: true}], principals: [{any: true}]}}}
              rules: {policies: {from-ten: {permissions: [{header: {name: ":method", string_match: {exact: GET}}}], principals: [{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}}}
          - {name: envoy.filters.http.router}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /open}
                route: {cluster: a}
                typed_per_filter_config:
                  authz: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute}
              - {match: {prefix: /}, route: {cluster: a}}
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 9090}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, stat_prefix: tcp., rules: {action: DENY, policies: {no-ten: {permissions: [{any: true}], principals: [{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}}}}
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: a}
  clusters:
  - {name: a, type: STATIC, load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.2, port_value: 80}}}}]}]}}
"#;

fn rbac_run(url: &str, source: Option<&str>) -> Explanation {
    let boot = from_yaml_str(RBAC).expect("config");
    let mut req = Request::from_url(url, "GET", &[], None, 0).expect("request");
    req.source = source.map(|s| s.parse().unwrap());
    explain(&boot, &req).expect("explain")
}

#[test]
fn rbac_verdicts_follow_the_source_and_the_route() {
    // From loopback: no policy allows it; the request stops at the filter (no cluster).
    let ex = rbac_run("http://127.0.0.1:8080/x", None);
    let a = &ex.authorization[0];
    assert_eq!(
        (a.filter.as_str(), a.rules.as_str()),
        ("http rbac authz", "filter")
    );
    assert_eq!(
        a.enforced.as_deref(),
        Some("ALLOW: no policy matches: denied")
    );
    assert_eq!(
        a.shadow.as_deref(),
        Some("DENY: policy \"dry\" matches: denied")
    );
    assert!(a.denied);
    assert!(ex.cluster.is_none());
    // From 10.1.2.3 the policy matches and the request goes on.
    let ex = rbac_run("http://127.0.0.1:8080/x", Some("10.1.2.3"));
    assert_eq!(
        ex.authorization[0].enforced.as_deref(),
        Some("ALLOW: policy \"from-ten\" matches: allowed")
    );
    assert_eq!(ex.cluster.map(|c| c.name).as_deref(), Some("a"));
    // The route's RBACPerRoute without rules turns the filter off.
    let ex = rbac_run("http://127.0.0.1:8080/open", None);
    assert_eq!(ex.authorization[0].rules, "RBACPerRoute");
    assert_eq!(ex.authorization[0].enforced, None);
    assert!(!ex.authorization[0].denied);
    // The network filter closes a connection from 10/8 before tcp_proxy.
    let ex = rbac_run("http://127.0.0.1:9090/", Some("10.9.9.9"));
    assert!(ex.authorization[0].denied);
    assert_eq!(ex.tcp_cluster, None);
    assert!(ex
        .refused
        .as_deref()
        .is_some_and(|r| r.contains("network RBAC tcp.")));
    let ex = rbac_run("http://127.0.0.1:9090/", None);
    assert_eq!(ex.tcp_cluster.as_deref(), Some("a"));
}
