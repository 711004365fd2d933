//! Config validation tests: a full bootstrap, the Kubeflow example, and rejections that must
//! name the exact field path.

use std::{net::SocketAddr, time::Duration};

use super::*;
use crate::route::{ClusterSpecifier, RequestView, RouteAction, SelectedCluster, Selection};

const KUBEFLOW: &str = include_str!("testdata/kubeflow-gateway.yaml");

/// A bootstrap with one HTTP listener whose route_config is `route_config` (indented YAML
/// under `route_config:`) and clusters `a`, `b`.
pub(super) fn with_routes(route_config: &str) -> String {
    let indented: String = route_config
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    format!(
        r#"static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters:
          - name: envoy.filters.http.router
          route_config:
{indented}  clusters:
  - name: a
    load_assignment:
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8001 }} }} }} }}] }}]
  - name: b
    load_assignment:
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8002 }} }} }} }}] }}]
"#
    )
}

pub(super) const HCM_PATH: &str =
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";

pub(super) fn rc_path(rest: &str) -> String {
    format!("{HCM_PATH}.route_config.{rest}")
}

#[track_caller]
pub(super) fn expect_err(yaml: &str, path: &str, message_part: &str) -> ConfigError {
    let err = from_yaml_str(yaml).expect_err("config must be rejected");
    assert_eq!(err.path(), path, "wrong path in: {err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{path}: ")),
        "display must start with the path: {shown}"
    );
    assert!(
        shown.contains(message_part),
        "{shown:?} should contain {message_part:?}"
    );
    err
}

/// `static_resources.listeners` with one tcp_proxy listener to cluster `first`, for cluster
/// tests (a bootstrap needs a listener): replaces `  listeners: [*tcp_listener]\n`.
fn with_tcp_listener(yaml: &str, cluster: &str) -> String {
    yaml.replace(
        "  listeners: [*tcp_listener]\n",
        &format!(
            r#"  listeners:
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10001 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: {cluster}
"#
        ),
    )
}

pub(super) const ROUTES_OK: &str = r#"name: local
virtual_hosts:
- name: v0
  domains: ["a.example"]
  routes:
  - match: { prefix: "/" }
    route: { cluster: a }
"#;

/// The chain a plain connection from 10.0.0.2 to 10.0.0.1:`port` gets.
fn chain_for(l: &Listener, port: u16) -> Option<&FilterChain> {
    let facts = ConnFacts {
        dst: SocketAddr::from(([10, 0, 0, 1], port)),
        src: SocketAddr::from(([10, 0, 0, 2], 40000)),
        direct_src: None,
        server_name: None,
        transport_protocol: "raw_buffer",
        application_protocols: AppProtocols::None,
    };
    l.select_chain(&facts).map(|i| &l.filter_chains[i])
}

