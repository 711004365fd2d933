//! Parsing and validation of the cluster options (`cluster_options`): values reach
//! [`ClusterOptions`], errors name the field path.

use std::time::Duration;

use super::super::{
    dynamic_tests::cluster, from_yaml_str, tests::expect_err, Bootstrap, ClusterOptions,
    DiscoveryType,
};

const C: &str = "static_resources.clusters[0]";

/// A bootstrap with one tcp_proxy listener to cluster `svc` of type `discovery` with one
/// endpoint `host`:80, whose definition ends with `fields` (YAML lines indented by 4).
fn with_cluster(discovery: &str, host: &str, fields: &str) -> String {
    cluster(&format!(
        "    type: {discovery}\n    load_assignment:\n      cluster_name: svc\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{address: {host}, port_value: 80}}}}}}\n{fields}"
    ))
}

fn options(yaml: &str) -> (Bootstrap, ClusterOptions) {
    let b = from_yaml_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    let o = b.cluster("svc").expect("cluster svc").options.clone();
    (b, o)
}

const TYPED: &str = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http_protocol_options: {}}
        common_http_protocol_options: {max_requests_per_connection: 3}
"#;

#[test]
fn defaults() {
    let (_, o) = options(&with_cluster("STATIC", "127.0.0.1", ""));
    assert_eq!(o, ClusterOptions::default());
    assert_eq!(o.healthy_panic_threshold, 50.0);
}

#[test]
fn max_requests_per_connection_from_either_place() {
    let (_, o) = options(&with_cluster(
        "STATIC",
        "127.0.0.1",
        "    max_requests_per_connection: 2\n",
    ));
    assert_eq!(o.max_requests_per_connection, Some(2));
    let (_, o) = options(&with_cluster("STATIC", "127.0.0.1", TYPED));
    assert_eq!(o.max_requests_per_connection, Some(3));
    let (_, o) = options(&with_cluster(
        "STATIC",
        "127.0.0.1",
        "    max_requests_per_connection: 0\n",
    ));
    assert_eq!(o.max_requests_per_connection, None, "0 is no limit");
    expect_err(
        &with_cluster(
            "STATIC",
            "127.0.0.1",
            &format!("{TYPED}    max_requests_per_connection: 1\n"),
        ),
        &format!("{C}.max_requests_per_connection"),
        "only one of",
    );
}

#[test]
fn connection_options() {
    let (_, o) = options(&with_cluster(
        "STATIC",
        "127.0.0.1",
        "    per_connection_buffer_limit_bytes: 32768\n    upstream_connection_options: {tcp_keepalive: {keepalive_time: 9}}\n",
    ));
    assert_eq!(o.buffer_limit_bytes, Some(32768));
    let k = o.tcp_keepalive.expect("tcp_keepalive");
    assert_eq!((k.probes, k.time, k.interval), (None, Some(9), None));
    expect_err(
        &with_cluster(
            "STATIC",
            "127.0.0.1",
            "    upstream_connection_options: {tcp_keepalive: {keepalive_tries: 1}}\n",
        ),
        &format!("{C}.upstream_connection_options.tcp_keepalive.keepalive_tries"),
        "unknown field",
    );
}

#[test]
fn logical_dns_and_refresh_rates() {
    let (b, o) = options(&with_cluster(
        "LOGICAL_DNS",
        "localhost",
        "    respect_dns_ttl: true\n    dns_failure_refresh_rate: {base_interval: 2s}\n",
    ));
    assert_eq!(
        b.cluster("svc").unwrap().discovery,
        DiscoveryType::LogicalDns
    );
    assert_eq!(
        o.dns_failure_refresh,
        Some((Duration::from_secs(2), Duration::from_secs(20)))
    );
    expect_err(
        &with_cluster(
            "LOGICAL_DNS",
            "localhost",
            "    dns_failure_refresh_rate: {base_interval: 2s, max_interval: 1s}\n",
        ),
        &format!("{C}.dns_failure_refresh_rate.max_interval"),
        "greater than base_interval",
    );
    expect_err(
        &with_cluster(
            "LOGICAL_DNS",
            "localhost",
            "    dns_failure_refresh_rate: {}\n",
        ),
        &format!("{C}.dns_failure_refresh_rate.base_interval"),
        "required",
    );
    expect_err(
        &with_cluster("STATIC", "127.0.0.1", "    respect_dns_ttl: true\n"),
        &format!("{C}.respect_dns_ttl"),
        "only valid with type STRICT_DNS or LOGICAL_DNS",
    );
    let two = with_cluster("LOGICAL_DNS", "localhost", "").replace(
        "      - lb_endpoints:\n",
        "      - lb_endpoints:\n        - endpoint: {address: {socket_address: {address: other, port_value: 80}}}\n",
    );
    expect_err(
        &two,
        &format!("{C}.load_assignment"),
        "exactly one endpoint",
    );
}

