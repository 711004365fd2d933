//! Per-resource warming (Envoy's listener and cluster managers): a listener waiting for its RDS
//! or a cluster waiting for its assignment holds back nothing else; its previous version serves
//! meanwhile; the initial fetch timeout still ends the wait; `/ready` still waits for the first
//! complete configuration.

use std::time::{Duration, Instant};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{ConfigSource, HealthStatus},
        extensions::filters::network::http_connection_manager::v3::{
            http_connection_manager::RouteSpecifier, Rds,
        },
    },
    google::protobuf,
};
use serde_json::{json, Value};

use crate::{
    convert::{json_to_any, Any, ResourceType},
    core::{Apply, Core, Update},
    fixtures::*,
};

use ResourceType::{Cluster, Endpoint, Listener, Route};

/// Checks and commits one State-of-the-world response at `t`; what it applies.
fn step(c: &mut Core, ty: ResourceType, items: Vec<Any>, t: Instant) -> Option<Apply> {
    step_doc(c, ty, items, t).0
}

/// [`step`], and the document of what runs after it.
fn step_doc(c: &mut Core, ty: ResourceType, items: Vec<Any>, t: Instant) -> (Option<Apply>, Value) {
    let mut cand = c.check(ty, Update::Sotw(items), t).unwrap();
    let apply = cand.apply.take();
    c.commit(cand, t);
    (apply, c.serving_doc())
}

/// The document of a whole-version apply.
fn doc((a, d): (Option<Apply>, Value)) -> Value {
    match a {
        Some(Apply::Full { .. }) => d,
        other => panic!("expected a whole version, got {other:?}"),
    }
}

fn named<'a>(doc: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    doc["static_resources"][kind]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

/// The route configuration listener `l` runs (inlined from RDS).
fn route_of<'a>(doc: &'a Value, l: &str) -> &'a Value {
    let l = named(doc, "listeners", l).unwrap_or_else(|| panic!("no listener {l:?}"));
    &l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
}

/// The cluster its first route goes to.
fn first_cluster(rc: &Value) -> &Value {
    &rc["virtual_hosts"][0]["routes"][0]["route"]["cluster"]
}

fn set(items: &[(ResourceType, &str)]) -> std::collections::BTreeSet<(ResourceType, String)> {
    items.iter().map(|(t, n)| (*t, n.to_string())).collect()
}

fn http(name: &str, port: u32, route: &str) -> Any {
    any(LDS, &listener(name, port, rds(route)))
}

/// A tcp_proxy listener `name` to `cluster`.
fn tcp(name: &str, port: u32, cluster: &str) -> Any {
    json_to_any(
        LDS,
        &json!({
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "tcp", "cluster": cluster}}]}]
        }),
    )
    .unwrap()
}

/// Serving and ready: EDS clusters c1 (e1) and c2 (e2) with endpoints; listeners a (RDS ra) and
/// b (RDS rb), both routes to c1.
fn serving(t: Instant) -> Core {
    let mut c = core();
    let clusters = vec![
        any(CDS, &eds_cluster("c1", "e1")),
        any(CDS, &eds_cluster("c2", "e2")),
    ];
    step(&mut c, Cluster, clusters, t);
    step(
        &mut c,
        Endpoint,
        vec![any(EDS, &cla("e1")), any(EDS, &cla("e2"))],
        t,
    );
    step(
        &mut c,
        Listener,
        vec![http("a", 10001, "ra"), http("b", 10002, "rb")],
        t,
    );
    let routes = vec![
        any(RDS, &route_config("ra", "c1", None)),
        any(RDS, &route_config("rb", "c1", None)),
    ];
    doc(step_doc(&mut c, Route, routes, t));
    assert!(c.is_ready() && !c.warming());
    c
}

#[test]
fn a_listener_waiting_for_rds_does_not_hold_back_another_listeners_route_change() {
    let t = Instant::now();
    let mut c = serving(t);
    let lds = vec![http("a", 10001, "slow"), http("b", 10002, "rb")];
    let d = doc(step_doc(&mut c, Listener, lds, t));
    assert_eq!(
        route_of(&d, "a")["name"],
        "ra",
        "a warms: its old version runs"
    );
    assert!(c.warming());
    assert_eq!(c.warming_resources(), &set(&[(Listener, "a")]));
    assert_eq!(
        names(&c, Route),
        ["ra", "rb", "slow"],
        "the route of a's old version stays subscribed"
    );

    let d = doc(step_doc(
        &mut c,
        Route,
        vec![any(RDS, &route_config("rb", "c2", None))],
        t,
    ));
    assert_eq!(first_cluster(route_of(&d, "b")), "c2", "b's change at once");
    assert_eq!(route_of(&d, "a")["name"], "ra", "a's old version serves");
    assert!(c.warming());

    let d = doc(step_doc(
        &mut c,
        Route,
        vec![any(RDS, &route_config("slow", "c2", None))],
        t,
    ));
    assert_eq!(
        route_of(&d, "a")["name"],
        "slow",
        "a's new version replaces it"
    );
    assert_eq!(first_cluster(route_of(&d, "b")), "c2");
    assert!(!c.warming());
    assert_eq!(names(&c, Route), ["rb", "slow"], "ra unsubscribed");
}

