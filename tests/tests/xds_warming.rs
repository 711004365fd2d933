//! Per-resource warming against the real binary and Envoy 1.40: listener `slow`'s route is
//! withheld while listener `fast`'s route changes, and a new EDS cluster's assignment is
//! withheld while a route names it. `fast` follows its new route at once, `slow` keeps its old
//! version until its route arrives, the route to the warming cluster answers 503 (Envoy's `NC`)
//! until its assignment arrives; CDS is answered only once no cluster warms (Envoy's CDS
//! pause). Envoy observes the same ACKs, request outcomes and `/config_dump` warming states.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::{
    upstream::{harness::free_port, TestUpstream},
    xds_run::{admin_get, start_proxy, Kind, Run},
    xds_script::{bootstrap, cla, eds_cluster, listener, rds, routes, static_cluster},
    xds_server::{Snapshot, XdsServer, CDS, EDS, LDS, RDS},
};

/// What admin `/config_dump` shows of the dynamic listeners (the RDS name of each state) and
/// the warming clusters: `slow: active r-slow warming r-slow-2; warming clusters: late`.
async fn dump(admin: u16) -> String {
    let body = admin_get(admin, "/config_dump")
        .await
        .map(|r| r.1)
        .unwrap_or_default();
    let d: Value = serde_json::from_str(&body).unwrap_or_default();
    let configs = d["configs"].as_array().cloned().unwrap_or_default();
    let of = |suffix: &str| {
        configs
            .iter()
            .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for l in of("ListenersConfigDump")["dynamic_listeners"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut line = l["name"].as_str().unwrap_or("?").to_string();
        for state in ["active_state", "warming_state"] {
            let hcm = &l[state]["listener"]["filter_chains"][0]["filters"][0]["typed_config"];
            if let Some(r) = hcm["rds"]["route_config_name"].as_str() {
                line.push_str(&format!(" {state} {r}"));
            }
        }
        out.push(line);
    }
    let clusters = of("ClustersConfigDump");
    let warming: Vec<&str> = clusters["dynamic_warming_clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"]["name"].as_str())
        .collect();
    format!("{}; warming clusters: {warming:?}", out.join(", "))
}

/// Whether CDS has been answered for one of `versions`, waiting up to 10 s for it if `wait`.
async fn cds_answered(server: &XdsServer, versions: &[&str], wait: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(if wait { 10 } else { 0 });
    loop {
        let answered = server
            .log()
            .iter()
            .any(|a| a.type_url == CDS && versions.contains(&a.version.as_str()));
        if answered || Instant::now() >= deadline {
            return answered;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scenario(api_type: &str, kind: Kind) -> Vec<String> {
    let (a, b) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
    );
    let (p_slow, p_fast, admin) = (free_port(), free_port(), free_port());
    let server = XdsServer::start().await;
    let mut run = Run {
        strict: kind == Kind::Sluice,
        trace: Vec::new(),
        ports: vec![(p_slow, "slow"), (p_fast, "fast")],
    };
    // The withheld route never times out (0s = wait forever): only its arrival ends the wait.
    let mut withheld = rds("r-slow-2");
    withheld["rds"]["config_source"]["initial_fetch_timeout"] = json!("0s");
    let clusters = || {
        [
            static_cluster("one", a.port()),
            static_cluster("two", b.port()),
        ]
    };

    // v1: both listeners route to "one".
    let mut v1 = vec![
        listener("slow", p_slow, rds("r-slow")),
        listener("fast", p_fast, rds("r-fast")),
        routes("r-slow", &[("/", "one")]),
        routes("r-fast", &[("/", "one")]),
    ];
    v1.extend(clusters());
    server.set(Snapshot::from_json("1", &v1));
    let proxy = start_proxy(kind, &bootstrap(admin, server.addr, api_type), admin);
    for ty in [CDS, LDS, RDS] {
        run.ack(&server, ty, "1").await;
    }
    run.expect(p_slow, "/", 200, "a").await;
    run.expect(p_fast, "/", 200, "a").await;

    // v2: "slow" moves to a route that is withheld; "fast"'s route moves to "two".
    let mut v2 = vec![
        listener("slow", p_slow, withheld.clone()),
        listener("fast", p_fast, rds("r-fast")),
        routes("r-slow", &[("/", "one")]),
        routes("r-fast", &[("/", "two")]),
    ];
    v2.extend(clusters());
    server.set(Snapshot::from_json("2", &v2));
    run.ack(&server, LDS, "2").await;
    run.ack(&server, RDS, "2").await;
    run.expect(p_fast, "/", 200, "b").await;
    run.expect(p_slow, "/", 200, "a").await;
    run.trace.push(dump(admin).await);

    // v3: a new EDS cluster whose assignment is withheld, and a route to it on "fast".
    let mut v3 = vec![
        listener("slow", p_slow, withheld.clone()),
        listener("fast", p_fast, rds("r-fast")),
        routes("r-slow", &[("/", "one")]),
        routes("r-fast", &[("/late", "late"), ("/", "two")]),
        eds_cluster("late"),
    ];
    v3.extend(clusters());
    server.set(Snapshot::from_json("3", &v3));
    run.ack(&server, RDS, "3").await;
    run.expect(p_fast, "/late", 503, "").await;
    run.expect(p_fast, "/", 200, "b").await;
    run.expect(p_slow, "/", 200, "a").await;
    run.trace.push(dump(admin).await);
    // Envoy pauses CDS while a cluster warms: its answer waits until "late" is active.
    let early = cds_answered(&server, &["3"], false).await;
    run.trace
        .push(format!("CDS v3 answered while late warms: {early}"));

    // v4: both withheld resources arrive.
    v3.push(routes("r-slow-2", &[("/", "two")]));
    v3.push(cla("late", &[a.port()]));
    server.set(Snapshot::from_json("4", &v3));
    run.ack(&server, RDS, "4").await;
    run.ack(&server, EDS, "4").await;
    let late = cds_answered(&server, &["3", "4"], true).await;
    run.trace
        .push(format!("CDS answered once late is active: {late}"));
    run.expect(p_slow, "/", 200, "b").await;
    run.expect(p_fast, "/late", 200, "a").await;
    run.trace.push(dump(admin).await);
    proxy.assert_no_panic();
    drop(proxy);
    run.trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warming_listener_or_cluster_holds_back_no_other_update_sotw() {
    scenario("GRPC", Kind::Sluice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warming_listener_or_cluster_holds_back_no_other_update_delta() {
    scenario("DELTA_GRPC", Kind::Sluice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_differential_warming() {
    for api_type in ["GRPC", "DELTA_GRPC"] {
        let sluice = scenario(api_type, Kind::Sluice).await;
        let envoy = scenario(api_type, Kind::Envoy).await;
        assert_eq!(sluice, envoy, "{api_type}");
    }
}