#[test]
fn common_lb_config() {
    let (_, o) = options(&with_cluster(
        "STATIC",
        "127.0.0.1",
        "    common_lb_config:\n      healthy_panic_threshold: {value: 0}\n      zone_aware_lb_config: {fail_traffic_on_panic: true, min_cluster_size: 3}\n      update_merge_window: 1s\n",
    ));
    assert_eq!(o.healthy_panic_threshold, 0.0);
    assert!(o.fail_traffic_on_panic);
    expect_err(
        &with_cluster(
            "STATIC",
            "127.0.0.1",
            "    common_lb_config: {healthy_panic_threshold: {value: 101}}\n",
        ),
        &format!("{C}.common_lb_config.healthy_panic_threshold.value"),
        "out of range",
    );
    let (_, o) = options(&with_cluster(
        "STATIC",
        "127.0.0.1",
        "    common_lb_config: {locality_weighted_lb_config: {}}\n",
    ));
    assert!(o.locality_weighted_lb);
}

#[test]
fn endpoints_carry_their_locality_rank_and_weight() {
    let ep = |ip: &str| {
        format!("        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: 80}}}}}}\n")
    };
    let yaml = cluster(&format!(
        "    type: STATIC\n    load_assignment:\n      cluster_name: svc\n      endpoints:\n\
         \x20     - locality: {{region: r, zone: b}}\n        load_balancing_weight: 3\n        lb_endpoints:\n{}\
         \x20     - locality: {{region: r, zone: a}}\n        load_balancing_weight: 1\n        lb_endpoints:\n{}\
         \x20     - load_balancing_weight: 5\n        lb_endpoints:\n{}\
         \x20     - locality: {{region: r, zone: a}}\n        lb_endpoints:\n{}\
         \x20     - locality: {{region: r, zone: a}}\n        priority: 1\n        load_balancing_weight: 7\n        lb_endpoints:\n{}",
        ep("10.0.0.1"),
        ep("10.0.0.2"),
        ep("10.0.0.3"),
        ep("10.0.0.4"),
        ep("10.0.0.5"),
    ));
    let b = from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(u32, u32)> = b
        .cluster("svc")
        .expect("cluster svc")
        .endpoints
        .iter()
        .map(|e| (e.locality, e.locality_weight))
        .collect();
    // Ranks: the empty locality (no `locality`: its weight is ignored, as Envoy's), r/a, r/b;
    // r/a keeps weight 1 at priority 0 (an entry without a weight sets none) and has 7 at 1.
    assert_eq!(got, vec![(2, 3), (1, 1), (0, 0), (1, 1), (1, 7)]);
    expect_err(
        &yaml.replace("load_balancing_weight: 3", "load_balancing_weight: 0"),
        &format!("{C}.load_assignment.endpoints[0].load_balancing_weight"),
        "at least 1",
    );
    // Ring hash and maglev refuse locality weights summing past u32 in a level.
    let big = yaml.replace(
        "load_balancing_weight: 3",
        "load_balancing_weight: 4294967295",
    );
    from_yaml_str(&big).unwrap_or_else(|e| panic!("{e}"));
    expect_err(
        &big.replace("type: STATIC\n", "type: STATIC\n    lb_policy: MAGLEV\n"),
        &format!("{C}.load_assignment.endpoints"),
        "sum of the locality weights of priority 0",
    );
}

#[test]
fn original_dst_cleanup_interval() {
    let (_, o) = options(&cluster(
        "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    cleanup_interval: 9223372035s\n",
    ));
    // istiod's inbound ORIGINAL_DST clusters: the longest duration Envoy takes here.
    assert_eq!(
        o.original_dst_cleanup,
        std::time::Duration::from_secs(9_223_372_035)
    );
    expect_err(
        &cluster("    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    cleanup_interval: 9223372036s\n"),
        &format!("{C}.cleanup_interval"),
        "out of range",
    );
    let (_, o) = options(&cluster(
        "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n",
    ));
    assert_eq!(
        o.original_dst_cleanup,
        crate::config::DEFAULT_ORIGINAL_DST_CLEANUP
    );
    expect_err(
        &cluster(
            "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    cleanup_interval: 0s\n",
        ),
        &format!("{C}.cleanup_interval"),
        "greater than 0s",
    );
}

