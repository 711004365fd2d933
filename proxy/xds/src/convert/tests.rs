//! Conversion of real Envoy messages (built with envoy-types' generated structs) to the JSON the
//! engine parses, and back.

use envoy_types::pb::envoy::config::listener::v3::Listener;
use prost::Message;
use serde_json::json;

use super::*;
use crate::fixtures::*;

#[test]
fn listener_with_hcm_and_rds_is_envoy_json() {
    let l = listener("web", 10000, rds("routes"));
    let j = any_to_json(LDS, &l.encode_to_vec()).unwrap();
    assert_eq!(j["name"], "web");
    assert_eq!(j["address"]["socket_address"]["port_value"], 10000);
    let tc = &j["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(tc["@type"], crate::assemble::HCM_TYPE);
    assert_eq!(tc["stat_prefix"], "ingress");
    assert_eq!(tc["rds"]["route_config_name"], "routes");
    assert_eq!(tc["rds"]["config_source"]["ads"], json!({}));
    assert_eq!(tc["rds"]["config_source"]["resource_api_version"], "V3");
    assert_eq!(
        tc["http_filters"][0]["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    );
}

#[test]
fn route_configuration_is_envoy_json() {
    let j = any_to_json(
        RDS,
        &route_config("routes", "backend", None).encode_to_vec(),
    )
    .unwrap();
    let r = &j["virtual_hosts"][0]["routes"][0];
    assert_eq!(r["match"]["prefix"], "/");
    assert_eq!(r["route"]["cluster"], "backend");
    assert_eq!(j["virtual_hosts"][0]["domains"], json!(["*"]));
}

#[test]
fn eds_cluster_is_envoy_json() {
    let j = any_to_json(CDS, &eds_cluster("backend", "backend-eds").encode_to_vec()).unwrap();
    assert_eq!(j["type"], "EDS");
    assert_eq!(j["connect_timeout"], "1.250s");
    assert_eq!(j["eds_cluster_config"]["service_name"], "backend-eds");
    assert_eq!(j["eds_cluster_config"]["eds_config"]["ads"], json!({}));
}

#[test]
fn load_assignment_keeps_localities_priorities_health_and_weights() {
    let j = any_to_json(EDS, &cla("backend-eds").encode_to_vec()).unwrap();
    let p0 = &j["endpoints"][0];
    assert_eq!(p0["locality"], json!({"region": "eu", "zone": "eu-1a"}));
    assert_eq!(p0["load_balancing_weight"], 10);
    assert!(p0.get("priority").is_none(), "default priority 0 skipped");
    assert_eq!(p0["lb_endpoints"][0]["health_status"], "HEALTHY");
    assert_eq!(p0["lb_endpoints"][0]["load_balancing_weight"], 3);
    assert_eq!(p0["lb_endpoints"][1]["health_status"], "UNHEALTHY");
    assert_eq!(j["endpoints"][1]["priority"], 1);
}

#[test]
fn unknown_type_and_bad_bytes_are_errors_not_panics() {
    assert!(any_to_json("type.googleapis.com/no.such.Message", b"")
        .unwrap_err()
        .contains("unknown type"));
    assert!(any_to_json(LDS, &[0xff, 0xff, 0xff])
        .unwrap_err()
        .contains("cannot decode"));
    let wrong = any(RDS, &route_config("r", "c", None));
    assert!(decode_resource(ResourceType::Listener, &wrong)
        .unwrap_err()
        .contains("in a Listener response"));
}

#[test]
fn json_round_trips_through_any() {
    let l = listener("web", 10000, rds("routes"));
    let j = any_to_json(LDS, &l.encode_to_vec()).unwrap();
    let back = json_to_any(LDS, &j).unwrap();
    assert_eq!(Listener::decode(&back.value[..]).unwrap(), l);
}

/// istiod's `istio.stats` and `istio.alpn` come as plain Anys of Istio's own types (not
/// TypedStructs): they decode; `istio.stats`' content is skipped and it prints as
/// `{"@type": ...}` (a telemetry no-op), `istio.alpn`'s fields are read (the engine uses them).
#[test]
fn istio_telemetry_anys_decode_without_their_fields() {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_filter, HttpConnectionManager, HttpFilter,
    };
    let hcm_any = hcm(rds("routes"));
    let mut h = HttpConnectionManager::decode(hcm_any.value.as_slice()).unwrap();
    // istio.stats: field 1 (a string) and field 2 (varint). istio.alpn: one AlpnOverride
    // {upstream_protocol: HTTP2 (2), alpn_override: ["istio-h2", "h2"]}.
    let stats = vec![0x0a, 3, b'a', b'b', b'c', 0x10, 1];
    let entry = [&[0x08, 2, 0x12, 8][..], b"istio-h2", &[0x12, 2], b"h2"].concat();
    let alpn = [&[0x0a, entry.len() as u8][..], &entry].concat();
    for (name, ty, content) in [
        (
            "istio.stats",
            "type.googleapis.com/stats.PluginConfig",
            stats,
        ),
        (
            "istio.alpn",
            "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            alpn,
        ),
    ] {
        h.http_filters.insert(
            0,
            HttpFilter {
                name: name.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                    type_url: ty.into(),
                    value: content,
                })),
                ..Default::default()
            },
        );
    }
    let j = any_to_json(crate::assemble::HCM_TYPE, &h.encode_to_vec()).unwrap();
    assert_eq!(
        j["http_filters"][0]["typed_config"],
        json!({"@type": "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            "alpn_override": [{"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "h2"]}]})
    );
    assert_eq!(
        j["http_filters"][1]["typed_config"],
        json!({"@type": "type.googleapis.com/stats.PluginConfig"})
    );
    // A type nobody declares is still an error naming it.
    h.http_filters[0].config_type = Some(http_filter::ConfigType::TypedConfig(Any {
        type_url: "type.googleapis.com/acme.Filter".into(),
        value: Vec::new(),
    }));
    let e = any_to_json(crate::assemble::HCM_TYPE, &h.encode_to_vec()).unwrap_err();
    assert!(e.contains("acme.Filter"), "{e}");
}

