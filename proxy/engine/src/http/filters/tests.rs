//! Unit tests of the HTTP filters' decisions (fault, cors, local_ratelimit, rbac metadata,
//! ext_authz config) and of `http_filters` parsing.

use http::{HeaderMap, HeaderValue, Method};

use super::{cors, fault, local_ratelimit, metadata, parse, rbac};
use crate::config::{raw::RawHttpFilter, FieldPath};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn fault(yaml: &str) -> fault::Fault {
    fault::build(serde_norway::from_str(yaml).unwrap(), &FieldPath::root()).unwrap()
}

#[test]
fn fault_header_abort_prefers_the_http_status_and_ignores_bad_values() {
    let f = fault("abort: {header_abort: {}, percentage: {numerator: 100}}");
    let abort = |h: &[(&'static str, &str)]| {
        f.decide(&headers(h), Some("a"), || 0)
            .and_then(|i| i.abort)
            .map(|a| (a.http, a.grpc))
    };
    assert_eq!(abort(&[]), None);
    assert_eq!(
        abort(&[
            ("x-envoy-fault-abort-request", "503"),
            ("x-envoy-fault-abort-grpc-request", "5")
        ]),
        Some((503, None))
    );
    assert_eq!(abort(&[("x-envoy-fault-abort-request", "600")]), None);
    assert_eq!(
        abort(&[("x-envoy-fault-abort-grpc-request", "14")]),
        Some((200, Some(14)))
    );
    // The header's percentage caps the configured one.
    assert_eq!(
        abort(&[
            ("x-envoy-fault-abort-request", "503"),
            ("x-envoy-fault-abort-request-percentage", "0")
        ]),
        None
    );
}

#[test]
fn fault_max_active_counts_faults_in_progress() {
    let f = fault("abort: {http_status: 503, percentage: {numerator: 100}}\nmax_active_faults: 1");
    let first = f
        .decide(&HeaderMap::new(), None, || 0)
        .expect("first fault");
    assert!(f.decide(&HeaderMap::new(), None, || 0).is_none());
    drop(first);
    assert!(f.decide(&HeaderMap::new(), None, || 0).is_some());
}

#[test]
fn fault_upstream_cluster_and_downstream_nodes_restrict() {
    let f = fault(
        "abort: {http_status: 503, percentage: {numerator: 100}}\nupstream_cluster: b\ndownstream_nodes: [n1]",
    );
    let node = headers(&[("x-envoy-downstream-service-node", "n1")]);
    assert!(f.decide(&node, Some("b"), || 0).is_some());
    assert!(f.decide(&node, Some("a"), || 0).is_none());
    assert!(f.decide(&HeaderMap::new(), Some("b"), || 0).is_none());
}

fn cors_policy(yaml: &str) -> cors::CorsPolicy {
    cors::build(serde_norway::from_str(yaml).unwrap(), &FieldPath::root()).unwrap()
}

fn preflight(pol: &cors::CorsPolicy, h: &[(&'static str, &str)]) -> Option<HeaderMap> {
    let pols = cors::Policies([None, Some(pol), None, None]);
    match cors::decide(&pols, &Method::OPTIONS, &headers(h), 0) {
        cors::Decision::Preflight(h) => Some(h),
        _ => None,
    }
}

#[test]
fn cors_wildcards_echo_the_preflight() {
    let pol = cors_policy(
        "allow_origin_string_match: [{exact: '*'}]\nallow_methods: '*'\nallow_headers: '*'",
    );
    let h = preflight(
        &pol,
        &[
            ("origin", "https://x"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "x-a"),
        ],
    )
    .expect("a preflight reply");
    assert_eq!(h["access-control-allow-origin"], "https://x");
    assert_eq!(h["access-control-allow-methods"], "PATCH");
    assert_eq!(h["access-control-allow-headers"], "x-a");
}

#[test]
fn cors_not_matching_preflights_forward_unless_disabled() {
    let asked = [
        ("origin", "https://other"),
        ("access-control-request-method", "GET"),
    ];
    let fwd = cors_policy("allow_origin_string_match: [{exact: 'https://a'}]");
    assert!(preflight(&fwd, &asked).is_none());
    let local = cors_policy(
        "allow_origin_string_match: [{exact: 'https://a'}]\nforward_not_matching_preflights: false\nmax_age: '5'",
    );
    let h = preflight(&local, &asked).expect("answered locally");
    assert!(h.get("access-control-allow-origin").is_none());
    assert_eq!(h["access-control-max-age"], "5");
}

fn limiter(yaml: &str) -> local_ratelimit::LocalRateLimit {
    local_ratelimit::build(serde_norway::from_str(yaml).unwrap(), &FieldPath::root()).unwrap()
}

#[test]
fn ratelimit_limits_after_the_bucket_empties() {
    let l = limiter(
        "stat_prefix: rl\ntoken_bucket: {max_tokens: 1, fill_interval: 3600s}\n\
         filter_enabled: {default_value: {numerator: 100}}\n\
         filter_enforced: {default_value: {numerator: 100}}\nstatus: {code: 503}",
    );
    assert_eq!(l.check(None, 0, &[]).expect("enabled").limited, None);
    assert_eq!(l.check(None, 0, &[]).expect("enabled").limited, Some(503));
}

#[test]
fn retry_after_is_the_seconds_to_the_next_token_on_an_enforced_429_only() {
    let yaml = "stat_prefix: rl\ntoken_bucket: {max_tokens: 1, fill_interval: 60s}\n\
         filter_enabled: {default_value: {numerator: 100}}\n\
         filter_enforced: {default_value: {numerator: 100}}\nenable_retry_after_header: true";
    let l = limiter(yaml);
    assert_eq!(
        l.check(None, 0, &[]).unwrap().retry_after,
        None,
        "not limited"
    );
    let v = l.check(None, 0, &[]).unwrap();
    assert_eq!(v.limited, Some(429));
    // The bucket refills one token a minute and was emptied a moment ago.
    assert!(
        matches!(v.retry_after, Some(59 | 60)),
        "{:?}",
        v.retry_after
    );
    let other = limiter(&format!("{yaml}\nstatus: {{code: 503}}"));
    other.check(None, 0, &[]);
    assert_eq!(
        other.check(None, 0, &[]).unwrap().retry_after,
        None,
        "only on a 429"
    );
    let fast = limiter(&yaml.replace("60s", "0.1s"));
    fast.check(None, 0, &[]);
    assert_eq!(
        fast.check(None, 0, &[]).unwrap().retry_after,
        Some(1),
        "at least 1"
    );
}

#[test]
fn ratelimit_per_connection_buckets_are_separate() {
    let l = limiter(
        "stat_prefix: rl\ntoken_bucket: {max_tokens: 1, fill_interval: 3600s}\n\
         filter_enabled: {default_value: {numerator: 100}}\n\
         filter_enforced: {default_value: {numerator: 100}}\n\
         local_rate_limit_per_downstream_connection: true",
    );
    let (c1, c2) = (
        local_ratelimit::ConnBuckets::default(),
        local_ratelimit::ConnBuckets::default(),
    );
    assert_eq!(l.check(Some(&c1), 0, &[]).unwrap().limited, None);
    assert_eq!(l.check(Some(&c1), 0, &[]).unwrap().limited, Some(429));
    assert_eq!(l.check(Some(&c2), 0, &[]).unwrap().limited, None);
}

#[test]
fn ratelimit_disabled_by_default() {
    let l = limiter("stat_prefix: rl\ntoken_bucket: {max_tokens: 1, fill_interval: 1s}");
    assert!(l.check(None, 0, &[]).is_none());
}

fn chain(yaml: &str) -> Result<Vec<String>, (String, String)> {
    let raw: Vec<RawHttpFilter> = serde_norway::from_str(yaml).unwrap();
    parse::http_filters(&raw, &FieldPath::root().field("http_filters"))
        .map(|c| c.names().map(str::to_owned).collect())
        .map_err(|e| (e.path().to_owned(), e.message().to_owned()))
}

const ROUTER: &str = "{name: r, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}";
const CORS: &str = "{name: c, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}";

#[test]
fn http_filters_keep_their_order_and_end_with_the_router() {
    assert_eq!(
        chain(&format!("[{CORS}, {ROUTER}]")),
        Ok(vec!["c".to_owned()])
    );
    let (path, _) = chain(&format!("[{CORS}]")).unwrap_err();
    assert_eq!(path, "http_filters");
    let (path, _) = chain(&format!("[{ROUTER}, {CORS}]")).unwrap_err();
    assert_eq!(path, "http_filters[1]");
    // A repeated name is two filters, as in Envoy (istiod's DENY and ALLOW RBAC filters).
    assert_eq!(
        chain(&format!("[{CORS}, {CORS}, {ROUTER}]")),
        Ok(vec!["c".to_owned(), "c".to_owned()])
    );
    let (path, msg) = chain(&format!(
        "[{{name: x, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor}}}}, {ROUTER}]"
    ))
    .unwrap_err();
    assert_eq!(path, "http_filters[0]");
    assert!(msg.contains("Compressor"), "{msg}");
}

#[test]
fn filter_config_enables_disables_or_wraps() {
    let levels: std::collections::BTreeMap<String, serde_norway::Value> = serde_norway::from_str(
        "on: {'@type': type.googleapis.com/envoy.config.route.v3.FilterConfig, config: {}}\n\
         off: {'@type': type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}",
    )
    .unwrap();
    let pf = parse::per_filter_configs(Some(&levels), &FieldPath::root(), None).unwrap();
    assert_eq!(pf.disabled("on"), Some(false));
    assert_eq!(pf.disabled("off"), Some(true));
    assert_eq!(pf.disabled("other"), None);
    assert!(pf.get("on").is_none());
    let empty: std::collections::BTreeMap<String, serde_norway::Value> = serde_norway::from_str(
        "f: {'@type': type.googleapis.com/envoy.config.route.v3.FilterConfig}",
    )
    .unwrap();
    let e =
        parse::per_filter_configs(Some(&empty), &FieldPath::root().field("t"), None).unwrap_err();
    assert_eq!(e.path(), "t.f.config");
}

fn descriptor<'a>(entries: &[(&'a str, &'a str)]) -> crate::route::rate_limits::Descriptor<'a> {
    entries
        .iter()
        .map(|(k, v)| (*k, std::borrow::Cow::Borrowed(*v)))
        .collect()
}

const DESCRIPTORS: &str = "stat_prefix: rl\ntoken_bucket: {max_tokens: 100, fill_interval: 60s}\n\
     filter_enabled: {default_value: {numerator: 100}}\n\
     filter_enforced: {default_value: {numerator: 100}}\n\
     descriptors:\n\
     - entries: [{key: user, value: ann}]\n  token_bucket: {max_tokens: 1, fill_interval: 120s}\n\
     - entries: [{key: path, value: /a}]\n  token_bucket: {max_tokens: 2, fill_interval: 60s}\n";

#[test]
fn a_matching_descriptor_limits_with_its_own_bucket_and_the_slowest_goes_first() {
    let l = limiter(DESCRIPTORS);
    let ann = [descriptor(&[("user", "ann")])];
    assert_eq!(l.check(None, 0, &ann).unwrap().limited, None);
    assert_eq!(
        l.check(None, 0, &ann).unwrap().limited,
        Some(429),
        "ann's 1 token"
    );
    let bob = [descriptor(&[("user", "bob")])];
    assert_eq!(
        l.check(None, 0, &bob).unwrap().limited,
        None,
        "no descriptor: default"
    );
    // Both match: the slower-filling `user` bucket (empty) limits before `path` is touched.
    let both = [
        descriptor(&[("path", "/a")]),
        descriptor(&[("user", "ann")]),
    ];
    assert_eq!(l.check(None, 0, &both).unwrap().limited, Some(429));
    let path = [descriptor(&[("path", "/a")])];
    assert_eq!(l.check(None, 0, &path).unwrap().limited, None);
    assert_eq!(
        l.check(None, 0, &path).unwrap().limited,
        None,
        "path kept 2"
    );
    assert_eq!(l.check(None, 0, &path).unwrap().limited, Some(429));
}

#[test]
fn the_default_bucket_is_consumed_unless_told_not_to() {
    let small_default = DESCRIPTORS.replace("max_tokens: 100", "max_tokens: 1");
    let l = limiter(&small_default);
    let path = [descriptor(&[("path", "/a")])];
    assert_eq!(l.check(None, 0, &path).unwrap().limited, None);
    assert_eq!(
        l.check(None, 0, &path).unwrap().limited,
        Some(429),
        "the default bucket's one token went with the first request"
    );
    let l = limiter(&format!(
        "{small_default}always_consume_default_token_bucket: false\n"
    ));
    assert_eq!(l.check(None, 0, &path).unwrap().limited, None);
    assert_eq!(l.check(None, 0, &path).unwrap().limited, None);
    assert_eq!(
        l.check(None, 0, &[]).unwrap().limited,
        None,
        "default still full"
    );
}

#[test]
fn bad_descriptors_are_named() {
    let err = |yaml: &str| {
        local_ratelimit::build(serde_norway::from_str(yaml).unwrap(), &FieldPath::root())
            .unwrap_err()
            .path()
            .to_string()
    };
    assert_eq!(
        err(&DESCRIPTORS.replace("fill_interval: 120s", "fill_interval: 90s")),
        "descriptors[0].token_bucket.fill_interval"
    );
    assert_eq!(
        err(&DESCRIPTORS
            .replace("value: /a", "value: ann")
            .replace("key: path", "key: user")),
        "descriptors[1]"
    );
    assert_eq!(
        err(&DESCRIPTORS.replace("value: ann", "value: ''")),
        "descriptors[0].entries[0].value"
    );
    assert_eq!(
        err(&DESCRIPTORS.replace("token_bucket: {max_tokens: 100, fill_interval: 60s}\n", "")),
        "token_bucket"
    );
    assert_eq!(err(&format!("{DESCRIPTORS}stage: 11\n")), "stage");
    assert_eq!(
        err(&format!(
            "{DESCRIPTORS}rate_limits: [{{stage: 1, actions: [{{remote_address: {{}}}}]}}]\n"
        )),
        "rate_limits[0].stage",
        "the filter's own entries have no stage"
    );
    assert_eq!(
        err(&DESCRIPTORS.replace("fill_interval: 60s}", "fill_interval: 0.01s}")),
        "token_bucket.fill_interval",
        "Envoy's 50ms minimum"
    );
}

#[test]
fn rbac_filter_refuses_what_it_does_not_implement_naming_the_field() {
    let rbac = |fields: &str| {
        format!(
            "[{{name: rbac, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, {fields}}}}}, {ROUTER}]"
        )
    };
    assert_eq!(
        chain(&rbac("rules: {action: DENY}")),
        Ok(vec!["rbac".to_owned()])
    );
    let table = [
        ("matcher: {}", "http_filters[0].typed_config.matcher"),
        ("shadow_matcher: {}", "http_filters[0].typed_config.shadow_matcher"),
        ("rules: {audit_logging_options: {}}", "http_filters[0].typed_config.rules.audit_logging_options"),
        (
            "shadow_rules: {policies: {p: {permissions: [{any: true}], principals: [{custom: {}}]}}}",
            "http_filters[0].typed_config.shadow_rules.policies.p.principals[0].custom",
        ),
        ("rules: {bogus: 1}", "http_filters[0].typed_config.rules.bogus"),
    ];
    for (fields, want) in table {
        let (path, msg) = chain(&rbac(fields)).unwrap_err();
        assert_eq!(path, want, "{fields}: {msg}");
    }
}

#[test]
fn rbac_per_route_config_replaces_or_turns_off_the_filter() {
    let levels: std::collections::BTreeMap<String, serde_norway::Value> = serde_norway::from_str(
        "{on: {'@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute, rbac: {rules: {action: DENY}}}, off: {'@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute}}",
    )
    .unwrap();
    let pf = parse::per_filter_configs(Some(&levels), &FieldPath::root(), None).unwrap();
    assert!(matches!(pf.get("on"), Some(super::PerRoute::Rbac(_))));
    assert!(matches!(pf.get("off"), Some(super::PerRoute::Rbac(_))));
    let bad: std::collections::BTreeMap<String, serde_norway::Value> = serde_norway::from_str(
        "{x: {'@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute, rbac: {rules: {policies: {p: {permissions: [], principals: [{any: true}]}}}}}}",
    )
    .unwrap();
    let e = parse::per_filter_configs(Some(&bad), &FieldPath::root().field("t"), None).unwrap_err();
    assert_eq!(e.path(), "t.x.rbac.rules.policies.p.permissions");
}

#[test]
fn ext_authz_refuses_what_it_does_not_implement_naming_the_field() {
    let authz = |fields: &str| {
        format!(
            "[{{name: a, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz, {fields}}}}}, {ROUTER}]"
        )
    };
    let svc = "http_service: {server_uri: {uri: 'http://x', cluster: c, timeout: 1s}}";
    assert_eq!(chain(&authz(svc)), Ok(vec!["a".to_owned()]));
    let grpc = "grpc_service: {envoy_grpc: {cluster_name: c}, timeout: 1s}";
    assert_eq!(chain(&authz(grpc)), Ok(vec!["a".to_owned()]));
    let p = "http_filters[0].typed_config";
    let table = [
        ("grpc_service: {google_grpc: {}}".to_string(), format!("{p}.grpc_service.google_grpc")),
        ("grpc_service: {envoy_grpc: {}}".to_string(), format!("{p}.grpc_service.envoy_grpc.cluster_name")),
        ("grpc_service: {envoy_grpc: {cluster_name: c}}, include_peer_certificate: true".to_string(), format!("{p}.include_peer_certificate")),
        (format!("{svc}, grpc_service: {{envoy_grpc: {{cluster_name: c}}}}"), p.to_string()),
        (format!("{svc}, with_request_body: {{max_request_bytes: 0}}"), format!("{p}.with_request_body.max_request_bytes")),
        (format!("{svc}, with_request_body: {{allow_partial_message: true}}"), format!("{p}.with_request_body.max_request_bytes")),
        (format!("{svc}, validate_mutations: true"), format!("{p}.validate_mutations")),
        (format!("{svc}, filter_enabled: {{runtime_key: k}}"), format!("{p}.filter_enabled.default_value")),
        (format!("{svc}, deny_at_disable: {{runtime_key: k}}"), format!("{p}.deny_at_disable.default_value")),
        (format!("{svc}, filter_metadata: {{}}"), format!("{p}.filter_metadata")),
        (format!("{svc}, transport_api_version: V2"), format!("{p}.transport_api_version")),
        (format!("{svc}, status_on_error: {{code: Teapot}}"), format!("{p}.status_on_error.code")),
        ("http_service: {server_uri: {uri: 'http://x', cluster: c}}".to_string(), format!("{p}.http_service.server_uri.timeout")),
        ("http_service: {server_uri: {uri: 'http://x', timeout: 1s}}".to_string(), format!("{p}.http_service.server_uri.cluster")),
        (format!("{svc}, filter_enabled_metadata: {{filter: f, path: [{{key: k}}], value: {{bool_match: true, present_match: true}}}}"), format!("{p}.filter_enabled_metadata.value")),
        (format!("{svc}, filter_enabled_metadata: {{filter: f, path: [{{key: k}}], value: {{or_match: {{value_matchers: [{{null_match: {{}}}}]}}}}}}"), format!("{p}.filter_enabled_metadata.value.or_match.value_matchers")),
        ("http_service: {server_uri: {uri: 'http://x', cluster: c, timeout: 1s}, path_prefix: nope}".to_string(), format!("{p}.http_service.path_prefix")),
        ("http_service: {server_uri: {uri: 'http://x', cluster: c, timeout: 1s}, authorization_request: {headers_to_add: [{key: 'bad name', value: v}]}}".to_string(), format!("{p}.http_service.authorization_request.headers_to_add[0].key")),
        (format!("{svc}, bogus: 1"), format!("{p}.bogus")),
    ];
    for (fields, want) in table {
        let (path, msg) = chain(&authz(&fields)).unwrap_err();
        assert_eq!(path, want, "{fields}: {msg}");
    }
}

#[test]
fn rbac_shadow_verdicts_become_metadata_that_turns_ext_authz_on() {
    use crate::config::ConfigError;
    let m: metadata::RawMetadataMatcher = serde_norway::from_str(
        "{filter: envoy.filters.http.rbac, path: [{key: istio_ext_authz_shadow_effective_policy_id}], value: {string_match: {prefix: istio-ext-authz}}}",
    )
    .unwrap();
    let on = metadata::build(&m, &FieldPath::root())
        .map_err(|e: ConfigError| e.to_string())
        .unwrap();
    let rules: rbac::RawRbacFilter = serde_norway::from_str(
        "{shadow_rules_stat_prefix: istio_ext_authz_, shadow_rules: {action: DENY, policies: {istio-ext-authz-p: {permissions: [{header: {name: x-check, present_match: true}}], principals: [{any: true}]}}}}",
    )
    .unwrap();
    let rules = rbac::build(rules, &FieldPath::root()).unwrap();
    let peer: std::net::SocketAddr = "10.0.0.1:1000".parse().unwrap();
    let run = |h: &HeaderMap| {
        let view = crate::route::RequestView {
            authority: Some("h"),
            path: "/",
            method: "GET",
            scheme: "http",
            headers: h,
            random: 0,
            peer: None,
            metadata: None,
        };
        let facts = crate::rbac::Facts {
            request: Some(&view),
            peer,
            direct: peer.ip(),
            remote: peer.ip(),
            local: peer,
            sni: "",
            tls: None,
            metadata: None,
        };
        let mut md = metadata::DynamicMetadata::default();
        let d = rules.decide(&facts, None);
        assert!(d.denied.is_none(), "shadow rules never deny");
        d.write_metadata(&rules, |k, v| md.set(metadata::RBAC_NAMESPACE, k, v));
        md
    };
    let md = run(&headers(&[("x-check", "1")]));
    assert_eq!(
        md.get(
            metadata::RBAC_NAMESPACE,
            "istio_ext_authz_shadow_effective_policy_id"
        ),
        Some("istio-ext-authz-p")
    );
    assert_eq!(
        md.get(
            metadata::RBAC_NAMESPACE,
            "istio_ext_authz_shadow_engine_result"
        ),
        Some("denied")
    );
    assert!(on.matches(&md));
    let md = run(&headers(&[]));
    assert_eq!(
        md.get(
            metadata::RBAC_NAMESPACE,
            "istio_ext_authz_shadow_engine_result"
        ),
        Some("allowed")
    );
    assert!(!on.matches(&md), "no matching policy: no id, no check");
}
