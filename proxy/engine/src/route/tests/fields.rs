//! Issue 14's route-level fields: ClusterWeight host rewrite / cluster_header, header_name,
//! range_match, repeated headers, runtime_fraction, grpc, host_rewrite_header /
//! host_rewrite_path_regex (each also a conformance case against Envoy).

use super::{check, get, table};

const WEIGHTED: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: "/host" }
    route:
      weighted_clusters:
        clusters:
        - { name: a, weight: 1, host_rewrite_literal: a.internal, request_headers_to_add: [{ header: { key: x-w, value: a } }] }
        - { name: b, weight: 1 }
  - match: { prefix: "/header" }
    route:
      weighted_clusters:
        header_name: x-pick
        total_weight: 0
        runtime_key_prefix: ignored
        clusters:
        - { cluster_header: x-cluster, weight: 10 }
        - { name: b, weight: 90 }
"#;

#[test]
fn weighted_cluster_fields() {
    check(
        WEIGHTED,
        &[
            (
                get("h", "/host").random(0),
                "v r0 -> a /host cluster_host=a.internal req[x-w=a]",
            ),
            (get("h", "/host").random(1), "v r0 -> b /host"),
            (
                get("h", "/header").h("x-pick", "5").h("x-cluster", "c"),
                "v r1 -> header:c /header",
            ),
            (
                get("h", "/header").h("x-pick", "105"),
                "v r1 -> header:- /header",
            ),
            (get("h", "/header").h("x-pick", "10"), "v r1 -> b /header"),
            // Not a number, or repeated: the random value picks (0 -> the first cluster).
            (
                get("h", "/header").h("x-pick", "10x").h("x-cluster", "d"),
                "v r1 -> header:d /header",
            ),
            (
                get("h", "/header")
                    .h("x-pick", "10")
                    .h("x-pick", "10")
                    .h("x-cluster", "d"),
                "v r1 -> header:d /header",
            ),
        ],
    );
}

const MATCHERS: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { prefix: "/", runtime_fraction: { default_value: { numerator: 0 } } }, route: { cluster: d } }
  - { match: { prefix: "/range", headers: [{ name: x-n, range_match: { start: -5, end: "5" } }] }, route: { cluster: a } }
  - { match: { prefix: "/grpc", grpc: {} }, route: { cluster: b } }
  - { match: { prefix: "/frac", runtime_fraction: { default_value: { numerator: 30, denominator: TEN_THOUSAND }, runtime_key: k } }, route: { cluster: c } }
  - { match: { prefix: "/" }, direct_response: { status: 404 } }
"#;

#[test]
fn range_grpc_runtime_fraction() {
    check(
        MATCHERS,
        &[
            (get("h", "/range").h("x-n", "-5"), "v r1 -> a /range"),
            (get("h", "/range").h("x-n", "+4"), "v r1 -> a /range"),
            (get("h", "/range").h("x-n", "5"), "v r4 direct 404 -"),
            (
                get("h", "/range").h("x-n", "x").h("x-n", "3"),
                "v r1 -> a /range",
            ),
            (get("h", "/range"), "v r4 direct 404 -"),
            (
                get("h", "/grpc").h("content-type", "application/grpc"),
                "v r2 -> b /grpc",
            ),
            (
                get("h", "/grpc").h("content-type", "application/grpc+json"),
                "v r2 -> b /grpc",
            ),
            (
                get("h", "/grpc").h("content-type", "application/grpc-web"),
                "v r4 direct 404 -",
            ),
            (get("h", "/grpc"), "v r4 direct 404 -"),
            // random % 10000 < 30
            (get("h", "/frac").random(10_029), "v r3 -> c /frac"),
            (get("h", "/frac").random(10_030), "v r4 direct 404 -"),
        ],
    );
}

const HOSTS: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { prefix: "/h" }, route: { cluster: a, host_rewrite_header: X-Target } }
  - match: { prefix: "/to/" }
    route:
      cluster: a
      prefix_rewrite: "/"
      host_rewrite_path_regex: { pattern: { regex: "^/to/([^/]+)/.*$" }, substitution: '\1.internal' }
"#;

#[test]
fn host_rewrite_header_and_path_regex() {
    check(
        HOSTS,
        &[
            (get("h", "/h"), "v r0 -> a /h host=header:x-target"),
            (
                get("h", "/to/svc/x?q=1"),
                "v r1 -> a /svc/x?q=1 host=svc.internal",
            ),
        ],
    );
}

