//! The PROXY protocol's config: the listener filter (Istio's gateway `proxyProtocol`) and the
//! upstream transport socket (a DestinationRule's `proxyProtocol`), what loads and what is
//! refused naming the field.

use std::time::Duration;

use super::tests::expect_err;
use super::*;
use crate::proxy_protocol::{parse::Accept, Version};

/// A listener whose listener filters, listener fields and cluster transport socket are
/// spliced in (flow-style YAML).
fn config(filters: &str, listener: &str, transport: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    listener_filters: [{filters}]
    {listener}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c }}
  clusters:
  - name: c
    type: STATIC
    {transport}
    load_assignment: {{ cluster_name: c, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }} }} }}] }}] }}
"#
    )
}

const LISTENER_PP: &str = r#"{ name: envoy.filters.listener.proxy_protocol, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol } }"#;
const TLS_INSPECTOR: &str = r#"{ name: envoy.filters.listener.tls_inspector, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector } }"#;
const UPSTREAM_PP: &str = "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport";

#[test]
fn istios_gateway_listener_filter_loads_with_the_listener_timeout() {
    let b =
        from_yaml_str(&config(&format!("{LISTENER_PP}, {TLS_INSPECTOR}"), "", "")).expect("loads");
    let l = &b.listeners[0];
    let pp = l.proxy_protocol.as_ref().expect("the filter");
    assert_eq!(pp.accept, Accept::default());
    assert_eq!(pp.timeout, Some(Duration::from_secs(15)));
    assert!(!pp.continue_on_timeout);
    assert!(l.has_filter(ListenerFilter::TlsInspector));
    // Options: versions, absence allowed, the listener's timeout (0: none), stat prefix.
    let filter = r#"{ name: envoy.filters.listener.proxy_protocol, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol, allow_requests_without_proxy_protocol: true, disallowed_versions: [V1], stat_prefix: gw } }"#;
    let b = from_yaml_str(&config(
        filter,
        "listener_filters_timeout: 0s\n    continue_on_listener_filters_timeout: true",
        "",
    ))
    .expect("loads");
    let pp = b.listeners[0].proxy_protocol.clone().expect("the filter");
    assert_eq!(
        pp.accept,
        Accept {
            v1: false,
            v2: true,
            without: true
        }
    );
    assert_eq!((pp.timeout, pp.continue_on_timeout), (None, true));
    assert_eq!(pp.stat_prefix, "gw");
    // Without a typed_config: the defaults.
    let b = from_yaml_str(&config(
        "{ name: envoy.filters.listener.proxy_protocol }",
        "",
        "",
    ))
    .expect("loads");
    assert!(b.listeners[0].proxy_protocol.is_some());
}

#[test]
fn listener_filter_options_sluice_cannot_honour_are_refused_naming_them() {
    let f = "static_resources.listeners[0].listener_filters[0]";
    for (extra, field, msg) in [
        (
            "rules: [{ tlv_type: 4, on_tlv_present: { key: k } }]",
            "rules",
            "not supported",
        ),
        (
            "pass_through_tlvs: { match_type: INCLUDE_ALL }",
            "pass_through_tlvs",
            "not supported",
        ),
        (
            "disallowed_versions: [V1, V2]",
            "disallowed_versions",
            "all proxy protocol versions are disallowed",
        ),
        (
            "disallowed_versions: [V3]",
            "disallowed_versions[0]",
            "unknown version",
        ),
    ] {
        let filter = format!(
            r#"{{ name: envoy.filters.listener.proxy_protocol, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol, {extra} }} }}"#
        );
        expect_err(
            &config(&filter, "", ""),
            &format!("{f}.typed_config.{field}"),
            msg,
        );
    }
    // With an original destination (the filter, or use_original_dst): which one wins and the
    // hand-off by the stated destination are not implemented.
    expect_err(
        &config(
            &format!(
                "{LISTENER_PP}, {{ name: envoy.filters.listener.original_dst, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }} }}"
            ),
            "",
            "",
        ),
        "static_resources.listeners[0].listener_filters[1].name",
        "not supported",
    );
    expect_err(
        &config(LISTENER_PP, "use_original_dst: true", ""),
        "static_resources.listeners[0].use_original_dst",
        "not supported",
    );
    // After another filter it would see bytes the other already read as the client's.
    expect_err(
        &config(&format!("{TLS_INSPECTOR}, {LISTENER_PP}"), "", ""),
        "static_resources.listeners[0].listener_filters[1].name",
        "must come first",
    );
}

