//! The HCM's `tracing` and `request_id_extension` and a route's `tracing`: what loads, and what
//! is refused naming the field.

use super::tests::expect_err;
use super::*;
use crate::route::FractionalPercent;

const HCM: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";

/// One HCM listener (`direction` is its traffic_direction) with `hcm` and `route` spliced in
/// (flow-style YAML fields, each ending with a comma).
fn config(direction: &str, hcm: &str, route: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    traffic_direction: {direction}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, {hcm}
          http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}],
          route_config: {{ virtual_hosts: [{{ name: v, domains: ["*"], routes: [{{ match: {{ prefix: / }}, {route} route: {{ cluster: c }} }}] }}] }} }}
  clusters:
  - {{ name: c, type: STATIC, load_assignment: {{ cluster_name: c, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }} }} }}] }}] }} }}
"#
    )
}

fn load(direction: &str, hcm: &str, route: &str) -> Bootstrap {
    from_yaml_str(&config(direction, hcm, route)).expect("the config loads")
}

fn hcm_of(b: &Bootstrap) -> &HttpConnectionManager {
    match &b.listeners[0].filter_chains[0].filter {
        NetworkFilter::Http(h) => h,
        NetworkFilter::Tcp(_) => panic!("an HCM"),
    }
}

fn pct(numerator: u32, denominator: u32) -> FractionalPercent {
    FractionalPercent {
        numerator,
        denominator,
    }
}

#[test]
fn rates_are_truncated_as_envoy_converts_them() {
    let b = load(
        "OUTBOUND",
        "tracing: { client_sampling: { value: 50.9 }, random_sampling: { value: 0.005 }, overall_sampling: { value: 33.339 }, verbose: true, spawn_upstream_span: true },",
        "",
    );
    let t = hcm_of(&b).tracing.expect("tracing");
    assert_eq!(t.sampling.client, pct(50, 100));
    assert_eq!(t.sampling.random, pct(0, 10_000));
    assert_eq!(t.sampling.overall, pct(3333, 10_000));
    assert!(t.egress);
}

#[test]
fn no_tracing_and_empty_tracing() {
    let b = load("INBOUND", "", "");
    assert!(hcm_of(&b).tracing.is_none());
    let b = load("INBOUND", "tracing: {},", "");
    let t = hcm_of(&b).tracing.expect("tracing");
    assert_eq!(t.sampling.random, pct(10_000, 10_000));
    assert_eq!(t.sampling.client, pct(100, 100));
    assert!(!t.egress);
}

#[test]
fn a_provider_is_refused_naming_the_field() {
    let yaml = config(
        "INBOUND",
        "tracing: { provider: { name: envoy.tracers.zipkin } },",
        "",
    );
    expect_err(&yaml, &format!("{HCM}.tracing.provider"), "not supported");
}

#[test]
fn a_rate_outside_0_to_100_is_refused() {
    let yaml = config(
        "INBOUND",
        "tracing: { random_sampling: { value: 100.5 } },",
        "",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.tracing.random_sampling.value"),
        "not in 0..100",
    );
}

#[test]
fn custom_tags_are_checked() {
    let yaml = config("INBOUND", "tracing: { custom_tags: [{ tag: a }] },", "");
    expect_err(
        &yaml,
        &format!("{HCM}.tracing.custom_tags[0]"),
        "exactly one of",
    );
    let yaml = config(
        "INBOUND",
        "tracing: { custom_tags: [{ literal: { value: v } }] },",
        "",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.tracing.custom_tags[0].tag"),
        "must not be empty",
    );
}

#[test]
fn request_id_extension_is_the_uuid_one() {
    let b = load(
        "INBOUND",
        r#"request_id_extension: { typed_config: { "@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig, pack_trace_reason: false } },"#,
        "",
    );
    assert_eq!(
        hcm_of(&b).request_id,
        RequestIdExtension {
            pack_trace_reason: false,
            use_request_id_for_trace_sampling: true,
        }
    );
    let yaml = config(
        "INBOUND",
        r#"request_id_extension: { typed_config: { "@type": type.googleapis.com/other.Ext } },"#,
        "",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.request_id_extension.typed_config.@type"),
        "unsupported type",
    );
}

#[test]
fn route_tracing_defaults_each_rate_to_100_percent() {
    let b = load(
        "INBOUND",
        "tracing: {},",
        "tracing: { random_sampling: { numerator: 5, denominator: TEN_THOUSAND } }, decorator: { operation: op, propagate: false },",
    );
    let hcm = hcm_of(&b);
    let route = &hcm.route_table.virtual_hosts[0].routes[0];
    let s = route.tracing.expect("route tracing");
    assert_eq!(s.random, pct(5, 10_000));
    assert_eq!(s.client, pct(100, 100));
    assert_eq!(s.overall, pct(100, 100));
    let d = route.decorator.as_ref().expect("decorator");
    assert_eq!(d.operation, "op");
    assert!(!d.propagate);
}
