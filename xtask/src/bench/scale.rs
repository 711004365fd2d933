//! `cargo xtask bench --scale`: the node agent at node scale. 100 pods (netns on one bridge in a
//! server netns running nginx) enrolled in node mode on one agent, measured with the L4
//! passthrough and then with the L7 engine (the agent's `--config` applies to every pod); the
//! same pods behind 100 `sluice sidecar` processes and 10 of them behind Envoy sidecars with
//! istio-init's rules; a noisy neighbour; 1 vs 2 agent worker threads; CNI ADD/DEL churn while
//! 20 pods carry traffic. Writes `<target>/bench/scale.md` and `scale.json` and prints the report.

mod churn;
mod ctx;
pub mod multigen;
mod neighbour;
mod node;
pub(crate) mod pods;
pub(crate) mod procstat;
mod report;
mod status_scale;
mod workers;

use std::{fs, time::Instant};

use anyhow::{bail, Result};

use super::{
    build_loadgen, cargo_build, machine, paths, require_tools, target_dir,
    topology::{check_interrupted, install_signal_handler},
    BenchArgs,
};
use ctx::Ctx;
use node::Engines;
use report::Metrics;

/// Sizes and durations of one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    /// Pods enrolled on one agent (and sluice sidecars).
    pub pods: usize,
    /// Envoy sidecars.
    pub envoys: usize,
    /// Traffic to every pod: duration and per-pod rate (one keep-alive connection per pod).
    pub traffic_secs: f64,
    pub per_pod_rps: u64,
    /// Idle CPU window.
    pub idle_secs: f64,
    /// Repetitions of the noisy-neighbour and worker-scaling runs.
    pub reps: u32,
    /// Noisy neighbour: run length and the quiet pod's open-loop rate.
    pub noisy_secs: f64,
    pub quiet_rps: u64,
    /// Worker scaling: pods driven (one wrk each) and run length.
    pub worker_pods: usize,
    pub worker_secs: f64,
    /// Churn: pods added and removed through CNI, at `churn_rate` per second, while
    /// `churn_busy` pods carry traffic.
    pub churn_pods: usize,
    pub churn_rate: f64,
    pub churn_busy: usize,
    /// `sluice status` at node scale: pods enrolled at once beside the bench's pods.
    pub status_pods: usize,
}

impl Plan {
    fn new(a: &BenchArgs) -> Plan {
        let pods = a.pods.unwrap_or(100);
        let full = Plan {
            pods,
            envoys: 10.min(pods),
            traffic_secs: 60.0,
            per_pod_rps: 10,
            idle_secs: 10.0,
            reps: a.reps.unwrap_or(3),
            noisy_secs: 10.0,
            quiet_rps: 1000,
            worker_pods: 10.min(pods),
            worker_secs: 10.0,
            churn_pods: 1000,
            churn_rate: 10.0,
            churn_busy: 20.min(pods),
            status_pods: 1000,
        };
        if !a.quick {
            return full;
        }
        Plan {
            traffic_secs: 5.0,
            idle_secs: 3.0,
            reps: a.reps.unwrap_or(1),
            noisy_secs: 3.0,
            worker_secs: 3.0,
            churn_pods: 50,
            status_pods: 50,
            ..full
        }
    }
}

/// Copies the run's process logs (agents, sidecars, Envoys, nginx) out of the bench directory
/// before it is removed, for the failure message.
fn keep_logs(from: &std::path::Path, to: &std::path::Path) {
    let _ = fs::remove_dir_all(to);
    let _ = fs::create_dir_all(to);
    for e in fs::read_dir(from).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log" || x == "out") {
            let _ = fs::copy(&p, to.join(e.file_name()));
        }
    }
}

