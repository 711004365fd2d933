//! The admin tests' harness: one fixture (`tests/fixtures/proxy_config/*.yaml`) under a real
//! Envoy 1.40 and under `sluice proxy`, each with its own loopback admin port; both processes
//! are killed (by their own pid) and reaped when the guard drops, also on panic.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    conformance::proxy::{envoy_binary, free_ports},
    sluice_cli::sluice_bin,
};

/// The fixture directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/proxy_config")
}

/// One running proxy with its admin address.
pub struct Proxy {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub admin: String,
    dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Proxy {
    /// The config file it runs (the fixture with its admin port filled in).
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// Its process id (to send it SIGHUP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it SIGHUP: `sluice proxy` reloads its config file.
    pub fn sighup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid")),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP the proxy");
    }
}

/// A bootstrap for [`start_text`]: one HTTP listener on `port` whose HCM has `hcm_options`
/// (YAML at the HCM's indentation) and answers every request with a direct 200.
pub fn direct_response_config(port: u16, hcm_options: &str) -> String {
    hcm_config(port, hcm_options, "", "direct_response: {status: 200}")
}

/// A bootstrap for [`start_text`]: one HTTP listener on `port` whose HCM has `hcm_options`
/// (YAML at the HCM's indentation), the HTTP filters `filters` (flow-style list items, each
/// followed by `, `) before the router, and one route `/` with `action` (flow style).
pub fn hcm_config(port: u16, hcm_options: &str, filters: &str, action: &str) -> String {
    let routes = format!(
        r#"route_config: {{virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, {action}}}]}}]}}"#
    );
    hcm_bootstrap(
        port,
        &format!("{hcm_options}\n          {routes}"),
        filters,
        "",
    )
}

/// [`hcm_config`] with the HCM's other fields given whole (`hcm_fields`: YAML at the HCM's
/// indentation, its `route_config` included) and `clusters` (YAML list items at the
/// `clusters:` indentation, or empty).
pub fn hcm_bootstrap(port: u16, hcm_fields: &str, filters: &str, clusters: &str) -> String {
    let clusters = match clusters {
        "" => String::new(),
        c => format!("  clusters:\n{c}"),
    };
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          http_filters: [{filters}{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          {hcm_fields}
{clusters}"#
    )
}

/// One static listener (YAML list item at the `listeners:` indentation) named `name` on
/// `127.0.0.1:port` whose one network filter is `filter` (its config's `@type` `type_url`) with
/// `stat_prefix: <name>` and the further `fields` (YAML lines at the config's indentation, each
/// ending in a newline, or empty).
pub fn listener_yaml(name: &str, port: u16, filter: &str, type_url: &str, fields: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: {filter}
        typed_config:
          "@type": type.googleapis.com/{type_url}
          stat_prefix: {name}
{fields}"#
    )
}

/// [`listener_yaml`] with a tcp_proxy to `cluster`.
pub fn tcp_proxy_listener(name: &str, port: u16, cluster: &str, fields: &str) -> String {
    listener_yaml(
        name,
        port,
        "envoy.filters.network.tcp_proxy",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        &format!("          cluster: {cluster}\n{fields}"),
    )
}

/// [`listener_yaml`] with an HTTP connection manager of `fields`.
pub fn hcm_listener(name: &str, port: u16, fields: &str) -> String {
    listener_yaml(
        name,
        port,
        "envoy.filters.network.http_connection_manager",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        fields,
    )
}

/// A bootstrap ([`hcm_bootstrap`]) whose every request goes to one STATIC cluster `name` of
/// loopback endpoints on `ports`, with the extra cluster `fields` (YAML lines indented by 4).
pub fn one_cluster_bootstrap(port: u16, name: &str, fields: &str, ports: &[u16]) -> String {
    let eps: String = ports
        .iter()
        .map(|p| format!("{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}}}, "))
        .collect();
    let routes = format!(
        r#"route_config: {{virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: {name}}}}}]}}]}}"#
    );
    let cluster = format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{fields}    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{lb_endpoints: [{eps}]}}]\n"
    );
    hcm_bootstrap(port, &routes, "", &cluster)
}

