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
    let t = hcm_of(&b).tracing.clone().expect("tracing");
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
    let t = hcm_of(&b).tracing.clone().expect("tracing");
    assert_eq!(t.sampling.random, pct(10_000, 10_000));
    assert_eq!(t.sampling.client, pct(100, 100));
    assert!(!t.egress);
}

#[test]
fn another_tracer_is_refused_naming_the_field() {
    let yaml = config(
        "INBOUND",
        r#"tracing: { provider: { name: envoy.tracers.datadog, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig} } },"#,
        "",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.tracing.provider.typed_config.@type"),
        "not supported",
    );
    let yaml = config(
        "INBOUND",
        "tracing: { provider: { name: envoy.tracers.zipkin } },",
        "",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.tracing.provider.typed_config"),
        "required",
    );
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
    let s = route.tracing.clone().expect("route tracing");
    assert_eq!(s.sampling.random, pct(5, 10_000));
    assert_eq!(s.sampling.client, pct(100, 100));
    assert_eq!(s.sampling.overall, pct(100, 100));
    let d = route.decorator.as_ref().expect("decorator");
    assert_eq!(d.operation, "op");
    assert!(!d.propagate);
}

/// A Zipkin provider whose collector is the cluster `c`, with `extra` HCM tracing fields.
fn zipkin(extra: &str) -> String {
    format!(
        r#"tracing: {{ {extra} provider: {{ name: envoy.tracers.zipkin, typed_config: {{ "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: c, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON }} }} }},"#
    )
}

#[test]
fn a_zipkin_provider_loads_with_istiods_tags() {
    let b = load(
        "OUTBOUND",
        &zipkin(
            "custom_tags: [{ tag: istio.mesh_id, literal: { value: m } }, { tag: d, metadata: { kind: { request: {} }, metadata_key: { key: envoy.filters.http.rbac, path: [{ key: istio_dry_run_allow_shadow_engine_result }] } } }], spawn_upstream_span: true, max_path_tag_length: 10,",
        ),
        "",
    );
    let t = hcm_of(&b).tracing.clone().expect("tracing");
    let p = t.provider.expect("a provider");
    assert_eq!(p.zipkin().unwrap().cluster, "c");
    assert_eq!(p.max_path_tag_length, 10);
    assert!(p.upstream_spans && t.egress);
    assert_eq!(p.custom_tags.len(), 2);
    assert!(
        matches!(&p.custom_tags[1].value, TagValue::Metadata { path, .. } if path[0] == "istio_dry_run_allow_shadow_engine_result")
    );
}

#[test]
fn with_a_provider_what_is_not_made_is_refused_naming_the_field() {
    let yaml = config("INBOUND", &zipkin("verbose: true,"), "");
    expect_err(&yaml, &format!("{HCM}.tracing.verbose"), "not supported");
    let yaml = config("INBOUND", &zipkin("operation: \"%REQ(:path)%\","), "");
    expect_err(&yaml, &format!("{HCM}.tracing.operation"), "not supported");
    let yaml = config(
        "INBOUND",
        &zipkin("custom_tags: [{ tag: f, value: \"%REQ(:path)%\" }],"),
        "",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.tracing.custom_tags[0]"),
        "not supported",
    );
    // The router's own child spans are made only as spawn_upstream_span's.
    let yaml = config("INBOUND", &zipkin(""), "").replace(
        "envoy.extensions.filters.http.router.v3.Router }",
        "envoy.extensions.filters.http.router.v3.Router, start_child_span: true }",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.http_filters[0].typed_config.start_child_span"),
        "not supported",
    );
    // Without a provider those are span data, accepted.
    load(
        "INBOUND",
        "tracing: { verbose: true, custom_tags: [{ tag: f, value: x }] },",
        "",
    );
    // The collector must be a configured cluster.
    let yaml = config(
        "INBOUND",
        &zipkin("").replace("collector_cluster: c", "collector_cluster: ghost"),
        "",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.tracing.provider.typed_config.collector_cluster"),
        "unknown cluster",
    );
}

