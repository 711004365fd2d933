//! Issue 14's router fields: bad `request_mirror_policies`, `rate_limited_retry_back_off` and
//! `internal_redirect_policy` are rejected naming the field (the behaviour is in the
//! `router_*` conformance cases).

fn err(action: &str) -> String {
    let yaml = format!(
        "virtual_hosts: [{{ name: v, domains: ['*'], routes: [{{ match: {{ prefix: / }}, route: {action} }}] }}]"
    );
    super::table_err(&yaml)
}

#[test]
fn bad_router_fields_name_the_field() {
    let route = "rc.virtual_hosts[0].routes[0].route";
    for (action, want) in [
        (
            "{ cluster: a, request_mirror_policies: [{ cluster: nosuch }] }",
            format!("{route}.request_mirror_policies[0].cluster: unknown cluster"),
        ),
        (
            "{ cluster: a, request_mirror_policies: [{ cluster: a, cluster_header: x }] }",
            format!("{route}.request_mirror_policies[0]: only one of cluster and cluster_header"),
        ),
        (
            "{ cluster: a, request_mirror_policies: [{ runtime_fraction: { default_value: { numerator: 1 } } }] }",
            format!("{route}.request_mirror_policies[0]: one of cluster and cluster_header"),
        ),
        (
            "{ cluster: a, request_mirror_policies: [{ cluster: a, request_headers_mutations: [{ remove: host }] }] }",
            format!("{route}.request_mirror_policies[0].request_headers_mutations[0].remove"),
        ),
        (
            "{ cluster: a, request_mirror_policies: [{ cluster: a, request_headers_mutations: [{ append: { header: { key: x, value: '%START_TIME%' } } }] }] }",
            format!(
                "{route}.request_mirror_policies[0].request_headers_mutations[0].append.header.value: not supported"
            ),
        ),
        (
            "{ cluster: a, retry_policy: { rate_limited_retry_back_off: { reset_headers: [] } } }",
            format!("{route}.retry_policy.rate_limited_retry_back_off.reset_headers"),
        ),
        (
            "{ cluster: a, retry_policy: { rate_limited_retry_back_off: { reset_headers: [{ name: retry-after, format: HOURS }] } } }",
            format!(
                "{route}.retry_policy.rate_limited_retry_back_off.reset_headers[0].format: unknown value"
            ),
        ),
        (
            "{ cluster: a, internal_redirect_policy: { predicates: [{ name: p }] } }",
            format!("{route}.internal_redirect_policy.predicates[0].typed_config: required"),
        ),
        (
            "{ cluster: a, internal_redirect_policy: { predicates: [{ name: p, typed_config: { '@type': type.googleapis.com/x.Y } }] } }",
            format!("{route}.internal_redirect_policy.predicates[0].typed_config: not supported"),
        ),
        (
            "{ cluster: a, internal_redirect_policy: { predicates: [{ name: p, typed_config: { '@type': type.googleapis.com/envoy.extensions.internal_redirect.allow_listed_routes.v3.AllowListedRoutesConfig } }] } }",
            format!(
                "{route}.internal_redirect_policy.predicates[0].typed_config.allowed_route_names"
            ),
        ),
        (
            "{ cluster: a, internal_redirect_policy: { response_headers_to_copy: [host] } }",
            format!("{route}.internal_redirect_policy.response_headers_to_copy[0]"),
        ),
    ] {
        let e = err(action);
        assert!(e.contains(&want), "{action}: {e}");
    }
}
