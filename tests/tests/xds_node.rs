//! Node mode over xDS (issue 10, test 5): `sluice agent --xds-address` (no `--config`) with
//! two pods enrolled with CNI identities `shop/pod-a` and `shop/pod-b`. The scripted server
//! records one stream per pod with Istio's node id (`sidecar~POD_IP~NAME.NS~NS.svc.cluster.local`,
//! POD_IP the pod's veth address) and metadata, and gives each pod its own snapshot: the same
//! `svc.test` route to the EDS cluster `outbound|80||svc.test`, whose endpoint is app A for pod A
//! and app B for pod B, with a different prefix rewrite. Each pod's captured request reaches its
//! own app with its own rewrite; `sluice proxy-status <pod>` shows SYNCED for each; unenrolling
//! pod A closes its stream within [`CLOSE_BOUND`] while pod B keeps its stream and its traffic.
//! SotW and Delta.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::Value;
use sluice_tests::{
    agent_node::Node,
    l7_pods::named_app as app,
    ns_server::NsServer,
    until,
    upstream::{harness::TempDir, tls::test_pki},
    xds_script::pod_snapshot as snapshot,
    xds_server::{metadata, streams_of, XdsServer},
    Netns, Veth,
};

/// How soon the server must see an unenrolled pod's stream end.
const CLOSE_BOUND: Duration = Duration::from_secs(2);
const NAMESPACE: &str = "shop";