#[test]
fn the_bootstrap_tracer_serves_an_hcm_without_a_provider() {
    let tracer = r#"tracing: { http: { name: envoy.tracers.zipkin, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: c, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON, shared_span_context: false } } }
"#;
    let yaml = format!("{tracer}{}", config("INBOUND", "tracing: {},", ""));
    let b = from_yaml_str(&yaml).expect("loads");
    let p = hcm_of(&b)
        .tracing
        .clone()
        .and_then(|t| t.provider)
        .expect("the bootstrap's");
    assert!(!p.zipkin().unwrap().shared_span_context);
    // An HCM without `tracing` takes none.
    let yaml = format!("{tracer}{}", config("INBOUND", "", ""));
    assert!(hcm_of(&from_yaml_str(&yaml).unwrap()).tracing.is_none());
    // Its errors name its place.
    let bad = tracer.replace("collector_cluster: c", "collector_cluster: nope");
    let yaml = format!("{bad}{}", config("INBOUND", "tracing: {},", ""));
    expect_err(
        &yaml,
        "tracing.http.typed_config.collector_cluster",
        "unknown cluster",
    );
}

/// An OpenTelemetry provider (`typed_config` fields `fields`), the HTTP exporter's cluster `c`.
fn otel(fields: &str) -> String {
    format!(
        r#"tracing: {{ provider: {{ name: envoy.tracers.opentelemetry, typed_config: {{ "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, {fields} }} }} }},"#
    )
}

#[test]
fn an_opentelemetry_provider_loads_as_istiod_writes_it() {
    let b = load(
        "OUTBOUND",
        &otel("service_name: productpage.default, grpc_service: { envoy_grpc: { cluster_name: c, authority: otel.obs.svc.cluster.local } }"),
        "",
    );
    let p = hcm_of(&b)
        .tracing
        .clone()
        .and_then(|t| t.provider)
        .expect("a provider");
    let TracerConfig::OpenTelemetry(o) = &p.tracer else {
        panic!("OpenTelemetry");
    };
    assert!(
        matches!(&o.export, OtelExport::Grpc { cluster, authority, .. } if cluster == "c" && authority == "otel.obs.svc.cluster.local")
    );
    assert_eq!(
        o.resource[0],
        ("service.name".into(), "productpage.default".into())
    );
    assert_eq!(o.max_cache_size, 1024);
    // istiod's HTTP exporter: a URI without a scheme is host then path.
    let b = load(
        "INBOUND",
        &otel("http_service: { http_uri: { uri: otel.obs.svc.cluster.local/v1/traces, cluster: c, timeout: 3s } }, set_telemetry_sdk_resource_attributes: false"),
        "",
    );
    let p = hcm_of(&b).tracing.clone().and_then(|t| t.provider).unwrap();
    let TracerConfig::OpenTelemetry(o) = &p.tracer else {
        panic!("OpenTelemetry");
    };
    assert!(
        matches!(&o.export, OtelExport::Http { host, path, .. } if host == "otel.obs.svc.cluster.local" && path == "/v1/traces")
    );
    assert_eq!(
        o.resource,
        vec![("service.name".into(), "unknown_service:envoy".into())]
    );
}

#[test]
fn opentelemetry_refusals_name_the_field() {
    let tp = format!("{HCM}.tracing.provider.typed_config");
    let both = otel("grpc_service: { envoy_grpc: { cluster_name: c } }, http_service: { http_uri: { uri: /x, cluster: c, timeout: 1s } }");
    expect_err(
        &config("INBOUND", &both, ""),
        &tp,
        "both grpc_service and http_service",
    );
    let sampler = otel("sampler: { name: s, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3.AlwaysOnSamplerConfig } }");
    expect_err(
        &config("INBOUND", &sampler, ""),
        &format!("{tp}.sampler"),
        "not supported",
    );
    let ghost = otel("grpc_service: { envoy_grpc: { cluster_name: ghost } }");
    expect_err(
        &config("INBOUND", &ghost, ""),
        &format!("{tp}.grpc_service.envoy_grpc.cluster_name"),
        "unknown cluster",
    );
    let detector = otel("resource_detectors: [{ name: d, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.v3.DynatraceResourceDetectorConfig } }]");
    expect_err(
        &config("INBOUND", &detector, ""),
        &format!("{tp}.resource_detectors[0].typed_config"),
        "not supported",
    );
}

#[test]
fn a_custom_tag_field_of_another_kind_is_refused() {
    let yaml = config(
        "INBOUND",
        "tracing: { custom_tags: [{ tag: t, literal: { value: v, name: n } }] },",
        "",
    );
    expect_err(
        &yaml,
        &format!("{HCM}.tracing.custom_tags[0].literal.name"),
        "unknown field",
    );
}
