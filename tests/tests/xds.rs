//! xDS end to end: the real `sluice proxy` binary on loopback, configured only by the scripted
//! ADS server (`sluice_tests::xds_server`), State-of-the-world and Delta. After each snapshot
//! version sluice has ACKed (or NACKed) it and curl through it reaches the expected upstream:
//! add listener / route / cluster, change a route, EDS endpoint add and remove, cluster removal,
//! listener replacement; a dangling cluster, an invalid regex and an unsupported field are
//! NACKed naming resource and field path while traffic stays on the previous version; the
//! server stopped mid-traffic and restarted: traffic keeps flowing, sluice reconnects and
//! converges (Delta: without a full resend).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::{
    upstream::{
        harness::{curl_opt, free_port, header, ProxyProcess},
        TestUpstream,
    },
    xds_server::{Snapshot, XdsServer, CDS, EDS, LDS, RDS},
};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn bootstrap(admin: u16, ads: std::net::SocketAddr, api_type: &str) -> String {
    let addr = format!(
        "socket_address: {{ address: {}, port_value: {} }}",
        ads.ip(),
        ads.port()
    );
    bootstrap_to(admin, &addr, api_type)
}

/// The bootstrap with the ADS cluster's endpoint `address` (a socket_address or a pipe).
fn bootstrap_to(admin: u16, address: &str, api_type: &str) -> String {
    format!(
        r#"node: {{ id: sidecar~127.0.0.1~test.default~default.svc.cluster.local, cluster: test, metadata: {{ NAMESPACE: default }} }}
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{ cluster_name: xds-grpc }}
  lds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 5s }}
  cds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 5s }}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              {address}
"#
    )
}

fn router() -> Value {
    json!([{"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}])
}

fn listener(name: &str, port: u16, hcm: Value) -> (&'static str, Value) {
    let mut tc = hcm;
    tc["@type"] = json!(HCM);
    tc["stat_prefix"] = json!(name);
    tc["http_filters"] = router();
    (
        LDS,
        json!({"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                "typed_config": tc}]}]}),
    )
}

fn rds(route: &str) -> Value {
    json!({"rds": {"route_config_name": route, "config_source": {"ads": {}, "resource_api_version": "V3"}}})
}

fn routes(name: &str, rules: &[(&str, &str)]) -> (&'static str, Value) {
    let routes: Vec<Value> = rules
        .iter()
        .map(
            |(prefix, cluster)| json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}}),
        )
        .collect();
    (
        RDS,
        json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}),
    )
}

fn eds_cluster(name: &str) -> (&'static str, Value) {
    (
        CDS,
        json!({"name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}),
    )
}

fn static_cluster(name: &str, port: u16) -> (&'static str, Value) {
    (
        CDS,
        json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}),
    )
}

fn cla(name: &str, ports: &[u16]) -> (&'static str, Value) {
    let eps: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
        .collect();
    (
        EDS,
        json!({"cluster_name": name, "endpoints": [{"locality": {"zone": "z1"}, "lb_endpoints": eps}]}),
    )
}

/// `(status, x-upstream)` of GET `path` on `port`; `None` when nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    tokio::task::spawn_blocking(move || curl_opt(&["-s", "-m", "3", &url]))
        .await
        .unwrap()
        .map(|(s, h, _)| (s, header(&h, "x-upstream").unwrap_or("").to_string()))
}

async fn expect(port: u16, path: &str, status: u16, upstream: &str) {
    let got = get(port, path).await;
    assert_eq!(
        got,
        Some((status, upstream.to_string())),
        "GET :{port}{path}"
    );
}

async fn ack(server: &XdsServer, ty: &str, version: &str) {
    let a = server.wait_for(ty, version).await;
    assert_eq!(a.error, None, "{ty} version {version} was NACKed");
}

async fn nack(server: &XdsServer, ty: &str, version: &str, contains: &[&str]) {
    let a = server.wait_for(ty, version).await;
    let e = a
        .error
        .unwrap_or_else(|| panic!("{ty} version {version} was ACKed"));
    for c in contains {
        assert!(e.contains(c), "NACK of {ty} v{version}: {e:?} lacks {c:?}");
    }
}