/// `GET http://10.96.0.10/api/items` with `Host: svc.test` from `pod`: the body.
fn get(node: &Node, pod: &Netns) -> String {
    let out = pod
        .command("curl", Some(&node.cgroup))
        .args(["-sS", "-m", "5", "-H", "Host: svc.test"])
        .arg("http://10.96.0.10/api/items")
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl from {}: {}",
        pod.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sluice proxy-status shop/<name> -o json`, the pod's row.
fn status_row(node: &Node, name: &str) -> Value {
    let target = format!("{NAMESPACE}/{name}");
    let out = node.sluice(&["proxy-status", &target, "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "proxy-status {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v[0].clone()
}

/// One pod (`shop/pod-t`) and its backend (`app("t")`) in a server netns.
struct OnePod {
    // Drop order: the app, the link, then the namespaces.
    backend: NsServer,
    link: Veth,
    pod: Netns,
    _srv: Netns,
}

impl OnePod {
    /// `tag`: at most 3 characters.
    fn new(tag: &str) -> Self {
        let srv = Netns::new(&format!("{tag}s"));
        let pod = Netns::new(&format!("{tag}a"));
        let link = Veth::new(tag, &pod, &srv);
        let backend = NsServer::start(&srv, SocketAddr::new(link.b_v4.into(), 0), app("t"));
        Self {
            backend,
            link,
            pod,
            _srv: srv,
        }
    }

    /// Its Istio node id.
    fn id(&self) -> String {
        format!(
            "sidecar~{}~pod-t.shop~shop.svc.cluster.local",
            self.link.a_v4
        )
    }
}

fn scenario(tag: &str, api: &str) {
    sluice_tests::require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(XdsServer::start());
    // Drop order (reverse): the agent, then the apps, links and namespaces.
    let srv = Netns::new(&format!("{tag}s"));
    let pod_a = Netns::new(&format!("{tag}a"));
    let pod_b = Netns::new(&format!("{tag}b"));
    let link_a = Veth::new(&format!("{tag}a"), &pod_a, &srv);
    let link_b = Veth::new(&format!("{tag}b"), &pod_b, &srv);
    let app_a = NsServer::start(&srv, SocketAddr::new(link_a.b_v4.into(), 0), app("a"));
    let app_b = NsServer::start(&srv, SocketAddr::new(link_b.b_v4.into(), 0), app("b"));
    server.set_for("~pod-a.shop~", snapshot("a1", app_a.addr, "/pod-a"));
    server.set_for("~pod-b.shop~", snapshot("b1", app_b.addr, "/pod-b"));
    let address = format!("http://{}", server.addr);
    let node = Node::start_with(tag, &["--xds-address", &address, "--xds-api", api]);

    node.enroll_pod(&pod_a, NAMESPACE, "pod-a");
    node.enroll_pod(&pod_b, NAMESPACE, "pod-b");
    let id_a = format!("sidecar~{}~pod-a.shop~shop.svc.cluster.local", link_a.a_v4);
    let id_b = format!("sidecar~{}~pod-b.shop~shop.svc.cluster.local", link_b.a_v4);
    for (id, name, ips) in [
        (&id_a, "pod-a", format!("{},{}", link_a.a_v4, link_a.a_v6)),
        (&id_b, "pod-b", format!("{},{}", link_b.a_v4, link_b.a_v6)),
    ] {
        let r = until(
            &format!("a stream from {id}"),
            || streams_of(&server, id),
            |s| !s.is_empty(),
        );
        assert_eq!(
            r.len(),
            1,
            "one stream per pod: {:#?}",
            server.stream_records()
        );
        // No app label or workload known without the pod watcher: Istio's default.
        assert_eq!(r[0].node.cluster, "istio-proxy.shop");
        assert_eq!(metadata(&r[0], "NAME"), name);
        assert_eq!(metadata(&r[0], "NAMESPACE"), NAMESPACE);
        assert_eq!(metadata(&r[0], "INSTANCE_IPS"), ips);
        assert!(!metadata(&r[0], "ISTIO_VERSION").is_empty());
        assert_eq!(metadata(&r[0], "CLUSTER_ID"), "Kubernetes");
    }
    assert_ne!(id_a, id_b);
    assert_eq!(
        server.stream_records().len(),
        2,
        "only the two pods' streams: {:#?}",
        server.stream_records()
    );

    for name in ["pod-a", "pod-b"] {
        let row = until(
            &format!("{name} SYNCED"),
            || status_row(&node, name),
            |r| {
                ["CDS", "LDS", "EDS", "RDS"]
                    .iter()
                    .all(|t| r[*t] == "SYNCED")
            },
        );
        let expected = if name == "pod-a" { &id_a } else { &id_b };
        assert_eq!(&row["name"], expected.as_str(), "{row:#}");
    }

    let body = get(&node, &pod_a);
    assert!(body.contains("backend=a\n"), "pod A: {body}");
    assert!(body.contains("line=GET /pod-a/items "), "pod A: {body}");
    let body = get(&node, &pod_b);
    assert!(body.contains("backend=b\n"), "pod B: {body}");
    assert!(body.contains("line=GET /pod-b/items "), "pod B: {body}");

    let start = Instant::now();
    node.unenroll(&pod_a);
    let closed = until(
        "pod A's stream closed",
        || streams_of(&server, &id_a)[0].closed,
        Option::is_some,
    )
    .expect("checked by until");
    let took = closed.saturating_duration_since(start);
    println!("{api}: pod A's stream closed {took:?} after unenroll started");
    assert!(took <= CLOSE_BOUND, "pod A's stream closed after {took:?}");
    assert!(
        streams_of(&server, &id_b)[0].closed.is_none(),
        "pod B's stream ended with pod A's"
    );
    let body = get(&node, &pod_b);
    assert!(body.contains("backend=b\n"), "pod B after A left: {body}");
    assert_eq!(status_row(&node, "pod-b")["LDS"], "SYNCED");

    // Agent shutdown ends the remaining stream.
    drop(node);
    until(
        "pod B's stream closed at agent shutdown",
        || streams_of(&server, &id_b)[0].closed,
        Option::is_some,
    );
    drop((app_a, app_b, link_a, link_b));
    drop((pod_a, pod_b, srv));
    drop(server);
}

#[test]
fn sotw_pods_get_their_own_streams_and_routes() {
    scenario("xn", "sotw");
}

#[test]
fn delta_pods_get_their_own_streams_and_routes() {
    scenario("xd", "delta");
}

#[test]
fn tls_with_a_ca_and_a_token_read_on_every_connect() {
    sluice_tests::require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = test_pki();
    let mut server = rt.block_on(XdsServer::start_tls(pki.server_h2.clone()));
    let dir = TempDir::new("xtls");
    let (ca, token) = (dir.path("ca.pem"), dir.path("token"));
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&token, "first-token\n").unwrap();
    let p = OnePod::new("xt");
    server.set_for("~pod-t.shop~", snapshot("t1", p.backend.addr, "/pod-t"));
    let address = format!("https://127.0.0.1:{}", server.addr.port());
    let (ca_arg, token_arg) = (ca.to_str().unwrap(), token.to_str().unwrap());
    let node = Node::start_with(
        "xt",
        &[
            "--xds-address",
            &address,
            "--xds-ca",
            ca_arg,
            "--xds-token",
            token_arg,
        ],
    );
    node.enroll_pod(&p.pod, NAMESPACE, "pod-t");
    let id = p.id();
    let first = until(
        "a TLS stream",
        || streams_of(&server, &id),
        |s| !s.is_empty(),
    );
    assert_eq!(
        first[0].authorization.as_deref(),
        Some("Bearer first-token")
    );
    until(
        "pod-t SYNCED over TLS",
        || status_row(&node, "pod-t"),
        |r| {
            ["CDS", "LDS", "EDS", "RDS"]
                .iter()
                .all(|t| r[*t] == "SYNCED")
        },
    );
    let body = get(&node, &p.pod);
    assert!(body.contains("backend=t\nline=GET /pod-t/items "), "{body}");

    // Rotated token: the reconnect after the server comes back reads the file again.
    std::fs::write(&token, "second-token").unwrap();
    rt.block_on(server.stop());
    rt.block_on(server.restart());
    let again = until(
        "a second TLS stream",
        || streams_of(&server, &id),
        |s| s.len() >= 2,
    );
    assert_eq!(
        again[1].authorization.as_deref(),
        Some("Bearer second-token")
    );
    let body = get(&node, &p.pod);
    assert!(body.contains("backend=t\n"), "after the reconnect: {body}");

    drop(node);
    drop(p);
    drop(server);
}

/// An agent upgrade hands the pod over with its identity: the new agent opens a new stream with
/// the same node id, the old agent's stream ends, traffic follows the config.
#[test]
fn an_upgrade_opens_a_new_stream_with_the_same_identity() {
    sluice_tests::require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(XdsServer::start());
    let p = OnePod::new("xu");
    server.set_for("~pod-t.shop~", snapshot("u1", p.backend.addr, "/pod-t"));
    let address = format!("http://{}", server.addr);
    let mut node = Node::start_with("xu", &["--xds-address", &address]);
    node.enroll_pod(&p.pod, NAMESPACE, "pod-t");
    let id = p.id();
    until("a stream", || streams_of(&server, &id), |s| !s.is_empty());
    until(
        "pod-t SYNCED",
        || status_row(&node, "pod-t"),
        |r| r["LDS"] == "SYNCED" && r["RDS"] == "SYNCED",
    );
    node.upgrade(Duration::from_secs(10));
    let s = until(
        "the new agent's stream, the old one ended",
        || streams_of(&server, &id),
        |s| s.len() == 2 && s[0].closed.is_some() && s[1].closed.is_none(),
    );
    assert_eq!(s.len(), 2, "{s:#?}");
    until(
        "pod-t SYNCED on the new agent",
        || status_row(&node, "pod-t"),
        |r| r["LDS"] == "SYNCED" && r["RDS"] == "SYNCED",
    );
    let body = get(&node, &p.pod);
    assert!(body.contains("backend=t\nline=GET /pod-t/items "), "{body}");
    drop(node);
    drop(p);
    drop(server);
}
