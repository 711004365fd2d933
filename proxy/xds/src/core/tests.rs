//! The client core on real Envoy messages: EDS applied with health and priority, NACK details
//! naming resource and field path (the same message as the YAML file), SotW absence, Delta
//! removal, unrequested resources, duplicates and warming with `initial_fetch_timeout`.

use std::time::{Duration, Instant};

use envoy_types::pb::{
    envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager,
    google::protobuf::UInt32Value,
};
use prost::Message;
use serde_json::json;

use super::*;
use crate::{convert::any_to_json, fixtures::*};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;

/// What istiod puts on every endpoint and locality (`filter_metadata`), which nothing here
/// reads: an assignment carrying it must be ACKed like one without.
fn istiod_metadata() -> envoy_types::pb::envoy::config::core::v3::Metadata {
    use envoy_types::pb::{
        envoy::config::core::v3::Metadata,
        google::protobuf::{value::Kind, Struct, Value},
    };
    let s = |k: &str, v: &str| Struct {
        fields: [(
            k.to_string(),
            Value {
                kind: Some(Kind::StringValue(v.into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    Metadata {
        filter_metadata: [
            (
                "istio".to_string(),
                s("workload", "reviews;default;reviews;v1;Kubernetes"),
            ),
            (
                "envoy.transport_socket_match".to_string(),
                s("tlsMode", "istio"),
            ),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
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
    assert_eq!(names(&c, ResourceType::Endpoint), ["backend-eds"]);
    let mut assignment = cla("backend-eds");
    assignment.endpoints[0].metadata = Some(istiod_metadata());
    assignment.endpoints[0].lb_endpoints[0].metadata = Some(istiod_metadata());
    let cand = c
        .check(
            ResourceType::Endpoint,
            Update::Sotw(vec![any(EDS, &assignment)]),
            Instant::now(),
        )
        .expect("ACKed, istiod's metadata and all");
    assert!(cand.complete);
    let Some(Apply::Full { bootstrap, .. }) = &cand.apply else {
        panic!("the first assignment is a whole version")
    };
    assert_eq!(
        endpoints_of(bootstrap.cluster("backend").unwrap()),
        [
            "Ip(127.0.0.1:9001):3 P0 Healthy",
            "Ip(127.0.0.1:9002):1 P0 Unhealthy",
            "Ip(127.0.0.1:9003):1 P0 Draining",
            "Ip(127.0.0.1:9004):1 P1 Healthy"
        ],
        "every endpoint with its weight, priority and health status (the balancer spills over)"
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
    assert_eq!(names(&c, ResourceType::Route), ["routes"]);
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
    l.tcp_backlog_size = Some(UInt32Value { value: 128 });
    let err = push(&mut c, ResourceType::Listener, vec![any(LDS, &l)]).unwrap_err();
    assert!(
        err.starts_with("Listener \"web\": tcp_backlog_size: not supported"),
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
    let accepted: Vec<&String> = c.accepted(ResourceType::Cluster).unwrap().keys().collect();
    assert_eq!(accepted, ["b"]);
    assert_eq!(names(&c, ResourceType::Endpoint), ["b"]);
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
    let delta = |c: &Core, added, removed| {
        c.check(
            ResourceType::Cluster,
            Update::Delta { added, removed },
            Instant::now(),
        )
    };
    let add = |n: &str| (n.to_string(), "1".to_string(), any(CDS, &eds_cluster(n, n)));
    let cand = delta(&c, vec![add("a"), add("b")], vec![]).unwrap();
    c.commit(cand, Instant::now());
    let cand = delta(&c, vec![], vec!["a".into()]).unwrap();
    c.commit(cand, Instant::now());
    assert_eq!(
        c.resource_versions[&ResourceType::Cluster]
            .keys()
            .cloned()
            .collect::<Vec<String>>(),
        ["b"]
    );
    let dup = delta(&c, vec![add("x"), add("x")], vec![]).unwrap_err();
    assert_eq!(dup, "duplicate Cluster \"x\"");
}

#[test]
fn warming_waits_for_eds_until_initial_fetch_timeout_then_serves_without_endpoints() {
    let mut c = core();
    let t0 = Instant::now();
    let mut cl = any_to_json(CDS, &eds_cluster("backend", "backend").encode_to_vec()).unwrap();
    cl["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = json!("1s");
    let any = crate::convert::json_to_any(CDS, &cl).unwrap();
    let cand = c
        .check(ResourceType::Cluster, Update::Sotw(vec![any]), t0)
        .unwrap();
    assert!(!cand.complete, "warming: the assignment has not arrived");
    c.commit(cand, t0);
    assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(1)));
    assert!(c.tick(t0 + Duration::from_millis(500)).is_none());
    let b = c
        .tick(t0 + Duration::from_secs(1))
        .expect("applied at the timeout");
    assert!(b.cluster("backend").unwrap().endpoints.is_empty());
    assert!(
        c.tick(t0 + Duration::from_secs(2)).is_none(),
        "applied once"
    );
}

#[test]
fn rds_names_follow_the_listeners() {
    let mut c = core();
    push(
        &mut c,
        ResourceType::Listener,
        vec![
            any(LDS, &listener("a", 10001, rds("r1"))),
            any(LDS, &listener("b", 10002, rds("r2"))),
        ],
    )
    .unwrap();
    assert_eq!(names(&c, ResourceType::Route), ["r1", "r2"]);
    push(
        &mut c,
        ResourceType::Listener,
        vec![any(LDS, &listener("b", 10002, rds("r3")))],
    )
    .unwrap();
    assert_eq!(
        names(&c, ResourceType::Route),
        ["r3"],
        "r1 and r2 unsubscribed"
    );
}

fn endpoints_of(c: &config::Cluster) -> Vec<String> {
    c.endpoints
        .iter()
        .map(|e| {
            format!(
                "{:?}:{} P{} {:?}",
                e.address, e.weight, e.priority, e.health
            )
        })
        .collect()
}

#[test]
fn an_endpoint_only_change_is_applied_in_place_and_anything_more_is_not() {
    let mut c = core();
    push(
        &mut c,
        ResourceType::Cluster,
        vec![any(CDS, &eds_cluster("backend", "backend-eds"))],
    )
    .unwrap();
    push(
        &mut c,
        ResourceType::Endpoint,
        vec![any(EDS, &cla("backend-eds"))],
    )
    .unwrap();
    let later = Instant::now() + Duration::from_secs(60);
    let _ = c.tick(later);
    assert!(c.is_ready() && !c.warming());

    let mut moved = cla("backend-eds");
    moved.endpoints[0].lb_endpoints[0] = lb("127.0.0.1", 9100, HealthStatus::Healthy, Some(3));
    let cand = c
        .check(
            ResourceType::Endpoint,
            Update::Sotw(vec![any(EDS, &moved)]),
            later,
        )
        .unwrap();
    let Some(Apply::Endpoints(clusters)) = &cand.apply else {
        panic!("an endpoint-only change: {:?}", cand.apply)
    };
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].name.as_str(), "backend");
    let moved_eps = [
        "Ip(127.0.0.1:9100):3 P0 Healthy",
        "Ip(127.0.0.1:9002):1 P0 Unhealthy",
        "Ip(127.0.0.1:9003):1 P0 Draining",
        "Ip(127.0.0.1:9004):1 P1 Healthy",
    ];
    assert_eq!(endpoints_of(&clusters[0]), moved_eps);
    let whole = c.full(&cand).unwrap();
    assert_eq!(
        endpoints_of(whole.cluster("backend").unwrap()),
        moved_eps,
        "the whole version it stands for has the same endpoints"
    );

    // An assignment the engine refuses takes the whole path and its exact NACK detail.
    let mut bad = moved.clone();
    bad.endpoints[0].lb_endpoints[0] = lb("127.0.0.1", 70000, HealthStatus::Healthy, None);
    let err = c
        .check(
            ResourceType::Endpoint,
            Update::Sotw(vec![any(EDS, &bad)]),
            later,
        )
        .unwrap_err();
    assert!(
        err.contains("ClusterLoadAssignment") || err.contains("load_assignment"),
        "{err}"
    );

    // Delta removal of an assignment is not endpoint-only.
    let cand = c
        .check(
            ResourceType::Endpoint,
            Update::Delta {
                added: vec![],
                removed: vec!["backend-eds".into()],
            },
            later,
        )
        .unwrap();
    assert!(
        matches!(cand.apply, Some(Apply::Full { .. })),
        "{:?}",
        cand.apply
    );
}

#[test]
fn a_default_filter_chain_subscribes_and_inlines_its_rds() {
    let mut c = core();
    let mut l = listener("d", 10003, rds("rd"));
    l.default_filter_chain = Some(l.filter_chains.remove(0));
    push(&mut c, ResourceType::Listener, vec![any(LDS, &l)]).unwrap();
    assert_eq!(names(&c, ResourceType::Route), ["rd"]);
    let inline =
        http_connection_manager::RouteSpecifier::RouteConfig(route_config("inline", "nope", None));
    let mut bad = listener("e", 10004, inline);
    bad.default_filter_chain = Some(bad.filter_chains.remove(0));
    let err = push(&mut c, ResourceType::Listener, vec![any(LDS, &bad)]).unwrap_err();
    assert!(
        err.starts_with(
            "Listener \"e\": default_filter_chain.filters[0].typed_config.route_config"
        ),
        "{err}"
    );
}

mod secrets;
mod warming;

#[test]
fn a_resent_sotw_resource_is_not_decoded_again_and_keeps_its_json() {
    let mut c = core();
    let a = any(CDS, &eds_cluster("a", "a"));
    push(&mut c, ResourceType::Cluster, vec![a.clone()]).unwrap();
    let first = c.accepted(ResourceType::Cluster).unwrap()["a"].clone();
    // The same bytes again, next to a new cluster: `a` is the very same JSON (no decode).
    push(
        &mut c,
        ResourceType::Cluster,
        vec![a.clone(), any(CDS, &eds_cluster("b", "b"))],
    )
    .unwrap();
    let again = c.accepted(ResourceType::Cluster).unwrap();
    assert!(Arc::ptr_eq(&first, &again["a"]));
    assert_eq!(again["b"].json()["name"], "b");
    // Different bytes for `a`: decoded, a new JSON with the change.
    let mut changed = eds_cluster("a", "a");
    changed.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 7,
        nanos: 0,
    });
    push(&mut c, ResourceType::Cluster, vec![any(CDS, &changed)]).unwrap();
    let now = c.accepted(ResourceType::Cluster).unwrap();
    assert!(!Arc::ptr_eq(&first, &now["a"]));
    assert_eq!(now["a"].json()["connect_timeout"], "7s");
    // A cached resource is still checked: the same bytes twice in one response is a duplicate.
    let dup = c.check(
        ResourceType::Cluster,
        Update::Sotw(vec![any(CDS, &changed), any(CDS, &changed)]),
        Instant::now(),
    );
    assert!(dup.unwrap_err().contains("duplicate"));
}

#[test]
fn sorted_subset_walks_both_sets_in_order() {
    let s = |v: &[&str]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<BTreeSet<String>>()
    };
    let (a, abc, bd) = (s(&["a"]), s(&["a", "b", "c"]), s(&["b", "d"]));
    assert!(sorted_subset(&a, &abc));
    assert!(sorted_subset(&s(&[]), &a));
    assert!(sorted_subset(&abc, &abc));
    assert!(!sorted_subset(&abc, &a));
    assert!(!sorted_subset(&bd, &abc), "d is missing");
    assert!(!sorted_subset(&s(&["0"]), &abc), "a name before the first");
}

#[test]
fn a_static_eds_cluster_of_the_bootstrap_is_subscribed_waited_for_and_updated_in_place() {
    let mut b = base();
    b["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({"name": "static-backend", "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"ads": {}}, "service_name": "static-eds"}}),
        );
    let boot = sluice_engine::config::from_yaml_str(&b.to_string()).unwrap();
    let mut c = Core::new(b, boot.dynamic_resources.unwrap(), Instant::now());
    assert_eq!(names(&c, ResourceType::Endpoint), ["static-eds"]);
    push(&mut c, ResourceType::Listener, vec![]).unwrap();
    assert!(
        !push(&mut c, ResourceType::Cluster, vec![]).unwrap(),
        "the bootstrap's EDS cluster waits for its assignment, as Envoy's init does"
    );
    assert!(!c.is_ready());
    assert_eq!(names(&c, ResourceType::Endpoint), ["static-eds"]);
    let cand = c
        .check(
            ResourceType::Endpoint,
            Update::Sotw(vec![any(EDS, &cla("static-eds"))]),
            Instant::now(),
        )
        .unwrap();
    assert!(cand.complete);
    let Some(Apply::Full { bootstrap }) = &cand.apply else {
        panic!("the first assignment is a whole version: {:?}", cand.apply)
    };
    assert_eq!(
        endpoints_of(bootstrap.cluster("static-backend").unwrap()).len(),
        4
    );
    c.commit(cand, Instant::now());
    assert!(c.is_ready());
    assert_eq!(names(&c, ResourceType::Endpoint), ["static-eds"], "kept");

    let mut moved = cla("static-eds");
    moved.endpoints[0].lb_endpoints[0] = lb("127.0.0.1", 9100, HealthStatus::Healthy, Some(3));
    let cand = check_eds(&c, &moved);
    let Some(Apply::Endpoints(clusters)) = &cand.apply else {
        panic!("an endpoint-only change: {:?}", cand.apply)
    };
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].name.as_str(), "static-backend");
    assert_eq!(
        endpoints_of(&clusters[0])[0],
        "Ip(127.0.0.1:9100):3 P0 Healthy"
    );
}