#[test]
fn full_bootstrap_parses_into_the_typed_model() {
    let b = from_yaml_str(&with_routes(ROUTES_OK)).expect("valid");
    assert_eq!(b.listeners.len(), 1);
    let l = &b.listeners[0];
    assert_eq!(l.name.as_str(), "http");
    assert_eq!(l.address, "127.0.0.1:10000".parse::<SocketAddr>().unwrap());
    assert!(l.bind_to_port);
    let chain = chain_for(l, 10000).expect("default chain");
    let NetworkFilter::Http(hcm) = &chain.filter else {
        panic!("expected HCM")
    };
    assert_eq!(hcm.stat_prefix, "ingress");
    assert_eq!(hcm.codec_type, CodecType::Auto);
    assert_eq!(hcm.stream_idle_timeout, Some(DEFAULT_STREAM_IDLE_TIMEOUT));
    assert_eq!(hcm.request_timeout, None);
    assert_eq!(hcm.route_table.virtual_hosts[0].name, "v0");
    let a = b.cluster("a").expect("cluster a");
    assert_eq!(a.discovery, DiscoveryType::Static);
    assert_eq!(a.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(a.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(a.circuit_breakers, ByPriority::<CircuitBreakers>::default());
    assert_eq!(a.circuit_breakers[RoutingPriority::High].max_retries, 3);
    assert_eq!(a.outlier_detection, None);
    assert_eq!(a.protocol, UpstreamProtocol::Http1);
    assert_eq!(
        a.endpoints,
        vec![Endpoint {
            address: EndpointAddress::Ip("127.0.0.1:8001".parse().unwrap()),
            weight: 1,
            hostname: None,
            priority: 0,
            health: Default::default(),
            locality: 0,
            locality_weight: 0,
            canary: false,
            transport: 0,
            health_check: None,
        }]
    );
    assert_eq!(&*a.localities, &[Locality::default()]);
}

#[test]
fn kubeflow_example_routes_like_the_istio_gateway() {
    let b = from_yaml_str(KUBEFLOW).expect("kubeflow example is valid");
    let NetworkFilter::Http(hcm) = &b.listeners[0].filter_chains[0].filter else {
        panic!("expected HCM")
    };
    assert_eq!(hcm.stream_idle_timeout, None, "0s disables");
    assert!(
        matches!(
            hcm.access_log.as_slice(),
            [AccessLog {
                sink: LogSink::Stdout,
                filter: None,
                format: None,
            }]
        ),
        "{:?}",
        hcm.access_log
    );
    let headers: Vec<(&str, &str)> = vec![("x-forwarded-prefix", "/spoofed")];
    let req = RequestView {
        authority: Some("gateway.kubeflow.example"),
        path: "/notebook/default/sample-service/static/app.js?v=1",
        method: "GET",
        scheme: "http",
        headers: headers.as_slice(),
        random: 0,
        peer: None,
        metadata: None,
    };
    let Selection::Forward(f) = hcm.route_table.select(&req) else {
        panic!("expected a forward")
    };
    assert_eq!(
        f.cluster,
        SelectedCluster::Named(&ClusterRef::new(
            "outbound|80||sample-service.default.svc.cluster.local"
        ))
    );
    assert_eq!(f.path, "/static/app.js?v=1");
    assert_eq!(f.action.timeout, None, "timeout 0s disables");
    assert_eq!(f.action.retry_policy.as_ref().unwrap().num_retries, 2);
    let mut out: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f.request_headers.apply(&mut out);
    assert_eq!(
        out,
        vec![(
            "x-forwarded-prefix".to_string(),
            "/notebook/default/sample-service".to_string()
        )]
    );
    let c = b
        .cluster("outbound|80||sample-service.default.svc.cluster.local")
        .unwrap();
    assert_eq!(c.discovery, DiscoveryType::StrictDns);
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert_eq!(
        c.endpoints[0].address,
        EndpointAddress::Dns {
            host: "sample-service.default.svc.cluster.local".into(),
            port: 80
        }
    );
}

#[test]
fn load_file_reads_and_names_the_file_in_errors() {
    let dir = std::env::temp_dir().join(format!("sluice-l7-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("kubeflow.yaml");
    std::fs::write(&good, KUBEFLOW).unwrap();
    assert!(load_file(&good).is_ok());
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "static_resources:\n  listeners:\n    - name: x\n   bad: [\n",
    )
    .unwrap();
    let err = load_file(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: invalid YAML", bad.display())),
        "{err}"
    );
    let missing = load_file(dir.join("missing.yaml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Io { .. }), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    let err =
        from_yaml_str("static_resources:\n  listeners:\n    - name: x\n   bad: [\n").unwrap_err();
    match &err {
        ConfigError::Yaml { line, column, .. } => {
            assert!(line.is_some() && column.is_some(), "{err}");
            assert_eq!(*line, Some(4), "{err}");
        }
        other => panic!("expected a YAML error, got {other}"),
    }
    assert!(err.to_string().contains("at line 4 column"), "{err}");
}

#[test]
fn yaml_anchors_and_merge_keys_are_resolved() {
    let yaml = r#"
x-cluster-defaults: &defaults
  connect_timeout: 0.25s
  lb_policy: RANDOM
static_resources:
  clusters:
  - <<: *defaults
    name: merged
  - name: aliased
    connect_timeout: 1s
"#;
    // The extension key at the top level is not an Envoy field.
    expect_err(yaml, "x-cluster-defaults", "unknown field");
    let yaml = r#"
static_resources:
  listeners: [*tcp_listener]
  clusters:
  - &first
    name: first
    connect_timeout: 0.25s
    lb_policy: RANDOM
  - <<: *first
    name: second
"#;
    let yaml = &with_tcp_listener(yaml, "first");
    let b = from_yaml_str(yaml).expect("merge keys resolve");
    let second = b.cluster("second").unwrap();
    assert_eq!(second.connect_timeout, Duration::from_millis(250));
    assert_eq!(second.lb_policy, LbPolicy::Random);
    let bad = yaml.replace(
        "    name: second\n",
        "    name: second\n    conect_timeout: 1s\n",
    );
    expect_err(
        &bad,
        "static_resources.clusters[1].conect_timeout",
        "unknown field",
    );
}

#[test]
fn unknown_field_names_its_path() {
    let yaml =
        with_routes(ROUTES_OK).replace("  - name: b\n", "  - name: b\n    conect_timeout: 1s\n");
    expect_err(
        &yaml,
        "static_resources.clusters[1].conect_timeout",
        "unknown field",
    );
    let yaml = with_routes(&ROUTES_OK.replace("prefix: \"/\"", "prefx: \"/\""));
    expect_err(
        &yaml,
        &rc_path("virtual_hosts[0].routes[0].match.prefx"),
        "unknown field",
    );
}

#[test]
fn unsupported_envoy_field_is_rejected_not_ignored() {
    let routes = r#"virtual_hosts:
- { name: v0, domains: [a], routes: [{ match: { prefix: "/" }, route: { cluster: a } }] }
- { name: v1, domains: [b], routes: [{ match: { prefix: "/" }, route: { cluster: a } }] }
- name: v2
  domains: [c]
  routes:
  - { match: { prefix: "/0" }, route: { cluster: a } }
  - { match: { prefix: "/1" }, route: { cluster: a } }
  - { match: { prefix: "/2" }, route: { cluster: a } }
  - { match: { prefix: "/3" }, route: { cluster: a } }
  - { match: { prefix: "/4" }, route: { cluster: a } }
  - { match: { prefix: "/5", tls_context: {} }, route: { cluster: a } }
"#;
    let err = expect_err(
        &with_routes(routes),
        &rc_path("virtual_hosts[2].routes[5].match.tls_context"),
        "not supported",
    );
    assert!(err.to_string().starts_with(
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[2].routes[5].match.tls_context: not supported"
    ));
    // An unsupported field inside a cluster and an unsupported enum value.
    let yaml = with_routes(ROUTES_OK).replace(
        "  - name: b\n",
        "  - name: b\n    use_tcp_for_dns_lookups: true\n",
    );
    expect_err(
        &yaml,
        "static_resources.clusters[1].use_tcp_for_dns_lookups",
        "not supported",
    );
    let yaml = with_routes(ROUTES_OK).replace(
        "  - name: b\n",
        "  - name: b\n    dns_lookup_family: V5_ONLY\n",
    );
    expect_err(
        &yaml,
        "static_resources.clusters[1].dns_lookup_family",
        "unknown value",
    );
    let yaml = with_routes(ROUTES_OK).replace(
        "  - name: b\n",
        "  - name: b\n    circuit_breakers: {thresholds: [{priority: LOW}]}\n",
    );
    expect_err(
        &yaml,
        "static_resources.clusters[1].circuit_breakers.thresholds[0].priority",
        "unknown value \"LOW\"",
    );
    // A second HTTP filter.
    let yaml = with_routes(ROUTES_OK).replace(
        "          - name: envoy.filters.http.router\n",
        "          - name: envoy.filters.http.cors\n          - name: envoy.filters.http.router\n",
    );
    expect_err(
        &yaml,
        &format!("{HCM_PATH}.http_filters[0]"),
        "not supported",
    );
}

#[test]
fn dangling_cluster_references_are_rejected() {
    let yaml = with_routes(&ROUTES_OK.replace("cluster: a", "cluster: nope"));
    expect_err(
        &yaml,
        &rc_path("virtual_hosts[0].routes[0].route.cluster"),
        "unknown cluster \"nope\"",
    );
    // validate_clusters: false accepts it (503 NC at run time, as Envoy).
    let lax = format!(
        "validate_clusters: false\n{}",
        ROUTES_OK.replace("cluster: a", "cluster: nope")
    );
    from_yaml_str(&with_routes(&lax)).expect("validate_clusters: false accepts a dangling name");
    let routes = r#"virtual_hosts:
- name: v0
  domains: ["*"]
  routes:
  - match: { prefix: "/" }
    route:
      weighted_clusters:
        clusters: [{ name: a, weight: 1 }, { name: ghost, weight: 1 }]
"#;
    expect_err(
        &with_routes(routes),
        &rc_path("virtual_hosts[0].routes[0].route.weighted_clusters.clusters[1].name"),
        "unknown cluster \"ghost\"",
    );
    let tcp = r#"static_resources:
  listeners:
  - name: tcp
    address: { socket_address: { address: 127.0.0.1, port_value: 9000 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: missing
"#;
    // A tcp_proxy looks its cluster up per connection (Envoy accepts this file too).
    from_yaml_str(tcp).expect("a tcp_proxy may name a cluster that does not exist");
    // max_downstream_connection_duration: at least 1 ms, as Envoy's validation says.
    let capped = |d: &str| format!("{tcp}          max_downstream_connection_duration: {d}\n");
    let cfg = from_yaml_str(&capped("30s")).unwrap();
    let NetworkFilter::Tcp(tp) = &cfg.listeners[0].filter_chains[0].filter else {
        panic!("a tcp_proxy chain");
    };
    assert_eq!(
        tp.max_downstream_connection_duration,
        Some(Duration::from_secs(30))
    );
    expect_err(
        &capped("0s"),
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.max_downstream_connection_duration",
        "at least 1ms",
    );
    assert_eq!(tp.max_connect_attempts, 1, "Envoy's default");
    expect_err(
        &format!("{tcp}          max_connect_attempts: 0\n"),
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.max_connect_attempts",
        "at least 1",
    );
}

#[test]
fn additional_addresses_are_distinct_and_bound_once_and_exact_balance_is_a_no_op() {
    let tcp = |name: &str, extra: &str| {
        format!(
            r#"  - name: {name}
    address: {{ socket_address: {{ address: 0.0.0.0, port_value: 15001 }} }}
{extra}    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: c
"#
        )
    };
    let v6 = "    additional_addresses:\n    - address: { socket_address: { address: \"::\", port_value: 15001 } }\n";
    let boot = |listeners: &str| format!("static_resources:\n  listeners:\n{listeners}");
    let b = from_yaml_str(&boot(&tcp("dual", v6))).unwrap();
    let addrs: Vec<SocketAddr> = b.listeners[0].addresses().collect();
    assert_eq!(
        addrs,
        [
            "0.0.0.0:15001".parse().unwrap(),
            "[::]:15001".parse().unwrap()
        ]
    );
    let twice = "    additional_addresses:\n    - address: { socket_address: { address: 0.0.0.0, port_value: 15001 } }\n";
    expect_err(
        &boot(&tcp("dual", twice)),
        "static_resources.listeners[0].additional_addresses[0].address",
        "already an address of this listener",
    );
    // Another listener binding one of them.
    let other = tcp("v6", "").replace("address: 0.0.0.0", "address: \"::\"");
    expect_err(
        &format!("{}{other}", boot(&tcp("dual", v6))),
        "static_resources.listeners[1].address",
        "address [::]:15001 is already used by listener \"dual\"",
    );
    // istiod's exact balance (proxy metadata OutboundListenerExactBalance) is a no-op.
    let exact = "    connection_balance_config: { exact_balance: {} }\n";
    from_yaml_str(&boot(&tcp("dual", exact))).expect("exact_balance accepted");
    expect_err(
        &boot(&tcp(
            "dual",
            "    connection_balance_config: { extend_balance: {} }\n",
        )),
        "static_resources.listeners[0].connection_balance_config.extend_balance",
        "not supported",
    );
    let opts = "    additional_addresses:\n    - address: { socket_address: { address: \"::\", port_value: 15001 } }\n      socket_options: {}\n";
    expect_err(
        &boot(&tcp("dual", opts)),
        "static_resources.listeners[0].additional_addresses[0].socket_options",
        "not supported",
    );
}

#[test]
fn duplicate_domains_and_names_are_rejected() {
    let routes = r#"virtual_hosts:
- { name: v0, domains: ["Foo.com", "*.foo.com"], routes: [] }
- { name: v1, domains: ["bar.com", "foo.COM"], routes: [] }
"#;
    expect_err(
        &with_routes(routes),
        &rc_path("virtual_hosts[1].domains[1]"),
        "duplicate domain \"foo.com\"",
    );
    let routes = r#"virtual_hosts:
- { name: v0, domains: ["*"], routes: [] }
- { name: v1, domains: ["*"], routes: [] }
"#;
    expect_err(
        &with_routes(routes),
        &rc_path("virtual_hosts[1].domains[0]"),
        "single wildcard",
    );
    let yaml = with_routes(ROUTES_OK).replace("  - name: b\n", "  - name: a\n");
    expect_err(
        &yaml,
        "static_resources.clusters[1].name",
        "duplicate cluster name \"a\"",
    );
    let one = with_routes(ROUTES_OK);
    let listener_start = one.find("  - name: http").unwrap();
    let clusters_start = one.find("  clusters:").unwrap();
    let listener = &one[listener_start..clusters_start];
    let twice = format!(
        "{}{}{}{}",
        &one[..clusters_start],
        listener.replace("port_value: 10000", "port_value: 10001"),
        "",
        &one[clusters_start..]
    );
    expect_err(
        &twice,
        "static_resources.listeners[1].name",
        "duplicate listener name \"http\"",
    );
}

#[test]
fn invalid_regexes_are_rejected_with_their_path() {
    let yaml = with_routes(&ROUTES_OK.replace("prefix: \"/\"", "safe_regex: { regex: \"/a(\" }"));
    expect_err(
        &yaml,
        &rc_path("virtual_hosts[0].routes[0].match.safe_regex.regex"),
        "invalid regex",
    );
    let routes = r#"virtual_hosts:
- name: v0
  domains: ["*"]
  routes:
  - match:
      prefix: "/"
      headers: [{ name: x, string_match: { safe_regex: { regex: "[z-a]" } } }]
    route: { cluster: a }
"#;
    expect_err(
        &with_routes(routes),
        &rc_path("virtual_hosts[0].routes[0].match.headers[0].string_match.safe_regex.regex"),
        "invalid regex",
    );
    let routes = r#"virtual_hosts:
- name: v0
  domains: ["*"]
  routes:
  - match: { prefix: "/" }
    route:
      cluster: a
      regex_rewrite: { pattern: { regex: "^/(a)" }, substitution: "/\\2" }
"#;
    expect_err(
        &with_routes(routes),
        &rc_path("virtual_hosts[0].routes[0].route.regex_rewrite.substitution"),
        "group \\2",
    );
}

#[test]
fn weighted_total_weight_must_equal_the_sum() {
    let routes = r#"virtual_hosts:
- name: v0
  domains: ["*"]
  routes:
  - match: { prefix: "/" }
    route:
      weighted_clusters:
        total_weight: 100
        clusters: [{ name: a, weight: 30 }, { name: b, weight: 60 }]
"#;
    expect_err(
        &with_routes(routes),
        &rc_path("virtual_hosts[0].routes[0].route.weighted_clusters.total_weight"),
        "differs from the sum of the weights (90)",
    );
    assert!(from_yaml_str(&with_routes(&routes.replace("weight: 60", "weight: 70"))).is_ok());
    let zero = routes
        .replace("        total_weight: 100\n", "")
        .replace("weight: 30", "weight: 0")
        .replace("weight: 60", "weight: 0");
    expect_err(
        &with_routes(&zero),
        &rc_path("virtual_hosts[0].routes[0].route.weighted_clusters.clusters"),
        "greater than 0",
    );
}

#[test]
fn typed_config_type_urls_are_checked() {
    let yaml =
        with_routes(ROUTES_OK).replace("v3.HttpConnectionManager", "v3.HttpConnectionManagr");
    expect_err(&yaml, &format!("{HCM_PATH}.@type"), "not supported");
    let yaml = with_routes(ROUTES_OK).replace(
        "stat_prefix: ingress",
        "stat_prefix: ingress\n          rds: {}",
    );
    expect_err(&yaml, &format!("{HCM_PATH}.rds"), "not supported");
}

#[test]
fn value_errors_name_their_field() {
    let yaml =
        with_routes(ROUTES_OK).replace("  - name: b\n", "  - name: b\n    connect_timeout: 5\n");
    expect_err(
        &yaml,
        "static_resources.clusters[1].connect_timeout",
        "duration",
    );
    let yaml = with_routes(ROUTES_OK)
        .replace("  - name: b\n", "  - name: b\n    connect_timeout: 1.5ms\n");
    expect_err(
        &yaml,
        "static_resources.clusters[1].connect_timeout",
        "invalid duration",
    );
    let yaml =
        with_routes(ROUTES_OK).replace("  - name: b\n", "  - name: b\n    lb_policy: LEAST_CONN\n");
    expect_err(
        &yaml,
        "static_resources.clusters[1].lb_policy",
        "unknown value",
    );
    let yaml = with_routes(ROUTES_OK).replace("port_value: 8002", "port_value: 70000");
    expect_err(
        &yaml,
        "static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
        "not a valid port",
    );
    let yaml = with_routes(&ROUTES_OK.replace(
        "route: { cluster: a }",
        "route: { cluster: a, retry_policy: { retry_on: \"5xx,bogus\" } }",
    ));
    expect_err(
        &yaml,
        &rc_path("virtual_hosts[0].routes[0].route.retry_policy.retry_on"),
        "bogus",
    );
    let yaml = with_routes(&ROUTES_OK.replace(
        "route: { cluster: a }",
        "route: { cluster: a }\n    request_headers_to_add: [{ header: { key: x-ip, value: \"%DYNAMIC_METADATA(a:b)%\" } }]",
    ));
    expect_err(
        &yaml,
        &rc_path("virtual_hosts[0].routes[0].request_headers_to_add[0].header.value"),
        "not supported",
    );
    let yaml = with_routes(&ROUTES_OK.replace(
        "route: { cluster: a }",
        "route: { cluster: a }\n    request_headers_to_remove: [\":path\"]",
    ));
    expect_err(
        &yaml,
        &rc_path("virtual_hosts[0].routes[0].request_headers_to_remove[0]"),
        "may not be modified",
    );
}

#[test]
fn cluster_options_parse() {
    let yaml = r#"static_resources:
  listeners: [*tcp_listener]
  clusters:
  - name: full
    type: STRICT_DNS
    lb_policy: MAGLEV
    maglev_lb_config: { table_size: 257 }
    connect_timeout: { seconds: 2, nanos: 500000000 }
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: backend.local, port_value: 443 } } }
          load_balancing_weight: 3
        - endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 443 } } }
    circuit_breakers:
      thresholds: [{ max_connections: 10, max_retries: 1 }]
    outlier_detection: { consecutive_5xx: 3 }
    health_checks:
    - timeout: 1s
      interval: 0.5s
      unhealthy_threshold: 2
      healthy_threshold: 1
      http_health_check: { path: /healthz, expected_statuses: [{ start: 200, end: 300 }] }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.local
        common_tls_context:
          alpn_protocols: [h2]
          validation_context: { trusted_ca: { filename: /etc/ca.pem } }
          tls_certificates: [{ certificate_chain: { filename: /c.pem }, private_key: { filename: /k.pem } }]
  - name: passthrough
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
"#;
    let yaml = &with_tcp_listener(yaml, "full");
    let b = from_yaml_str(yaml).expect("valid");
    let c = b.cluster("full").unwrap();
    assert_eq!(c.lb_policy, LbPolicy::Maglev { table_size: 257 });
    assert_eq!(c.connect_timeout, Duration::from_millis(2500));
    assert_eq!(c.endpoints[0].weight, 3);
    assert_eq!(
        c.endpoints[1].address,
        EndpointAddress::Ip("10.0.0.1:443".parse().unwrap())
    );
    let cb = c.circuit_breakers[RoutingPriority::Default];
    assert_eq!(cb.max_connections, 10);
    assert_eq!(cb.max_pending_requests, DEFAULT_MAX_PENDING_REQUESTS);
    assert_eq!(cb.max_retries, 1);
    assert_eq!(
        c.circuit_breakers[RoutingPriority::High],
        CircuitBreakers::default()
    );
    let od = c.outlier_detection.unwrap();
    assert_eq!(
        (od.consecutive_5xx, od.interval, od.max_ejection_percent),
        (3, DEFAULT_OUTLIER_INTERVAL, 10)
    );
    assert_eq!(
        c.health_checks[0].intervals.interval,
        Duration::from_millis(500)
    );
    assert_eq!(
        c.health_checks[0].kind,
        HealthCheckKind::Http {
            path: "/healthz".into(),
            host: None,
            expected_statuses: std::iter::once(200..300).collect(),
            retriable_statuses: Vec::new(),
            http2: false,
            method: http::Method::GET,
            headers: Default::default(),
            body: Default::default(),
        }
    );
    assert_eq!(c.protocol, UpstreamProtocol::Http2);
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.sni.as_deref(), Some("backend.local"));
    assert_eq!(tls.trusted_ca, Some(DataSource::File("/etc/ca.pem".into())));
    assert_eq!(tls.alpn_protocols, vec!["h2".to_string()]);
    assert!(tls.client_cert.is_some());
    let p = b.cluster("passthrough").unwrap();
    assert_eq!(
        (p.discovery, p.lb_policy),
        (DiscoveryType::OriginalDst, LbPolicy::ClusterProvided)
    );

    let bad = yaml.replace("table_size: 257", "table_size: 256");
    expect_err(
        &bad,
        "static_resources.clusters[0].maglev_lb_config.table_size",
        "prime",
    );
    let bad = yaml.replace("lb_policy: CLUSTER_PROVIDED", "lb_policy: ROUND_ROBIN");
    expect_err(
        &bad,
        "static_resources.clusters[1].lb_policy",
        "CLUSTER_PROVIDED",
    );
    let bad = yaml.replace(
        "address: 10.0.0.1, port_value: 443",
        "address: 10.0.0.1, port_value: 443, protocol: UDP",
    );
    expect_err(
        &bad,
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.protocol",
        "not supported",
    );
    let bad = yaml.replace("      unhealthy_threshold: 2\n", "");
    expect_err(
        &bad,
        "static_resources.clusters[0].health_checks[0].unhealthy_threshold",
        "required",
    );
    let bad = yaml.replace(
        "sni: backend.local",
        "sni: backend.local\n        allow_renegotiation: true",
    );
    expect_err(
        &bad,
        "static_resources.clusters[0].transport_socket.typed_config.allow_renegotiation",
        "not supported",
    );
}