/// Runs the scale bench.
pub fn run(a: &BenchArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench --scale needs root (network namespaces, iptables, eBPF)");
    }
    install_signal_handler();
    require_tools(&["wrk", "nginx", "setpriv", "iptables-restore", "ss"])?;
    let started = Instant::now();
    let machine_start = machine();
    let plan = Plan::new(a);
    // The variants' sections (`noisy-l4-<name>`, `noisy-l7-<name>`) come from their table.
    const BASE_SECTIONS: [&str; 9] = [
        "noisy-l4",
        "noisy-l7",
        "node-l4",
        "node-mixed",
        "node-l7",
        "sidecars",
        "envoys",
        "workers",
        "noisy-control",
    ];
    let sections: Vec<String> = BASE_SECTIONS
        .iter()
        .map(|s| s.to_string())
        .chain(neighbour::VARIANTS.iter().flat_map(|v| {
            [
                format!("noisy-l4-{}", v.name),
                format!("noisy-l7-{}", v.name),
            ]
        }))
        .collect();
    if let Some(bad) = a.paths.iter().find(|p| !sections.contains(p)) {
        bail!(
            "--paths {bad}: --scale sections are {}",
            sections.join(", ")
        );
    }
    if plan.pods < 3 {
        bail!("--pods must be at least 3 (noisy neighbour: the neighbour, a quiet pod on the other worker and one on its own)");
    }
    let (bin_dir, loadgen) = build_loadgen(a)?;
    let sluice = match &a.sluice {
        Some(p) => p.canonicalize()?,
        None => {
            cargo_build("sluice", &a.profile)?;
            bin_dir.join("sluice")
        }
    };
    let cni = sluice.with_file_name("sluice-cni");
    if !cni.exists() {
        bail!(
            "{} is missing (cargo build -p sluice --bins)",
            cni.display()
        );
    }
    let t = Instant::now();
    let pods = pods::Pods::new(plan.pods)?;
    eprintln!(
        "bench --scale: {} pods up in {:.1} s (server {} in {})",
        plan.pods,
        t.elapsed().as_secs_f64(),
        pods.server_ip,
        pods.server.name
    );
    let envoy = paths::prepare_envoy(&pods.dir.path).ok();
    let out = a.out.clone().unwrap_or_else(|| target_dir().join("bench"));
    let mut cx = Ctx::new(&pods, &sluice, &cni, &loadgen, envoy.as_deref(), &plan);
    cx.perf = a.perf.then(|| out.join("perf"));
    let mut m = Metrics::default();
    let mut step = |name: &str, f: &mut dyn FnMut(&mut Metrics) -> Result<()>| -> Result<()> {
        check_interrupted()?;
        let t = Instant::now();
        eprintln!("bench --scale: {name} ...");
        if let Err(e) = f(&mut m) {
            keep_logs(&pods.dir.path, &out.join("scale-logs"));
            return Err(e.context(format!("{name} (logs in {}/scale-logs)", out.display())));
        }
        eprintln!(
            "bench --scale: {name} done in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Ok(())
    };
    // L4 agent: 100 pods, then the noisy neighbour and the churn on the same agent (100 pods
    // enrolled all along).
    let on = |section: &str| a.paths.is_empty() || a.paths.iter().any(|p| p == section);
    if on("node-l4") {
        step("node mode, L4", &mut |m| {
            let mut agent = node::run(&cx, Engines::L4, m)?;
            neighbour::run(&cx, Some(&mut agent), "node_l4", neighbour::QUIET, m)?;
            churn::run(&cx, &mut agent, m)?;
            status_scale::run(&cx, &agent, m)
        })?;
    }
    // The noisy neighbour alone (node-l4 / node-l7 run it too, after their measurements).
    for (section, engines) in [("noisy-l4", Engines::L4), ("noisy-l7", Engines::L7)] {
        if a.paths.iter().any(|p| p == section) {
            step(section, &mut |m| {
                let mut agent = node::enroll_all(&cx, engines, engines.key(), &[], m)?;
                neighbour::run(&cx, Some(&mut agent), engines.key(), neighbour::QUIET, m)
            })?;
        }
    }
    // The same with one fairness measure off (`neighbour::VARIANTS`): what each buys, measured
    // in the same run. Part of every full run.
    for v in &neighbour::VARIANTS {
        for engines in [Engines::L4, Engines::L7] {
            let section = format!("noisy-{}-{}", engines.key().replace("node_", ""), v.name);
            if on(&section) {
                let key = format!("{}_{}", engines.key(), v.name.replace('-', "_"));
                step(&section, &mut |m| {
                    let mut agent = node::enroll_all(&cx, engines, &key, v.args, m)?;
                    neighbour::run(&cx, Some(&mut agent), &key, v.quiet, m)
                })?;
            }
        }
    }
    if on("node-mixed") {
        step("node mode, half L7 half L4", &mut |m| {
            node::run(&cx, Engines::Mixed, m).map(drop)
        })?;
    }
    if on("node-l7") {
        step("node mode, L7", &mut |m| {
            let mut agent = node::run(&cx, Engines::L7, m)?;
            neighbour::run(&cx, Some(&mut agent), "node_l7", neighbour::QUIET, m)
        })?;
    }
    if on("sidecars") {
        step("sluice sidecars", &mut |m| node::sidecars(&cx, m))?;
    }
    match &envoy {
        Some(_) if on("envoys") => step("Envoy sidecars", &mut |m| node::envoys(&cx, m))?,
        Some(_) => {}
        None => eprintln!("bench --scale: no native Envoy found: Envoy sidecars skipped"),
    }
    if on("workers") {
        step("worker scaling", &mut |m| workers::run(&cx, m))?;
    }
    if on("noisy-control") {
        step("noisy neighbour without a proxy", &mut |m| {
            neighbour::run(&cx, None, "direct", neighbour::QUIET, m)
        })?;
    }
    let profiles = cx.profiles.take();
    drop(cx);
    drop(pods);
    let header = report::Header {
        quick: a.quick,
        machine_start,
        machine_end: machine(),
        secs: started.elapsed().as_secs_f64(),
        plan: &plan,
        envoy: envoy.is_some(),
    };
    let (mut md, json) = report::render(&header, &m);
    if !profiles.is_empty() {
        md.push_str(
            "\n## Profiles (--perf: the agent during the first worker-scaling repetition)\n\n",
        );
        md.push_str(&super::profile::markdown(&profiles));
    }
    fs::create_dir_all(&out)?;
    fs::write(out.join("scale.md"), &md)?;
    fs::write(out.join("scale.json"), serde_json::to_string_pretty(&json)?)?;
    println!("{md}");
    eprintln!(
        "bench --scale: wrote {}/scale.md, scale.json",
        out.display()
    );
    Ok(())
}
