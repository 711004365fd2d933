//! What istiod sends a sidecar: filter chain matches, Istio's telemetry filters (grpc_stats and
//! istio_authn too), the inbound HCM's client-certificate fields, its clusters,
//! and the refusal of transport sockets that need SDS.

use super::tests::expect_err;
use super::*;

/// A virtualInbound-like listener (network telemetry filters before each terminal filter) and
/// Istio's clusters; `extra_cluster` is appended under `clusters:`.
fn istio_config(extra_cluster: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: virtualInbound
    address: {{ socket_address: {{ address: 0.0.0.0, port_value: 15006 }} }}
    traffic_direction: INBOUND
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }}
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    - name: envoy.filters.listener.http_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }}
    filter_chains:
    - name: 0.0.0.0_8080
      filter_chain_match:
        destination_port: 8080
        transport_protocol: raw_buffer
        application_protocols: [http/1.1, http/1.0, h2c]
        prefix_ranges: [{{ address_prefix: 0.0.0.0, prefix_len: 0 }}]
      filters:
      - name: istio.metadata_exchange
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
          value: {{ protocol: istio-peer-exchange, enable_discovery: true }}
      - name: istio_authn
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/io.istio.network.authn.Config
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound_0.0.0.0_8080
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: {{ subject: true, dns: true, uri: true }}
          # istiod's default mesh (enableTracing: true, sampling 1%, no provider), tracing.go
          # buildHCMTracing: Istio's custom tags and rates, no provider.
          tracing:
            client_sampling: {{ value: 100 }}
            random_sampling: {{ value: 1 }}
            overall_sampling: {{ value: 100 }}
            max_path_tag_length: 256
            custom_tags:
            - {{ tag: istio.canonical_revision, literal: {{ value: latest }} }}
            - {{ tag: istio.canonical_service, literal: {{ value: reviews }} }}
            - {{ tag: istio.mesh_id, literal: {{ value: cluster.local }} }}
            - {{ tag: istio.namespace, literal: {{ value: default }} }}
            - {{ tag: istio.authorization.dry_run.allow_policy.name, metadata: {{ kind: {{ request: {{}} }}, metadata_key: {{ key: envoy.filters.http.rbac, path: [{{ key: istio_dry_run_allow_shadow_effective_policy_id }}] }} }} }}
          route_config:
            virtual_hosts:
            - name: inbound
              domains: ["*"]
              # istiod sets a decorator on every route (route.go buildDefaultHTTPRoute).
              routes: [{{ match: {{ prefix: / }}, decorator: {{ operation: "reviews.default.svc.cluster.local:8080/*" }}, route: {{ cluster: "inbound|8080||" }} }}]
          http_filters:
          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/xds.type.v3.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value: {{ downstream_discovery: [{{ istio_headers: {{}} }}] }}
          - name: envoy.filters.http.grpc_stats
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig
              emit_filter_state: true
              stats_for_all_methods: false
          - name: istio.stats
            typed_config: {{ "@type": type.googleapis.com/stats.PluginConfig, disable_host_header_fallback: true }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
    - name: 0.0.0.0_8080_tcp
      filter_chain_match: {{ destination_port: 8080, transport_protocol: raw_buffer }}
      filters:
      - name: istio.stats
        typed_config: {{ "@type": type.googleapis.com/stats.PluginConfig }}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: "inbound|8080||"
          cluster: "inbound|8080||"
    - name: virtualInbound-blackhole
      filter_chain_match: {{ destination_port: 15006 }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: BlackHoleCluster
          cluster: BlackHoleCluster
    default_filter_chain:
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: InboundPassthroughCluster
          cluster: PassthroughCluster
  clusters:
  - name: BlackHoleCluster
    type: STATIC
    connect_timeout: 10s
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 10s
    filters:
    - name: istio.metadata_exchange
      typed_config:
        "@type": type.googleapis.com/udpa.type.v1.TypedStruct
        type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
        value: {{ protocol: istio-peer-exchange }}
  - name: "inbound|8080||"
    type: STATIC
    connect_timeout: 10s
    load_assignment:
      cluster_name: "inbound|8080||"
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.6, port_value: 8080 }} }} }} }}] }}]
{extra_cluster}"#
    )
}

const LISTENER: &str = "static_resources.listeners[0]";

