//! Driving a proxy under xDS in tests: start `sluice proxy` or Envoy on a bootstrap, send
//! requests, and record what each step observed ([`Run`]): ACK/NACK per version and every
//! request's status and upstream. A strict run (sluice) also asserts the expectations; a
//! reference run (Envoy) only records them, for a differential comparison.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    conformance::proxy::envoy_binary,
    upstream::harness::{curl_opt, header, ProxyProcess, TempDir},
    xds_server::XdsServer,
};

/// `(status, x-upstream)` of GET `path` on `port`; `None` when nothing answers.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_with(port, path, None).await
}

/// [`get`] with an extra request header (`name: value`).
pub async fn get_with(port: u16, path: &str, header_line: Option<&str>) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let h = header_line.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut args = vec!["-s", "-m", "3", url.as_str()];
        if let Some(h) = &h {
            args.extend(["-H", h.as_str()]);
        }
        curl_opt(&args)
    })
    .await
    .unwrap()
    .map(|(s, h, _)| (s, header(&h, "x-upstream").unwrap_or("").to_string()))
}

/// Which proxy a scenario drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `sluice proxy`.
    Sluice,
    /// Envoy 1.40, the reference.
    Envoy,
}

/// A running proxy under test (killed on drop).
pub enum Proxy {
    /// `sluice proxy`.
    Sluice(ProxyProcess),
    /// The process and its directory (config, log), removed after it.
    Envoy(std::process::Child, TempDir),
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Proxy::Envoy(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sluice proxy -c config`, stderr to `log`, without waiting for anything (a proxy that is
/// expected never to become ready). The caller kills it.
pub fn spawn_sluice(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(crate::upstream::harness::sluice_bin())
        .args(["proxy", "-c"])
        .arg(config)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn sluice proxy")
}

/// `(status, body)` of admin `GET path` on `admin` (None when nothing answers).
pub async fn admin_get(admin: u16, path: &str) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{admin}{path}");
    tokio::task::spawn_blocking(move || curl_opt(&["-s", "-m", "3", &url]))
        .await
        .unwrap()
        .map(|r| (r.0, r.2))
}

/// The status of admin `/ready` on `admin` (None when nothing answers).
pub async fn ready_status(admin: u16) -> Option<u16> {
    admin_get(admin, "/ready").await.map(|r| r.0)
}

impl Proxy {
    /// Asserts that sluice's log shows no panic (Envoy's is not checked).
    pub fn assert_no_panic(&self) {
        if let Proxy::Sluice(p) = self {
            let log = p.log();
            assert!(!log.contains("panicked"), "{log}");
        }
    }
}

/// Starts `kind` on `yaml` (admin port `admin`), waits for its ACK of LDS version "1" from
/// `server` and checks that `GET /` on `port` reaches the upstream named `a`.
pub async fn start_serving_a(
    kind: Kind,
    yaml: String,
    admin: u16,
    server: &crate::xds_server::XdsServer,
    port: u16,
) -> Proxy {
    let proxy = tokio::task::spawn_blocking(move || start_proxy(kind, &yaml, admin))
        .await
        .unwrap();
    let ack = server.wait_for(crate::xds_server::LDS, "1").await;
    assert_eq!(ack.error, None, "{kind:?}: LDS 1 NACKed");
    assert_eq!(
        get(port, "/").await,
        Some((200, "a".to_string())),
        "{kind:?}"
    );
    proxy
}

/// Starts `kind` on `yaml` and waits until its admin `/ready` says 200.
pub fn start_proxy(kind: Kind, yaml: &str, admin: u16) -> Proxy {
    match kind {
        Kind::Sluice => Proxy::Sluice(ProxyProcess::start(yaml, admin)),
        Kind::Envoy => {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = TempDir::new("xds-envoy");
            let config = dir.path("envoy.yaml");
            std::fs::write(&config, yaml).unwrap();
            let base_id = std::process::id() * 1000 + 500 + N.fetch_add(1, Ordering::Relaxed);
            let mut child = std::process::Command::new(envoy_binary())
                .arg("-c")
                .arg(&config)
                .args(["--base-id", &base_id.to_string(), "--concurrency", "1"])
                .args(["--disable-hot-restart", "--log-level", "warn"])
                .stderr(std::fs::File::create(dir.path("envoy.log")).unwrap())
                .spawn()
                .expect("spawn envoy");
            let ready = format!("http://127.0.0.1:{admin}/ready");
            let deadline = Instant::now() + Duration::from_secs(20);
            while curl_opt(&["-s", "-m", "1", &ready]).map(|r| r.0) != Some(200) {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!(
                        "envoy exited {st}: {}",
                        std::fs::read_to_string(dir.path("envoy.log")).unwrap_or_default()
                    );
                }
                assert!(Instant::now() < deadline, "envoy not ready");
                std::thread::sleep(Duration::from_millis(50));
            }
            Proxy::Envoy(child, dir)
        }
    }
}

/// What a scenario observed, step by step; sluice's run also asserts the expectations.
pub struct Run {
    /// Assert the expectations (sluice) or only record them (the reference).
    pub strict: bool,
    /// What each step observed.
    pub trace: Vec<String>,
    /// Ports by the name the trace shows (ports differ between runs).
    pub ports: Vec<(u16, &'static str)>,
}

impl Run {
    pub fn strict() -> Self {
        Run {
            strict: true,
            trace: Vec::new(),
            ports: Vec::new(),
        }
    }

    pub fn port(&self, port: u16) -> &'static str {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .map_or("?", |(_, n)| n)
    }

    pub async fn expect(&mut self, port: u16, path: &str, status: u16, upstream: &str) {
        self.expect_with(port, path, None, status, upstream).await;
    }

    pub async fn expect_with(
        &mut self,
        port: u16,
        path: &str,
        header_line: Option<&str>,
        status: u16,
        upstream: &str,
    ) {
        let mut got = get_with(port, path, header_line).await;
        // A listener or cluster is ACKed when accepted; while it warms (its RDS/EDS resources
        // are on their way) the previous one serves, in Envoy and in sluice alike. Each gets a
        // moment to converge.
        let want = Some((status, upstream.to_string()));
        let deadline = Instant::now() + Duration::from_secs(3);
        while got != want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            got = get_with(port, path, header_line).await;
        }
        self.trace.push(format!(
            "GET {}{path} {header_line:?} -> {got:?}",
            self.port(port)
        ));
        if self.strict {
            assert_eq!(
                got,
                Some((status, upstream.to_string())),
                "GET :{port}{path}"
            );
        }
    }

    pub async fn closed(&mut self, port: u16) {
        let got = get(port, "/").await;
        self.trace
            .push(format!("GET {}/ -> {got:?}", self.port(port)));
        if self.strict {
            assert_eq!(got, None, "the replaced listener is closed");
        }
    }

    pub async fn ack(&mut self, server: &XdsServer, ty: &str, version: &str) {
        let a = server.wait_for(ty, version).await;
        self.record(ty, version, &a.error);
        if self.strict {
            assert_eq!(a.error, None, "{ty} version {version} was NACKed");
        }
    }

    pub async fn nack(&mut self, server: &XdsServer, ty: &str, version: &str, contains: &[&str]) {
        let a = server.wait_for(ty, version).await;
        self.record(ty, version, &a.error);
        if self.strict {
            let e = a
                .error
                .unwrap_or_else(|| panic!("{ty} version {version} was ACKed"));
            for c in contains {
                assert!(e.contains(c), "NACK of {ty} v{version}: {e:?} lacks {c:?}");
            }
        }
    }

    pub fn record(&mut self, ty: &str, version: &str, error: &Option<String>) {
        let short = ty.rsplit('.').next().unwrap_or(ty);
        let what = if error.is_some() { "NACK" } else { "ACK" };
        self.trace.push(format!("{what} {short} v{version}"));
    }
}
