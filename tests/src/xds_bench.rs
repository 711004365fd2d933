//! The xDS scale benchmark (`cargo xtask bench --xds`, issue 10): one management server pushes
//! a mesh-sized configuration (by default 5,000 routes in 500 virtual hosts, 1,000 EDS clusters,
//! 10,000 endpoints) to `sluice proxy` and to Envoy, one after the other on the same machine,
//! and times what an operator waits for: the full push, then EDS-only changes of one cluster
//! each from the server's push to the ACK and to the first request that sees the new config.
//!
//! One probe route observes the change: virtual host `svc-0.bench` route `/r0` goes to cluster
//! `c0` (upstreams named `a`) before the full push and to `c1` (upstreams `b`) after it; the
//! EDS-only change then moves `c1`'s endpoints to the `a` upstreams. Every other endpoint is in
//! 192.0.2.0/24 (TEST-NET-1) and never receives traffic.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    upstream::harness::{curl_opt, TempDir},
    xds_script::{cla, eds_cluster, listener, rds},
    xds_server::{Snapshot, XdsServer, CDS, EDS, LDS, RDS},
};

/// The configuration's size.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Virtual hosts.
    pub vhosts: usize,
    /// Routes per virtual host.
    pub routes_per_vhost: usize,
    /// EDS clusters.
    pub clusters: usize,
    /// Endpoints per cluster.
    pub endpoints: usize,
}

/// The probe's virtual host and path.
pub const PROBE_HOST: &str = "svc-0.bench";
/// The probe's path.
pub const PROBE_PATH: &str = "/r0";

/// Version 1: the listener and the probe route to `c0` (the `a` upstreams) only.
pub fn small(port: u16, a: &[u16]) -> Snapshot {
    let route = json!({"name": "bench", "virtual_hosts": [{"name": "vh0", "domains": [PROBE_HOST],
        "routes": [{"match": {"prefix": PROBE_PATH}, "route": {"cluster": "c0"}}]}]});
    Snapshot::from_json(
        "1",
        &[
            listener("bench", port, rds("bench")),
            (RDS, route),
            eds_cluster("c0"),
            cla("c0", a),
        ],
    )
}

/// The full configuration at `version`: the probe route goes to `c1`, whose endpoints are
/// `c1_ports`; `c0` keeps the `a` upstreams.
pub fn full(version: &str, scale: Scale, port: u16, a: &[u16], c1_ports: &[u16]) -> Snapshot {
    let mut items = vec![
        listener("bench", port, rds("bench")),
        (RDS, route_config(scale)),
    ];
    for c in 0..scale.clusters {
        let name = format!("c{c}");
        items.push(eds_cluster(&name));
        items.push(match c {
            0 => cla(&name, a),
            1 => cla(&name, c1_ports),
            _ => unused_cla(&name, c, scale.endpoints),
        });
    }
    Snapshot::from_json(version, &items)
}

/// `bench`: `vhosts` virtual hosts `svc-I.bench` of `routes_per_vhost` prefix routes `/rJ`, to
/// the clusters in turn; `svc-0.bench` `/r0` (the probe) goes to `c1`.
fn route_config(scale: Scale) -> Value {
    let vhosts: Vec<Value> = (0..scale.vhosts)
        .map(|i| {
            let routes: Vec<Value> = (0..scale.routes_per_vhost)
                .map(|j| {
                    let cluster = if i == 0 && j == 0 {
                        1
                    } else {
                        (i * scale.routes_per_vhost + j) % scale.clusters
                    };
                    json!({"match": {"prefix": format!("/r{j}")},
                        "route": {"cluster": format!("c{cluster}")}})
                })
                .collect();
            json!({"name": format!("vh{i}"), "domains": [format!("svc-{i}.bench")],
                "routes": routes})
        })
        .collect();
    json!({"name": "bench", "virtual_hosts": vhosts})
}

