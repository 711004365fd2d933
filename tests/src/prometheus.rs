//! A real Prometheus server (Debian's `prometheus` package, `/usr/bin/prometheus`) for tests: its
//! own config and storage in a temp dir, its web API on a port the test chose, optionally inside
//! a test netns; killed and its files removed on drop. The package's own service (if any) is
//! neither used nor touched.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{upstream::harness::TempDir, Netns};

/// The binary the package installs.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A running Prometheus scraping one target every second.
pub struct Prometheus {
    child: Child,
    /// `host:port` of its web API (inside `netns` when there is one).
    pub web: String,
    netns: Option<String>,
    dir: TempDir,
}

impl Prometheus {
    /// Scrapes `http://<target>/stats/prometheus` every second; the web API listens on `web`
    /// (`127.0.0.1:<port>`), both inside `netns` when given.
    pub fn start(tag: &str, target: &str, web: &str, netns: Option<&Netns>) -> Self {
        assert!(
            std::path::Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: `apt-get install -y prometheus` (cargo xtask setup installs it)"
        );
        let dir = TempDir::new(tag);
        let config = dir.path("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n\
                 - job_name: sluice\n  metrics_path: /stats/prometheus\n  static_configs:\n\
                 \x20 - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut cmd = match netns {
            Some(ns) => ns.command(PROMETHEUS, None),
            None => Command::new(PROMETHEUS),
        };
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path("log")).expect("log file"));
        let child = cmd.spawn().expect("start prometheus");
        Self {
            child,
            web: web.to_string(),
            netns: netns.map(|n| n.name().to_string()),
            dir,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("log")).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=<q>` (curl, inside the netns when there is one): each result's
    /// `by` label value -> its value. Empty when Prometheus is not answering yet.
    pub fn query(&self, q: &str, by: &str) -> BTreeMap<String, f64> {
        let url = format!("http://{}/api/v1/query", self.web);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "curl"]);
                c
            }
            None => Command::new("curl"),
        };
        let out = cmd
            .args(["-sS", "-m", "2", "-G", &url, "--data-urlencode"])
            .arg(format!("query={q}"))
            .output()
            .expect("run curl");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let key = r["metric"][by].as_str().unwrap_or("").to_string();
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((key, value))
            })
            .collect()
    }

    /// Polls `q` (bounded by `timeout`) until it answers exactly `want`; panics with the last
    /// answer and the log otherwise.
    pub fn wait_for(&self, q: &str, by: &str, want: &BTreeMap<String, f64>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = BTreeMap::new();
        while Instant::now() < deadline {
            last = self.query(q, by);
            if &last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "Prometheus at {} never answered {want:?} to `{q}` within {timeout:?}; last answer \
             {last:?}\nits log:\n{}",
            self.web,
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
