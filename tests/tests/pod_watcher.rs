//! The pod watcher (issue 11) against real netns pods: each "pod" is a netns with a process in a
//! cgroup named the way the kubelet names pod cgroups, and the watch stream is fed from Pod and
//! Namespace objects as the API server returns them (no API server runs here; the kube client
//! plumbing in sluice-k8s's `watch.rs` is kept thin for that reason).

use std::{
    process::{Child, Stdio},
    sync::Arc,
    time::Duration,
};

use sluice_k8s::{
    decide::Settings,
    pod_netns::{self, PodPids},
    reconcile::{self, ControlAgent, LoopOptions, Reconciler},
    store::Input,
    Event, Namespace, Pod,
};
use sluice_node::agent::health::ReadyGate;
use sluice_tests::{agent_node::Node, require_root, until, Cgroup, Netns};
use tokio::sync::mpsc;

const POD_JSON: &str = include_str!("../../proxy/k8s/tests/fixtures/pod-running.json");
const NS_JSON: &str = include_str!("../../proxy/k8s/tests/fixtures/namespace.json");

/// A process (`sleep`) in a netns and a cgroup; killed on drop.
struct PodProcess(Child);

impl PodProcess {
    fn start(ns: &Netns, cgroup: &Cgroup) -> Self {
        let child = ns
            .command("sleep", Some(cgroup))
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep in the pod");
        Self(child)
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UID unique to this test process and `n`.
fn uid(n: u32) -> String {
    format!("{:08x}-7a1e-4c2b-9d3f-{:012x}", std::process::id(), n)
}

/// A netns "pod" whose process runs in a systemd-driver kubelet pod cgroup under `parent`.
struct TestPod {
    // Drop order: the process, then its cgroup, then the netns.
    _proc: PodProcess,
    _cgroup: Cgroup,
    ns: Netns,
    uid: String,
}

impl TestPod {
    fn new(parent: &Cgroup, n: u32) -> Self {
        let uid = uid(n);
        let ns = Netns::new("podw");
        let cgroup = parent.child(&format!(
            "kubepods-besteffort-pod{}.slice",
            uid.replace('-', "_")
        ));
        let proc = PodProcess::start(&ns, &cgroup);
        Self {
            _proc: proc,
            _cgroup: cgroup,
            ns,
            uid,
        }
    }
}

#[test]
fn finds_a_running_pods_netns_from_its_uid() {
    require_root();
    let parent = Cgroup::new("podns");
    // systemd driver name.
    let a = TestPod::new(&parent, 1);
    // cgroupfs driver name: kubepods/burstable/pod<uid>/<container>.
    let kubepods = parent.child("kubepods");
    let burstable = kubepods.child("burstable");
    let b_uid = uid(2);
    let b_pod = burstable.child(&format!("pod{b_uid}"));
    let b_ctr = b_pod.child("0f9e8d7c6b5a");
    let b_ns = Netns::new("podns");
    let b_proc = PodProcess::start(&b_ns, &b_ctr);

    let proc = std::path::Path::new("/proc");
    let pids = PodPids::scan(proc).expect("scan /proc");
    let found = pod_netns::find(&pids, proc, &a.uid).expect("pod a");
    assert_eq!(found.netns, a.ns.name(), "named by its /run/netns entry");
    assert_eq!(found.inode, a.ns.inode());
    assert_eq!(found.cookie, a.ns.cookie());
    assert_eq!(found.pid, a._proc.0.id());
    // Asked with the systemd spelling (underscores), found through the cgroupfs one.
    let found = pod_netns::find(&pids, proc, &b_uid.replace('-', "_")).expect("pod b");
    assert_eq!(
        (found.inode, found.pid),
        (b_ns.inode(), b_proc.0.id()),
        "{found:?}"
    );
    let e = pod_netns::find(&pids, proc, &uid(3)).unwrap_err();
    assert!(e.to_string().contains("no process"), "{e}");
    drop(b_proc);
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let mut n: Namespace = serde_json::from_str(NS_JSON).expect("namespace fixture");
    n.metadata.name = Some(name.into());
    let l = n.metadata.labels.get_or_insert_with(Default::default);
    l.insert("kubernetes.io/metadata.name".into(), name.into());
    for (k, v) in labels {
        l.insert(k.to_string(), v.to_string());
    }
    n
}

fn pod(p: &TestPod, ns: &str, name: &str, annotations: &[(&str, &str)]) -> Pod {
    let mut o: Pod = serde_json::from_str(POD_JSON).expect("pod fixture");
    o.metadata.uid = Some(p.uid.clone());
    o.metadata.name = Some(name.into());
    o.metadata.namespace = Some(ns.into());
    let a = o.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in annotations {
        a.insert(k.to_string(), v.to_string());
    }
    o
}

/// The reconcile loop on its own thread and runtime, fed through a channel.
struct Watcher {
    tx: mpsc::UnboundedSender<Input>,
    ready: ReadyGate,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(node: &Node) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let ready = ReadyGate::not_ready("starting");
        // The watcher runs in this test process, the agent in its own.
        let agent = Arc::new(ControlAgent {
            path: node.control.path(),
            only_own_process: false,
        });
        let flag = ready.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let inputs = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|i| (i, rx))
            });
            let rec = Reconciler::new(Settings::default(), "/proc".into())
                .with_orphan_grace(Duration::from_secs(1));
            let opts = LoopOptions {
                resync: Duration::from_millis(300),
                error_hold: Duration::from_secs(1),
            };
            rt.block_on(reconcile::run(inputs, rec, agent, opts, Some(flag), None));
        });
        Self {
            tx,
            ready,
            thread: Some(thread),
        }
    }

    fn send(&self, i: Input) {
        self.tx.send(i).expect("watcher is running");
    }

    fn pods(&self, e: Event<Pod>) {
        self.send(Input::Pod(e));
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing the channel ends the stream, and with it the loop.
        let (dead, _) = mpsc::unbounded_channel();
        self.tx = dead;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (mode, listeners) of the pod in `ns` as the agent reports it, None when not enrolled.
fn enrolled(node: &Node, ns: &Netns) -> Option<(String, usize)> {
    let cookie = ns.cookie();
    node.status()
        .pods
        .into_iter()
        .find(|p| p.cookie == cookie)
        .map(|p| (p.mode, p.listeners.len()))
}

fn wait_enrolled(node: &Node, ns: &Netns, what: &str, want: Option<(&str, bool)>) {
    until(
        what,
        || enrolled(node, ns),
        |got| match (got, want) {
            (None, None) => true,
            (Some((m, l)), Some((wm, wl))) => m == wm && (*l > 0) == wl,
            _ => false,
        },
    );
}

#[test]
fn reconcile_enrolls_switches_unenrolls_and_reenrolls_after_reboot() {
    require_root();
    let mut node = Node::start("podw");
    let pods_cg = Cgroup::new("podw-pods");
    let a = TestPod::new(&pods_cg, 10);
    let b = TestPod::new(&pods_cg, 11);
    let c = TestPod::new(&pods_cg, 12);
    let d = TestPod::new(&pods_cg, 13);
    let e = TestPod::new(&pods_cg, 14);
    // Enrolled before the watcher starts: by the CNI plugin (it enrolls every pod of a
    // namespace it does not exclude), c in an uninjected namespace and a pod that no longer
    // exists; by hand, a netns that is no Kubernetes pod.
    node.enroll_pod(&c.ns, "plain", "c");
    let ghost = Netns::new("podw-ghost");
    node.enroll_pod(&ghost, "shop", "ghost");
    let manual = Netns::new("podw-manual");
    node.enroll(&manual, &["--mode", "node"]);

    let w = Watcher::start(&node);
    // The initial lists: `shop` is an Istio-injected namespace, `plain` is not.
    w.send(Input::Namespace(Event::Init));
    w.send(Input::Namespace(Event::InitApply(namespace(
        "shop",
        &[("istio-injection", "enabled")],
    ))));
    w.send(Input::Namespace(Event::InitApply(namespace("plain", &[]))));
    w.send(Input::Namespace(Event::InitDone));
    w.pods(Event::Init);
    w.pods(Event::InitApply(pod(&a, "shop", "a", &[])));
    w.pods(Event::InitApply(pod(
        &b,
        "shop",
        "b",
        &[("sluice.io/mode", "sidecar")],
    )));
    w.pods(Event::InitApply(pod(&c, "plain", "c", &[])));
    w.pods(Event::InitApply(pod(&d, "shop", "d", &[])));
    w.pods(Event::InitDone);

    // Pods running before the watcher started are enrolled as decided.
    wait_enrolled(
        &node,
        &a.ns,
        "a enrolled in node mode",
        Some(("node", true)),
    );
    wait_enrolled(
        &node,
        &b.ns,
        "b enrolled in sidecar mode",
        Some(("sidecar", false)),
    );
    wait_enrolled(
        &node,
        &d.ns,
        "d enrolled in node mode",
        Some(("node", true)),
    );
    assert_eq!(
        enrolled(&node, &c.ns),
        None,
        "c's namespace is not injected"
    );
    until("ready", || w.ready.is_ready(), |r| *r);
    let ident = node
        .pod(&a.ns)
        .pod
        .expect("the watcher enrolls with the pod's identity");
    assert_eq!(
        (ident.pod_namespace.as_deref(), ident.pod_name.as_deref()),
        (Some("shop"), Some("a"))
    );

    // An annotation change switches the mode live.
    w.pods(Event::Apply(pod(
        &a,
        "shop",
        "a",
        &[("sluice.io/mode", "sidecar")],
    )));
    wait_enrolled(
        &node,
        &a.ns,
        "a switched to sidecar",
        Some(("sidecar", false)),
    );
    // Opting out unenrolls.
    w.pods(Event::Apply(pod(
        &b,
        "shop",
        "b",
        &[("sidecar.istio.io/inject", "false")],
    )));
    wait_enrolled(&node, &b.ns, "b unenrolled (opted out)", None);
    // A deleted pod is unenrolled.
    w.pods(Event::Delete(pod(&d, "shop", "d", &[])));
    wait_enrolled(&node, &d.ns, "d unenrolled (deleted)", None);
    // A new pod is enrolled.
    w.pods(Event::Apply(pod(&e, "shop", "e", &[])));
    wait_enrolled(&node, &e.ns, "e enrolled", Some(("node", true)));
    // A bad annotation changes nothing (the error is logged).
    w.pods(Event::Apply(pod(
        &e,
        "shop",
        "e",
        &[("sluice.io/mode", "turbo")],
    )));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        enrolled(&node, &e.ns),
        Some(("node".into(), 4)),
        "e keeps node mode"
    );

    // Node reboot: the agent and its pins are gone; a fresh agent knows no pod. The watcher
    // (level-based) enrolls every pod that should be captured again, with no event.
    node.agent().terminate(Duration::from_secs(10));
    let pins = node.pins.path().to_path_buf();
    std::fs::remove_dir_all(&pins).expect("wipe pins (bpffs does not survive a reboot)");
    std::fs::create_dir_all(&pins).expect("recreate pin dir");
    node.restart();
    wait_enrolled(
        &node,
        &a.ns,
        "a re-enrolled after the reboot",
        Some(("sidecar", false)),
    );
    wait_enrolled(
        &node,
        &e.ns,
        "e re-enrolled after the reboot",
        Some(("node", true)),
    );
    for (p, what) in [(&b, "b"), (&c, "c"), (&d, "d")] {
        assert_eq!(enrolled(&node, &p.ns), None, "{what} stays unenrolled");
    }
    drop(w);
    let log = node.agent_log();
    assert!(!log.contains("ERROR"), "agent log:\n{log}");
}