/// A load assignment of `n` endpoints in TEST-NET-1 (never contacted).
fn unused_cla(name: &str, c: usize, n: usize) -> (&'static str, Value) {
    let eps: Vec<Value> = (0..n)
        .map(|e| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": format!("192.0.2.{}", e % 250 + 1),
                "port_value": 10000 + c % 50000}}}})
        })
        .collect();
    (
        EDS,
        json!({"cluster_name": name, "endpoints": [{"locality": {"zone": "z1"}, "lb_endpoints": eps}]}),
    )
}

/// Which proxy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `sluice proxy` with one tokio worker (`TOKIO_WORKER_THREADS=1`).
    Sluice,
    /// `envoy --concurrency 1`.
    Envoy,
}

/// A proxy process under the benchmark (killed on drop).
pub struct BenchProxy {
    child: Child,
    _dir: TempDir,
}

impl BenchProxy {
    /// Starts `which` (binary `bin`) on `bootstrap`; waits (20 s) for admin `/ready` 200.
    pub fn start(which: Which, bin: &std::path::Path, bootstrap: &str, admin: u16) -> Self {
        let dir = TempDir::new("xds-bench");
        let config = dir.path("bootstrap.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let log = std::fs::File::create(dir.path("proxy.log")).unwrap();
        let mut cmd = Command::new(bin);
        match which {
            Which::Sluice => cmd
                .args(["proxy", "-c"])
                .arg(&config)
                .args(["--log-level", "warn"])
                .env("TOKIO_WORKER_THREADS", "1"),
            Which::Envoy => cmd.arg("-c").arg(&config).args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--base-id",
                &(std::process::id() * 10 + 7).to_string(),
            ]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut p = Self { child, _dir: dir };
        let ready = format!("http://127.0.0.1:{admin}/ready");
        let deadline = Instant::now() + Duration::from_secs(20);
        while curl_opt(&["-s", "-m", "1", &ready]).map(|r| r.0) != Some(200) {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("{which:?} exited {st}: {}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "{which:?} not ready: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path("proxy.log")).unwrap_or_default()
    }

    /// Resident set size, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for BenchProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `x-upstream` of one GET of the probe, `None` on any failure.
pub fn probe_once(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req =
        format!("GET {PROBE_PATH} HTTP/1.1\r\nhost: {PROBE_HOST}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-upstream")
            .then(|| v.trim().to_string())
    })
}

/// Polls the probe (every 2 ms) until it answers from `upstream`; the time from `t0`.
pub fn wait_serving(port: u16, upstream: &str, t0: Instant, limit: Duration) -> Duration {
    loop {
        if probe_once(port).as_deref() == Some(upstream) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "the probe never reached {upstream} in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until every type in `types` has an ACK of `version`; the time from `t0` to the last
/// of them, and the server-measured send-to-ACK time of each, by type.
pub async fn wait_acks(
    server: &XdsServer,
    types: &[&str],
    version: &str,
    t0: Instant,
    limit: Duration,
) -> (Duration, Vec<(String, Duration)>) {
    loop {
        let times = server.ack_times();
        let got: Vec<_> = types
            .iter()
            .filter_map(|t| {
                times
                    .iter()
                    .find(|a| a.type_url == *t && a.version == version)
            })
            .collect();
        if got.len() == types.len() {
            if let Some(bad) = server
                .log()
                .iter()
                .find(|a| a.version == version && a.error.is_some())
            {
                panic!("NACK of version {version}: {bad:?}");
            }
            let last = got.iter().map(|a| a.acked).max().unwrap();
            let each = got
                .iter()
                .map(|a| (short(&a.type_url).to_string(), a.acked - a.sent))
                .collect();
            return (last.saturating_duration_since(t0), each);
        }
        assert!(
            t0.elapsed() < limit,
            "no ACK of version {version} for every type in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `LDS`, `RDS`, `CDS`, `EDS` for a type URL.
pub fn short(type_url: &str) -> &'static str {
    match type_url {
        LDS => "LDS",
        RDS => "RDS",
        CDS => "CDS",
        EDS => "EDS",
        _ => "?",
    }
}
