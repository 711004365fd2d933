//! Regression tests for hostile or careless configs (issue 13): every one must be a clear
//! rejection naming its field, found without unbounded work.

use std::time::{Duration, Instant};

use super::tests::{expect_err, rc_path, with_routes, ROUTES_OK};
use super::*;

/// `with_routes(ROUTES_OK)` with `extra` appended to cluster `a` (indented under it).
fn with_cluster_a(extra: &str) -> String {
    let indented: String = extra.lines().map(|l| format!("    {l}\n")).collect();
    with_routes(ROUTES_OK).replacen("  - name: b\n", &format!("{indented}  - name: b\n"), 1)
}

/// Runs `f` and fails when it takes more than `limit` (an unbounded loop would hang the test).
#[track_caller]
fn within<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    assert!(t.elapsed() < limit, "took {:?}", t.elapsed());
    out
}

#[test]
fn maglev_table_size_near_u64_max_is_rejected_at_once() {
    for size in [
        u64::MAX,
        u64::MAX - 1,
        18446744073709551557,
        5_000_012,
        4_294_967_311,
    ] {
        let yaml = with_cluster_a(&format!(
            "lb_policy: MAGLEV\nmaglev_lb_config: {{ table_size: {size} }}"
        ));
        within(Duration::from_millis(500), || {
            expect_err(
                &yaml,
                "static_resources.clusters[0].maglev_lb_config.table_size",
                "prime number <= 5000011",
            )
        });
    }
    let ok = with_cluster_a("lb_policy: MAGLEV\nmaglev_lb_config: { table_size: 5000011 }");
    within(Duration::from_millis(500), || from_yaml_str(&ok)).expect("Envoy's largest table");
}

#[test]
fn ring_hash_sizes_are_bounded_like_envoy() {
    let yaml = with_cluster_a(
        "lb_policy: RING_HASH\nring_hash_lb_config: { minimum_ring_size: 1024, maximum_ring_size: 18446744073709551615 }",
    );
    expect_err(
        &yaml,
        "static_resources.clusters[0].ring_hash_lb_config.maximum_ring_size",
        "at most 8388608",
    );
}

#[test]
fn map_form_durations_get_the_string_range_check() {
    const MAX: &str = "{ seconds: 18446744073709551615 }";
    let hcm = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
    let route = format!("{hcm}.route_config.virtual_hosts[0].routes[0].route");
    let base = with_routes(ROUTES_OK);
    let cases = [
        (
            base.replace(
                "          stat_prefix: ingress\n",
                &format!("          stat_prefix: ingress\n          stream_idle_timeout: {MAX}\n"),
            ),
            format!("{hcm}.stream_idle_timeout"),
        ),
        (
            base.replace("route: { cluster: a }", &format!("route: {{ cluster: a, idle_timeout: {MAX} }}")),
            format!("{route}.idle_timeout"),
        ),
        (
            base.replace("route: { cluster: a }", &format!("route: {{ cluster: a, timeout: {MAX} }}")),
            format!("{route}.timeout"),
        ),
        (
            with_cluster_a(&format!("connect_timeout: {MAX}")),
            "static_resources.clusters[0].connect_timeout".to_string(),
        ),
        (
            with_cluster_a(&format!(
                "health_checks: [{{ timeout: {MAX}, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {{}} }}]"
            )),
            "static_resources.clusters[0].health_checks[0].timeout".to_string(),
        ),
        (
            with_cluster_a("connect_timeout: { seconds: 315576000001 }"),
            "static_resources.clusters[0].connect_timeout".to_string(),
        ),
        (
            with_cluster_a("connect_timeout: { seconds: 1, nanos: 1000000000 }"),
            "static_resources.clusters[0].connect_timeout".to_string(),
        ),
    ];
    for (yaml, path) in &cases {
        expect_err(yaml, path, "out of range");
    }
    // The largest protobuf Duration is accepted in both forms.
    for max in [
        "{ seconds: 315576000000, nanos: 999999999 }",
        "315576000000.999999999s",
    ] {
        let yaml = base.replace(
            "route: { cluster: a }",
            &format!("route: {{ cluster: a, idle_timeout: {max} }}"),
        );
        from_yaml_str(&yaml).expect("protobuf's max Duration");
    }
}