/// istiod ≥ 1.29's Zipkin provider sets `collector_service` (field 9 of Envoy 1.40's
/// ZipkinConfig, newer than envoy-types' protos): it decodes whole, as the engine reads it.
#[test]
fn istiods_zipkin_collector_service_decodes() {
    let j = json!({
        "trace_id_128bit": true,
        "shared_span_context": false,
        "collector_endpoint_version": "HTTP_JSON",
        "collector_service": {"http_uri": {
            "uri": "http://zipkin.istio-system.svc.cluster.local/api/v2/spans",
            "cluster": "outbound|9411||zipkin.istio-system.svc.cluster.local",
            "timeout": "5s"},
            "request_headers_to_add": [{"header": {"key": "x-tenant", "value": "a"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}
    });
    let ty = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig";
    let any = json_to_any(ty, &j).unwrap();
    let back = any_to_json(ty, &any.value).unwrap();
    assert_eq!(back["collector_service"], j["collector_service"]);
    assert_eq!(back["shared_span_context"], false);
    assert_eq!(back["collector_endpoint_version"], "HTTP_JSON");
}

#[test]
fn istiods_proxy_protocol_configs_decode() {
    // A DestinationRule's proxyProtocol: the cluster's transport socket wrapped.
    let upstream = json!({
        "config": {"version": "V2"},
        "transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}
    });
    let ty = "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport";
    let back = any_to_json(ty, &json_to_any(ty, &upstream).unwrap().value).unwrap();
    assert_eq!(back["config"]["version"], "V2");
    assert_eq!(
        back["transport_socket"]["name"],
        "envoy.transport_sockets.raw_buffer"
    );
    // A gateway's gatewayTopology.proxyProtocol: the listener filter (istiod sends it empty).
    let ty =
        "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol";
    let filter = json!({"allow_requests_without_proxy_protocol": true});
    let back = any_to_json(ty, &json_to_any(ty, &filter).unwrap().value).unwrap();
    assert_eq!(back["allow_requests_without_proxy_protocol"], true);
}