async fn scenario(api_type: &str) {
    let (a, b, c) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    );
    let (p1, p2, admin) = (free_port(), free_port(), free_port());
    let mut server = XdsServer::start().await;

    // v1: listener (RDS) + route + EDS cluster + endpoints.
    let base = |v: &str, extra: Vec<(&str, Value)>| {
        let mut items = vec![
            listener("web", p1, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[a.port()]),
        ];
        items.extend(extra);
        Snapshot::from_json(v, &items)
    };
    server.set(base("1", vec![]));
    let proxy = ProxyProcess::start(&bootstrap(admin, server.addr, api_type), admin);
    for ty in [CDS, EDS, LDS, RDS] {
        ack(&server, ty, "1").await;
    }
    expect(p1, "/", 200, "a").await;

    // v2: a new cluster (STATIC over CDS) and a route change.
    let v2 = |v: &str, backend: &[u16]| {
        Snapshot::from_json(
            v,
            &[
                listener("web", p1, rds("routes")),
                routes("routes", &[("/b", "other"), ("/", "backend")]),
                eds_cluster("backend"),
                cla("backend", backend),
                static_cluster("other", b.port()),
            ],
        )
    };
    server.set(v2("2", &[a.port()]));
    ack(&server, RDS, "2").await;
    ack(&server, CDS, "2").await;
    expect(p1, "/b/x", 200, "b").await;
    expect(p1, "/", 200, "a").await;

    // v3: EDS endpoint add + remove (a -> c).
    server.set(v2("3", &[c.port()]));
    ack(&server, EDS, "3").await;
    expect(p1, "/", 200, "c").await;

    // v4: cluster removal: the route naming it answers 503 (RDS does not validate clusters).
    server.set(Snapshot::from_json(
        "4",
        &[
            listener("web", p1, rds("routes")),
            routes("routes", &[("/b", "other"), ("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[c.port()]),
        ],
    ));
    ack(&server, CDS, "4").await;
    expect(p1, "/b", 503, "").await;
    expect(p1, "/", 200, "c").await;

    // v5: listener replacement (web on p1 -> web2 on p2).
    let good = |v: &str, extra: Vec<(&str, Value)>| {
        let mut items = vec![
            listener("web2", p2, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[c.port()]),
        ];
        items.extend(extra);
        Snapshot::from_json(v, &items)
    };
    server.set(good("5", vec![]));
    ack(&server, LDS, "5").await;
    expect(p2, "/", 200, "c").await;
    assert_eq!(get(p1, "/").await, None, "the replaced listener is closed");

    // v6: dangling cluster (inline route config of a listener) -> NACK; traffic unchanged.
    let mut dangling = listener(
        "web3",
        free_port(),
        json!({"route_config": {"name": "inline",
        "virtual_hosts": [{"name": "x", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "ghost"}}]}]}}),
    );
    dangling.1["name"] = json!("web3");
    server.set(good("6", vec![dangling]));
    nack(
        &server,
        LDS,
        "6",
        &[
            "Listener \"web3\": filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster",
            "unknown cluster \"ghost\"",
        ],
    )
    .await;
    expect(p2, "/", 200, "c").await;

    // v7: invalid regex in the route configuration -> NACK of RDS.
    let mut bad = routes("routes", &[("/", "backend")]);
    bad.1["virtual_hosts"][0]["routes"][0]["match"] = json!({"safe_regex": {"regex": "(unclosed"}});
    let mut items = vec![
        listener("web2", p2, rds("routes")),
        bad,
        eds_cluster("backend"),
        cla("backend", &[c.port()]),
    ];
    server.set(Snapshot::from_json("7", &items));
    nack(
        &server,
        RDS,
        "7",
        &["RouteConfiguration \"routes\": virtual_hosts[0].routes[0].match.safe_regex"],
    )
    .await;
    expect(p2, "/", 200, "c").await;

    // v8: an Envoy field sluice does not implement -> NACK naming it.
    items[1] = routes("routes", &[("/", "backend")]);
    items[0].1["per_connection_buffer_limit_bytes"] = json!(32768);
    server.set(Snapshot::from_json("8", &items));
    nack(
        &server,
        LDS,
        "8",
        &["Listener \"web2\": per_connection_buffer_limit_bytes: not supported"],
    )
    .await;
    expect(p2, "/", 200, "c").await;

    // v9: good again (endpoints b).
    server.set(Snapshot::from_json(
        "9",
        &[
            listener("web2", p2, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[b.port()]),
        ],
    ));
    ack(&server, LDS, "9").await;
    ack(&server, EDS, "9").await;
    expect(p2, "/", 200, "b").await;

    // Control-plane loss mid-traffic: every request keeps succeeding on the last config.
    let sent_before = server.delta_resources_sent();
    let streams_before = server.streams();
    let traffic = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_millis(1500);
        let mut n = 0;
        while Instant::now() < until {
            assert_eq!(get(p2, "/").await, Some((200, "b".to_string())));
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    assert!(traffic.await.unwrap() > 0);
    expect(p2, "/", 200, "b").await;
    server.restart().await;
    let restarted = Instant::now();
    // v10 after the restart: an EDS-only change (b -> a) converges over the new stream.
    server.set(Snapshot::from_json(
        "10",
        &[
            listener("web2", p2, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[a.port()]),
        ],
    ));
    ack(&server, EDS, "10").await;
    assert!(
        restarted.elapsed() < Duration::from_secs(16),
        "reconnected within the backoff bound"
    );
    assert!(server.streams() > streams_before, "a new stream");
    expect(p2, "/", 200, "a").await;
    if api_type == "DELTA_GRPC" {
        // initial_resource_versions: only the changed assignment is sent again.
        assert_eq!(server.delta_resources_sent() - sent_before, 1);
    }
    let log = proxy.log();
    assert!(!log.contains("panicked"), "{log}");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_ads_end_to_end() {
    scenario("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_ads_end_to_end() {
    scenario("DELTA_GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_until_the_first_complete_config() {
    let up = TestUpstream::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    // The listener's route never arrives and its fetch never times out (0s = wait forever):
    // the proxy stays unready, and the listener is not served.
    let dir = sluice_tests::upstream::harness::TempDir::new("xds-ready");
    let config = dir.path("bootstrap.yaml");
    std::fs::write(&config, bootstrap(admin, server.addr, "GRPC")).unwrap();
    let mut hcm = rds("never");
    hcm["rds"]["config_source"]["initial_fetch_timeout"] = json!("0s");
    server.set(Snapshot::from_json(
        "1",
        &[
            listener("web", port, hcm),
            static_cluster("backend", up.port()),
        ],
    ));
    let mut child = std::process::Command::new(sluice_tests::upstream::harness::sluice_bin())
        .args(["proxy", "-c"])
        .arg(&config)
        .stderr(std::fs::File::create(dir.path("log")).unwrap())
        .spawn()
        .unwrap();
    ack(&server, LDS, "1").await;
    let ready = format!("http://127.0.0.1:{admin}/ready");
    let r = tokio::task::spawn_blocking(move || curl_opt(&["-s", "-m", "2", &ready]))
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.map(|r| r.0), Some(503));
    assert_eq!(
        get(port, "/").await,
        None,
        "a warming listener is not served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_over_a_unix_socket_pipe() {
    let up = TestUpstream::start("u").await;
    let (port, admin) = (free_port(), free_port());
    let dir = sluice_tests::upstream::harness::TempDir::new("xds-pipe");
    let sock = dir.path("xds.sock");
    let server = XdsServer::start_unix(sock.clone()).await;
    server.set(Snapshot::from_json(
        "1",
        &[
            listener("web", port, rds("r")),
            routes("r", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[up.port()]),
        ],
    ));
    let pipe = format!("pipe: {{ path: {} }}", sock.display());
    let proxy = ProxyProcess::start_in(dir, &bootstrap_to(admin, &pipe, "DELTA_GRPC"), admin);
    ack(&server, LDS, "1").await;
    expect(port, "/", 200, "u").await;
    drop(proxy);
}