#[test]
fn rejected_combinations_name_the_field() {
    let err = super::table_err;
    let base = |action: &str| {
        format!(
            "virtual_hosts: [{{ name: v, domains: ['*'], routes: [{{ match: {{ prefix: / }}, route: {action} }}] }}]"
        )
    };
    let e = err(&base(
        "{ weighted_clusters: { clusters: [{ name: a, cluster_header: x, weight: 1 }] } }",
    ));
    assert!(
        e.contains("weighted_clusters.clusters[0]: only one of name and cluster_header"),
        "{e}"
    );
    let e = err(&base(
        "{ weighted_clusters: { total_weight: 3, clusters: [{ name: a, weight: 1 }] } }",
    ));
    assert!(e.contains("weighted_clusters.total_weight"), "{e}");
    let e = err(&base(
        "{ cluster: a, host_rewrite_literal: x, host_rewrite_header: y }",
    ));
    assert!(e.contains("only one of host_rewrite_literal"), "{e}");
    let e = err(&base(
        "{ cluster: a, host_rewrite_literal: x, host_rewrite: y }",
    ));
    assert!(e.contains("host_rewrite may be set"), "{e}");
    let e = err(&base(
        "{ cluster: a, prefix_rewrite: /x, path_rewrite: /y }",
    ));
    assert!(
        e.contains("only one of prefix_rewrite, regex_rewrite and path_rewrite"),
        "{e}"
    );
    let e = err(&base("{ cluster: a, path_rewrite: '/%NOPE%' }"));
    assert!(e.contains(".route.path_rewrite:"), "{e}");
    let e = err(&base("{ cluster: a, host_rewrite: '%REQ(x%' }"));
    assert!(e.contains(".route.host_rewrite:"), "{e}");
    let e = err(
        "virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: /, runtime_fraction: { default_value: { numerator: 1, denominator: BILLION } } }, route: { cluster: a } }] }]",
    );
    assert!(
        e.contains("match.runtime_fraction.default_value.denominator"),
        "{e}"
    );
    // A table with the ordinary per-cluster fields loads.
    table(WEIGHTED);
}

const REDIRECTS: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { prefix: "/keep" }, redirect: { path_redirect: /kept } }
  - { match: { prefix: "/http" }, redirect: { scheme_redirect: http } }
"#;

#[test]
fn redirect_scheme_comes_from_x_forwarded_proto() {
    check(
        REDIRECTS,
        &[
            (
                get("h", "/keep").h("x-forwarded-proto", "https"),
                "v r0 redirect 301 https://h/kept",
            ),
            (
                get("h:443", "/http").h("x-forwarded-proto", "https"),
                "v r1 redirect 301 http://h/http",
            ),
            (get("h:443", "/http"), "v r1 redirect 301 http://h:443/http"),
        ],
    );
}

#[test]
fn retriable_request_headers_gate_retries() {
    let t = table(
        r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: "/" }
    route:
      cluster: a
      retry_policy:
        retry_on: "5xx,retriable-headers,unavailable"
        retriable_headers: [{ name: x-retry, present_match: true }]
        retriable_request_headers: [{ name: x-idem, present_match: true }, { name: ":method", string_match: { exact: PUT } }]
        retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
        host_selection_retry_max_attempts: "3"
"#,
    );
    let allowed = |method: &'static str, headers: &[(&str, &str)]| {
        let view = super::RequestView {
            authority: Some("h"),
            path: "/",
            method,
            scheme: "http",
            headers,
            random: 0,
            peer: None,
            metadata: None,
        };
        match t.select(&view) {
            super::Selection::Forward(f) => {
                let p = f.action.retry_policy.as_ref().expect("policy");
                assert!(p.previous_hosts && p.host_selection_max_attempts == 3);
                f.retry_allowed
            }
            _ => panic!("must forward"),
        }
    };
    assert!(!allowed("GET", &[]));
    assert!(allowed("GET", &[("x-idem", "1")]));
    assert!(allowed("PUT", &[]));
}

#[test]
fn max_stream_duration_limit() {
    use std::time::Duration;

    use super::{parse_grpc_timeout, MaxStreamDuration};
    assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
    assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
    for bad in ["", "S", "1x", "123456789m", "-1S", "1.5S"] {
        assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
    }
    let m = MaxStreamDuration {
        max: Some(Duration::from_secs(5)),
        grpc_header_max: Some(Duration::from_secs(3)),
        grpc_header_offset: Duration::from_millis(500),
    };
    assert_eq!(m.limit(None), Some(Duration::from_secs(5)));
    assert_eq!(m.limit(Some("10S")), Some(Duration::from_millis(2500)));
    assert_eq!(m.limit(Some("100m")), Some(Duration::ZERO));
    let uncapped = MaxStreamDuration {
        grpc_header_max: Some(Duration::ZERO),
        max: Some(Duration::ZERO),
        ..m
    };
    assert_eq!(
        uncapped.limit(Some("10S")),
        Some(Duration::from_millis(9500))
    );
    assert_eq!(uncapped.limit(None), None);
}

