//! The L7 engine behind the node agent's capture listeners (`sluice agent --config`): a curl in
//! an enrolled pod to a ClusterIP is routed by the `virtualOutbound` listener's HCM (host +
//! prefix -> STATIC cluster, path rewrite, added header), and the upstream connection is opened
//! from inside the pod (source IP = the pod's).

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    process::Output,
    time::Duration,
};

use sluice_node::agent::protocol::PodStatus;
use sluice_tests::{
    agent_node::Node, ns_server::NsServer, sluice_cli::SluiceProcess, upstream::harness::TempDir,
    Netns, Veth,
};

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: virtualOutbound
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 15001 }}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config:
            virtual_hosts:
            - name: svc
              domains: ["svc.test"]
              routes:
              - match: {{ prefix: "/api" }}
                route: {{ cluster: svc, prefix_rewrite: "/v2/api" }}
                request_headers_to_add:
                - header: {{ key: x-routed-by, value: sluice-l7 }}
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: PassthroughCluster }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: virtualInbound
    address:
      socket_address: {{ address: 0.0.0.0, port_value: 15006 }}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          route_config:
            virtual_hosts:
            - name: inbound
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: InboundPassthroughCluster }}
                request_headers_to_add:
                - header: {{ key: x-inbound, value: sluice-in }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: InboundPassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
  - name: svc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
"#,
        ip = upstream.ip(),
        port = upstream.port()
    )
}

