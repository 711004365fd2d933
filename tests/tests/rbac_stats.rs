//! The RBAC filter's counters against a real Envoy 1.40 on the same YAML: the enforced and
//! shadow totals under `rules_stat_prefix` / `shadow_rules_stat_prefix` (Istio's dry-run prefix
//! among them), and with `track_per_rule_stats` the matching policy's counters, which appear
//! only once counted. The conformance suite does not read `/stats`.

use sluice_tests::{
    admin_run::{get, hcm_config, start_text},
    conformance::proxy::free_ports,
    upstream::harness::curl,
};

/// Two RBAC filters: one with both prefixes and per-rule stats, one with neither.
fn config(port: u16) -> String {
    let rbac = r#"{name: tracked, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules_stat_prefix: enforced_, shadow_rules_stat_prefix: istio_dry_run_allow_, track_per_rule_stats: true, rules: {action: DENY, policies: {"deny post": {permissions: [{header: {name: ":method", string_match: {exact: POST}}}], principals: [{any: true}]}}}, shadow_rules: {action: ALLOW, policies: {only-get: {permissions: [{header: {name: ":method", string_match: {exact: GET}}}], principals: [{any: true}]}, never: {permissions: [{url_path: {path: {exact: /nowhere}}}], principals: [{any: true}]}}}}}, {name: plain, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules: {action: ALLOW, policies: {all: {permissions: [{any: true}], principals: [{any: true}]}}}}}, "#;
    hcm_config(port, "", rbac, "direct_response: {status: 200}")
}

/// The `rbac` lines of `/stats`, sorted.
fn rbac_stats(admin: &str) -> Vec<String> {
    let (status, body) = get(admin, "GET", "/stats");
    assert_eq!(status, 200);
    let mut lines: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("http.s.rbac."))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn rbac_counters_are_named_and_counted_as_envoys() {
    let [e_port, s_port] = free_ports::<2>();
    let envoy = start_text("rbac-stats", &config(e_port), true);
    let sluice = start_text("rbac-stats", &config(s_port), false);
    let mut seen = Vec::new();
    for (who, port, admin) in [
        ("envoy", e_port, &envoy.admin),
        ("sluice", s_port, &sluice.admin),
    ] {
        let before = rbac_stats(admin);
        for (method, want) in [("GET", 200), ("GET", 200), ("POST", 403)] {
            let url = format!("http://127.0.0.1:{port}/x");
            let (status, _, _) = curl(&["-s", "-X", method, url.as_str()]);
            assert_eq!(status, want, "{who}: {method}");
        }
        seen.push((who, before, rbac_stats(admin)));
    }
    let (_, e_before, e_after) = &seen[0];
    let (_, s_before, s_after) = &seen[1];
    assert_eq!(s_before, e_before, "counters before any request");
    assert_eq!(s_after, e_after, "counters after GET, GET, POST");
    for want in [
        "http.s.rbac.enforced_.denied: 1",
        "http.s.rbac.enforced_.policy.deny post.denied: 1",
        "http.s.rbac.istio_dry_run_allow_.shadow_allowed: 2",
        "http.s.rbac.istio_dry_run_allow_.policy.only-get.shadow_allowed: 2",
        "http.s.rbac.allowed: 2",
    ] {
        assert!(
            e_after.iter().any(|l| l == want),
            "envoy lacks {want:?}: {e_after:#?}"
        );
    }
}
