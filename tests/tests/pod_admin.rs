//! Each node-mode L7 pod's admin, served by the agent (issue 12): the control socket's `admin`
//! op by `NAMESPACE/NAME` and by netns, `sluice proxy-config` on those targets, 127.0.0.1:15000
//! inside the pod (curl run in the pod's netns), the node-mode refusals, and the port's end at
//! unenroll and its hand-over at an agent upgrade.

use std::{process::Output, time::Duration};

use serde_json::Value;
use sluice_node::agent::protocol::{self, AdminRequest, Request, Response};
use sluice_tests::{
    agent_node::Node,
    l7_pods::L7Pods,
    sluice_cli::{sluice, stdout_ok},
    Netns,
};

/// The CNI identity the client pod is enrolled with.
const POD: &str = "default/notebook";

/// Enrolls `ns` in node mode as the CNI plugin would, with a pod identity.
fn enroll_as(node: &Node, ns: &Netns, namespace: &str, name: &str) {
    node.enroll_pod(ns, namespace, name);
}

/// The control op; returns the answer (status, body) or the error message.
fn admin(
    node: &Node,
    pod: Option<&str>,
    netns: Option<&str>,
    path: &str,
) -> Result<(u16, String), String> {
    admin_with(node, pod, netns, "GET", path)
}

fn admin_with(
    node: &Node,
    pod: Option<&str>,
    netns: Option<&str>,
    method: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let req = Request::Admin(AdminRequest {
        pod: pod.map(str::to_string),
        netns: netns.map(str::to_string),
        method: method.into(),
        path: path.into(),
    });
    match protocol::call(&node.control.path(), &req) {
        Ok(Response::Admin { status, body, .. }) => Ok((status, body)),
        Ok(Response::Error { message }) => Err(message),
        other => panic!("admin {path}: {other:?}"),
    }
}

/// `sluice <args>` with the node's control socket in `$SLUICE_CONTROL`.
fn sluice_at(node: &Node, args: &[&str]) -> Output {
    node.sluice(args)
}

/// `curl -s -w '\n%{http_code}' <args> http://127.0.0.1:15000<path>` inside `ns`: (curl's exit
/// code, status, body).
fn curl_admin(p: &L7Pods, node: &Node, ns: &Netns, extra: &[&str], path: &str) -> (i32, String) {
    let url = format!("http://127.0.0.1:15000{path}");
    let mut args = vec!["-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = p.curl_in(ns, node, &args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Splits curl's `-w '\n%{http_code}'` output into (status, body).
fn status_body(out: &str) -> (&str, &str) {
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out));
    (code, body)
}

fn json(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:.300}"))
}

