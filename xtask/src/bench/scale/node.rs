//! The 100-pod measurements: one agent with every pod in node mode (L4 or L7), the same pods
//! each with its own `sluice sidecar`, and a few pods each with an Envoy sidecar behind
//! istio-init's rules. For each: memory, fds and threads idle, after one request through every
//! pod and after a stretch of traffic to all of them; idle CPU; CPU per 1k requests.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::{
    super::{
        paths::start::{Agent, IptablesGuard, Running},
        topology::log_tail,
    },
    ctx::{idle_cpu, stop_all, Ctx},
    procstat::{self, Snap},
    report::{quantile, Metrics},
};

/// Records a snapshot under `<key>.{rss_mib,hwm_mib,fds,threads}`.
fn record(m: &mut Metrics, key: &str, s: Snap) {
    m.push(&format!("{key}.rss_mib"), s.rss_kib as f64 / 1024.0);
    m.push(&format!("{key}.hwm_mib"), s.hwm_kib as f64 / 1024.0);
    m.push(&format!("{key}.fds"), s.fds as f64);
    m.push(&format!("{key}.threads"), s.threads as f64);
}

/// What every deployment goes through once its proxies are up: idle snapshot and idle CPU,
/// one request through every pod, then traffic to every pod (one keep-alive connection each,
/// open loop), with the proxies' CPU per 1k requests. `pids` are the proxy processes measured
/// (summed); `n` pods carry traffic.
fn measure(cx: &Ctx, key: &str, pids: &[u32], n: usize, m: &mut Metrics) -> Result<()> {
    let p = cx.plan;
    let all: Vec<usize> = (0..n).collect();
    std::thread::sleep(Duration::from_millis(500));
    record(m, &format!("{key}.idle"), procstat::snap_sum(pids)?);
    let (cpu, wakeups) = idle_cpu(pids, p.idle_secs)?;
    m.push(&format!("{key}.idle.cpu_pct"), cpu);
    m.push(&format!("{key}.idle.wakeups_per_s"), wakeups);
    let c0 = procstat::cpu_sum(pids)?;
    let errors = cx.probe(&all)?;
    m.push(&format!("{key}.one.errors"), errors as f64);
    if errors > 0 {
        println!("FINDING: {key}: {errors} of {n} pods' first request failed");
    }
    if procstat::cpu_sum(pids)? <= c0 {
        // /proc CPU ticks are 10 ms: 100 requests may fall under one tick, not an error alone.
        eprintln!("bench --scale: {key}: no CPU tick counted for the probe through {n} pods");
    }
    std::thread::sleep(Duration::from_millis(500));
    record(m, &format!("{key}.one"), procstat::snap_sum(pids)?);
    let c0 = procstat::cpu_sum(pids)?;
    let rate = p.per_pod_rps * n as u64;
    let r = cx.multi(&all, rate, 1, p.traffic_secs)?;
    let cpu_s = procstat::cpu_sum(pids)? - c0;
    m.push(&format!("{key}.traffic.errors"), r.errors as f64);
    if cpu_s <= 0.0 {
        bail!("{key}: the proxies used no CPU while {n} pods sent traffic: a hop was skipped");
    }
    m.push(&format!("{key}.traffic.rps"), r.achieved_rps);
    m.push(&format!("{key}.traffic.p50_us"), r.p50_us);
    m.push(&format!("{key}.traffic.p99_us"), r.p99_us);
    m.push(
        &format!("{key}.traffic.cpu_ms_per_1k"),
        cpu_s * 1e6 / r.requests as f64,
    );
    m.push(
        &format!("{key}.traffic.cpu_pct"),
        cpu_s / p.traffic_secs * 100.0,
    );
    std::thread::sleep(Duration::from_millis(500));
    record(m, &format!("{key}.traffic"), procstat::snap_sum(pids)?);
    m.push(&format!("{key}.pods"), n as f64);
    Ok(())
}

/// What serves the agent's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engines {
    /// No `--config`: the L4 passthrough for every pod.
    L4,
    /// `--config`: the L7 engine for every pod.
    L7,
    /// `--config`, every second pod enrolled `--engine l4` (the half L7, half L4).
    Mixed,
}

impl Engines {
    /// The metrics key prefix.
    pub fn key(self) -> &'static str {
        match self {
            Engines::L4 => "node_l4",
            Engines::L7 => "node_l7",
            Engines::Mixed => "node_mixed",
        }
    }

    /// The engine pod `i` should report in `sluice status`.
    fn engine_of(self, i: usize) -> &'static str {
        match self {
            Engines::L4 => "l4",
            Engines::L7 => "l7",
            Engines::Mixed if i % 2 == 1 => "l4",
            Engines::Mixed => "l7",
        }
    }
}