#[test]
fn empty_or_listener_less_bootstraps_are_rejected() {
    for yaml in [
        "",
        "\n\n",
        "# nothing yet\n",
        "{}",
        "static_resources: {}\n",
        "static_resources:\n  listeners: []\n",
        "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 9901 } } }\n",
    ] {
        expect_err(yaml, "static_resources.listeners", "at least one listener");
    }
    // A file caught half-written (cut before its listeners) is rejected the same way.
    let full = with_routes(ROUTES_OK);
    let cut = &full[..full.find("  listeners:").unwrap()];
    expect_err(cut, "static_resources.listeners", "at least one listener");
    let dir = std::env::temp_dir().join(format!("sluice-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, "").unwrap();
    let err = load_file(&file).expect_err("an empty file is rejected");
    assert!(
        err.to_string()
            .contains("static_resources.listeners: at least one listener"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn direct_response_bodies_are_capped_like_envoy() {
    let route = |body_len: usize, max: &str| {
        with_routes(&format!(
            "{max}virtual_hosts:\n- name: v0\n  domains: [\"*\"]\n  routes:\n  - match: {{ prefix: \"/\" }}\n    direct_response: {{ status: 200, body: {{ inline_string: \"{}\" }} }}\n",
            "x".repeat(body_len)
        ))
    };
    let path = format!(
        "{}.route_config.virtual_hosts[0].routes[0].direct_response.body.inline_string",
        super::tests::HCM_PATH
    );
    from_yaml_str(&route(4096, "")).expect("Envoy's default cap is 4096 bytes");
    expect_err(
        &route(4097, ""),
        &path,
        "exceed max_direct_response_body_size_bytes (4096)",
    );
    // 100 MB would be accepted only with an explicit, larger cap; 1 MB here stands for it.
    expect_err(&route(1 << 20, ""), &path, "exceed");
    let raised = "max_direct_response_body_size_bytes: 2000000\n";
    from_yaml_str(&route(1 << 20, raised)).expect("the route configuration raises the cap");
}

#[test]
fn endpoint_weights_summing_past_u32_are_rejected() {
    let ep = |w: u32| {
        format!("        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8001 }} }} }}\n          load_balancing_weight: {w}\n")
    };
    let any = with_routes(ROUTES_OK).replacen(
        "      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8001 } } } }] }]\n",
        &format!("      endpoints:\n      - lb_endpoints:\n{}{}", ep(u32::MAX), ep(1)),
        1,
    );
    // Only Envoy's ring hash and maglev check the sum (per priority level).
    from_yaml_str(&any).expect("round robin takes any sum");
    let yaml = any.replacen("  - name: a\n", "  - name: a\n    lb_policy: MAGLEV\n", 1);
    expect_err(
        &yaml,
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[1].load_balancing_weight",
        "exceeds 4294967295",
    );
    let ok = yaml.replace(&ep(u32::MAX), &ep(u32::MAX - 1));
    from_yaml_str(&ok).expect("a sum of exactly u32::MAX is accepted");
}

/// Ten anchors each aliasing the previous one ten times (the "billion laughs"): 10^10 nodes of a
/// 1 KiB string once expanded, from a file of a few KiB.
fn alias_bomb(indent: &str) -> String {
    let mut s = format!("{indent}l0: &l0 [\"{}\"]\n", "x".repeat(1024));
    for i in 1..10 {
        let prev = format!("*l{}", i - 1);
        s.push_str(&format!(
            "{indent}l{i}: &l{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    s
}

#[test]
fn yaml_alias_bombs_are_rejected_before_expansion() {
    // Inside a typed_config (decoded into a generic value, so every alias would expand).
    let hcm = with_routes(ROUTES_OK);
    let in_typed = hcm.replace(
        "          stat_prefix: ingress\n",
        &format!(
            "          stat_prefix: ingress\n          bomb:\n{}",
            alias_bomb("            ")
        ),
    );
    // At the top level with a merge key somewhere (the whole document is then merged first);
    // also when `<<` only appears in a comment.
    let top = format!(
        "{}{hcm}  clusters_defaults: {{ <<: *l9 }}\n",
        alias_bomb("")
    );
    let comment = format!("# <<\n{}{hcm}", alias_bomb(""));
    for yaml in [&in_typed, &top, &comment] {
        let t = Instant::now();
        let err = from_yaml_str(yaml).expect_err("an alias bomb is rejected");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
        assert!(
            err.to_string().contains("aliases expand to more than"),
            "{err}"
        );
    }
    let err = from_yaml_str(&in_typed).unwrap_err();
    assert!(
        err.path()
            .starts_with(&format!("{}.bomb.l", super::tests::HCM_PATH)),
        "names the field: {err}"
    );
    // Ordinary anchors and merge keys still work (see yaml_anchors_and_merge_keys_are_resolved).
}

#[test]
fn deeply_nested_yaml_is_rejected_fast() {
    let deep = 100_000;
    let flow = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    let flow_map = format!("{}{}", "{a: ".repeat(deep), "}".repeat(deep));
    let block: String = (0..deep).map(|_| "- ").collect::<String>() + "x\n";
    let in_typed = with_routes(ROUTES_OK).replace(
        "          stat_prefix: ingress\n",
        &format!("          stat_prefix: ingress\n          deep: {flow}\n"),
    );
    for yaml in [&flow, &flow_map, &block, &in_typed] {
        let t = Instant::now();
        let err = from_yaml_str(yaml).expect_err("too deep");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "took {:?}",
            t.elapsed()
        );
        assert!(
            err.to_string().contains("nested deeper than 64 levels"),
            "{err}"
        );
    }
    let err = from_yaml_str(&in_typed).unwrap_err();
    assert!(
        err.path()
            .starts_with(&format!("{}.deep[0][0]", super::tests::HCM_PATH)),
        "names the field: {err}"
    );
    // A document larger than the limit is refused before parsing.
    let big = " ".repeat(yaml_limits::MAX_DOCUMENT_BYTES + 1);
    let err = from_yaml_str(&big).unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[test]
fn hedge_policy_is_accepted() {
    let route = |hedge: &str| {
        with_routes(&ROUTES_OK.replacen(
            "route: { cluster: a }",
            &format!("route: {{ cluster: a, hedge_policy: {{ {hedge} }} }}"),
            1,
        ))
    };
    from_yaml_str(&route(
        "initial_requests: 1, additional_request_chance: { numerator: 5 }",
    ))
    .expect("no-ops in Envoy too");
    from_yaml_str(&route("hedge_on_per_try_timeout: false")).expect("off is fine");
    from_yaml_str(&route("hedge_on_per_try_timeout: true")).expect("hedging");
    let e = from_yaml_str(&route("initial_requests: 0")).unwrap_err();
    assert!(
        e.path().ends_with("hedge_policy.initial_requests"),
        "{}",
        e.path()
    );
}

#[test]
fn route_upgrade_configs_are_checked_as_envoy() {
    let route = |u: &str| {
        format!(
            "virtual_hosts: [{{ name: v, domains: [\"*\"], routes: [{{ match: {{ prefix: \"/\" }}, \
             route: {{ cluster: a, upgrade_configs: [{u}] }} }}] }}]\n"
        )
    };
    let at = |i: usize| {
        rc_path(&format!(
            "virtual_hosts[0].routes[0].route.upgrade_configs[{i}].upgrade_type"
        ))
    };
    let dup = route("{ upgrade_type: WebSocket }, { upgrade_type: websocket, enabled: false }");
    expect_err(
        &with_routes(&dup),
        &at(1),
        "duplicate upgrade \"websocket\"",
    );
    expect_err(
        &with_routes(&route("{ upgrade_type: CONNECT }")),
        &at(0),
        "CONNECT",
    );
    expect_err(
        &with_routes(&route("{ enabled: true }")),
        &at(0),
        "must not be empty",
    );
    let connect = route("{ upgrade_type: foo, connect_config: {} }");
    let e = from_yaml_str(&with_routes(&connect)).expect_err("connect_config");
    assert!(e.to_string().contains("connect_config"), "{e}");
    from_yaml_str(&with_routes(&route(
        "{ upgrade_type: foo, enabled: false }",
    )))
    .expect("valid");
}

#[test]
fn weighted_header_name_and_use_hash_policy_are_one_of() {
    let routes =
        "virtual_hosts: [{ name: v, domains: [\"*\"], routes: [{ match: { prefix: \"/\" }, \
        route: { weighted_clusters: { header_name: x-pick, use_hash_policy: true, \
        clusters: [{ name: a, weight: 1 }] } } }] }]\n";
    expect_err(
        &with_routes(routes),
        &rc_path("virtual_hosts[0].routes[0].route.weighted_clusters.use_hash_policy"),
        "only one of header_name and use_hash_policy",
    );
}
