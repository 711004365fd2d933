//! Conversion of real Envoy messages (built with envoy-types' generated structs) to the JSON the
//! engine parses, and the NACK details of the whole path.

use std::time::Instant;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{cluster, Cluster},
            core::v3::{
                address, config_source, socket_address, Address, AggregatedConfigSource,
                ConfigSource, HealthStatus, Locality, SocketAddress,
            },
            endpoint::v3::{
                lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
            },
            listener::v3::{filter, Filter, FilterChain, Listener},
            route::v3::{
                route, route_action, route_match, Route, RouteAction, RouteConfiguration,
                RouteMatch, VirtualHost,
            },
        },
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
            },
        },
    },
    google::protobuf::{Duration, UInt32Value},
};
use prost::Message;
use serde_json::json;

use super::*;
use crate::core::{Core, Update};

fn any<M: Message>(url: &str, m: &M) -> Any {
    Any {
        type_url: url.to_string(),
        value: m.encode_to_vec(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: 2,
        ..Default::default()
    }
}

fn addr(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn hcm(route: http_connection_manager::RouteSpecifier) -> Any {
    let router = any(
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        &Router::default(),
    );
    any(
        crate::assemble::HCM_TYPE,
        &HttpConnectionManager {
            stat_prefix: "ingress".into(),
            route_specifier: Some(route),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(router)),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn listener(name: &str, port: u32, route: http_connection_manager::RouteSpecifier) -> Listener {
    Listener {
        name: name.into(),
        address: Some(addr("127.0.0.1", port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(hcm(route))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn rds(name: &str) -> http_connection_manager::RouteSpecifier {
    http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: name.into(),
    })
}

fn route_config(name: &str, cluster: &str, regex: Option<&str>) -> RouteConfiguration {
    let path = match regex {
        Some(r) => route_match::PathSpecifier::SafeRegex(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: r.into(),
                ..Default::default()
            },
        ),
        None => route_match::PathSpecifier::Prefix("/".into()),
    };
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(path),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn eds_cluster(name: &str, service: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: service.into(),
        }),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 250_000_000,
        }),
        ..Default::default()
    }
}

fn lb(ip: &str, port: u32, health: HealthStatus, weight: Option<u32>) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(addr(ip, port)),
            ..Default::default()
        })),
        health_status: health as i32,
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        ..Default::default()
    }
}

fn cla(service: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: service.into(),
        endpoints: vec![
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: "eu".into(),
                    zone: "eu-1a".into(),
                    ..Default::default()
                }),
                lb_endpoints: vec![
                    lb("127.0.0.1", 9001, HealthStatus::Healthy, Some(3)),
                    lb("127.0.0.1", 9002, HealthStatus::Unhealthy, None),
                    lb("127.0.0.1", 9003, HealthStatus::Draining, None),
                ],
                load_balancing_weight: Some(UInt32Value { value: 10 }),
                priority: 0,
                ..Default::default()
            },
            LocalityLbEndpoints {
                lb_endpoints: vec![lb("127.0.0.1", 9004, HealthStatus::Unknown, None)],
                priority: 1,
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

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

/// A bootstrap with ADS and one static cluster (the management server).
pub(crate) fn base() -> serde_json::Value {
    json!({
        "node": {"id": "n1", "cluster": "c1", "metadata": {"k": "v"}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": [{"name": "xds", "type": "STATIC",
            "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 18000}}}}]}]}}]}
    })
}

pub(crate) fn core() -> Core {
    let b = sluice_engine::config::from_yaml_str(&base().to_string()).unwrap();
    Core::new(base(), b.dynamic_resources.unwrap(), Instant::now())
}

fn push(c: &mut Core, ty: ResourceType, items: Vec<Any>) -> Result<bool, String> {
    let cand = c.check(ty, Update::Sotw(items), Instant::now())?;
    let complete = cand.complete;
    c.commit(cand, Instant::now());
    Ok(complete)
}

#[test]
fn eds_cluster_gets_its_endpoints_health_and_priority_applied() {
    let mut c = core();
    assert!(
        !push(
            &mut c,
            ResourceType::Cluster,
            vec![any(CDS, &eds_cluster("backend", "backend-eds"))]
        )
        .unwrap(),
        "EDS cluster warms until its assignment arrives"
    );
    assert_eq!(
        c.wanted(ResourceType::Endpoint)
            .into_iter()
            .collect::<Vec<_>>(),
        ["backend-eds"]
    );
    let cand = c
        .check(
            ResourceType::Endpoint,
            Update::Sotw(vec![any(EDS, &cla("backend-eds"))]),
            Instant::now(),
        )
        .unwrap();
    assert!(cand.complete);
    let cl = cand.bootstrap.cluster("backend").unwrap();
    let eps: Vec<String> = cl
        .endpoints
        .iter()
        .map(|e| format!("{:?}:{}", e.address, e.weight))
        .collect();
    assert_eq!(
        eps,
        ["Ip(127.0.0.1:9001):3"],
        "unhealthy/draining and priority 1 left out"
    );
}

#[test]
fn dangling_cluster_in_a_listener_is_nacked_with_resource_and_path() {
    let mut c = core();
    let inline =
        http_connection_manager::RouteSpecifier::RouteConfig(route_config("inline", "nope", None));
    let err = push(
        &mut c,
        ResourceType::Listener,
        vec![any(LDS, &listener("web", 10000, inline))],
    )
    .unwrap_err();
    assert_eq!(
        err,
        "Listener \"web\": filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster: unknown cluster \"nope\""
    );
}

#[test]
fn invalid_regex_in_rds_is_nacked_with_the_yaml_message() {
    let mut c = core();
    push(
        &mut c,
        ResourceType::Cluster,
        vec![any(CDS, &eds_cluster("backend", "backend"))],
    )
    .unwrap();
    push(
        &mut c,
        ResourceType::Listener,
        vec![any(LDS, &listener("web", 10000, rds("routes")))],
    )
    .unwrap();
    assert_eq!(
        c.wanted(ResourceType::Route)
            .into_iter()
            .collect::<Vec<_>>(),
        ["routes"]
    );
    let bad = route_config("routes", "backend", Some("(unclosed"));
    let err = push(&mut c, ResourceType::Route, vec![any(RDS, &bad)]).unwrap_err();
    assert!(
        err.starts_with(
            "RouteConfiguration \"routes\": virtual_hosts[0].routes[0].match.safe_regex"
        ),
        "{err}"
    );
    // The same mistake in a static file gives the same message at the file's path.
    let mut doc = base();
    doc["static_resources"]["listeners"] = json!([{
        "name": "web",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": crate::assemble::HCM_TYPE, "stat_prefix": "s",
            "http_filters": [{"name": "envoy.filters.http.router"}],
            "route_config": any_to_json(RDS, &bad.encode_to_vec()).unwrap()}}]}]
    }]);
    doc["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "backend"}));
    let yaml = sluice_engine::config::from_yaml_str(&doc.to_string()).unwrap_err();
    assert!(err.ends_with(yaml.message()), "{err} vs {yaml}");
    assert!(
        yaml.path().ends_with(err.split(": ").nth(1).unwrap()),
        "{yaml}"
    );
}