/// One agent, every pod enrolled in node mode: enrollment latency, then [`measure`]. Returns
/// the agent (still serving every pod) for the neighbour and churn runs.
pub fn run(cx: &Ctx, engines: Engines, m: &mut Metrics) -> Result<Agent> {
    let mut agent = enroll_all(cx, engines, engines.key(), &[], m)?;
    measure(cx, engines.key(), &[agent.run.pid()], cx.plan.pods, m)
        .with_context(|| format!("agent log:\n{}", log_tail(&agent.run.log, 20)))?;
    agent.run.check_alive()?;
    Ok(agent)
}

/// A fresh agent with every pod enrolled in node mode (enrollment latency and the status
/// check recorded).
pub fn enroll_all(
    cx: &Ctx,
    engines: Engines,
    key: &str,
    agent_args: &[&str],
    m: &mut Metrics,
) -> Result<Agent> {
    let mut agent = cx.agent_with(engines != Engines::L4, None, agent_args)?;
    let pid = agent.run.pid();
    std::thread::sleep(Duration::from_millis(500));
    record(m, &format!("{key}.empty"), procstat::snap(pid)?);
    let mut lat = Vec::new();
    for i in 0..cx.plan.pods {
        let extra: &[&str] = match engines.engine_of(i) {
            "l4" if engines == Engines::Mixed => &["--engine", "l4"],
            _ => &[],
        };
        let name = &cx.pods.pods[i].ns.name;
        let took = cx.enroll_netns(&agent.control, name, "node", extra)?;
        lat.push(took.as_secs_f64() * 1e3);
    }
    agent.run.check_alive()?;
    m.push(
        &format!("{key}.enroll.last_ms"),
        *lat.last().unwrap_or(&0.0),
    );
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |f: f64| quantile(&sorted, f);
    m.push(&format!("{key}.enroll.p50_ms"), q(0.5));
    m.push(&format!("{key}.enroll.p99_ms"), q(0.99));
    m.push(&format!("{key}.enroll.max_ms"), q(1.0));
    let (status, took) = cx.status(&agent.control)?;
    m.push(&format!("{key}.status_ms"), took.as_secs_f64() * 1e3);
    check_engines(cx, engines, &status)?;
    Ok(agent)
}

/// Every pod is listed by `sluice status` with the engine it was enrolled for.
fn check_engines(cx: &Ctx, engines: Engines, status: &serde_json::Value) -> Result<()> {
    let pods = status["pods"].as_array().map_or(&[][..], Vec::as_slice);
    if pods.len() != cx.plan.pods {
        bail!(
            "{}: status lists {} pods, {} enrolled",
            engines.key(),
            pods.len(),
            cx.plan.pods
        );
    }
    for (i, pod) in cx.pods.pods.iter().enumerate() {
        let got = pods
            .iter()
            .find(|p| p["netns"] == pod.ns.name.as_str())
            .and_then(|p| p["engine"].as_str());
        if got != Some(engines.engine_of(i)) {
            bail!(
                "{}: pod {} is served by {got:?}, want {}",
                engines.key(),
                pod.ns.name,
                engines.engine_of(i)
            );
        }
    }
    Ok(())
}

/// Every pod in sidecar mode with its own `sluice sidecar`; the agent only manages the maps
/// (its own numbers are recorded under `sidecar_agent`).
pub fn sidecars(cx: &Ctx, m: &mut Metrics) -> Result<()> {
    let mut agent = cx.agent(false, None)?;
    let mut procs: Vec<Running> = Vec::new();
    let result = (|| {
        for i in 0..cx.plan.pods {
            cx.enroll(&agent.control, i, "sidecar")?;
            procs.push(cx.sidecar(i, &agent.control)?);
        }
        for (i, p) in procs.iter_mut().enumerate() {
            cx.wait_listen(i, 15001, p)?;
        }
        let pids: Vec<u32> = procs.iter().map(Running::pid).collect();
        measure(cx, "sidecar", &pids, cx.plan.pods, m)?;
        record(m, "sidecar_agent.traffic", procstat::snap(agent.run.pid())?);
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        agent.run.check_alive()
    })();
    stop_all(procs);
    result
}

/// `plan.envoys` pods with istio-init's rules and Envoy (outbound config, one worker) as uid
/// 1337; no agent.
pub fn envoys(cx: &Ctx, m: &mut Metrics) -> Result<()> {
    let n = cx.plan.envoys;
    let mut rules = Vec::new();
    let mut procs: Vec<Running> = Vec::new();
    let result = (|| {
        for i in 0..n {
            rules.push(IptablesGuard::install(cx.sluice, &cx.pods.pods[i].ns.name)?);
            procs.push(cx.envoy(i)?);
        }
        for (i, p) in procs.iter_mut().enumerate() {
            cx.wait_listen(i, 15001, p)?;
        }
        // Envoy binds its listener before its worker runs.
        std::thread::sleep(Duration::from_millis(500));
        let pids: Vec<u32> = procs.iter().map(Running::pid).collect();
        measure(cx, "envoy", &pids, n, m)?;
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        anyhow::Ok(())
    })();
    stop_all(procs);
    drop(rules);
    result
}