#[test]
fn listeners_filter_chains_and_tcp_proxy() {
    let yaml = r#"static_resources:
  listeners:
  - name: virtualOutbound
    address: { socket_address: { address: 0.0.0.0, port_value: 15001 } }
    use_original_dst: true
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }
    - name: envoy.filters.listener.http_inspector
    filter_chains:
    - filter_chain_match: { destination_port: 5432 }
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: db
          weighted_clusters: { clusters: [{ name: passthrough, weight: 1 }, { name: other, weight: 3 }] }
          idle_timeout: 0s
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: passthrough
          cluster: passthrough
  clusters:
  - { name: passthrough, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED }
  - { name: other, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED }
"#;
    let b = from_yaml_str(yaml).expect("valid");
    let l = &b.listeners[0];
    assert!(l.use_original_dst && l.has_original_dst_filter());
    assert_eq!(
        l.listener_filters,
        vec![ListenerFilter::OriginalDst, ListenerFilter::HttpInspector]
    );
    let NetworkFilter::Tcp(db) = &chain_for(l, 5432).unwrap().filter else {
        panic!("tcp")
    };
    assert_eq!(db.idle_timeout, None);
    assert_eq!(db.cluster.pick(0).as_str(), "passthrough");
    assert_eq!(db.cluster.pick(1).as_str(), "other");
    let NetworkFilter::Tcp(pt) = &chain_for(l, 80).unwrap().filter else {
        panic!("tcp")
    };
    assert_eq!(pt.idle_timeout, Some(DEFAULT_TCP_PROXY_IDLE_TIMEOUT));
    assert!(matches!(&pt.cluster, TcpProxyCluster::Single(c) if c.as_str() == "passthrough"));

    let bad = yaml.replace(
        "    - filter_chain_match: { destination_port: 5432 }\n",
        "    - filter_chain_match: {}\n",
    );
    expect_err(
        &bad,
        "static_resources.listeners[0].filter_chains[1].filter_chain_match",
        "same matching rules",
    );
    let bad = yaml.replace(
        "envoy.filters.listener.http_inspector",
        "envoy.filters.listener.redis_sniffer",
    );
    expect_err(
        &bad,
        "static_resources.listeners[0].listener_filters[1].name",
        "not supported",
    );
    let bad = yaml.replace(
        "destination_port: 5432",
        "destination_port: 5432, destination_port_range: {start: 1, end: 9}",
    );
    expect_err(
        &bad,
        "static_resources.listeners[0].filter_chains[0].filter_chain_match.destination_port_range",
        "not supported",
    );
}