fn facts<'a>(dst: &str, transport: &'a str, app: AppProtocols<'a>) -> ConnFacts<'a> {
    ConnFacts {
        dst: dst.parse().unwrap(),
        src: "10.0.0.9:40000".parse().unwrap(),
        direct_src: None,
        server_name: None,
        transport_protocol: transport,
        application_protocols: app,
    }
}

#[test]
fn istio_inbound_listener_loads_and_chooses_like_envoy() {
    let b = from_yaml_str(&istio_config("")).expect("istiod's sidecar config loads");
    let l = &b.listeners[0];
    assert_eq!(l.filter_chains.len(), 4, "three chains and the default");
    assert!(l.filter_chains[3].is_default);
    assert_eq!(l.filter_chains[0].terminal_index, 2);
    let name = |f: &ConnFacts<'_>| {
        l.select_chain(f)
            .map(|i| l.filter_chains[i].name.clone().unwrap_or("default".into()))
    };
    let http = facts("10.0.0.1:8080", "raw_buffer", AppProtocols::One("http/1.1"));
    assert_eq!(name(&http).as_deref(), Some("0.0.0.0_8080"));
    let opaque = facts("10.0.0.1:8080", "raw_buffer", AppProtocols::None);
    assert_eq!(name(&opaque).as_deref(), Some("0.0.0.0_8080_tcp"));
    // Port 8080 keeps only its chains; none takes TLS, so the default chain does.
    let tls = facts("10.0.0.1:8080", "tls", AppProtocols::None);
    assert_eq!(name(&tls).as_deref(), Some("default"));
    let other = facts("10.0.0.1:9999", "raw_buffer", AppProtocols::None);
    assert_eq!(name(&other).as_deref(), Some("default"));
    let direct = facts("10.0.0.1:15006", "raw_buffer", AppProtocols::None);
    assert_eq!(name(&direct).as_deref(), Some("virtualInbound-blackhole"));
    // The detected-protocol fallback is off once chains match on the protocol themselves.
    assert!(l.matches_protocol());
    assert_eq!(l.choose_chain(&opaque, Some(false)), Some((1, true)));
}

#[test]
fn istiods_tracing_block_loads_without_a_provider() {
    let b = from_yaml_str(&istio_config("")).expect("istiod's HCM with tracing loads");
    let NetworkFilter::Http(hcm) = &b.listeners[0].filter_chains[0].filter else {
        panic!("an HCM");
    };
    let t = hcm.tracing.clone().expect("tracing");
    // 1% of 10000; client sampling out of 100; INBOUND: the decorator goes in the response.
    assert_eq!(t.sampling.random.numerator, 100);
    assert_eq!(t.sampling.random.denominator, 10_000);
    assert_eq!(t.sampling.client.numerator, 100);
    assert_eq!(t.sampling.overall.numerator, 10_000);
    assert!(!t.egress);
    assert_eq!(hcm.request_id, RequestIdExtension::default());
}

#[test]
fn a_decorator_needs_an_operation() {
    let bad = istio_config("").replace(
        r#"operation: "reviews.default.svc.cluster.local:8080/*""#,
        r#"operation: """#,
    );
    let err = from_yaml_str(&bad).unwrap_err().to_string();
    assert!(
        err.contains("routes[0].decorator.operation: must not be empty"),
        "{err}"
    );
}

#[test]
fn filter_chain_match_errors_name_the_field() {
    let base = istio_config("");
    let chain0 = format!("{LISTENER}.filter_chains[0].filter_chain_match");
    let table = [
        (
            "destination_port: 8080\n        transport_protocol: raw_buffer\n        application_protocols",
            "destination_port: 8080\n        address_suffix: x\n        transport_protocol: raw_buffer\n        application_protocols",
            format!("{chain0}.address_suffix"),
            "not supported",
        ),
        (
            "address_prefix: 0.0.0.0, prefix_len: 0",
            "address_prefix: 0.0.0.0, prefix_len: 33",
            format!("{chain0}.prefix_ranges[0].prefix_len"),
            "33 is too long",
        ),
        (
            "address_prefix: 0.0.0.0, prefix_len: 0",
            "address_prefix: not-an-ip",
            format!("{chain0}.prefix_ranges[0].address_prefix"),
            "not an IP address",
        ),
        (
            "destination_port: 8080\n        transport_protocol: raw_buffer\n        application_protocols",
            "destination_port: 8080\n        server_names: [\"a*.example.com\"]\n        transport_protocol: raw_buffer\n        application_protocols",
            format!("{chain0}.server_names[0]"),
            "partial wildcards",
        ),
        (
            "destination_port: 8080\n        transport_protocol: raw_buffer\n        application_protocols",
            "destination_port: 8080\n        source_type: LOCAL\n        transport_protocol: raw_buffer\n        application_protocols",
            format!("{chain0}.source_type"),
            "unknown value",
        ),
        // The TCP chain made to overlap the HTTP chain (same port, transport and protocol).
        (
            "{ destination_port: 8080, transport_protocol: raw_buffer }",
            "{ destination_port: 8080, transport_protocol: raw_buffer, application_protocols: [h2c], prefix_ranges: [{ address_prefix: 0.0.0.0 }] }",
            format!("{LISTENER}.filter_chains[1].filter_chain_match"),
            "overlapping matching rules",
        ),
    ];
    for (from, to, path, msg) in table {
        assert!(base.contains(from), "{from}");
        expect_err(&base.replacen(from, to, 1), &path, msg);
    }
}