#[test]
fn hedge_policy_route_wins_over_the_virtual_host() {
    let t = table(
        r#"
virtual_hosts:
- name: v
  domains: ["*"]
  hedge_policy: { hedge_on_per_try_timeout: true }
  routes:
  - { match: { prefix: "/own" }, route: { cluster: a, hedge_policy: { initial_requests: 1 } } }
  - { match: { prefix: "/" }, route: { cluster: a } }
- name: w
  domains: ["w"]
  routes:
  - { match: { prefix: "/on" }, route: { cluster: a, hedge_policy: { hedge_on_per_try_timeout: true } } }
  - { match: { prefix: "/" }, route: { cluster: a } }
"#,
    );
    let hedged = |authority, path| forwarded(&t, authority, path, |a| a.hedge_on_per_try_timeout);
    // Envoy's `buildHedgePolicy`: a route's own policy replaces the virtual host's whole.
    assert!(!hedged("h", "/own"));
    assert!(hedged("h", "/x"));
    assert!(hedged("w", "/on"));
    assert!(!hedged("w", "/x"));
}

#[test]
fn max_grpc_timeout_route_timeout() {
    use std::time::Duration;

    use super::GrpcTimeout;
    let t = table(
        r#"
virtual_hosts: [{ name: v, domains: ["*"], routes: [
  { match: { prefix: "/msd" }, route: { cluster: a, max_grpc_timeout: 1s, max_stream_duration: {} } },
  { match: { prefix: "/offset" }, route: { cluster: a, grpc_timeout_offset: 1s } },
  { match: { prefix: "/" }, route: { cluster: a, max_grpc_timeout: 3.0009s, grpc_timeout_offset: 0.5s } },
] }]
"#,
    );
    let grpc = |path| forwarded(&t, "h", path, |a| a.grpc_timeout);
    // Envoy's "new timeouts" (max_stream_duration) ignore both; the offset alone does nothing.
    assert_eq!(grpc("/msd"), None);
    assert_eq!(grpc("/offset"), None);
    let g = grpc("/x").expect("max_grpc_timeout");
    assert_eq!(
        g,
        GrpcTimeout {
            max_ms: 3000,
            offset_ms: 500
        }
    );
    let ms = |v: Option<&str>| g.route_timeout(v).map(|d| d.as_millis());
    // Envoy's `finalTimeout`: the offset first (only when it leaves more than 0), then the cap,
    // which also stands in for no (or an invalid) header.
    assert_eq!(ms(Some("10S")), Some(3000));
    assert_eq!(ms(Some("1S")), Some(500));
    assert_eq!(ms(Some("500m")), Some(500));
    assert_eq!(ms(Some("2500000u")), Some(2000));
    assert_eq!(ms(Some("99000001n")), Some(100));
    assert_eq!(ms(None), Some(3000));
    assert_eq!(ms(Some("1x")), Some(3000));
    let uncapped = GrpcTimeout {
        max_ms: 0,
        offset_ms: 0,
    };
    assert_eq!(uncapped.route_timeout(None), None);
    assert_eq!(uncapped.route_timeout(Some("0m")), None);
    assert_eq!(
        uncapped.route_timeout(Some("2M")),
        Some(Duration::from_secs(120))
    );
}

/// `read` of the route action a plain GET for `authority` and `path` is forwarded with.
fn forwarded<T>(
    t: &super::RouteTable,
    authority: &str,
    path: &str,
    read: impl Fn(&super::ForwardAction) -> T,
) -> T {
    let view = super::RequestView {
        authority: Some(authority),
        path,
        method: "GET",
        scheme: "http",
        headers: &[] as &[(&str, &str)],
        random: 0,
        peer: None,
        metadata: None,
    };
    match t.select(&view) {
        super::Selection::Forward(f) => read(f.action),
        _ => panic!("must forward"),
    }
}

#[test]
fn use_hash_policy_picks_by_the_routes_hash() {
    let t = table(
        r#"
virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { prefix: "/" }, route: {
  weighted_clusters: { use_hash_policy: true, clusters: [{ name: a, weight: 1 }, { name: b, weight: 2 }, { name: c, weight: 3 }] },
  hash_policy: [{ header: { header_name: x-user } }] } }] }]
"#,
    );
    let pick = |headers: &[(&str, &str)], random: u64| {
        let view = super::RequestView {
            authority: Some("h"),
            path: "/",
            method: "GET",
            scheme: "http",
            headers,
            random,
            peer: None,
            metadata: None,
        };
        match t.select(&view) {
            super::Selection::Forward(f) => f.weighted.expect("weighted").name.to_string(),
            _ => panic!("must forward"),
        }
    };
    // Envoy 1.40 sends x-user alice to c, bob to b (route_weighted_use_hash_policy): the hash
    // modulo 6, whatever the random value.
    for random in [0, 1, 2, 3, 4, 5] {
        assert_eq!(pick(&[("x-user", "alice")], random), "c");
        assert_eq!(pick(&[("x-user", "bob")], random), "b");
    }
    // Without the header there is no hash: the random value picks.
    assert_eq!(pick(&[], 0), "a");
    assert_eq!(pick(&[], 5), "c");
}