#[test]
fn node_mode_pods_have_their_own_admin_by_name_netns_and_in_pod_port() {
    let p = L7Pods::new("pa");
    let node = Node::start_with("pa", &["--config", &p.cfg]);
    enroll_as(&node, &p.client, "default", "notebook");
    let line = node.enroll(&p.server, &["--mode", "node"]);
    assert!(line.contains(" admin=127.0.0.1:15000"), "{line}");
    assert_eq!(
        node.pod(&p.client).admin.as_deref(),
        Some("127.0.0.1:15000"),
        "{:?}",
        node.pod(&p.client)
    );
    // Traffic through the client pod only: its own engine counts it, the server pod's outbound
    // engine does not (each pod's admin reads that pod's server).
    p.get_svc(&node);
    let svc = format!("svc::{}::rq_total::", p.app.addr);
    let (status, clusters) = admin(&node, Some(POD), None, "/clusters").expect("client /clusters");
    assert_eq!(status, 200, "{clusters}");
    assert!(clusters.contains(&format!("{svc}1\n")), "{clusters}");
    let (_, clusters) =
        admin(&node, None, Some(p.server.name()), "/clusters").expect("server /clusters");
    assert!(clusters.contains(&format!("{svc}0\n")), "{clusters}");

    // The dump by NAMESPACE/NAME, by netns name, by netns path and from inside the pod: the
    // same document (same server, same config version, same last_updated).
    let (status, by_name) = admin(&node, Some(POD), None, "/config_dump?include_eds").unwrap();
    assert_eq!(status, 200);
    let by_name = json(&by_name, "dump by name");
    let path = p.client.path().display().to_string();
    let (_, by_path) = admin(&node, None, Some(&path), "/config_dump?include_eds").unwrap();
    assert_eq!(json(&by_path, "dump by path"), by_name);
    let (code, out) = curl_admin(&p, &node, &p.client, &[], "/config_dump?include_eds");
    assert_eq!(code, 0, "curl in the pod: {out}");
    let (status, body) = status_body(&out);
    assert_eq!(status, "200", "{body}");
    assert_eq!(json(body, "dump in the pod"), by_name);
    assert!(by_name.to_string().contains("virtualOutbound"), "{by_name}");

    // proxy-config on each kind of target; the in-pod dump saved to a file gives the same table.
    let dir = sluice_tests::upstream::harness::TempDir::new("padump");
    let file = dir.path("dump.json");
    std::fs::write(&file, body).unwrap();
    let file = file.display().to_string();
    let from_file = stdout_ok(&sluice(&["proxy-config", "route", "-f", &file]), "route -f");
    let by_pod = stdout_ok(
        &sluice_at(&node, &["proxy-config", "route", POD]),
        "route POD",
    );
    assert_eq!(by_pod, from_file);
    assert!(
        by_pod.contains("svc.test") && by_pod.contains("/api*"),
        "{by_pod}"
    );
    let clusters = stdout_ok(
        &sluice_at(&node, &["proxy-config", "cluster", p.server.name()]),
        "cluster NETNS",
    );
    assert!(
        clusters.lines().any(|l| l.starts_with("svc ")),
        "{clusters}"
    );
    let endpoints = stdout_ok(
        &sluice_at(&node, &["proxy-config", "endpoint", &path]),
        "endpoint NETNS-PATH",
    );
    assert!(endpoints.contains(&p.app.addr.to_string()), "{endpoints}");

    // Unknown pods: a clear error naming them, nonzero exit.
    for (target, needle) in [
        ("default/nope", "no enrolled pod default/nope"),
        ("nosuchns", "no enrolled pod in netns nosuchns"),
    ] {
        let out = sluice_at(&node, &["proxy-config", "route", target]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(err.contains(needle), "{target}: {err}");
    }

    // Node mode: the agent serves every pod, so it does not quit for one; a pod may not change
    // the agent's log level; GET of a mutating path is Envoy's 405.
    let (_, out) = curl_admin(&p, &node, &p.client, &["-X", "POST"], "/quitquitquit");
    let (status, body) = status_body(&out);
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("refused in node mode"), "{body}");
    let (_, out) = curl_admin(
        &p,
        &node,
        &p.client,
        &["-X", "POST"],
        "/logging?level=debug",
    );
    assert_eq!(status_body(&out).0, "403", "{out}");
    let (_, out) = curl_admin(&p, &node, &p.client, &[], "/quitquitquit");
    assert_eq!(status_body(&out).0, "405", "{out}");
    let (status, body) =
        admin_with(&node, Some(POD), None, "POST", "/quitquitquit").expect("quit by control");
    assert_eq!(status, 403, "{body}");
    let (status, body) =
        admin_with(&node, Some(POD), None, "POST", "/drain_listeners").expect("drain");
    assert_eq!(status, 501, "{body}");
    // The operator (control socket) may set the agent's log level: one process, every pod.
    let (status, body) =
        admin_with(&node, Some(POD), None, "POST", "/logging?level=info").expect("logging");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("active loggers"), "{body}");
    assert_eq!(admin(&node, Some(POD), None, "/ready").unwrap().0, 200);
    p.get_svc(&node);

    // Unenroll closes the pod's admin port; the other pod keeps its own.
    node.unenroll(&p.client);
    let (code, out) = curl_admin(&p, &node, &p.client, &[], "/ready");
    assert_eq!(code, 7, "curl must fail to connect after unenroll: {out}");
    let err = admin(&node, Some(POD), None, "/ready").unwrap_err();
    assert!(err.contains("no enrolled pod default/notebook"), "{err}");
    let (code, out) = curl_admin(&p, &node, &p.server, &[], "/ready");
    assert_eq!((code, status_body(&out)), (0, ("200", "LIVE\n")), "{out}");
}

