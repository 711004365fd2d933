//! Runs the real `sluice proxy -c <file>` binary on loopback and talks to it with curl.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A free loopback port (bound then released), below the ephemeral range: a port from
/// `bind(0)` could be taken, before the proxy binds it, as the local port of any outgoing
/// connection on the machine (seen once as a proxy-status test whose listener never came up).
pub fn free_port() -> u16 {
    crate::conformance::proxy::free_ports::<1>()[0]
}

/// Path of the `sluice` binary (the one the namespaced tests run, see
/// [`crate::sluice_cli::sluice_bin`]).
pub use crate::sluice_cli::sluice_bin;

/// A private temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `/tmp/sluice-l7-test-<pid>-<tag>-<n>`.
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("sluice-l7-test-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `sluice proxy` process (killed on drop).
pub struct ProxyProcess {
    child: Child,
    /// Admin address.
    pub admin: SocketAddr,
    /// Config file (rewrite it to trigger a reload).
    pub config: PathBuf,
    /// Temp dir holding the config and logs.
    pub dir: TempDir,
}

impl ProxyProcess {
    /// Writes `yaml` (which must use `admin_port`) and starts the proxy; waits for /ready.
    pub fn start(yaml: &str, admin_port: u16) -> Self {
        let dir = TempDir::new("proxy");
        Self::start_in(dir, yaml, admin_port)
    }

    /// Like [`start`](Self::start) with a caller-made temp dir (for files the config names).
    pub fn start_in(dir: TempDir, yaml: &str, admin_port: u16) -> Self {
        Self::start_with(dir, yaml, admin_port, 200)
    }

    /// Like [`start_in`](Self::start_in) with the config poll interval (0: SIGHUP only).
    pub fn start_with(dir: TempDir, yaml: &str, admin_port: u16, poll_ms: u64) -> Self {
        Self::start_args(dir, yaml, admin_port, poll_ms, &[])
    }

    /// Like [`start_with`](Self::start_with) with more `sluice proxy` arguments.
    pub fn start_args(
        dir: TempDir,
        yaml: &str,
        admin_port: u16,
        poll_ms: u64,
        extra: &[&str],
    ) -> Self {
        let config = dir.path("envoy.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path("proxy.log")).unwrap();
        let child = Command::new(sluice_bin())
            .args(["proxy", "-c"])
            .arg(&config)
            .args([
                "--reload-poll-ms",
                &poll_ms.to_string(),
                "--log-level",
                "info",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice proxy");
        let mut p = Self {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            config,
            dir,
        };
        p.wait_ready();
        p
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sluice proxy exited with {status}; log:\n{}", self.log());
            }
            if let Some((200, _, _)) =
                curl_opt(&["-s", "-m", "1", &format!("http://{}/ready", self.admin)])
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy not ready in 10 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP (config reload) to the proxy.
    pub fn sighup(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    }

    /// The proxy's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("proxy.log")).unwrap_or_default()
    }

    /// GET an admin path; returns the body.
    pub fn admin_get(&self, path: &str) -> String {
        let (status, _, body) = curl(&["-s", &format!("http://{}{path}", self.admin)]);
        assert_eq!(status, 200, "admin {path}");
        body
    }

    /// A counter from /stats (0 when absent).
    pub fn stat(&self, name: &str) -> u64 {
        self.admin_get("/stats")
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// Sends SIGHUP and waits (5 s at most) until `server.reloads` has counted the reload.
    pub async fn reload(&self) {
        let before = self.stat("server.reloads");
        self.sighup();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.stat("server.reloads") == before {
            assert!(
                Instant::now() < deadline,
                "SIGHUP reload not applied; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (status, headers lower-cased, body) of a curl call.
pub type CurlResponse = (u16, Vec<(String, String)>, String);

/// Runs curl with `args` plus `-i` (headers in output); returns (status, headers lower-cased,
/// body). Panics when curl cannot run or gets no response.
pub fn curl(args: &[&str]) -> CurlResponse {
    curl_opt(args).unwrap_or_else(|| panic!("curl {args:?}: no HTTP response"))
}

/// Like [`curl`], None when there is no HTTP response.
pub fn curl_opt(args: &[&str]) -> Option<CurlResponse> {
    let out = Command::new("curl")
        .arg("-i")
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    parse_response(&text)
}

/// Parses the last response head in `text` (curl -i output may hold a 100 Continue first).
pub fn parse_response(text: &str) -> Option<CurlResponse> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, body.to_string()))
}

/// The first value of header `name` (lower-case).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One route (a YAML list item for [`http_bootstrap`]'s `routes`): prefix `/` to `cluster`.
pub fn route_to(cluster: &str) -> String {
    format!("              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: {cluster} }}\n")
}

/// A STATIC cluster block (YAML list item, 2-space indented under `clusters:`).
pub fn static_cluster(name: &str, ports: &[u16], extra: &str) -> String {
    let mut eps = String::new();
    for p in ports {
        eps.push_str(&format!(
            "        - endpoint:\n            address:\n              socket_address: {{ address: 127.0.0.1, port_value: {p} }}\n"
        ));
    }
    if ports.is_empty() {
        return format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{extra}    load_assignment:\n      cluster_name: {name}\n      endpoints: []\n"
        );
    }
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{extra}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{eps}"
    )
}

/// A bootstrap with admin on `admin_port`, one HCM listener on `port` whose virtual host `*`
/// has `routes` (YAML list items indented 14 spaces), plus `clusters` (from [`static_cluster`]).
/// `hcm_extra` goes into the HCM typed_config (10-space indent).
pub fn http_bootstrap(
    admin_port: u16,
    port: u16,
    routes: &str,
    clusters: &str,
    hcm_extra: &str,
) -> String {
    format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
static_resources:
  listeners:
  - name: main
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
{hcm_extra}          route_config:
            name: local
            virtual_hosts:
            - name: svc
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#
    )
}
