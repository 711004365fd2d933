//! `sluice proxy-status` on the real `sluice proxy` driven by the scripted ADS server, State of
//! the world and Delta (issue 12, test 5): every type SYNCED after the first snapshot; a
//! snapshot with a bad listener, then one with a bad cluster, shows `NACK` with the error the
//! client sent the server in `error_detail` (naming the resource and the field) within one
//! second, and a good snapshot makes it SYNCED again; a listener whose route never comes is
//! SYNCED and `warming` in `/xds_status`; the server stopped shows the control plane
//! disconnected and every type STALE within one second; restarted, SYNCED again. The observed
//! latencies are printed. A static bootstrap shows NOT SENT everywhere and `(static config)`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::{
    agent_node::Node,
    l7_pods::L7Pods,
    upstream::{
        harness::{free_port, sluice_bin, ProxyProcess},
        TestUpstream,
    },
    xds_script::{bootstrap, listener, rds, routes, static_cluster, web_backend},
    xds_server::{Snapshot, XdsServer, CDS, LDS},
};

/// The bound issue 12 sets for a NACK or a lost control plane to show.
const BOUND: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);
const NODE: &str = "sidecar~127.0.0.1~test.default~default.svc.cluster.local";

/// `sluice proxy-status 127.0.0.1:ADMIN -o OUTPUT` (stdout; panics on failure).
async fn proxy_status(admin: u16, output: &str) -> String {
    let target = format!("127.0.0.1:{admin}");
    let output = output.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(sluice_bin())
            .args(["proxy-status", &target, "-o", &output])
            .output()
            .expect("run sluice proxy-status");
        assert!(
            out.status.success(),
            "sluice proxy-status {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// The proxy's row of `-o json`.
async fn row(admin: u16) -> Value {
    let v: Value = serde_json::from_str(&proxy_status(admin, "json").await).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    v[0].clone()
}

fn words(r: &Value) -> [String; 4] {
    ["CDS", "LDS", "EDS", "RDS"].map(|t| r[t].as_str().unwrap_or("").to_string())
}

/// Polls every 50 ms until `done(row)`; returns the row and how long it took (panics after 20 s).
async fn until(admin: u16, what: &str, done: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let r = row(admin).await;
        if done(&r) {
            return (r, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "proxy-status never showed {what}; last: {r:#}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn all_synced(r: &Value) -> bool {
    words(r).iter().all(|w| w == "SYNCED")
}

/// Pushes `snap`, whose `ty` resource is bad: proxy-status shows `NACK` for `ty` within the
/// bound, with the exact `error_detail` the server received (which contains `names`), in the
/// JSON and in the line after the table. Prints the observed latency.
async fn nacked(
    server: &XdsServer,
    admin: u16,
    api_type: &str,
    snap: Snapshot,
    (ty, type_url): (&str, &str),
    names: &[&str],
) {
    let version = snap.version.clone();
    let pushed = Instant::now();
    server.set(snap);
    let (r, _) = until(admin, &format!("{ty} NACK"), |r| r[ty] == "NACK").await;
    let latency = pushed.elapsed();
    let sent = server
        .wait_for(type_url, &version)
        .await
        .error
        .unwrap_or_else(|| panic!("{ty} v{version} was ACKed"));
    let nack = &r["nacks"][0];
    assert_eq!(
        (&nack["type"], &nack["version_info"]),
        (&json!(ty), &json!(version)),
        "{r:#}"
    );
    assert_eq!(
        nack["error"], sent,
        "proxy-status shows the error_detail the server received"
    );
    for n in names {
        assert!(
            sent.contains(n),
            "the error names the resource and field {n:?}: {sent}"
        );
    }
    let table = proxy_status(admin, "short").await;
    let line = format!("{NODE} {ty} NACK of version {version:?}: {sent}");
    assert!(table.contains(&line), "{table}");
    println!("{api_type}: {ty} NACK shown {latency:?} after the push\n{table}");
    assert!(latency < BOUND, "{ty} NACK shown after {latency:?}");
}

async fn scenario(api_type: &str) {
    let up = TestUpstream::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let mut server = XdsServer::start().await;
    let snapshot = |v: &str, extra: Vec<(&'static str, Value)>| {
        Snapshot::from_json(v, &web_backend(port, up.port(), extra))
    };
    server.set(snapshot("1", vec![]));
    let proxy = ProxyProcess::start(&bootstrap(admin, server.addr, api_type), admin);

    // 1. Every type SYNCED after the first snapshot; NAME, CLUSTER, ISTIOD from the client.
    let (r, _) = until(admin, "all SYNCED", all_synced).await;
    assert_eq!(r["name"], NODE);
    assert_eq!(r["cluster"], "test");
    assert_eq!(r["control_plane"], server.addr.to_string());
    assert_eq!(r["ECDS"], "NOT SENT");
    assert_eq!(r["version"], "sluice/0.1.0");
    let table = proxy_status(admin, "short").await;
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"],
        "{table}"
    );
    assert_eq!(table.matches("SYNCED").count(), 4, "{table}");

    // 2. A listener naming a cluster that does not exist: NACK with the client's error.
    let mut dangling = listener(
        "web3",
        free_port(),
        json!({"route_config": {"name": "inline", "virtual_hosts": [{"name": "x",
            "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "ghost"}}]}]}}),
    );
    dangling.1["name"] = json!("web3");
    nacked(
        &server,
        admin,
        api_type,
        snapshot("2", vec![dangling]),
        ("LDS", LDS),
        &[
            "Listener \"web3\": filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster",
            "unknown cluster \"ghost\"",
        ],
    )
    .await;
    // 3. A good snapshot: SYNCED again.
    server.set(snapshot("3", vec![]));
    until(admin, "SYNCED after the fix", all_synced).await;

    // 3b. A cluster with a field sluice does not implement: CDS NACK; then SYNCED again.
    let mut bad = static_cluster("bad", up.port());
    bad.1["close_connections_on_host_health_failure"] = json!(true);
    nacked(
        &server,
        admin,
        api_type,
        snapshot("4", vec![bad]),
        ("CDS", CDS),
        &["Cluster \"bad\": close_connections_on_host_health_failure: not supported"],
    )
    .await;
    server.set(snapshot("5", vec![]));
    until(admin, "SYNCED after the cluster fix", all_synced).await;

    // 3c. The listener now names a route that never comes (no fetch timeout): LDS is ACKed
    // (SYNCED) but the accepted state is not applied; /xds_status says it is warming.
    let mut hcm = rds("never");
    hcm["rds"]["config_source"]["initial_fetch_timeout"] = json!("0s");
    server.set(snapshot("6", vec![listener("web", port, hcm)]));
    until(admin, "LDS v6 ACKed and warming", |r| {
        r["xds_status"]["warming"] == true
            && r["LDS"] == "SYNCED"
            && r["xds_status"]["types"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["type"] == "LDS"))
                .is_some_and(|t| t["last_ack"]["version_info"] == "6")
    })
    .await;
    server.set(snapshot("7", vec![]));
    until(admin, "applied again", |r| {
        all_synced(r) && r["xds_status"]["warming"] == false
    })
    .await;

    // 4. The control plane stops: disconnected and STALE within a second.
    let stopped = Instant::now();
    server.stop().await;
    let (r, _) = until(admin, "a disconnected control plane", |r| {
        r["control_plane"]
            .as_str()
            .is_some_and(|c| c.contains("(disconnected"))
            && words(r).iter().all(|w| w == "STALE")
    })
    .await;
    let lost_latency = stopped.elapsed();
    assert!(
        r["control_plane"]
            .as_str()
            .unwrap()
            .starts_with(&server.addr.to_string()),
        "{r:#}"
    );
    let table = proxy_status(admin, "short").await;
    assert!(table.contains("(disconnected"), "{table}");
    println!(
        "{api_type}: disconnected control plane shown {lost_latency:?} after the stop\n{table}"
    );
    assert!(
        lost_latency < BOUND,
        "disconnect shown after {lost_latency:?}"
    );

    // 5. Back: the client reconnects (backoff) and every type is SYNCED again.
    server.restart().await;
    let (r, back) = until(admin, "SYNCED after the restart", |r| {
        all_synced(r) && r["control_plane"] == server.addr.to_string()
    })
    .await;
    assert!(r["xds_status"]["control_plane"]["streams"].as_u64() >= Some(2));
    println!("{api_type}: SYNCED again {back:?} after the restart");
    let log = proxy.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_nack_and_lost_control_plane_show_within_a_second() {
    scenario("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_nack_and_lost_control_plane_show_within_a_second() {
    scenario("DELTA_GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_bootstrap_shows_not_sent_and_static_config() {
    let (admin, port) = (free_port(), free_port());
    // JSON is YAML: the xDS tests' resource builders make the static config too.
    let hcm = json!({"route_config": routes("r", &[("/", "backend")]).1});
    let yaml = json!({
        "node": {"id": "static-proxy", "cluster": "c1"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [listener("web", port, hcm).1],
            "clusters": [static_cluster("backend", 9).1],
        },
    })
    .to_string();
    let proxy = ProxyProcess::start(&yaml, admin);
    let r = row(admin).await;
    assert_eq!(r["name"], "static-proxy");
    assert_eq!(r["cluster"], "c1");
    assert_eq!(words(&r), ["NOT SENT"; 4].map(String::from));
    assert_eq!(r["control_plane"], "(static config)");
    drop(proxy);
}

/// A node-mode pod (no xDS in the agent yet) by its netns through the agent's control socket:
/// named by the TARGET (its config has no node id), NOT SENT everywhere, `(static config)`.
#[test]
fn a_node_mode_pod_by_netns_shows_static_config() {
    let p = L7Pods::new("pst");
    let node = Node::start_with("pst", &["--config", &p.cfg]);
    node.enroll(&p.client, &["--mode", "node"]);
    let out = node.sluice(&["proxy-status", p.client.name(), "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v[0]["name"], p.client.name(), "{v:#}");
    assert_eq!(v[0]["control_plane"], "(static config)");
    assert_eq!(words(&v[0]), ["NOT SENT"; 4].map(String::from));
}
