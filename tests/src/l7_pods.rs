//! Pods served by the L7 engine behind the node agent (`sluice agent --config`): a client and a
//! server netns on a veth, an HTTP app in the server, and the Istio-shaped config of
//! tests/fixtures/l7-capture.yaml with a `virtualOutbound` listener that routes host `svc.test`
//! and prefix `/api` to the app (prefix rewritten, header added) and everything else through
//! `PassthroughCluster`. Used by tests/tests/l7_capture.rs and tests/tests/agent_reload.rs.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Output,
    time::Duration,
};

use crate::{agent_node::Node, ns_server::NsServer, upstream::harness::TempDir, Netns, Veth};

/// The shared config (also the soak's, xtask/src/soak/config.rs).
pub const FIXTURE: &str = include_str!("../fixtures/l7-capture.yaml");
/// The route rewrite of [`L7Pods::new`]'s config: `/api/items` reaches the app as
/// `/v2/api/items`.
pub const REWRITE: &str = "/v2/api";

/// [`FIXTURE`] with the `svc` cluster at `upstream` and each `# @NAME@` marker line replaced by
/// its text from `parts` (markers not named stay comments).
pub fn fill(upstream: SocketAddr, parts: &[(&str, &str)]) -> String {
    let text = FIXTURE
        .replace("SVC_ADDRESS", &upstream.ip().to_string())
        .replace("SVC_PORT", &upstream.port().to_string());
    let mut out = String::new();
    for line in text.lines() {
        let marker = line
            .trim()
            .strip_prefix("# @")
            .and_then(|m| m.strip_suffix('@'));
        match parts.iter().find(|(name, _)| Some(*name) == marker) {
            Some((_, part)) => out.push_str(part),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The config: `svc.test` + `/api` -> the STATIC cluster `svc` at `upstream`, its prefix
/// rewritten to `rewrite`, `x-routed-by: sluice-l7` added.
pub fn config(upstream: SocketAddr, rewrite: &str) -> String {
    let routes = format!(
        r#"              - match: {{ prefix: "/api" }}
                route: {{ cluster: svc, prefix_rewrite: "{rewrite}" }}
                request_headers_to_add:
                - header: {{ key: x-routed-by, value: sluice-l7 }}
"#
    );
    fill(upstream, &[("SVC_ROUTES", &routes)])
}

/// Reads a request head (up to the blank line; 5 s timeout), lossily as text.
pub fn read_head(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The app behind the L7 routes: answers one HTTP/1.1 request with its request line, the
/// `x-routed-by` and `x-inbound` headers and the peer address, then closes.
pub fn http_echo(mut s: TcpStream, peer: SocketAddr) {
    let head = read_head(&mut s);
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
pub struct L7Pods {
    /// The config file's path.
    pub cfg: String,
    _dir: TempDir,
    /// The app.
    pub app: NsServer,
    /// The client-server link.
    pub veth: Veth,
    /// The server pod.
    pub server: Netns,
    /// The client pod.
    pub client: Netns,
}

impl L7Pods {
    /// `tag`: at most 2 characters (the netns get `<tag>c` / `<tag>s`).
    pub fn new(tag: &str) -> Self {
        crate::require_root();
        let client = Netns::new(&format!("{tag}c"));
        let server = Netns::new(&format!("{tag}s"));
        let veth = Veth::new(tag, &client, &server);
        let app = NsServer::start(&server, SocketAddr::new(veth.b_v4.into(), 0), http_echo);
        let dir = TempDir::new(&format!("{tag}cfg"));
        let cfg = dir.path("envoy.yaml");
        std::fs::write(&cfg, config(app.addr, REWRITE)).unwrap();
        Self {
            cfg: cfg.to_str().expect("UTF-8 temp path").to_string(),
            _dir: dir,
            app,
            veth,
            server,
            client,
        }
    }

    /// `curl -sS -m 5 <args>` in `pod`, inside the node's cgroup.
    pub fn curl_in(&self, pod: &Netns, node: &Node, args: &[&str]) -> Output {
        pod.command("curl", Some(&node.cgroup))
            .args(["-sS", "-m", "5"])
            .args(args)
            .output()
            .expect("run curl")
    }

    /// `curl -sS -m 5 <args>` in the client pod, inside the node's cgroup.
    pub fn curl(&self, node: &Node, args: &[&str]) -> Output {
        self.curl_in(&self.client, node, args)
    }

    /// `GET http://10.96.0.10/api/items` with `Host: svc.test` from `pod`; asserts curl
    /// succeeded and returns the body.
    pub fn get_svc_in(&self, pod: &Netns, node: &Node) -> String {
        let out = self.curl_in(
            pod,
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

    /// [`get_svc_in`](Self::get_svc_in) from the client pod.
    pub fn get_svc(&self, node: &Node) -> String {
        self.get_svc_in(&self.client, node)
    }
}

/// Answers one request with `backend=<name>` and its request line.
pub fn named_app(name: &'static str) -> impl FnMut(TcpStream, SocketAddr) + Send + 'static {
    move |mut s, _| {
        let head = read_head(&mut s);
        let line = head.lines().next().unwrap_or_default();
        let body = format!("backend={name}\nline={line}\n");
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