#[test]
fn only_istio_telemetry_filters_are_no_ops() {
    let base = istio_config("");
    let bad = base.replace(
        "      - name: istio.stats\n        typed_config: { \"@type\": type.googleapis.com/stats.PluginConfig }\n",
        "      - name: envoy.filters.network.redis_proxy\n        typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy }\n",
    );
    expect_err(
        &bad,
        &format!("{LISTENER}.filter_chains[1].filters[0].typed_config.@type"),
        "network filter type",
    );
    let bad = base.replace(
        "type_url: type.googleapis.com/io.istio.http.peer_metadata.Config",
        "type_url: type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
    );
    let bad = bad.replace(
        "          - name: istio.metadata_exchange\n            typed_config:\n              \"@type\": type.googleapis.com/xds",
        "          - name: istio.metadata_exchange\n            is_optional: true\n            typed_config:\n              \"@type\": type.googleapis.com/xds",
    );
    expect_err(
        &bad,
        &format!("{LISTENER}.filter_chains[0].filters[2].typed_config.http_filters[0]"),
        "TypedStruct",
    );
    let bad = base.replace(
        "    - name: istio.metadata_exchange\n      typed_config:\n        \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n        type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange\n        value: { protocol: istio-peer-exchange }\n",
        "    - name: envoy.filters.network.tcp_proxy\n",
    );
    expect_err(
        &bad,
        "static_resources.clusters[1].filters[0]",
        "upstream network filters",
    );
}

#[test]
fn secrets_from_a_discovery_service_must_have_arrived() {
    let sds_cluster = r#"  - name: "outbound|80||web.default.svc.cluster.local"
    type: STATIC
    connect_timeout: 1s
    transport_socket_matches:
    - name: tlsMode-istio
      match: { tlsMode: istio }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: default
              sds_config:
                api_config_source: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: sds-grpc } }] }
                resource_api_version: V3
    - name: tlsMode-disabled
      match: {}
      transport_socket: { name: envoy.transport_sockets.raw_buffer }
"#;
    // Loaded alone (no xDS client placed the secret): the reference names what is missing.
    expect_err(
        &istio_config(sds_cluster),
        "static_resources.clusters[3].transport_socket_matches[0].transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name",
        "secret \"default\" has not arrived from cluster \"sds-grpc\"",
    );
    let single = sds_cluster
        .replace("    transport_socket_matches:\n    - name: tlsMode-istio\n      match: { tlsMode: istio }\n      transport_socket:\n        name", "    transport_socket:\n        name")
        .replace("    - name: tlsMode-disabled\n      match: {}\n      transport_socket: { name: envoy.transport_sockets.raw_buffer }\n", "");
    expect_err(
        &istio_config(&single),
        "static_resources.clusters[3].transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name",
        "secret \"default\" has not arrived from cluster \"sds-grpc\"",
    );
    // Downstream: a filter chain's transport_socket, with and without SDS.
    let chain = "    - name: virtualInbound-blackhole\n      filter_chain_match: { destination_port: 15006 }\n";
    let tls = "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            combined_validation_context:\n              validation_context_sds_secret_config: { name: ROOTCA, sds_config: { ads: {} } }\n";
    let base = istio_config("");
    expect_err(
        &base.replace(chain, &format!("{chain}{tls}")),
        &format!("{LISTENER}.filter_chains[2].transport_socket.typed_config.common_tls_context.combined_validation_context.validation_context_sds_secret_config.name"),
        "secret \"ROOTCA\" has not arrived over ADS",
    );
    let plain = "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config: { \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext }\n";
    expect_err(
        &base.replace(chain, &format!("{chain}{plain}")),
        &format!("{LISTENER}.filter_chains[2].transport_socket.typed_config.common_tls_context"),
        "required (a server certificate)",
    );
    // A raw_buffer transport socket on a cluster is plaintext, as Envoy's default.
    let raw = "    transport_socket: { name: envoy.transport_sockets.raw_buffer }\n";
    let b = from_yaml_str(&base.replace(
        "  - name: BlackHoleCluster\n    type: STATIC\n",
        &format!("  - name: BlackHoleCluster\n    type: STATIC\n{raw}"),
    ))
    .expect("raw_buffer loads");
    assert!(b.cluster("BlackHoleCluster").unwrap().tls.is_none());
}