#[test]
fn watch_errors_make_it_not_ready_until_the_server_answers() {
    require_root();
    let node = Node::start("podw-err");
    let w = Watcher::start(&node);
    w.send(Input::Namespace(Event::Init));
    w.send(Input::Namespace(Event::InitDone));
    w.pods(Event::Init);
    w.pods(Event::InitDone);
    until("ready", || w.ready.is_ready(), |r| *r);
    w.send(Input::WatchError("connection refused".into()));
    until("the reason", || w.ready.reason(), |r| r.is_some());
    let reason = w.ready.reason().unwrap_or_default();
    assert!(
        reason.contains("Kubernetes API server unreachable")
            && reason.contains("connection refused"),
        "{reason}"
    );
    until(
        "not ready after a watch error",
        || w.ready.is_ready(),
        |r| !*r,
    );
    // error_hold (1 s) without another error: ready again.
    until("ready again", || w.ready.is_ready(), |r| *r);
}

/// `GET path` on `addr`; the status line, or the error.
fn http_status(addr: std::net::SocketAddr, path: &str) -> String {
    sluice_tests::http_get(addr, path)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A fake API server listing `p` as `shop/NAME` on node-1 (namespace `shop` with
/// istio-injection=enabled), a kubeconfig for it in a fresh directory, and that file's path.
fn api_serving(
    p: &TestPod,
    name: &str,
) -> (
    sluice_tests::kube_api::FakeApiServer,
    std::path::PathBuf,
    String,
) {
    let mut obj = serde_json::to_value(pod(p, "shop", name, &[])).unwrap();
    obj["spec"]["nodeName"] = "node-1".into();
    let api = sluice_tests::kube_api::FakeApiServer::start(
        vec![obj],
        vec![serde_json::to_value(namespace("shop", &[("istio-injection", "enabled")])).unwrap()],
    );
    let dir = std::env::temp_dir().join(sluice_tests::unique_name("kubeconfig"));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = api.kubeconfig(&dir).to_string_lossy().into_owned();
    (api, dir, kc)
}

#[test]
fn agent_watch_pods_enrolls_from_the_api_server_and_is_not_ready_without_it() {
    require_root();
    let pods_cg = Cgroup::new("podw-api-pods");
    let p = TestPod::new(&pods_cg, 20);
    let (api, dir, kc) = api_serving(&p, "web-0");
    let health = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let ha = health.to_string();
    let mut node = Node::start_with(
        "podw-api",
        &[
            "--watch-pods",
            "--node-name",
            "node-1",
            "--kubeconfig",
            &kc,
            "--health-addr",
            &ha,
        ],
    );
    std::fs::remove_dir_all(&dir).ok();

    // The pod listed by the API server is enrolled, and the agent is ready.
    wait_enrolled(
        &node,
        &p.ns,
        "web-0 enrolled by the agent's watcher",
        Some(("node", true)),
    );
    until(
        "ready",
        || http_status(health, "/healthz/ready"),
        |s| s.contains("200"),
    );
    let reqs = api.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "pods listed with this node's field selector: {reqs:#?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces?")),
        "{reqs:#?}"
    );

    // The API server goes away: not ready (clear log line), still live, nothing unenrolled.
    drop(api);
    until(
        "not ready",
        || http_status(health, "/healthz/ready"),
        |s| s.contains("503"),
    );
    assert!(http_status(health, "/healthz/live").contains("200"));
    node.wait_for_log("Kubernetes API server unreachable");
    // The reason is in the probe's body too, as for every bad host input (tests/tests/bad_host.rs).
    let body = sluice_tests::http_get(health, "/healthz/ready");
    assert!(
        body.contains("not ready: pod watcher: Kubernetes API server unreachable"),
        "{body}"
    );
    assert_eq!(
        enrolled(&node, &p.ns),
        Some(("node".into(), 4)),
        "capture stays"
    );
    assert!(
        node.agent().wait_exit(Duration::from_millis(200)).is_none(),
        "the agent keeps running"
    );
}