#[test]
fn a_new_listener_warms_left_out() {
    let t = Instant::now();
    let mut c = serving(t);
    let lds = vec![
        http("a", 10001, "ra"),
        http("b", 10002, "rb"),
        http("n", 10003, "rn"),
    ];
    let d = doc(step_doc(&mut c, Listener, lds, t));
    assert!(named(&d, "listeners", "n").is_none(), "n warms, left out");
    let d = doc(step_doc(
        &mut c,
        Route,
        vec![any(RDS, &route_config("ra", "c2", None))],
        t,
    ));
    assert!(named(&d, "listeners", "n").is_none(), "n is not there yet");
    assert_eq!(first_cluster(route_of(&d, "a")), "c2");
    let d = doc(step_doc(
        &mut c,
        Route,
        vec![any(RDS, &route_config("rn", "c1", None))],
        t,
    ));
    assert_eq!(first_cluster(route_of(&d, "n")), "c1");
    assert!(!c.warming());
}

#[test]
fn a_new_eds_cluster_warming_does_not_hold_back_other_cluster_updates() {
    let t = Instant::now();
    let mut c = serving(t);
    let mut c1 = eds_cluster("c1", "e1");
    c1.connect_timeout = Some(protobuf::Duration {
        seconds: 5,
        nanos: 0,
    });
    let cds = vec![
        any(CDS, &c1),
        any(CDS, &eds_cluster("c2", "e2")),
        any(CDS, &eds_cluster("c3", "e3")),
    ];
    let d = doc(step_doc(&mut c, Cluster, cds, t));
    assert!(named(&d, "clusters", "c3").is_none(), "c3 warms, left out");
    assert_eq!(
        named(&d, "clusters", "c1").unwrap()["connect_timeout"],
        "5s"
    );
    assert_eq!(c.warming_resources(), &set(&[(Cluster, "c3")]));
    assert!(
        c.cds_paused(),
        "Envoy holds the CDS answer while a cluster warms"
    );

    // An RDS route to the warming cluster is taken (Envoy: 503 NC until it is active).
    let d = doc(step_doc(
        &mut c,
        Route,
        vec![any(RDS, &route_config("rb", "c3", None))],
        t,
    ));
    assert_eq!(first_cluster(route_of(&d, "b")), "c3");
    assert!(named(&d, "clusters", "c3").is_none());

    // Another cluster's endpoints change in place meanwhile.
    let mut moved = cla("e1");
    moved.endpoints[0].lb_endpoints[0] = lb("127.0.0.1", 9100, HealthStatus::Healthy, Some(3));
    match step(&mut c, Endpoint, vec![any(EDS, &moved)], t) {
        Some(Apply::Endpoints(cl)) => {
            let names: Vec<&str> = cl.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["c1"]);
        }
        other => panic!("an endpoint-only change: {other:?}"),
    }

    let d = doc(step_doc(&mut c, Endpoint, vec![any(EDS, &cla("e3"))], t));
    assert_eq!(
        named(&d, "clusters", "c3").unwrap()["load_assignment"]["cluster_name"],
        "c3"
    );
    assert!(!c.warming() && !c.cds_paused());
}

