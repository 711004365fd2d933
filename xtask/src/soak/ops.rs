//! The soak driver's actions on the running agent: hot reloads of its L7 config (SIGHUP, checked
//! through the pod's engine version in `sluice status`), enroll/unenroll churn of extra pods
//! (a fresh netns each time, one curl through the agent before it goes), and the h2load runs.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::config;
use crate::bench::{
    scale::pods::{Pod, Pods},
    topology::{join_cgroup, run, HTTP_PORT},
};

/// The h2load run of each minute: 2 connections, 25 requests/s each, for 20 s.
pub const H2LOAD_SECS: u64 = 20;

/// What the actions need of the run.
pub struct Ops<'a> {
    pub pods: &'a Pods,
    pub sluice: &'a Path,
    pub control: &'a Path,
    pub agent_pid: u32,
    pub config: PathBuf,
    /// Reloads so far (the next version number).
    pub version: u64,
    /// Churn pods created so far.
    pub churned: usize,
}

/// Counts of the driver's own actions.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct OpCounts {
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    pub reload_errors: u64,
    pub churn_ok: u64,
    pub churn_errors: u64,
    pub h2_ok: u64,
    pub h2_errors: u64,
    /// The last failure of each kind, for the report.
    pub last_error: Option<String>,
}

impl Ops<'_> {
    fn sluice(&self, args: &[&str]) -> Result<String> {
        let control = self.control.to_string_lossy();
        let mut a = args.to_vec();
        a.extend(["--control", &control]);
        run(&self.sluice.to_string_lossy(), &a)
    }

    /// Pod 0's outbound engine version (`sluice status --json`).
    pub fn engine_version(&self) -> Result<u64> {
        let out = self.sluice(&["status", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("status --json")?;
        let name = &self.pods.pods[0].ns.name;
        v["pods"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["netns"] == name.as_str()))
            .and_then(|p| p["engine_versions"][0].as_u64())
            .with_context(|| format!("status: no engine version for {name}"))
    }

    /// One reload: every fourth a config the agent must refuse (the version must stay), the
    /// others a new version that must reach pod 0's engine within 5 s.
    pub fn reload(&mut self, c: &mut OpCounts) {
        self.version += 1;
        let bad = self.version.is_multiple_of(4);
        let r = (|| {
            let before = self.engine_version()?;
            let text = if bad {
                config::rejected(&self.pods.server_ip)
            } else {
                config::good(&self.pods.server_ip, self.version)
            };
            config::write(&self.config, &text)?;
            // SAFETY: signalling the agent we started (its pid is still ours: not reaped).
            unsafe { libc::kill(self.agent_pid as i32, libc::SIGHUP) };
            let t = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let now = self.engine_version()?;
                match (bad, now > before) {
                    (false, true) => return Ok(()),
                    (true, true) => bail!("a refused config was applied (version {now})"),
                    _ => {}
                }
                if t.elapsed() > Duration::from_secs(if bad { 1 } else { 5 }) {
                    if bad {
                        return Ok(());
                    }
                    bail!("reload to version {} not applied after 5 s", self.version);
                }
            }
        })();
        match r {
            Ok(()) if bad => c.reloads_rejected += 1,
            Ok(()) => c.reloads_applied += 1,
            Err(e) => {
                c.reload_errors += 1;
                c.last_error = Some(format!("reload: {e:#}"));
            }
        }
    }

    /// One churn cycle: a new pod netns on the bridge, enrolled in node mode, one curl through
    /// the agent (routed `svc.test/api/`), unenrolled, its netns removed.
    pub fn churn(&mut self, c: &mut OpCounts) {
        // Indexes 100..1099 (10.250.1.101 .. 10.250.5.100): never pod 0's, reused round robin.
        let i = 100 + self.churned % 1000;
        self.churned += 1;
        let r = (|| {
            let pod: Pod = Pods::pod(&self.pods.tag, &self.pods.server.name, i)?;
            let ns = pod.ns.name.clone();
            self.sluice(&["enroll", "--netns", &ns, "--mode", "node"])?;
            let curl = (|| {
                let mut cmd = pod.ns.command("curl", None);
                join_cgroup(&mut cmd, self.pods.cgroup.procs_file());
                let url = format!("http://{}:{HTTP_PORT}/api/64", self.pods.server_ip);
                let out = cmd
                    .args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
                    .args(["-H", &format!("Host: {}", config::SVC_HOST), &url])
                    .output()
                    .context("curl")?;
                let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if code != "200" {
                    bail!(
                        "curl from {ns}: {code} {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                anyhow::Ok(())
            })();
            let un = self.sluice(&["unenroll", "--netns", &ns]);
            curl?;
            un?;
            drop(pod);
            anyhow::Ok(())
        })();
        match r {
            Ok(()) => c.churn_ok += 1,
            Err(e) => {
                c.churn_errors += 1;
                c.last_error = Some(format!("churn: {e:#}"));
            }
        }
    }

    /// Starts h2load (h2c prior knowledge, passthrough to nginx) from pod 0.
    pub fn h2load_start(&self) -> Result<Child> {
        let url = format!("http://{}:{HTTP_PORT}/1k", self.pods.server_ip);
        let mut c = self.pods.pods[0].ns.command("h2load", None);
        join_cgroup(&mut c, self.pods.cgroup.procs_file());
        c.args(["-t1", "-c2", "-m2", "--rps", "25"])
            .args(["-D", &H2LOAD_SECS.to_string(), &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().context("starting h2load")
    }
}

/// Reads a finished h2load's `requests:` line into the counts.
pub fn h2load_done(child: Child, c: &mut OpCounts) {
    let out = child.wait_with_output().map(|o| {
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&o.stderr));
        s
    });
    let parsed = out.as_ref().ok().and_then(|out| {
        let line = out.lines().find(|l| l.starts_with("requests:"))?;
        let num = |what: &str| -> Option<u64> {
            line.split(", ")
                .find(|p| p.trim_end().ends_with(what))?
                .split_whitespace()
                .rev()
                .nth(1)?
                .parse()
                .ok()
        };
        Some((
            num("succeeded")?,
            num("failed")? + num("errored")? + num("timeout")?,
        ))
    });
    match parsed {
        Some((ok, errors)) => {
            c.h2_ok += ok;
            c.h2_errors += errors;
            if errors > 0 || ok == 0 {
                c.h2_errors += u64::from(ok == 0);
                let text = out.as_deref().unwrap_or_default();
                c.last_error = Some(format!(
                    "h2load: {ok} succeeded, {errors} failed; its output:\n{text}"
                ));
            }
        }
        None => {
            c.h2_errors += 1;
            c.last_error = Some(format!("h2load printed no requests line: {out:?}"));
        }
    }
}