#[test]
fn http2_max_concurrent_streams_in_either_protocol_config() {
    let typed = |config: &str, n: &str| {
        format!(
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        {config}: {{http2_protocol_options: {{max_concurrent_streams: {n}}}}}\n"
        )
    };
    for config in ["explicit_http_config", "use_downstream_protocol_config"] {
        let (_, o) = options(&with_cluster("STATIC", "127.0.0.1", &typed(config, "5")));
        assert_eq!(o.h2_max_concurrent_streams, Some(5), "{config}");
    }
    // Envoy's default, the largest value, is no limit.
    let (_, o) = options(&with_cluster(
        "STATIC",
        "127.0.0.1",
        &typed("explicit_http_config", "2147483647"),
    ));
    assert_eq!(o.h2_max_concurrent_streams, None);
    expect_err(
        &with_cluster("STATIC", "127.0.0.1", &typed("explicit_http_config", "0")),
        &format!("{C}.typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config.http2_protocol_options.max_concurrent_streams"),
        "out of range",
    );
}

#[test]
fn slow_start_as_istiod_sends_a_warmup() {
    // A DestinationRule's `loadBalancer.warmup` (istiod's `setWarmup`).
    let warmup = "    round_robin_lb_config:\n      slow_start_config:\n        slow_start_window: 60s\n        aggression: {default_value: 1.5, runtime_key: \"(\"}\n        min_weight_percent: {value: 20}\n";
    let (_, o) = options(&with_cluster("STATIC", "127.0.0.1", warmup));
    let s = o.slow_start.expect("slow start");
    assert_eq!(s.window, Duration::from_secs(60));
    assert_eq!((s.aggression, s.min_weight), (1.5, 0.2));
    // The deprecated `warmupDurationSecs`: the window alone, Envoy's defaults for the rest.
    let (_, o) = options(&with_cluster(
        "STATIC",
        "127.0.0.1",
        "    lb_policy: LEAST_REQUEST\n    least_request_lb_config: {slow_start_config: {slow_start_window: 5s}}\n",
    ));
    let s = o.slow_start.expect("slow start");
    assert_eq!((s.aggression, s.min_weight), (1.0, 0.1));
    // No window: disabled, as Envoy.
    let (_, o) = options(&with_cluster(
        "STATIC",
        "127.0.0.1",
        "    round_robin_lb_config: {slow_start_config: {}}\n",
    ));
    assert_eq!(o.slow_start, None);
    expect_err(
        &with_cluster(
            "STATIC",
            "127.0.0.1",
            "    round_robin_lb_config: {slow_start_config: {slow_start_window: 1s, min_weight_percent: {value: 150}}}\n",
        ),
        &format!("{C}.round_robin_lb_config.slow_start_config.min_weight_percent.value"),
        "within 0..=100",
    );
    expect_err(
        &with_cluster(
            "STATIC",
            "127.0.0.1",
            "    lb_policy: RANDOM\n    round_robin_lb_config: {}\n",
        ),
        &format!("{C}.round_robin_lb_config"),
        "requires lb_policy ROUND_ROBIN",
    );
    expect_err(
        &with_cluster(
            "STATIC",
            "127.0.0.1",
            "    common_lb_config: {locality_weighted_lb_config: {}}\n    round_robin_lb_config: {slow_start_config: {slow_start_window: 1s}}\n",
        ),
        &format!("{C}.round_robin_lb_config.slow_start_config"),
        "locality_weighted_lb_config",
    );
}

#[test]
fn max_response_headers_kb_within_envoys_bounds() {
    let typed = |kb: u32| {
        format!("    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {{http_protocol_options: {{}}}}\n        common_http_protocol_options: {{max_response_headers_kb: {kb}}}\n")
    };
    let (_, o) = options(&with_cluster("STATIC", "127.0.0.1", &typed(40)));
    assert_eq!(o.max_response_headers_kb, Some(40));
    for kb in [0, 8193] {
        expect_err(
            &with_cluster("STATIC", "127.0.0.1", &typed(kb)),
            &format!("{C}.typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.common_http_protocol_options.max_response_headers_kb"),
            "within 1..=8192",
        );
    }
}