#[test]
fn unsupported_field_is_nacked_naming_it() {
    let mut c = core();
    let mut l = listener("web", 10000, rds("routes"));
    l.per_connection_buffer_limit_bytes = Some(UInt32Value { value: 1024 });
    let err = push(&mut c, ResourceType::Listener, vec![any(LDS, &l)]).unwrap_err();
    assert!(
        err.starts_with("Listener \"web\": per_connection_buffer_limit_bytes: not supported"),
        "{err}"
    );
}

#[test]
fn sotw_absence_removes_and_unrequested_routes_are_ignored() {
    let mut c = core();
    push(
        &mut c,
        ResourceType::Cluster,
        vec![
            any(CDS, &eds_cluster("a", "a")),
            any(CDS, &eds_cluster("b", "b")),
        ],
    )
    .unwrap();
    push(
        &mut c,
        ResourceType::Cluster,
        vec![any(CDS, &eds_cluster("b", "b"))],
    )
    .unwrap();
    let names: Vec<&String> = c.accepted(ResourceType::Cluster).unwrap().keys().collect();
    assert_eq!(names, ["b"]);
    assert_eq!(
        c.wanted(ResourceType::Endpoint)
            .into_iter()
            .collect::<Vec<_>>(),
        ["b"]
    );
    push(
        &mut c,
        ResourceType::Route,
        vec![any(RDS, &route_config("stray", "b", None))],
    )
    .unwrap();
    assert!(c.accepted(ResourceType::Route).is_none_or(|m| m.is_empty()));
}

#[test]
fn delta_removed_resources_and_duplicates() {
    let mut c = core();
    let add = |n: &str| (n.to_string(), "1".to_string(), any(CDS, &eds_cluster(n, n)));
    let cand = c
        .check(
            ResourceType::Cluster,
            Update::Delta {
                added: vec![add("a"), add("b")],
                removed: vec![],
            },
            Instant::now(),
        )
        .unwrap();
    c.commit(cand, Instant::now());
    let cand = c
        .check(
            ResourceType::Cluster,
            Update::Delta {
                added: vec![],
                removed: vec!["a".into()],
            },
            Instant::now(),
        )
        .unwrap();
    c.commit(cand, Instant::now());
    assert_eq!(
        c.resource_versions[&ResourceType::Cluster]
            .keys()
            .collect::<Vec<_>>(),
        ["b"]
    );
    let dup = c
        .check(
            ResourceType::Cluster,
            Update::Delta {
                added: vec![add("x"), add("x")],
                removed: vec![],
            },
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(dup, "duplicate Cluster \"x\"");
}
