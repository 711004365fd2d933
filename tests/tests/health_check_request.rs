//! The request an HTTP health check sends, under Envoy 1.40 and under sluice: `method`,
//! `request_headers_to_add` (appended values kept in order) and `request_headers_to_remove`
//! (Envoy's own `user-agent: Envoy/HC` removed) reach the upstream the same way. The conformance
//! suite cannot see health check requests (its recording upstreams answer them but its
//! expectations are per client request), so this test reads what the upstream recorded.

use std::time::{Duration, Instant};

use sluice_tests::{
    admin_run::start_text,
    upstream::{harness::free_port, TestUpstream},
};

fn config(listener: u16, upstream: u16, codec: &str) -> String {
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listener}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: hc
          route_config:
            virtual_hosts:
            - {{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: checked}}}}]}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: checked
    type: STATIC
    connect_timeout: 1s
    health_checks:
    - timeout: 1s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check:
        path: /healthz
        host: checked.internal
        method: POST
        codec_client_type: {codec}
        request_headers_to_add:
        - header: {{key: x-hc, value: "1"}}
        - header: {{key: x-hc, value: "2"}}
        - header: {{key: x-only, value: "a"}}
          append_action: OVERWRITE_IF_EXISTS_OR_ADD
        request_headers_to_remove: [user-agent]
    load_assignment:
      cluster_name: checked
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"#
    )
}

/// The first health check request `envoy` (or sluice) sends over `codec`: method, path,
/// version and headers, sorted.
fn first_check(envoy: bool, codec: &str) -> (String, String, Vec<(String, String)>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = rt.block_on(TestUpstream::start("checked"));
    let text = config(free_port(), upstream.port(), codec);
    let proxy = start_text("health_check_request", &text, envoy);
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        if let Some(r) = upstream.state.requests.lock().unwrap().first().cloned() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "envoy={envoy}: no health check request"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(proxy);
    let mut headers: Vec<(String, String)> = seen
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    headers.sort();
    (
        seen.method,
        format!("{} {:?}", seen.path, seen.version),
        headers,
    )
}

#[test]
fn health_check_method_and_headers_are_envoys() {
    let envoy = first_check(true, "HTTP1");
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        envoy,
        (
            "POST".to_string(),
            "/healthz HTTP/1.1".to_string(),
            vec![
                pair("content-length", "0"),
                pair("host", "checked.internal"),
                pair("x-hc", "1"),
                pair("x-hc", "2"),
                pair("x-only", "a"),
            ]
        ),
        "Envoy: what the test expects of it"
    );
    assert_eq!(first_check(false, "HTTP1"), envoy, "sluice vs Envoy");
}

/// `codec_client_type: HTTP2` on a cluster that speaks HTTP/1.1: the check goes over HTTP/2
/// (prior knowledge) under both, with the same headers.
#[test]
fn an_http2_health_check_is_envoys() {
    let envoy = first_check(true, "HTTP2");
    assert_eq!(envoy.1, "/healthz HTTP/2.0", "Envoy: {envoy:?}");
    assert_eq!(first_check(false, "HTTP2"), envoy, "sluice vs Envoy");
}