#[test]
fn route_action_defaults_follow_envoy() {
    let b = from_yaml_str(&with_routes(ROUTES_OK)).unwrap();
    let NetworkFilter::Http(hcm) = &b.listeners[0].filter_chains[0].filter else {
        panic!()
    };
    let RouteAction::Forward(f) = &hcm.route_table.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert_eq!(f.timeout, Some(crate::route::DEFAULT_ROUTE_TIMEOUT));
    assert_eq!(f.idle_timeout, None);
    assert!(f.retry_policy.is_none());
    assert!(matches!(&f.cluster, ClusterSpecifier::Cluster(c) if c.as_str() == "a"));
    assert_eq!(f.cluster_not_found_status, 503);
}

#[test]
fn envoy_fields_for_forwarding_and_discovery_parse() {
    let yaml = with_routes(ROUTES_OK)
        .replace(
            "          stat_prefix: ingress\n",
            "          stat_prefix: ingress\n          use_remote_address: true\n          xff_num_trusted_hops: 1\n",
        )
        .replace("  - name: b\n", "  - name: b\n    type: STRICT_DNS\n    dns_lookup_family: V4_ONLY\n")
        .replace("{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8001", "{ endpoint: { hostname: a.internal, address: { socket_address: { address: 127.0.0.1, port_value: 8001");
    let b = from_yaml_str(&yaml).expect("valid");
    let NetworkFilter::Http(hcm) = &b.listeners[0].filter_chains[0].filter else {
        panic!("not an HCM")
    };
    assert!(hcm.use_remote_address);
    assert_eq!(hcm.xff_num_trusted_hops, 1);
    assert_eq!(
        b.clusters[0].endpoints[0].hostname.as_deref(),
        Some("a.internal")
    );
    assert_eq!(b.clusters[1].dns_lookup_family, DnsLookupFamily::V4Only);
    let od = "  - name: od\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    original_dst_lb_config: { use_http_header: true }\n";
    let b = from_yaml_str(&format!("{}{od}", with_routes(ROUTES_OK))).expect("valid");
    assert_eq!(
        b.clusters[2].original_dst_header.as_deref(),
        Some(DEFAULT_ORIGINAL_DST_HEADER)
    );
    let bad = "  - name: s\n    original_dst_lb_config: { use_http_header: true }\n";
    expect_err(
        &format!("{}{bad}", with_routes(ROUTES_OK)),
        "static_resources.clusters[2].original_dst_lb_config",
        "ORIGINAL_DST",
    );
    let mut v = vec!["[::1]:1".parse().unwrap(), "127.0.0.1:1".parse().unwrap()];
    DnsLookupFamily::Auto.filter(&mut v);
    assert_eq!(v, ["[::1]:1".parse::<SocketAddr>().unwrap()]);
}

