//! The L7 engine behind the node agent's capture listeners (`sluice agent --config`): a curl in
//! an enrolled pod to a ClusterIP is routed by the `virtualOutbound` listener's HCM (host +
//! prefix -> STATIC cluster, path rewrite, added header), and the upstream connection is opened
//! from inside the pod (source IP = the pod's).

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use sluice_tests::{agent_node::Node, sluice_cli::SluiceProcess, unique_name, Netns, Veth};

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

/// An HTTP/1.1 server on a thread in `ns`: answers every request with its request line, the
/// `x-routed-by` header and the peer address, then closes.
struct HttpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpEcho {
    fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            l.set_nonblocking(true).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut s, peer)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
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
        });
        let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Removes the config file's directory on drop.
struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn node_mode_outbound_is_routed_by_the_l7_engine() {
    sluice_tests::require_root();
    let client = Netns::new("l7c");
    let server = Netns::new("l7s");
    let veth = Veth::new("l7", &client, &server);
    let app = HttpEcho::start(&server, SocketAddr::new(veth.b_v4.into(), 0));
    let dir = TempDir(std::env::temp_dir().join(unique_name("l7cfg")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let cfg = dir.0.join("envoy.yaml");
    std::fs::write(&cfg, config(app.addr)).unwrap();
    let node = Node::start_with("l7", &["--config", cfg.to_str().unwrap()]);
    node.enroll(&client, &[]);

    // Host svc.test + /api: routed to the STATIC cluster, path rewritten, header added.
    let out = client
        .command("curl", Some(&node.cgroup))
        .args([
            "-sS",
            "-m",
            "5",
            "-H",
            "Host: svc.test",
            "http://10.96.0.10/api/items",
        ])
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
    assert!(body.contains("routed=sluice-l7"), "{body}");
    let client_ip: IpAddr = veth.a_v4.into();
    assert!(
        body.contains(&format!("peer={client_ip}:")),
        "the upstream must come from the client pod: {body}"
    );
    let pod = node.pod(&client);
    assert!(
        pod.recent_destinations
            .contains(&"10.96.0.10:80".to_string()),
        "{pod:?}"
    );

    // Another host falls to the ORIGINAL_DST passthrough: straight to the server pod, not rewritten.
    let url = format!("http://{}/api/items", app.addr);
    let out = client
        .command("curl", Some(&node.cgroup))
        .args(["-sS", "-m", "5", &url])
        .output()
        .expect("run curl");
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
    sluice_tests::require_root();
    let client = Netns::new("l8c");
    let server = Netns::new("l8s");
    let veth = Veth::new("l8", &client, &server);
    let app = HttpEcho::start(&server, SocketAddr::new(veth.b_v4.into(), 0));
    let dir = TempDir(std::env::temp_dir().join(unique_name("l8cfg")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let cfg = dir.0.join("envoy.yaml");
    std::fs::write(&cfg, config(app.addr)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let node = Node::start_with("l8", &["--config", cfg]);
    node.enroll(&server, &[]);
    node.enroll(&client, &["--mode", "sidecar"]);
    let ctl = node.ctl();
    let mut sidecar = SluiceProcess::sidecar_with(
        &client,
        1337,
        Some(&node.cgroup),
        &["--config", cfg, "--agent-control", &ctl],
    );
    sidecar.wait_for_log("inbound listeners registered", Duration::from_secs(5));

    let out = client
        .command("curl", Some(&node.cgroup))
        .args([
            "-sS",
            "-m",
            "5",
            "-H",
            "Host: svc.test",
            "http://10.96.0.10/api/items",
        ])
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert_eq!(node.pod(&server).inbound_accepted, 1);
    assert_eq!(
        node.pod(&client).accepted,
        0,
        "the agent must not proxy a sidecar pod"
    );
}

/// Graceful upgrade with `--config`: the new agent serves the handed-over 15001 and 15006
/// sockets of node-mode pods with the L7 engine, exactly as the old one did (outbound routed by
/// `virtualOutbound`, inbound by `virtualInbound` with its upstream from 127.0.0.6).
#[test]
fn node_mode_l7_is_served_by_the_new_agent_after_an_upgrade() {
    sluice_tests::require_root();
    let client = Netns::new("l9c");
    let server = Netns::new("l9s");
    let veth = Veth::new("l9", &client, &server);
    let app = HttpEcho::start(&server, SocketAddr::new(veth.b_v4.into(), 0));
    let dir = TempDir(std::env::temp_dir().join(unique_name("l9cfg")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let cfg = dir.0.join("envoy.yaml");
    std::fs::write(&cfg, config(app.addr)).unwrap();
    let mut node = Node::start_with("l9", &["--config", cfg.to_str().unwrap()]);
    node.enroll(&server, &[]);
    node.enroll(&client, &[]);
    let request = |node: &Node| {
        let out = client
            .command("curl", Some(&node.cgroup))
            .args([
                "-sS",
                "-m",
                "5",
                "-H",
                "Host: svc.test",
                "http://10.96.0.10/api/items",
            ])
            .output()
            .expect("run curl");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
        assert!(body.contains("routed=sluice-l7"), "outbound L7: {body}");
        assert!(body.contains("inbound=sluice-in"), "inbound L7: {body}");
        assert!(body.contains("peer=127.0.0.6:"), "inbound upstream: {body}");
    };
    request(&node);
    assert_eq!(node.pod(&server).inbound_accepted, 1);

    node.upgrade(Duration::from_secs(10));
    assert!(
        node.agent_log().contains("took over from the old agent"),
        "{}",
        node.agent_log()
    );
    request(&node);
    // Counted by the new agent: its adopted 15006 socket served the request.
    let s = node.pod(&server);
    assert_eq!(s.inbound_accepted, 1, "{s:?}");
    assert!(s.listeners.contains(&"[::]:15006".to_string()), "{s:?}");
    assert_eq!(node.pod(&client).accepted, 1);
}