#[test]
fn the_upstream_transport_socket_wraps_the_clusters_own() {
    // istiod's shape without TLS: raw_buffer inside.
    let plain = format!(
        r#"transport_socket: {{ name: envoy.transport_sockets.upstream_proxy_protocol, typed_config: {{ "@type": {UPSTREAM_PP}, config: {{ version: V2 }}, transport_socket: {{ name: envoy.transport_sockets.raw_buffer, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer }} }} }} }}"#
    );
    let b = from_yaml_str(&config("", "", &plain)).expect("loads");
    let c = &b.clusters[0];
    assert_eq!(
        (c.proxy_protocol, c.tls.is_none()),
        (Some(Version::V2), true)
    );
    // No version: V1.
    let bare = format!(
        r#"transport_socket: {{ name: envoy.transport_sockets.upstream_proxy_protocol, typed_config: {{ "@type": {UPSTREAM_PP}, config: {{}}, allow_unspecified_address: true, transport_socket: {{ name: envoy.transport_sockets.raw_buffer }} }} }}"#
    );
    let b = from_yaml_str(&config("", "", &bare)).expect("loads");
    assert_eq!(b.clusters[0].proxy_protocol, Some(Version::V1));
    // TLS inside: both.
    let tls = format!(
        r#"transport_socket: {{ name: envoy.transport_sockets.upstream_proxy_protocol, typed_config: {{ "@type": {UPSTREAM_PP}, config: {{ version: V1 }}, transport_socket: {{ name: envoy.transport_sockets.tls, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: a.example }} }} }} }}"#
    );
    let b = from_yaml_str(&config("", "", &tls)).expect("loads");
    assert!(b.clusters[0].tls.is_some());
    assert_eq!(b.clusters[0].proxy_protocol, Some(Version::V1));
    // Per transport_socket_matches entry (istiod wraps each).
    let matches = format!(
        r#"transport_socket_matches: [{{ name: m, match: {{ tlsMode: istio }}, transport_socket: {{ name: envoy.transport_sockets.upstream_proxy_protocol, typed_config: {{ "@type": {UPSTREAM_PP}, config: {{ version: V2 }}, transport_socket: {{ name: envoy.transport_sockets.raw_buffer }} }} }} }}]"#
    );
    let b = from_yaml_str(&config("", "", &matches)).expect("loads");
    assert_eq!(
        b.clusters[0].transport_socket_matches[0].proxy_protocol,
        Some(Version::V2)
    );
}

#[test]
fn upstream_transport_options_sluice_cannot_honour_are_refused_naming_them() {
    let ts = "static_resources.clusters[0].transport_socket.typed_config";
    for (inner, field, msg) in [
        (
            "config: { version: V2, added_tlvs: [{ type: 240, value: aGk= }] }, transport_socket: { name: envoy.transport_sockets.raw_buffer }",
            "config.added_tlvs",
            "not supported",
        ),
        (
            "config: { version: V2, pass_through_tlvs: { match_type: INCLUDE_ALL } }, transport_socket: { name: envoy.transport_sockets.raw_buffer }",
            "config.pass_through_tlvs",
            "not supported",
        ),
        (
            "config: { version: V2 }, tlv_as_pool_key: true, transport_socket: { name: envoy.transport_sockets.raw_buffer }",
            "tlv_as_pool_key",
            "not supported",
        ),
        (
            "config: { version: V9 }, transport_socket: { name: envoy.transport_sockets.raw_buffer }",
            "config.version",
            "unknown version",
        ),
        (
            &format!(
                r#"config: {{}}, transport_socket: {{ name: x, typed_config: {{ "@type": {UPSTREAM_PP}, transport_socket: {{ name: envoy.transport_sockets.raw_buffer }} }} }}"#
            ),
            "transport_socket",
            "inside another",
        ),
    ] {
        let t = format!(
            r#"transport_socket: {{ name: envoy.transport_sockets.upstream_proxy_protocol, typed_config: {{ "@type": {UPSTREAM_PP}, {inner} }} }}"#
        );
        expect_err(&config("", "", &t), &format!("{ts}.{field}"), msg);
    }
}
