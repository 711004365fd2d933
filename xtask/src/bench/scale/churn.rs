//! Churn at scale: `plan.churn_pods` pods added and removed through CNI at `plan.churn_rate`
//! per second while `plan.churn_busy` enrolled pods carry open-loop traffic, on the agent that
//! serves every static pod. The chain is the one a runtime runs: Debian's reference `bridge`
//! (with `host-local` IPAM, executed inside the server netns so its bridge and host-side veths
//! live there, not in the host's netns) and then `sluice-cni`; DEL in reverse. Each pod lives
//! for about one second (10 present at a time). Afterwards the agent's RSS, fds and threads and
//! its maps (status: pods, map entries) must be back at the baseline taken before.

use std::{
    collections::VecDeque,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use super::{
    super::{
        paths::start::Agent,
        topology::{check_interrupted, Netns},
    },
    ctx::Ctx,
    pods::{BRIDGE, CHURN_RANGE, NET},
    procstat::{self, Snap},
    report::{quantile, Metrics},
};

/// Pods alive at a time.
const LIVE: usize = 10;
const PLUGINS: &str = "/usr/lib/cni";

/// Execs one plugin with the CNI protocol (`in_ns`: inside that netns, for `bridge`).
fn plugin(
    cx: &Ctx,
    prog: &Path,
    in_ns: Option<&str>,
    command: &str,
    pod: &str,
    conf: &Value,
) -> Result<Value> {
    let mut c = match in_ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(prog);
            c
        }
        None => Command::new(prog),
    };
    let cni_dir = cx.cni.parent().unwrap_or(Path::new("/"));
    let mut child = c
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod)
        .env("CNI_NETNS", format!("/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod}"),
        )
        .env("CNI_PATH", format!("{PLUGINS}:{}", cni_dir.display()))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("exec {}", prog.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {command} {pod}: {} {}",
            prog.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_str(text.trim()).unwrap_or(Value::Null))
}

struct Chain<'a> {
    cx: &'a Ctx<'a>,
    bridge: Value,
    sluice: Value,
    server: &'a str,
}

impl Chain<'_> {
    fn new<'a>(cx: &'a Ctx<'a>, control: &Path) -> Chain<'a> {
        let head = |v: Value| {
            let mut v = v;
            v["cniVersion"] = json!("1.0.0");
            v["name"] = json!("sl-scale");
            v
        };
        Chain {
            cx,
            bridge: head(json!({
                "type": "bridge", "bridge": BRIDGE, "isGateway": false,
                "isDefaultGateway": false, "ipMasq": false, "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{
                        "subnet": format!("{NET}.0.0/16"),
                        "rangeStart": CHURN_RANGE.0, "rangeEnd": CHURN_RANGE.1,
                    }]],
                    "dataDir": cx.pods.dir.path.join("ipam"),
                }
            })),
            sluice: head(json!({"type": "sluice-cni", "control": control, "mode": "node"})),
            server: &cx.pods.server.name,
        }
    }

    /// ADD: bridge, then sluice-cni with its result; returns sluice-cni's time.
    fn add(&self, pod: &str) -> Result<Duration> {
        let prev = plugin(
            self.cx,
            &Path::new(PLUGINS).join("bridge"),
            Some(self.server),
            "ADD",
            pod,
            &self.bridge,
        )?;
        let mut conf = self.sluice.clone();
        conf["prevResult"] = prev;
        let t = Instant::now();
        plugin(self.cx, self.cx.cni, None, "ADD", pod, &conf)?;
        Ok(t.elapsed())
    }

    /// DEL in reverse order; both run even when the first fails.
    fn del(&self, pod: &str) -> Result<()> {
        let s = plugin(self.cx, self.cx.cni, None, "DEL", pod, &self.sluice);
        let bridge = Path::new(PLUGINS).join("bridge");
        let b = plugin(
            self.cx,
            &bridge,
            Some(self.server),
            "DEL",
            pod,
            &self.bridge,
        );
        s.and(b).map(|_| ())
    }
}

/// The agent's state that must come back: process snapshot, pods and map entries.
fn state(cx: &Ctx, agent: &Agent) -> Result<(Snap, usize, u64)> {
    let snap = procstat::snap(agent.run.pid())?;
    let (st, _) = cx.status(&agent.control)?;
    let pods = st["pods"].as_array().map_or(0, Vec::len);
    let entries = st["pods"].as_array().map_or(0, |p| {
        p.iter().filter_map(|p| p["map_entries"].as_u64()).sum()
    });
    Ok((snap, pods, entries))
}

