//! Test fixtures: real Envoy messages built with envoy-types' generated structs, and a client
//! core on a bootstrap with ADS.

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

use crate::{
    convert::{Any, ResourceType},
    core::{Core, Update},
};

pub(crate) fn any<M: Message>(url: &str, m: &M) -> Any {
    Any {
        type_url: url.to_string(),
        value: m.encode_to_vec(),
    }
}

pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: 2,
        ..Default::default()
    }
}

pub(crate) fn addr(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub(crate) fn hcm(route: http_connection_manager::RouteSpecifier) -> Any {
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

pub(crate) fn listener(
    name: &str,
    port: u32,
    route: http_connection_manager::RouteSpecifier,
) -> Listener {
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

pub(crate) fn rds(name: &str) -> http_connection_manager::RouteSpecifier {
    http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: name.into(),
    })
}

pub(crate) fn route_config(name: &str, cluster: &str, regex: Option<&str>) -> RouteConfiguration {
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

pub(crate) fn eds_cluster(name: &str, service: &str) -> Cluster {
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

pub(crate) fn lb(ip: &str, port: u32, health: HealthStatus, weight: Option<u32>) -> LbEndpoint {
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

pub(crate) fn cla(service: &str) -> ClusterLoadAssignment {
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

pub(crate) const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub(crate) const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub(crate) const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub(crate) const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

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

pub(crate) fn push(c: &mut Core, ty: ResourceType, items: Vec<Any>) -> Result<bool, String> {
    let cand = c.check(ty, Update::Sotw(items), Instant::now())?;
    let complete = cand.complete;
    c.commit(cand, Instant::now());
    Ok(complete)
}

/// `c`'s check (not committed) of an EDS response with `cla`.
pub(crate) fn check_eds(c: &Core, cla: &ClusterLoadAssignment) -> crate::core::Candidate {
    c.check(
        ResourceType::Endpoint,
        Update::Sotw(vec![any(EDS, cla)]),
        Instant::now(),
    )
    .unwrap()
}

/// The names `c` subscribes to for `ty`.
pub(crate) fn names(c: &Core, ty: ResourceType) -> Vec<String> {
    c.wanted(ty).iter().cloned().collect()
}