#[test]
fn health_check_jitter_is_read_and_bounded_as_envoys() {
    let hc = "    health_checks: [{timeout: 1s, interval: 10s, interval_jitter: 1s, interval_jitter_percent: 20, initial_jitter: 2s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}]\n";
    let yaml = with_cluster("STATIC", "127.0.0.1", hc);
    let b = from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let j = b.cluster("svc").unwrap().health_checks[0].jitter;
    assert_eq!(
        j,
        super::super::HealthCheckJitter {
            initial: Duration::from_secs(2),
            interval: Duration::from_secs(1),
            percent: 20,
        }
    );
    for _ in 0..200 {
        // 10 s + below 20 % of it + below 1 s.
        let w = j.apply(Duration::from_secs(10));
        assert!(
            w >= Duration::from_secs(10) && w < Duration::from_secs(13),
            "{w:?}"
        );
        assert!(j.initial_wait() < Duration::from_secs(2));
    }
    let none = super::super::HealthCheckJitter::default();
    assert_eq!(none.apply(Duration::from_secs(1)), Duration::from_secs(1));
    assert_eq!(none.initial_wait(), Duration::ZERO);
}

#[test]
fn health_check_intervals_and_payloads_are_read_and_checked() {
    let hc = |fields: &str| {
        format!("    health_checks: [{{timeout: 1s, interval: 10s, unhealthy_threshold: 2, healthy_threshold: 2, {fields}}}]\n")
    };
    let yaml = with_cluster(
        "STATIC",
        "127.0.0.1",
        &hc("unhealthy_interval: 2s, healthy_edge_interval: 3s, reuse_connection: false, tcp_health_check: {send: {text: 50494E47}, receive: [{binary: K1BPTkc=}, {text: 0d0a}]}"),
    );
    let b = from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let h = &b.cluster("svc").unwrap().health_checks[0];
    let s = Duration::from_secs;
    assert_eq!(
        h.intervals,
        super::super::HealthCheckIntervals {
            interval: s(10),
            unhealthy: s(2),
            unhealthy_edge: s(2),
            healthy_edge: s(3),
            no_traffic: s(60),
            no_traffic_healthy: s(60),
        }
    );
    assert!(!h.reuse_connection);
    // As Envoy: a `binary` send is not written, empty receive blocks are skipped.
    let quiet = with_cluster(
        "STATIC",
        "127.0.0.1",
        &hc("tcp_health_check: {send: {binary: UElORw==}, receive: [{binary: ''}]}"),
    );
    let b = from_yaml_str(&quiet).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        b.cluster("svc").unwrap().health_checks[0].kind,
        super::super::HealthCheckKind::Tcp {
            send: Vec::new(),
            receive: Vec::new(),
        }
    );
    assert_eq!(
        h.kind,
        super::super::HealthCheckKind::Tcp {
            send: b"PING".to_vec(),
            receive: vec![b"+PONG".to_vec(), b"\r\n".to_vec()],
        }
    );
    let hp = format!("{C}.health_checks[0]");
    for (fields, path, message) in [
        (
            "unhealthy_edge_interval: 0s, tcp_health_check: {}",
            format!("{hp}.unhealthy_edge_interval"),
            "greater than 0s",
        ),
        (
            "tcp_health_check: {send: {text: 5G}}",
            format!("{hp}.tcp_health_check.send.text"),
            "not a hex string",
        ),
        (
            "tcp_health_check: {receive: [{text: 505}]}",
            format!("{hp}.tcp_health_check.receive[0].text"),
            "not a hex string",
        ),
        (
            "tcp_health_check: {receive: [{}]}",
            format!("{hp}.tcp_health_check.receive[0]"),
            "exactly one of text and binary",
        ),
        (
            "tcp_health_check: {receive: [{text: ''}]}",
            format!("{hp}.tcp_health_check.receive[0].text"),
            "not a hex string",
        ),
        (
            "tcp_health_check: {receive: [{binary: '%%'}]}",
            format!("{hp}.tcp_health_check.receive[0].binary"),
            "must be base64",
        ),
        (
            "http_health_check: {path: /h, retriable_statuses: [{start: 500, end: 500}]}",
            format!("{hp}.http_health_check.retriable_statuses[0]"),
            "invalid range",
        ),
    ] {
        expect_err(
            &with_cluster("STATIC", "127.0.0.1", &hc(fields)),
            &path,
            message,
        );
    }
}

