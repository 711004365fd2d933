//! `sluice sidecar --config`'s own operator ports (issue 12), as an Envoy sidecar has them:
//! Envoy's admin on 127.0.0.1:15000 inside the pod (curl and `sluice proxy-config` run in the
//! pod's netns), `/healthz/ready` on 0.0.0.0:15021 (reachable from the peer pod, like the
//! kubelet's probe; the admin is not), `/logging`, `/drain_listeners` closing the capture
//! listeners (inbound only, then all; readiness 503), `/quitquitquit` ending the process with
//! status 0, and `--admin-port 0 --health-port 0`. Under eBPF sidecar mode a drained pod is
//! left to its fail-open setting: refused without it, straight to the app (or the real
//! destination) with it.

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use serde_json::Value;
use sluice_tests::{
    agent_node::Node,
    l7_pods::{self, http_echo, L7Pods},
    ns_server::NsServer,
    sluice_cli::{sluice_bin, stdout_ok, SluiceProcess},
    upstream::harness::TempDir,
    Netns,
};

/// `curl -sS -m 5 -w '\n%{http_code}' <extra> http://<addr><path>` in `ns`: (curl's exit code,
/// HTTP status, body).
fn curl(ns: &Netns, extra: &[&str], addr: &str, path: &str) -> (i32, String, String) {
    let out = ns
        .command("curl", None)
        .args(["-sS", "-m", "5", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (out.status.code().unwrap_or(-1), code.into(), body.into())
}

/// (status, body) of a request that must get an HTTP answer.
fn answer(ns: &Netns, extra: &[&str], addr: &str, path: &str) -> (String, String) {
    let (rc, code, body) = curl(ns, extra, addr, path);
    assert_eq!(rc, 0, "curl {addr}{path} in {}: exit {rc}", ns.name());
    (code, body)
}

/// curl's exit code for a connection nobody accepts (7: couldn't connect).
fn refused(ns: &Netns, addr: &str) -> bool {
    curl(ns, &[], addr, "/").0 == 7
}

/// Whether a TCP connect to `addr` from inside `ns` is refused.
fn connect_refused(ns: &Netns, addr: SocketAddr) -> bool {
    ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Waits (at most 3 s) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{what}: not within 3 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ADMIN: &str = "127.0.0.1:15000";
const HEALTH: &str = "127.0.0.1:15021";

#[test]
fn sidecar_serves_envoys_admin_and_readiness_in_its_pod() {
    let p = L7Pods::new("sa");
    let mut sidecar = SluiceProcess::sidecar_with(&p.client, 1337, None, &["--config", &p.cfg]);
    let pod = &p.client;

    // The dump of the sidecar's own config, from inside the pod.
    let (code, body) = answer(pod, &[], ADMIN, "/config_dump");
    assert_eq!(code, "200", "{body:.300}");
    let dump: Value = serde_json::from_str(&body).expect("config_dump is JSON");
    let listeners: Vec<&str> = dump["configs"]
        .as_array()
        .expect("configs[]")
        .iter()
        .filter(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ListenersConfigDump")
        .flat_map(|c| c["static_listeners"].as_array().into_iter().flatten())
        .filter_map(|l| l["listener"]["name"].as_str())
        .collect();
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    assert!(listeners.contains(&"virtualOutbound") && listeners.contains(&"virtualInbound"));

    // istioctl's route view over that admin, run inside the pod.
    let out = pod
        .command(sluice_bin().to_str().expect("UTF-8 path"), None)
        .args(["proxy-config", "route", ADMIN])
        .output()
        .expect("run sluice proxy-config");
    let table = stdout_ok(&out, "proxy-config route 127.0.0.1:15000");
    assert!(table.starts_with("NAME"), "{table}");
    let svc = table
        .lines()
        .find(|l| l.contains("svc.test"))
        .unwrap_or_else(|| panic!("no svc.test row: {table}"));
    assert!(svc.contains("/api*"), "{table}");

    // Readiness: in the pod and from the peer pod (the kubelet's view); the admin is
    // localhost-only, so the peer pod cannot reach it.
    assert_eq!(answer(pod, &[], HEALTH, "/healthz/ready").0, "200");
    let a = p.veth.a_v4;
    assert_eq!(
        answer(&p.server, &[], &format!("{a}:15021"), "/healthz/ready").0,
        "200"
    );
    assert!(
        refused(&p.server, &format!("{a}:15000")),
        "admin reachable from the peer pod"
    );

    // Mutating paths: POST only; /logging changes this process's level.
    let (code, body) = answer(pod, &[], ADMIN, "/quitquitquit");
    assert_eq!(
        (code.as_str(), body.trim()),
        ("405", "Method GET not allowed, POST required.")
    );
    let (code, body) = answer(pod, &["-X", "POST"], ADMIN, "/logging?level=debug");
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("default: debug"), "{body}");
    answer(pod, &["-X", "POST"], ADMIN, "/logging?level=info");

    // /drain_listeners?inboundonly closes 15006 (v4 and v6), not 15001; not ready from then on.
    let (inb, outb) = (
        SocketAddr::from(([127, 0, 0, 1], 15006)),
        SocketAddr::from(([127, 0, 0, 1], 15001)),
    );
    assert!(!connect_refused(pod, inb) && !connect_refused(pod, outb));
    let (code, body) = answer(pod, &["-X", "POST"], ADMIN, "/drain_listeners?inboundonly");
    assert_eq!((code.as_str(), body.as_str()), ("200", "OK\n"));
    let inb6: SocketAddr = "[::1]:15006".parse().unwrap();
    eventually("15006 closed", || {
        connect_refused(pod, inb) && connect_refused(pod, inb6)
    });
    assert!(!connect_refused(pod, outb), "15001 must still serve");
    assert_eq!(answer(pod, &[], HEALTH, "/healthz/ready").0, "503");
    // Then every listener; the admin still answers.
    answer(pod, &["-X", "POST"], ADMIN, "/drain_listeners");
    eventually("15001 closed", || connect_refused(pod, outb));
    assert_eq!(answer(pod, &[], ADMIN, "/ready").0, "200");
    sidecar.wait_for_log("admin: capture listeners drained", Duration::from_secs(1));

    // /quitquitquit: answered, then the sidecar's SIGTERM path; exit status 0.
    let (code, body) = answer(pod, &["-X", "POST"], ADMIN, "/quitquitquit");
    assert_eq!((code.as_str(), body.as_str()), ("200", "OK\n"));
    let status = sidecar
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "sidecar still running 5 s after /quitquitquit:\n{}",
                sidecar.log()
            )
        });
    assert!(status.success(), "{status}: {}", sidecar.log());
    assert!(sidecar.log().contains("shutting down"), "{}", sidecar.log());
    assert!(refused(pod, ADMIN) && refused(pod, HEALTH));

    // Both ports can be turned off.
    let _quiet = SluiceProcess::sidecar_with(
        pod,
        1337,
        None,
        &[
            "--config",
            &p.cfg,
            "--admin-port",
            "0",
            "--health-port",
            "0",
        ],
    );
    assert!(refused(pod, ADMIN), "--admin-port 0 still serves");
    assert!(refused(pod, HEALTH), "--health-port 0 still serves");
}