/// The `health_flags` `/clusters` at `admin` shows for the host `127.0.0.1:port` of `cluster`
/// (`<none>` when it lists no such host).
pub fn host_health_flags(admin: &str, cluster: &str, port: u16) -> String {
    let (_, clusters) = get(admin, "GET", "/clusters");
    let key = format!("{cluster}::127.0.0.1:{port}::health_flags::");
    clusters
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or("<none>")
        .to_string()
}

/// Starts `envoy` (true) or `sluice proxy` on `fixture` and waits until `/ready` answers 200.
pub fn start(fixture: &str, envoy: bool) -> Proxy {
    let text = std::fs::read_to_string(fixtures().join(fixture))
        .unwrap_or_else(|e| panic!("read fixture {fixture}: {e}"));
    start_text(fixture, &text, envoy)
}

/// [`start`] on the config `text` (`ADMIN_PORT` in it is replaced by a free port); `fixture`
/// names it in messages.
pub fn start_text(fixture: &str, text: &str, envoy: bool) -> Proxy {
    let [port] = free_ports::<1>();
    let dir = std::env::temp_dir().join(format!(
        "sluice-admin-{}-{}-{port}",
        std::process::id(),
        if envoy { "envoy" } else { "sluice" }
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, text.replace("ADMIN_PORT", &port.to_string())).expect("write config");
    let log = std::fs::File::create(dir.join("log")).expect("log file");
    let mut cmd = if envoy {
        let mut c = Command::new(envoy_binary());
        c.arg("-c").arg(&cfg).args([
            "--base-id",
            &port.to_string(),
            "-l",
            "warning",
            "--concurrency",
            "1",
            // Files (access and event logs) reach the disk within 50 ms, as sluice writes them.
            "--file-flush-interval-msec",
            "50",
        ]);
        c
    } else {
        let mut c = Command::new(sluice_bin());
        c.arg("proxy")
            .arg("-c")
            .arg(&cfg)
            .args(["--reload-poll-ms", "0"]);
        c
    };
    let child = cmd
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", if envoy { "envoy" } else { "sluice" }));
    let p = Proxy {
        child,
        admin: format!("127.0.0.1:{port}"),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&p.admin, "GET", "/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "{fixture} under {}: admin {} not ready; log:\n{}",
            if envoy { "envoy" } else { "sluice" },
            p.admin,
            std::fs::read_to_string(p.dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// One admin request: (status, body); (0, error) when the connection fails.
pub fn get(admin: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return (0, "connect failed".into());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, text);
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = b.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        b = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// The SecretsConfigDump of a `/config_dump` body (the certificates istioctl's
/// `proxy-config secret` reads).
pub fn secrets_config_dump(body: &str) -> serde_json::Value {
    let dump: serde_json::Value = serde_json::from_str(body).expect("/config_dump JSON");
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump")
        .cloned()
        .expect("a SecretsConfigDump")
}

/// An HTTP/2 (prior knowledge) client connection to a proxy's listener on `127.0.0.1:port`, its
/// connection driven on the current runtime.
pub async fn h2_client<B>(port: u16) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the proxy");
    let io = hyper_util::rt::TokioIo::new(s);
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

/// A log file a proxy under test writes (an access log's `path`), named for the test and the
/// proxy, removed when dropped (also when the test panics).
pub struct TempLog(PathBuf);

impl TempLog {
    /// A fresh file name for test `tag` under `envoy` or sluice.
    pub fn new(tag: &str, envoy: bool) -> Self {
        let who = if envoy { "envoy" } else { "sluice" };
        let p = std::env::temp_dir().join(format!("sluice-{tag}-{}-{who}.log", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Self(p)
    }

    /// The path, for the config.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    /// The lines written so far, sorted (loggers of one file may interleave).
    pub fn sorted_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
