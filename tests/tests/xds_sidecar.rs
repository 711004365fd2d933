//! Sidecar mode over xDS (issue 10): `sluice sidecar --xds-address unix:PATH` behind istio-init's
//! iptables rules in a test netns, with `POD_NAME` / `POD_NAMESPACE` set as Istio's injector sets
//! them (the downward API). The scripted server sees one stream with Istio's node id
//! (`sidecar~POD_IP~NAME.NS~NS.svc.cluster.local`, POD_IP the pod's veth address) and the
//! metadata, and gives it the same snapshot a node-mode pod gets: the sidecar's captured request
//! (to an address where nothing listens) reaches the app the server's route names, with the
//! route's prefix rewrite, and `sluice proxy-status 127.0.0.1:15000` run in the pod shows SYNCED
//! with that node id. Without the env the node id falls back to the netns name and `default`.
//! SotW and Delta.

use std::{net::SocketAddr, os::unix::fs::PermissionsExt as _};

use serde_json::Value;
use sluice_tests::{
    l7_pods::named_app,
    ns_server::NsServer,
    sluice_cli::{sluice_bin, sluice_ok, stdout_ok, SluiceProcess},
    until,
    upstream::harness::TempDir,
    xds_script::pod_snapshot,
    xds_server::{metadata, streams_of, XdsServer},
    Netns, Veth,
};

const ADMIN: &str = "127.0.0.1:15000";

/// istio-init's rules in the pod; removed when dropped (also on panic).
struct Rules<'a>(&'a Netns);

impl<'a> Rules<'a> {
    fn install(pod: &'a Netns) -> Self {
        sluice_ok(&["iptables", "install", "--netns", pod.name()]);
        Self(pod)
    }
}

impl Drop for Rules<'_> {
    fn drop(&mut self) {
        let _ = sluice_tests::sluice_cli::sluice(&["iptables", "remove", "--netns", self.0.name()]);
    }
}

/// `sluice proxy-status 127.0.0.1:15000 -o json` run inside `pod`: the one row.
fn status_row(pod: &Netns) -> Value {
    let out = pod
        .command(sluice_bin().to_str().expect("UTF-8 path"), None)
        .args(["proxy-status", ADMIN, "-o", "json"])
        .output()
        .expect("run sluice proxy-status");
    if !out.status.success() {
        return Value::Null;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v[0].clone()
}

/// `identity`: the pod's (name, namespace), given to the sidecar as `POD_NAME` /
/// `POD_NAMESPACE`; without it the node id must carry the netns name and `default`.
fn scenario(tag: &str, api: &str, identity: Option<(&str, &str)>) {
    sluice_tests::require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The sidecar runs in the pod netns as uid 1337: a unix socket reaches the server in ours.
    let dir = TempDir::new(tag);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path("xds.sock");
    let server = rt.block_on(XdsServer::start_unix(sock.clone()));
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Drop order (reverse): the sidecar, the rules, the app, the link, the namespaces.
    let srv = Netns::new(&format!("{tag}s"));
    let pod = Netns::new(&format!("{tag}p"));
    let link = Veth::new(tag, &pod, &srv);
    let (name, namespace) = identity.unwrap_or((pod.name(), "default"));
    let env: Vec<(&str, &str)> = identity
        .map(|(n, ns)| vec![("POD_NAME", n), ("POD_NAMESPACE", ns)])
        .unwrap_or_default();
    let app = NsServer::start(&srv, SocketAddr::new(link.b_v4.into(), 0), named_app("x"));
    let cluster_part = format!("~{name}.{namespace}~");
    server.set_for(&cluster_part, pod_snapshot("s1", app.addr, "/side"));
    let rules = Rules::install(&pod);
    let address = format!("unix:{}", sock.display());
    let sidecar = SluiceProcess::sidecar_env(
        &pod,
        1337,
        None,
        &["--xds-address", &address, "--xds-api", api],
        &env,
    );

    let id = format!(
        "sidecar~{}~{name}.{namespace}~{namespace}.svc.cluster.local",
        link.a_v4
    );
    let r = until(
        &format!("a stream from {id}"),
        || streams_of(&server, &id),
        |s| !s.is_empty(),
    );
    assert_eq!(
        server.stream_records().len(),
        1,
        "one stream: {:#?}",
        server.stream_records()
    );
    assert_eq!(r[0].node.cluster, format!("istio-proxy.{namespace}"));
    assert_eq!(metadata(&r[0], "NAME"), name);
    assert_eq!(metadata(&r[0], "NAMESPACE"), namespace);
    assert_eq!(
        metadata(&r[0], "INSTANCE_IPS"),
        format!("{},{}", link.a_v4, link.a_v6)
    );
    assert_eq!(metadata(&r[0], "CLUSTER_ID"), "Kubernetes");

    let row = until(
        "proxy-status SYNCED in the pod",
        || status_row(&pod),
        |r| {
            ["CDS", "LDS", "EDS", "RDS"]
                .iter()
                .all(|t| r[*t] == "SYNCED")
        },
    );
    assert_eq!(row["name"], id.as_str(), "{row:#}");

    // Captured by iptables to the sidecar's 15001; nothing listens on port 9: only the
    // server's route can take the request to the app.
    let target = format!("http://{}:9/api/items", link.b_v4);
    let out = pod
        .command("curl", None)
        .args(["-sS", "-m", "5", "-H", "Host: svc.test", &target])
        .output()
        .expect("run curl");
    let body = stdout_ok(&out, &format!("curl {target}"));
    assert!(
        body.contains("backend=x\nline=GET /side/items "),
        "{body}\nsidecar log:\n{}",
        sidecar.log()
    );

    // Ending the sidecar ends its stream.
    drop(sidecar);
    until(
        "the stream closed with the sidecar",
        || streams_of(&server, &id)[0].closed,
        Option::is_some,
    );
    drop(rules);
    drop((app, link));
    drop((pod, srv));
    drop(server);
}

#[test]
fn sotw_sidecar_gets_its_routes_from_its_own_stream() {
    scenario("xs", "sotw", Some(("web-1", "shop")));
}

#[test]
fn delta_sidecar_gets_its_routes_from_its_own_stream() {
    scenario("xe", "delta", Some(("web-2", "shop")));
}

/// Without the downward API's env: the netns name and `default`.
#[test]
fn without_pod_env_the_netns_name_and_default() {
    scenario("xf", "sotw", None);
}