/// POST `path` to the admin of the sidecar in `ns`; asserts Envoy's `OK`.
fn post_ok(ns: &Netns, path: &str) {
    let (code, body) = answer(ns, &["-X", "POST"], ADMIN, path);
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "OK\n"),
        "POST {path}"
    );
}

/// [`L7Pods`]'s config without `virtualOutbound`: outbound is the TCP passthrough, one
/// upstream connection per downstream one (an engine's pooled connection, accepted before a
/// drain, would keep carrying requests into the drained pod, as open connections do).
fn inbound_only_config(p: &L7Pods, dir: &TempDir) -> String {
    let full = l7_pods::config(p.app.addr, "/");
    let (from, to) = (
        full.find("  - name: virtualOutbound").expect("fixture"),
        full.find("  - name: virtualInbound").expect("fixture"),
    );
    let path = dir.path("inbound.yaml");
    std::fs::write(&path, format!("{}{}", &full[..from], &full[to..])).unwrap();
    path.to_str().expect("UTF-8 temp path").to_string()
}

/// eBPF sidecar mode (sk_lookup steers to the sidecar's registered 15006, connect4 redirects to
/// its 15001): after `/drain_listeners` the sockets are gone, and the pod's `--fail-open`
/// decides. The server pod (no fail-open) refuses new inbound connections, as a drained Envoy
/// behind iptables does; the client pod (fail-open) lets them reach its app directly, and with
/// every listener drained its outbound connections go to their real destination uncaptured.
#[test]
fn a_drained_sidecar_leaves_its_pod_to_the_fail_open_setting() {
    let p = L7Pods::new("sb");
    let dir = TempDir::new("sbcfg");
    let cfg = inbound_only_config(&p, &dir);
    let node = Node::start("sb");
    node.enroll(&p.server, &["--mode", "sidecar"]);
    node.enroll(&p.client, &["--mode", "sidecar", "--fail-open"]);
    let client_app = NsServer::start(&p.client, SocketAddr::new(p.veth.a_v4.into(), 0), http_echo);
    let ctl = node.ctl();
    let args = ["--config", cfg.as_str(), "--agent-control", ctl.as_str()];
    let mut sidecars = [&p.server, &p.client].map(|ns| {
        let mut s = SluiceProcess::sidecar_with(ns, 1337, Some(&node.cgroup), &args);
        s.wait_for_log("inbound listeners registered", Duration::from_secs(5));
        s
    });
    let get = |from: &Netns, to: SocketAddr| {
        let out = p.curl_in(from, &node, &["-f", &format!("http://{to}/x")]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Both directions through the sidecars' virtualInbound first.
    for (from, to) in [(&p.client, p.app.addr), (&p.server, client_app.addr)] {
        let body = get(from, to).unwrap_or_else(|| panic!("{} -> {to} failed", from.name()));
        assert!(body.contains("inbound=sluice-in"), "{body}");
    }

    // Server pod, no fail-open: inbound refused once its 15006 is drained.
    post_ok(&p.server, "/drain_listeners?inboundonly");
    eventually("server pod refuses inbound", || {
        get(&p.client, p.app.addr).is_none()
    });
    // Client pod, fail-open: inbound straight to the app (no x-inbound, the peer's own address).
    post_ok(&p.client, "/drain_listeners?inboundonly");
    eventually("client pod's app reached directly", || {
        get(&p.server, client_app.addr).is_some_and(|b| b.contains("inbound=\n"))
    });
    let body = get(&p.server, client_app.addr).expect("direct inbound");
    assert!(body.contains(&format!("peer={}:", p.veth.b_v4)), "{body}");

    // Outbound still captured by the client's sidecar until every listener is drained; then
    // nothing listens on 15001 and fail-open leaves the connect alone (connect4's
    // `skip_no_listener`), and the VIP has no route in the pod (curl 7, could not connect).
    let vip = || {
        let before = (node.counter("captured"), node.counter("skip_no_listener"));
        let code = p.curl(&node, &["http://10.96.0.10/"]).status.code();
        let captured = node.counter("captured") - before.0;
        (captured, node.counter("skip_no_listener") - before.1, code)
    };
    let (captured, skipped, code) = vip();
    assert_eq!((captured, skipped), (1, 0), "curl exit {code:?}");
    assert_ne!(code, Some(0), "the VIP has no endpoint");
    post_ok(&p.client, "/drain_listeners");
    eventually("client pod's outbound uncaptured", || {
        vip() == (0, 1, Some(7))
    });
    for s in &mut sidecars {
        s.sigterm();
        let st = s
            .wait_exit(Duration::from_secs(5))
            .expect("sidecar exits on SIGTERM");
        assert!(st.success(), "{st}: {}", s.log());
    }
}