#[test]
fn hash_policies_name_the_bad_field() {
    let routes = |policy: &str| {
        with_routes(&format!(
            "virtual_hosts:\n- name: v\n  domains: [\"*\"]\n  routes:\n  - match: {{ prefix: / }}\n    route: {{ cluster: a, hash_policy: [{policy}] }}\n"
        ))
    };
    let hp = rc_path("virtual_hosts[0].routes[0].route.hash_policy[0]");
    from_yaml_str(&routes("{ query_parameter: { name: user } }")).unwrap();
    from_yaml_str(&routes(
        r#"{ header: { header_name: x-user, regex_rewrite: { pattern: { regex: "^(.*)-[0-9]+$" }, substitution: "\\1" } } }"#,
    ))
    .unwrap();
    expect_err(
        &routes("{ query_parameter: {} }"),
        &format!("{hp}.query_parameter.name"),
        "required",
    );
    expect_err(
        &routes("{ query_parameter: { name: q }, header: { header_name: x } }"),
        &hp,
        "only one of header, cookie, connection_properties and query_parameter",
    );
    expect_err(&routes("{ terminal: true }"), &hp, "one of header");
    from_yaml_str(&routes(
        "{ cookie: { name: s, ttl: 0s, path: /a, attributes: [{ name: Secure }, { name: SameSite, value: Lax }] } }",
    ))
    .unwrap();
    expect_err(
        &routes("{ cookie: { name: s, ttl: 1s, attributes: [{ value: x }] } }"),
        &format!("{hp}.cookie.attributes[0].name"),
        "required",
    );
    // Spaces and commas are fine (an Expires date), control characters are not.
    from_yaml_str(&routes(
        r#"{ cookie: { name: s, ttl: 1s, path: "/a b", attributes: [{ name: Expires, value: "Wed, 21 Oct 2026 07:28:00 GMT" }] } }"#,
    ))
    .unwrap();
    expect_err(
        &routes(r#"{ cookie: { name: "a\u0001b", ttl: 1s } }"#),
        &format!("{hp}.cookie.name"),
        "control characters",
    );
    expect_err(
        &routes(
            r#"{ cookie: { name: s, ttl: 1s, attributes: [{ name: a, value: "x\u007fy" }] } }"#,
        ),
        &format!("{hp}.cookie.attributes[0].value"),
        "control characters",
    );
    expect_err(
        &routes(
            r#"{ header: { header_name: x, regex_rewrite: { pattern: { regex: "(" }, substitution: "" } } }"#,
        ),
        &format!("{hp}.header.regex_rewrite.pattern.regex"),
        "",
    );
}

#[test]
fn metadata_is_accepted_wherever_istiod_sends_it() {
    let meta =
        "{ filter_metadata: { istio: { workload: \"reviews;default;reviews;v1;Kubernetes\" } } }";
    let yaml = with_routes(&format!(
        "metadata: {meta}\nvirtual_hosts:\n- name: v\n  metadata: {meta}\n  domains: [\"*\"]\n  routes:\n  - match: {{ prefix: / }}\n    route: {{ cluster: a }}\n"
    ))
    .replacen("  - name: http\n", &format!("  - name: http\n    metadata: {meta}\n"), 1)
    .replacen(
        "      endpoints: [{ lb_endpoints: [{ endpoint:",
        &format!("      endpoints: [{{ metadata: {meta}, lb_endpoints: [{{ metadata: {{ filter_metadata: {{ envoy.transport_socket_match: {{ tlsMode: istio }} }} }}, endpoint:"),
        1,
    );
    assert_eq!(yaml.matches("filter_metadata:").count(), 5, "{yaml}");
    from_yaml_str(&yaml).unwrap();
}

#[test]
fn hcm_connection_fields_load_with_envoys_defaults_and_bounds() {
    let hcm_with = |fields: &str| {
        with_routes(ROUTES_OK).replace(
            "          stat_prefix: ingress\n",
            &format!("          stat_prefix: ingress\n          {fields}\n"),
        )
    };
    let b = from_yaml_str(&hcm_with(
        "request_headers_timeout: 2s\n          drain_timeout: 3s\n          delayed_close_timeout: 0s\n          scheme_header_transformation: {scheme_to_overwrite: https}",
    ))
    .expect("valid");
    let chain = chain_for(&b.listeners[0], 10000).expect("default chain");
    let NetworkFilter::Http(hcm) = &chain.filter else {
        panic!("expected HCM")
    };
    assert_eq!(hcm.request_headers_timeout, Some(Duration::from_secs(2)));
    assert_eq!(hcm.conn_timeouts.drain, Duration::from_secs(3));
    assert_eq!(hcm.conn_timeouts.delayed_close, None, "0s disables");
    assert_eq!(hcm.request_scheme(false), "https");
    expect_err(
        &hcm_with("scheme_header_transformation: {scheme_to_overwrite: ftp}"),
        &format!("{HCM_PATH}.scheme_header_transformation.scheme_to_overwrite"),
        "\"ftp\" is not http or https",
    );
}