#[test]
fn a_grpc_health_check_needs_an_http2_cluster() {
    let hc = "    health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {service_name: s, authority: a.example, initial_metadata: [{header: {key: x, value: '1'}}]}}]\n";
    expect_err(
        &with_cluster("STATIC", "127.0.0.1", hc),
        &format!("{C}.health_checks[0].grpc_health_check"),
        "must support HTTP/2",
    );
    let h2 = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {http2_protocol_options: {}}\n";
    let (b, _) = options(&with_cluster("STATIC", "127.0.0.1", &format!("{h2}{hc}")));
    let kind = &b.cluster("svc").unwrap().health_checks[0].kind;
    let super::super::HealthCheckKind::Grpc {
        service_name,
        authority,
        metadata,
    } = kind
    else {
        panic!("{kind:?}")
    };
    assert_eq!(
        (service_name.as_str(), authority.as_deref()),
        ("s", Some("a.example"))
    );
    assert_eq!(metadata.add.len(), 1);
    let bad = hc.replace("authority: a.example", "authority: 'outbound|80||a'");
    expect_err(
        &with_cluster("STATIC", "127.0.0.1", &format!("{h2}{bad}")),
        &format!("{C}.health_checks[0].grpc_health_check.authority"),
        "not a valid HTTP/2 :authority",
    );
    expect_err(
        &with_cluster("STATIC", "127.0.0.1", &format!("{h2}    health_checks: [{{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {{}}, tcp_health_check: {{}}}}]\n")),
        &format!("{C}.health_checks[0]"),
        "exactly one of",
    );
}

#[test]
fn http_check_payloads_are_refused_where_envoy_refuses_them() {
    let hc = |fields: &str| {
        format!("    health_checks: [{{timeout: 1s, interval: 10s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {{path: /hc, {fields}}}}}]\n")
    };
    let hp = format!("{C}.health_checks[0].http_health_check");
    // A payload with a method that carries no body.
    for m in ["", "method: DELETE, "] {
        expect_err(
            &with_cluster(
                "STATIC",
                "127.0.0.1",
                &hc(&format!("{m}send: {{text: 70}}")),
            ),
            &format!("{hp}.send"),
            "only POST, PUT, PATCH or OPTIONS",
        );
    }
    // More to receive than the buffer holds.
    expect_err(
        &with_cluster(
            "STATIC",
            "127.0.0.1",
            &hc("response_buffer_size: 1, receive: [{text: 6f6b}]"),
        ),
        &format!("{hp}.response_buffer_size"),
        "over the response buffer size 1",
    );
    // 0: the whole body is searched.
    let yaml = with_cluster(
        "STATIC",
        "127.0.0.1",
        &hc("method: PUT, send: {binary: cGluZw==}, response_buffer_size: 0, receive: [{text: 6f6b}]"),
    );
    let b = from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let super::super::HealthCheckKind::Http { body, .. } =
        &b.cluster("svc").unwrap().health_checks[0].kind
    else {
        panic!("an HTTP check");
    };
    assert_eq!(body.send, b"ping");
    assert_eq!(body.receive, vec![b"ok".to_vec()]);
    assert_eq!(body.response_buffer_size, 0);
}

#[test]
fn endpoint_health_check_host_names_are_checked_where_they_are_read() {
    let ep = |hc: &str| {
        with_cluster("STATIC", "127.0.0.1", "").replace(
            "port_value: 80}}}",
            &format!("port_value: 80}}}}, health_check_config: {hc}}}"),
        )
    };
    expect_err(
        &ep("{hostname: \"not a host\"}"),
        &format!("{C}.load_assignment.endpoints[0].lb_endpoints[0].endpoint.health_check_config.hostname"),
        "not a valid host name",
    );
    let b = from_yaml_str(&ep("{hostname: checks.example, port_value: 8081}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let e = &b.cluster("svc").unwrap().endpoints[0];
    let hc = e.health_check.as_ref().expect("health_check_config");
    assert_eq!(hc.hostname.as_deref(), Some("checks.example"));
    assert_eq!(
        hc.target("127.0.0.1:80".parse().unwrap()),
        "127.0.0.1:8081".parse().unwrap()
    );
    // Nothing said: no config kept.
    let b = from_yaml_str(&ep("{port_value: 0}")).unwrap_or_else(|e| panic!("{e}"));
    assert!(b.cluster("svc").unwrap().endpoints[0]
        .health_check
        .is_none());
}