#[test]
fn filter_disabled_turns_an_inspector_off_per_port() {
    let base = istio_config("");
    let with = base.replace(
        "typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }\n",
        "typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }\n      filter_disabled: { or_match: { rules: [{ destination_port_range: { start: 3306, end: 3307 } }, { destination_port_range: { start: 6379, end: 6380 } }] } }\n",
    );
    let b = from_yaml_str(&with).expect("loads");
    let l = &b.listeners[0];
    assert!(!l.runs_filter(ListenerFilter::HttpInspector, 3306));
    assert!(l.runs_filter(ListenerFilter::HttpInspector, 8080));
    assert!(l.runs_filter(ListenerFilter::TlsInspector, 3306));
    let bad = with.replace(
        "{ destination_port_range: { start: 6379, end: 6380 } }",
        "{ requested_server_name: { exact: a } }",
    );
    expect_err(
        &bad,
        &format!("{LISTENER}.listener_filters[2].filter_disabled.or_match.rules[1].requested_server_name"),
        "not supported",
    );
}

#[test]
fn istio_tcp_chain_with_an_authorization_policy_loads_its_network_rbac() {
    // istiod's inbound TCP chain under an AuthorizationPolicy: metadata exchange, the RBAC
    // filter (stat prefix `tcp.`), the stats plugin, then tcp_proxy.
    let base = istio_config("");
    let with_rbac = base.replace(
        "      filters:\n      - name: istio.stats\n        typed_config: { \"@type\": type.googleapis.com/stats.PluginConfig }\n      - name: envoy.filters.network.tcp_proxy",
        "      filters:\n      - name: envoy.filters.network.rbac\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC\n          stat_prefix: tcp.\n          rules: { policies: { \"ns[default]-policy[allow-tcp]-rule[0]\": { permissions: [{ and_rules: { rules: [{ or_rules: { rules: [{ destination_port: 8080 }] } }] } }], principals: [{ and_ids: { ids: [{ or_ids: { ids: [{ filter_state: { key: io.istio.peer_principal, string_match: { exact: \"spiffe://cluster.local/ns/default/sa/client\" } } }] } }] } }] } } }\n      - name: istio.stats\n        typed_config: { \"@type\": type.googleapis.com/stats.PluginConfig }\n      - name: envoy.filters.network.tcp_proxy",
    );
    assert_ne!(with_rbac, base, "the TCP chain was found");
    let b = from_yaml_str(&with_rbac).expect("loads");
    let chain = b.listeners[0]
        .filter_chains
        .iter()
        .find(|c| c.name.as_deref() == Some("0.0.0.0_8080_tcp"))
        .expect("the TCP chain");
    assert_eq!(chain.rbac.len(), 1);
    assert_eq!(chain.rbac[0].stat_prefix, "tcp.");
    assert_eq!(chain.terminal_index, 2);
    // A header rule is refused, as Envoy refuses it in the network filter.
    let header = with_rbac.replace(
        "[{ destination_port: 8080 }]",
        "[{ header: { name: x, present_match: true } }]",
    );
    expect_err(
        &header,
        &format!("{LISTENER}.filter_chains[1].filters[0].typed_config.rules.policies.ns[default]-policy[allow-tcp]-rule[0].permissions[0].and_rules.rules[0].or_rules.rules[0].header"),
        "not supported by the RBAC network filter",
    );
}