pub fn run(cx: &Ctx, agent: &mut Agent, m: &mut Metrics) -> Result<()> {
    let p = cx.plan;
    let busy: Vec<usize> = (0..p.churn_busy).collect();
    let rate = 50 * busy.len() as u64;
    // Warm the busy pods' paths at the churn's rate, so the baseline has seen that traffic.
    cx.multi(&busy, rate, 1, 2.0)?;
    std::thread::sleep(Duration::from_millis(500));
    let (base, base_pods, base_entries) = state(cx, agent)?;
    // The traffic must cover the churn even when the machine sustains only a third of the
    // target rate (the report gives both windows).
    let secs = p.churn_pods as f64 / p.churn_rate * 3.0 + 3.0;
    let traffic = cx.multi_start(&busy, rate, 1, secs)?;
    let chain = Chain::new(cx, &agent.control);
    let mut live: VecDeque<(Netns, String)> = VecDeque::new();
    let (mut errors, mut add_ms) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / p.churn_rate);
    for i in 0..p.churn_pods {
        if check_interrupted().is_err() {
            break;
        }
        let due = t0 + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let name = format!("{}-c{i}", cx.pods.tag);
        let ns = Netns::new(name.clone())?;
        match chain.add(&name) {
            Ok(t) => add_ms.push(t.as_secs_f64() * 1e3),
            Err(e) => errors.push(format!("{e:#}")),
        }
        live.push_back((ns, name));
        if live.len() > LIVE {
            let (ns, name) = live.pop_front().expect("non-empty");
            if let Err(e) = chain.del(&name) {
                errors.push(format!("{e:#}"));
            }
            drop(ns);
        }
        if errors.len() > 10 {
            break;
        }
    }
    for (ns, name) in live.drain(..) {
        if let Err(e) = chain.del(&name) {
            errors.push(format!("{e:#}"));
        }
        drop(ns);
    }
    let churn_secs = t0.elapsed().as_secs_f64();
    let r = cx.multi_wait(traffic, secs)?;
    check_interrupted()?;
    std::thread::sleep(Duration::from_secs(1));
    let (after, pods, entries) = state(cx, agent)?;
    agent.run.check_alive()?;
    let pct = |a: u64, b: u64| (a as f64 - b as f64) / (b as f64).max(1.0) * 100.0;
    m.push("churn.pods", (add_ms.len() + errors.len()) as f64);
    m.push("churn.rate", p.churn_pods as f64 / churn_secs);
    m.push("churn.secs", churn_secs);
    m.push("churn.traffic.secs", secs);
    m.push("churn.cni_errors", errors.len() as f64);
    m.push("churn.traffic.errors", r.errors as f64);
    m.push("churn.traffic.requests", r.requests as f64);
    m.push("churn.traffic.p50_us", r.p50_us);
    m.push("churn.traffic.p99_us", r.p99_us);
    m.push("churn.rss_pct", pct(after.rss_kib, base.rss_kib));
    m.push("churn.fds_pct", pct(after.fds, base.fds));
    m.push("churn.threads_pct", pct(after.threads, base.threads));
    m.push("churn.base.rss_mib", base.rss_kib as f64 / 1024.0);
    m.push("churn.after.rss_mib", after.rss_kib as f64 / 1024.0);
    m.push("churn.base.fds", base.fds as f64);
    m.push("churn.after.fds", after.fds as f64);
    m.push("churn.base.threads", base.threads as f64);
    m.push("churn.after.threads", after.threads as f64);
    m.push("churn.base.pods", base_pods as f64);
    m.push("churn.after.pods", pods as f64);
    m.push("churn.base.map_entries", base_entries as f64);
    m.push("churn.after.map_entries", entries as f64);
    if !add_ms.is_empty() {
        add_ms.sort_by(f64::total_cmp);
        m.push("churn.cni_add.p50_ms", quantile(&add_ms, 0.5));
        m.push("churn.cni_add.p99_ms", quantile(&add_ms, 0.99));
    }
    for e in errors.iter().take(3) {
        eprintln!("bench --scale: churn error: {e}");
    }
    Ok(())
}