/// The pod's admin port survives a graceful upgrade: the new agent binds its own (SO_REUSEPORT
/// beside the old one's), the old one closes its own when it stops accepting. After a crash
/// (SIGKILL, `--persist`) the next agent binds it again with the pod's other listeners.
#[test]
fn the_pod_admin_port_is_served_by_the_new_agent_after_an_upgrade_or_a_crash() {
    let p = L7Pods::new("pu");
    let mut node = Node::start_with("pu", &["--config", &p.cfg, "--persist"]);
    enroll_as(&node, &p.client, "default", "notebook");
    let old = node.pid();
    node.upgrade(Duration::from_secs(10));
    assert_ne!(node.pid(), old);
    let (code, out) = curl_admin(&p, &node, &p.client, &[], "/ready");
    assert_eq!((code, status_body(&out)), (0, ("200", "LIVE\n")), "{out}");
    // Still found by its identity (the hand-over carries it).
    let (status, _) = admin(&node, Some(POD), None, "/config_dump").expect("by name");
    assert_eq!(status, 200);
    p.get_svc(&node);

    node.agent().kill();
    let (code, _) = curl_admin(&p, &node, &p.client, &[], "/ready");
    assert_eq!(code, 7, "the killed agent's admin port is gone");
    node.restart();
    node.wait_for_log("agent ready");
    let (code, out) = curl_admin(&p, &node, &p.client, &[], "/ready");
    assert_eq!((code, status_body(&out)), (0, ("200", "LIVE\n")), "{out}");
    // A restart finds pods by netns (their identity is not pinned).
    let (status, _) = admin(&node, None, Some(p.client.name()), "/config_dump").expect("by netns");
    assert_eq!(status, 200);
}

/// Control-op errors name the pod: one without an engine (no --config), one in sidecar mode,
/// and a request naming no pod.
#[test]
fn admin_op_errors_name_the_pod() {
    let p = L7Pods::new("pe");
    let node = Node::start("pe");
    enroll_as(&node, &p.client, "default", "plain");
    let err = admin(&node, Some("default/plain"), None, "/config_dump").unwrap_err();
    assert!(
        err.contains("pod default/plain has no L7 engine (agent runs without --config)"),
        "{err}"
    );
    let (code, _) = curl_admin(&p, &node, &p.client, &[], "/ready");
    assert_eq!(code, 7, "no engine, no admin port");
    node.enroll(&p.server, &["--mode", "sidecar"]);
    let err = admin(&node, None, Some(p.server.name()), "/ready").unwrap_err();
    assert!(err.contains("mode sidecar"), "{err}");
    let err = admin(&node, None, None, "/ready").unwrap_err();
    assert!(err.contains("exactly one of"), "{err}");
    let err = admin(&node, Some("default/plain"), Some("x"), "/ready").unwrap_err();
    assert!(err.contains("exactly one of"), "{err}");
}

/// `--pod-admin-port 0`: no port in the pod; the control socket still serves the pod's admin.
#[test]
fn pod_admin_port_zero_binds_nothing_in_the_pod() {
    let p = L7Pods::new("pz");
    let node = Node::start_with("pz", &["--config", &p.cfg, "--pod-admin-port", "0"]);
    node.enroll(&p.client, &["--mode", "node"]);
    assert_eq!(node.pod(&p.client).admin, None);
    let (code, _) = curl_admin(&p, &node, &p.client, &[], "/ready");
    assert_eq!(code, 7, "no admin port in the pod");
    let (status, body) = admin(&node, None, Some(p.client.name()), "/ready").expect("control");
    assert_eq!((status, body.as_str()), (200, "LIVE\n"));
}