/// A string field of a protobuf Struct.
fn struct_str(s: &envoy_types::pb::google::protobuf::Struct, key: &str) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

#[test]
fn agent_watch_pods_gives_each_pod_stream_its_labels_and_service_account() {
    use envoy_types::pb::google::protobuf::value::Kind;
    require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let xds = rt.block_on(sluice_tests::xds_server::XdsServer::start());
    let pods_cg = Cgroup::new("podw-xds-pods");
    let p = TestPod::new(&pods_cg, 30);
    // The fixture: labels app=reviews, version=v1, pod-template-hash; owned by the ReplicaSet
    // reviews-v1-5b4c8d7f9c; service account bookinfo-reviews.
    let name = "reviews-v1-5b4c8d7f9c-x2k8q";
    let (api, dir, kc) = api_serving(&p, name);
    let address = format!("http://{}", xds.addr);
    let node = Node::start_with(
        "podw-xds",
        &[
            "--watch-pods",
            "--node-name",
            "node-1",
            "--kubeconfig",
            &kc,
            "--xds-address",
            &address,
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
    wait_enrolled(
        &node,
        &p.ns,
        "enrolled by the watcher",
        Some(("node", true)),
    );

    let records = until(
        "the pod's ADS stream",
        || xds.stream_records(),
        |r| !r.is_empty(),
    );
    assert_eq!(records.len(), 1, "{records:#?}");
    let n = &records[0].node;
    assert_eq!(
        n.id, "sidecar~0.0.0.0~reviews-v1-5b4c8d7f9c-x2k8q.shop~shop.svc.cluster.local",
        "the pod netns has no address here"
    );
    assert_eq!(
        n.cluster, "reviews.shop",
        "Istio's service cluster: app.namespace"
    );
    let meta = n.metadata.as_ref().expect("node metadata");
    assert_eq!(
        struct_str(meta, "SERVICE_ACCOUNT").as_deref(),
        Some("bookinfo-reviews")
    );
    assert_eq!(
        struct_str(meta, "WORKLOAD_NAME").as_deref(),
        Some("reviews-v1")
    );
    assert_eq!(
        struct_str(meta, "OWNER").as_deref(),
        Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/reviews-v1")
    );
    assert_eq!(struct_str(meta, "NAME").as_deref(), Some(name));
    let labels = match meta.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(s)) => s.clone(),
        other => panic!("LABELS: {other:?}"),
    };
    for (k, v) in [
        ("app", "reviews"),
        ("version", "v1"),
        ("pod-template-hash", "5b4c8d7f9c"),
        ("service.istio.io/canonical-name", "reviews"),
        ("service.istio.io/canonical-revision", "v1"),
    ] {
        assert_eq!(
            struct_str(&labels, k).as_deref(),
            Some(v),
            "LABELS {k}: {labels:?}"
        );
    }
    drop(node);
    drop(api);
    drop(p);
}