/// The app behind the L7 routes: answers one HTTP/1.1 request with its request line, the
/// `x-routed-by` and `x-inbound` headers and the peer address, then closes.
fn http_echo(mut s: TcpStream, peer: SocketAddr) {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or_default().to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix(&format!("{name}: "))
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    let body = format!(
        "line={line}\nrouted={}\ninbound={}\npeer={peer}\n",
        header("x-routed-by"),
        header("x-inbound")
    );
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A client and a server netns on a veth, the [`http_echo`] app in the server (end `b`), and
/// [`config`] routing `svc` to it, written to a temp file. Drops the app before the namespaces.
struct L7Pods {
    /// The config file's path.
    cfg: String,
    _dir: TempDir,
    app: NsServer,
    veth: Veth,
    server: Netns,
    client: Netns,
}

impl L7Pods {
    /// `tag`: at most 2 characters (the netns get `<tag>c` / `<tag>s`).
    fn new(tag: &str) -> Self {
        sluice_tests::require_root();
        let client = Netns::new(&format!("{tag}c"));
        let server = Netns::new(&format!("{tag}s"));
        let veth = Veth::new(tag, &client, &server);
        let app = NsServer::start(&server, SocketAddr::new(veth.b_v4.into(), 0), http_echo);
        let dir = TempDir::new(&format!("{tag}cfg"));
        let cfg = dir.path("envoy.yaml");
        std::fs::write(&cfg, config(app.addr)).unwrap();
        Self {
            cfg: cfg.to_str().expect("UTF-8 temp path").to_string(),
            _dir: dir,
            app,
            veth,
            server,
            client,
        }
    }

    /// `curl -sS -m 5 <args>` in the client pod, inside the node's cgroup.
    fn curl(&self, node: &Node, args: &[&str]) -> Output {
        self.client
            .command("curl", Some(&node.cgroup))
            .args(["-sS", "-m", "5"])
            .args(args)
            .output()
            .expect("run curl")
    }

    /// `GET http://10.96.0.10/api/items` with `Host: svc.test` from the client pod; asserts curl
    /// succeeded and returns the body.
    fn get_svc(&self, node: &Node) -> String {
        let out = self.curl(
            node,
            &["-H", "Host: svc.test", "http://10.96.0.10/api/items"],
        );
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The pod's status once its connections have ended and their bytes were reported (bounded).
fn wait_for_closed_bytes(node: &Node, pod: &Netns) -> PodStatus {
    for _ in 0..100 {
        let st = node.pod(pod);
        if st.active == 0 && st.bytes_in > 0 {
            return st;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("connection bytes never reported: {:?}", node.pod(pod));
}

#[test]
fn node_mode_outbound_is_routed_by_the_l7_engine() {
    let p = L7Pods::new("l7");
    let node = Node::start_with("l7", &["--config", &p.cfg]);
    node.enroll(&p.client, &[]);

    // Host svc.test + /api: routed to the STATIC cluster, path rewritten, header added.
    let body = p.get_svc(&node);
    assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
    assert!(body.contains("routed=sluice-l7"), "{body}");
    let client_ip: IpAddr = p.veth.a_v4.into();
    assert!(
        body.contains(&format!("peer={client_ip}:")),
        "the upstream must come from the client pod: {body}"
    );
    let pod = node.pod(&p.client);
    assert!(
        pod.recent_destinations
            .contains(&"10.96.0.10:80".to_string()),
        "{pod:?}"
    );
    // The pod is served by the L7 engine, and `sluice status` counts it like an L4 pod: one
    // connection, closed, with the request's and the response's bytes (curl closed it).
    let pod = wait_for_closed_bytes(&node, &p.client);
    assert_eq!(
        (pod.accepted, pod.active, pod.upstream_failures),
        (1, 0, 0),
        "{pod:?}"
    );
    assert!(pod.bytes_out > 60, "request bytes app -> upstream: {pod:?}");
    assert!(
        pod.bytes_in > 100,
        "response bytes upstream -> app: {pod:?}"
    );

    // Another host falls to the ORIGINAL_DST passthrough: straight to the server pod, not rewritten.
    let url = format!("http://{}/api/items", p.app.addr);
    let out = p.curl(&node, &[&url]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("line=GET /api/items HTTP/1.1"), "{body}");
    assert!(body.contains("routed=\n"), "{body}");
    assert!(body.contains(&format!("peer={client_ip}:")), "{body}");
}

/// `sluice sidecar --config` in a sidecar-mode client pod routes outbound with `virtualOutbound`;
/// the server pod (node mode, `sluice agent --config`) serves the connection with
/// `virtualInbound`, whose upstream socket is bound to 127.0.0.6 inside the server pod.
#[test]
fn sidecar_outbound_and_node_inbound_through_the_l7_engine() {
    let p = L7Pods::new("l8");
    let node = Node::start_with("l8", &["--config", &p.cfg]);
    node.enroll(&p.server, &[]);
    node.enroll(&p.client, &["--mode", "sidecar"]);
    let ctl = node.ctl();
    let mut sidecar = SluiceProcess::sidecar_with(
        &p.client,
        1337,
        Some(&node.cgroup),
        &["--config", &p.cfg, "--agent-control", &ctl],
    );
    sidecar.wait_for_log("inbound listeners registered", Duration::from_secs(5));

    let body = p.get_svc(&node);
    assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
    assert!(
        body.contains("routed=sluice-l7"),
        "outbound L7 (sidecar): {body}"
    );
    assert!(
        body.contains("inbound=sluice-in"),
        "inbound L7 (agent): {body}"
    );
    assert!(
        body.contains("peer=127.0.0.6:"),
        "inbound upstream source: {body}"
    );
    assert!(
        sidecar.log().contains("orig_dst=10.96.0.10:80"),
        "{}",
        sidecar.log()
    );
    assert_eq!(node.pod(&p.server).inbound_accepted, 1);
    assert_eq!(
        node.pod(&p.client).accepted,
        0,
        "the agent must not proxy a sidecar pod"
    );
}

/// Graceful upgrade with `--config`: the new agent serves the handed-over 15001 and 15006
/// sockets of node-mode pods with the L7 engine, exactly as the old one did (outbound routed by
/// `virtualOutbound`, inbound by `virtualInbound` with its upstream from 127.0.0.6).
#[test]
fn node_mode_l7_is_served_by_the_new_agent_after_an_upgrade() {
    let p = L7Pods::new("l9");
    let mut node = Node::start_with("l9", &["--config", &p.cfg]);
    node.enroll(&p.server, &[]);
    node.enroll(&p.client, &[]);
    let request = |node: &Node| {
        let body = p.get_svc(node);
        assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
        assert!(body.contains("routed=sluice-l7"), "outbound L7: {body}");
        assert!(body.contains("inbound=sluice-in"), "inbound L7: {body}");
        assert!(body.contains("peer=127.0.0.6:"), "inbound upstream: {body}");
    };
    request(&node);
    assert_eq!(node.pod(&p.server).inbound_accepted, 1);

    node.upgrade(Duration::from_secs(10));
    assert!(
        node.agent_log().contains("took over from the old agent"),
        "{}",
        node.agent_log()
    );
    request(&node);
    // Counted by the new agent: its adopted 15006 socket served the request.
    let s = node.pod(&p.server);
    assert_eq!(s.inbound_accepted, 1, "{s:?}");
    assert!(s.listeners.contains(&"[::]:15006".to_string()), "{s:?}");
    assert_eq!(node.pod(&p.client).accepted, 1);
}