#[test]
fn a_tcp_proxy_to_a_warming_cluster_is_applied_as_envoy_does() {
    let t = Instant::now();
    let mut c = serving(t);
    let lds = |t_cluster: &str, extra: bool| {
        let mut v = vec![
            http("a", 10001, "ra"),
            http("b", 10002, "rb"),
            tcp("t", 10004, t_cluster),
        ];
        if extra {
            v.push(tcp("u", 10005, "c3"));
        }
        v
    };
    let d = doc(step_doc(&mut c, Listener, lds("c1", false), t));
    assert_eq!(
        named(&d, "listeners", "t").unwrap()["filter_chains"][0]["filters"][0]["typed_config"]
            ["cluster"],
        "c1"
    );
    let cds = vec![
        any(CDS, &eds_cluster("c1", "e1")),
        any(CDS, &eds_cluster("c2", "e2")),
        any(CDS, &eds_cluster("c3", "e3")),
    ];
    let d = doc(step_doc(&mut c, Cluster, cds, t));
    assert!(named(&d, "clusters", "c3").is_none(), "c3 warms");
    // As in Envoy, a tcp_proxy looks its cluster up per connection: t and the new u are applied
    // at once and close their connections (NC) until c3 is active; only c3 warms.
    let d = doc(step_doc(&mut c, Listener, lds("c3", true), t));
    assert_eq!(
        named(&d, "listeners", "t").unwrap()["filter_chains"][0]["filters"][0]["typed_config"]
            ["cluster"],
        "c3"
    );
    assert!(named(&d, "listeners", "u").is_some());
    assert_eq!(c.warming_resources(), &set(&[(Cluster, "c3")]));
    let d = doc(step_doc(&mut c, Endpoint, vec![any(EDS, &cla("e3"))], t));
    let tcp_cluster = |l| {
        named(&d, "listeners", l).unwrap()["filter_chains"][0]["filters"][0]["typed_config"]
            ["cluster"]
            .clone()
    };
    assert_eq!(tcp_cluster("t"), "c3");
    assert_eq!(tcp_cluster("u"), "c3");
    assert!(!c.warming());
}

#[test]
fn a_warming_listener_times_out_to_an_empty_route_configuration() {
    let t = Instant::now();
    let mut c = serving(t);
    let slow = RouteSpecifier::Rds(Rds {
        config_source: Some(ConfigSource {
            initial_fetch_timeout: Some(protobuf::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..ads()
        }),
        route_config_name: "slow".into(),
    });
    let lds = vec![
        any(LDS, &listener("a", 10001, slow)),
        http("b", 10002, "rb"),
    ];
    let d = doc(step_doc(&mut c, Listener, lds, t));
    assert_eq!(route_of(&d, "a")["name"], "ra");
    assert_eq!(c.next_deadline(), Some(t + Duration::from_secs(1)));
    assert!(c.tick(t + Duration::from_millis(500)).is_none());
    c.tick(t + Duration::from_secs(1))
        .expect("applied at the timeout");
    let d = c.serving_doc();
    let rc = route_of(&d, "a");
    assert_eq!(rc["name"], "slow");
    assert!(rc["virtual_hosts"].is_null(), "an empty stand-in: {rc}");
    assert!(!c.warming());
    assert_eq!(c.next_deadline(), None);
    assert!(c.tick(t + Duration::from_secs(2)).is_none(), "applied once");
}

#[test]
fn ready_still_waits_for_the_first_complete_configuration() {
    let t = Instant::now();
    let mut c = core();
    let cds = vec![any(CDS, &eds_cluster("c1", "e1"))];
    assert!(step(&mut c, Cluster, cds, t).is_none());
    doc(step_doc(&mut c, Endpoint, vec![any(EDS, &cla("e1"))], t));
    assert!(!c.is_ready(), "LDS has not answered");
    assert!(
        step(&mut c, Listener, vec![http("a", 10001, "ra")], t).is_none(),
        "before the first complete configuration, the whole state waits"
    );
    assert!(!c.is_ready() && c.warming());
    let d = doc(step_doc(
        &mut c,
        Route,
        vec![any(RDS, &route_config("ra", "c1", None))],
        t,
    ));
    assert_eq!(first_cluster(route_of(&d, "a")), "c1");
    assert!(c.is_ready() && !c.warming());
}

#[test]
fn an_inline_route_to_a_warming_cluster_is_applied() {
    // Envoy counts a warming cluster as known (`validate_clusters` accepts it): the listener is
    // active and its route answers 503 NC until the cluster is.
    let t = Instant::now();
    let mut c = serving(t);
    let cds = vec![
        any(CDS, &eds_cluster("c1", "e1")),
        any(CDS, &eds_cluster("c2", "e2")),
        any(CDS, &eds_cluster("c3", "e3")),
    ];
    doc(step_doc(&mut c, Cluster, cds, t));
    let inline = RouteSpecifier::RouteConfig(route_config("inline", "c3", None));
    let lds = vec![
        http("a", 10001, "ra"),
        http("b", 10002, "rb"),
        any(LDS, &listener("i", 10006, inline)),
    ];
    let d = doc(step_doc(&mut c, Listener, lds, t));
    assert_eq!(first_cluster(route_of(&d, "i")), "c3");
    assert!(named(&d, "clusters", "c3").is_none(), "c3 still warms");
    assert_eq!(c.warming_resources(), &set(&[(Cluster, "c3")]));
}
