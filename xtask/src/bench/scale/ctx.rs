//! What every scale phase needs: the pods, the binaries, the plan, and the few actions they
//! share: start an agent, enroll a pod (timed), drive pods with the multi-pod load generator or
//! wrk, read a process's idle CPU, stop many processes at once.

use std::{
    cell::Cell,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    super::{
        loadgen::OpenResult,
        paths::{
            envoy::outbound_config,
            start::{start_agent, Agent, AgentSpec, Running},
        },
        topology::{join_cgroup, run, Proc, HTTP_PORT},
        workloads::{bound, wait_bounded, wrk_rps},
    },
    pods::{Pods, NOISY_PORT},
    procstat, Plan,
};

pub struct Ctx<'a> {
    pub pods: &'a Pods,
    pub sluice: &'a Path,
    pub cni: &'a Path,
    pub loadgen: &'a Path,
    pub envoy: Option<&'a Path>,
    pub plan: &'a Plan,
    /// `--perf`: where the worker-scaling runs' `perf record` files go.
    pub perf: Option<std::path::PathBuf>,
    /// The profiles taken (`--perf`), for the report.
    pub profiles: std::cell::RefCell<Vec<super::super::profile::Summary>>,
    /// Makes agent pin directories and sockets unique.
    n: Cell<u32>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        pods: &'a Pods,
        sluice: &'a Path,
        cni: &'a Path,
        loadgen: &'a Path,
        envoy: Option<&'a Path>,
        plan: &'a Plan,
    ) -> Self {
        Ctx {
            pods,
            sluice,
            cni,
            loadgen,
            envoy,
            plan,
            perf: None,
            profiles: Default::default(),
            n: Cell::new(0),
        }
    }

    /// A node agent on the bench cgroup: L7 engine (Envoy's outbound config, as the bench's
    /// `ebpf+sluice-node-l7`) or L4 passthrough; `workers` passes `--workers`, else the tokio
    /// default (one worker per core).
    pub fn agent(&self, l7: bool, workers: Option<u32>) -> Result<Agent> {
        self.agent_with(l7, workers, &[])
    }

    /// [`Ctx::agent`] with more `sluice agent` arguments.
    pub fn agent_with(&self, l7: bool, workers: Option<u32>, args: &[&str]) -> Result<Agent> {
        let n = self.n.get() + 1;
        self.n.set(n);
        let cfg = self.pods.dir.path.join("agent-l7.yaml");
        if l7 {
            std::fs::write(&cfg, scale_config(&self.pods.server_ip))?;
        }
        let w = workers.map(|w| w.to_string());
        let mut extra: Vec<&str> = match &w {
            Some(w) => vec!["--workers", w],
            None => vec![],
        };
        extra.extend_from_slice(args);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        start_agent(&AgentSpec {
            sluice: self.sluice,
            cgroup: &self.pods.cgroup,
            dir: &self.pods.dir.path,
            n,
            config: l7.then_some(cfg.as_path()),
            workers: workers.unwrap_or(cores),
            extra: &extra,
            log: self.pods.dir.path.join(format!("agent-{n}.log")),
        })
    }

    /// `sluice enroll` of pod `i` (`mode` node or sidecar, fast path on as in the bench's
    /// eBPF paths); returns the wall time of the command (exec + one control call).
    pub fn enroll(&self, control: &Path, i: usize, mode: &str) -> Result<Duration> {
        self.enroll_netns(control, &self.pods.pods[i].ns.name, mode, &[])
    }

    /// `sluice enroll` of netns `name` with `extra` options, timed as [`Self::enroll`].
    pub fn enroll_netns(
        &self,
        control: &Path,
        name: &str,
        mode: &str,
        extra: &[&str],
    ) -> Result<Duration> {
        let t = Instant::now();
        let control = control.to_string_lossy();
        let mut args = vec![
            "enroll",
            "--netns",
            name,
            "--mode",
            mode,
            "--fast-path",
            "on",
            "--control",
            &control,
        ];
        args.extend_from_slice(extra);
        run(&self.sluice.to_string_lossy(), &args)?;
        Ok(t.elapsed())
    }

    /// `sluice <args> --control CONTROL` to completion: its stdout and wall time.
    pub fn sluice_timed(&self, control: &Path, args: &[&str]) -> Result<(String, Duration)> {
        let t = Instant::now();
        let control = control.to_string_lossy();
        let mut all = args.to_vec();
        all.extend_from_slice(&["--control", &control]);
        let out = run(&self.sluice.to_string_lossy(), &all)?;
        Ok((out, t.elapsed()))
    }

    /// `sluice status --json` (one control call for every pod): the report and the call's
    /// wall time.
    pub fn status(&self, control: &Path) -> Result<(serde_json::Value, Duration)> {
        let (out, took) = self.sluice_timed(control, &["status", "--json"])?;
        Ok((serde_json::from_str(&out).context("status --json")?, took))
    }

    /// The multi-pod load generator (our open loop, HDR histogram) from the given pods,
    /// `conns` connections each, `rate` requests/s in total, started (not waited for).
    pub fn multi_start(&self, pods: &[usize], rate: u64, conns: u64, secs: f64) -> Result<Child> {
        let names: Vec<&str> = pods
            .iter()
            .map(|&i| self.pods.pods[i].ns.name.as_str())
            .collect();
        let mut c = Command::new(self.loadgen);
        c.args(["bench", "loadgen", "--mode", "multi", "--path", "/1k"])
            .arg("--addr")
            .arg(format!("{}:{HTTP_PORT}", self.pods.server_ip))
            .arg("--netns")
            .arg(names.join(","))
            .args(["--rate", &rate.to_string(), "--conns", &conns.to_string()])
            .args(["--seconds", &secs.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        join_cgroup(&mut c, self.pods.cgroup.procs_file());
        c.spawn().context("starting the load generator")
    }

    /// Waits for a generator of [`Self::multi_start`] (bounded) and parses its result.
    pub fn multi_wait(&self, child: Child, secs: f64) -> Result<OpenResult> {
        let text = wait_bounded(child, "the load generator", bound(secs))?;
        serde_json::from_str(text.trim()).with_context(|| format!("loadgen printed {text:?}"))
    }

    /// [`Self::multi_start`] and wait.
    pub fn multi(&self, pods: &[usize], rate: u64, conns: u64, secs: f64) -> Result<OpenResult> {
        let child = self.multi_start(pods, rate, conns, secs)?;
        self.multi_wait(child, secs)
    }

    /// One keep-alive connection from every pod of `pods`, one warm-up request and one
    /// scheduled request each; returns the failed requests.
    pub fn probe(&self, pods: &[usize]) -> Result<u64> {
        Ok(self.multi(pods, pods.len() as u64, 1, 0.0)?.errors)
    }

    /// wrk (one thread, `conns` connections, `secs`) from pod `i`, started.
    pub fn wrk_start(&self, i: usize, conns: u64, secs: f64) -> Result<(Child, String)> {
        let url = format!("http://{}:{HTTP_PORT}/1k", self.pods.server_ip);
        let mut c = self.pods.in_pod(i, Path::new("wrk"));
        c.args(["-t1", "-c", &conns.to_string()])
            .args(["-d", &format!("{}s", secs.ceil() as u64), &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok((c.spawn().context("starting wrk")?, url))
    }

    /// The noisy neighbour's wrk from pod `i`: at nice 19 (its CPU goes to it only when nothing
    /// else wants the core, as if it ran on cores of its own) against its own nginx
    /// ([`NOISY_PORT`], host `noisy.bench`: the L7 config routes that host to that nginx).
    pub fn wrk_start_noisy(&self, i: usize, conns: u64, secs: f64) -> Result<(Child, String)> {
        let url = format!("http://{}:{NOISY_PORT}/1k", self.pods.server_ip);
        let mut c = self.pods.in_pod(i, Path::new("nice"));
        c.args(["-n", "19", "wrk", "-H", "Host: noisy.bench"])
            .args(["-t1", "-c", &conns.to_string()])
            .args(["-d", &format!("{}s", secs.ceil() as u64), &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok((c.spawn().context("starting wrk")?, url))
    }

    /// Waits for a wrk of [`Self::wrk_start`]: its requests/s.
    pub fn wrk_wait(&self, (child, url): (Child, String), secs: f64) -> Result<f64> {
        let out = wait_bounded(child, "wrk", bound(secs))?;
        wrk_rps(&url, &out)
    }

    /// `sluice sidecar` in pod `i` (sidecar mode, registered with the agent, uid 1337, one
    /// tokio worker), in the bench cgroup.
    pub fn sidecar(&self, i: usize, control: &Path) -> Result<Running> {
        let mut c = Command::new(self.sluice);
        c.args(["sidecar", "--netns", &self.pods.pods[i].ns.name])
            .arg("--agent-control")
            .arg(control)
            .env("TOKIO_WORKER_THREADS", "1")
            .env("RUST_LOG", "warn");
        join_cgroup(&mut c, self.pods.cgroup.procs_file());
        self.spawn(c, &format!("sidecar-{i}"))
    }

    /// Envoy (outbound config, `--concurrency 1`) in pod `i` as uid 1337.
    pub fn envoy(&self, i: usize) -> Result<Running> {
        let envoy = self.envoy.context("no envoy binary")?;
        let cfg = self.pods.dir.path.join("envoy-outbound.yaml");
        if !cfg.exists() {
            std::fs::write(&cfg, scale_config(&self.pods.server_ip))?;
        }
        let mut c = self.pods.pods[i].ns.command("setpriv", None);
        c.args(["--reuid", "1337", "--regid", "1337", "--clear-groups"])
            .arg(envoy)
            .arg("-c")
            .arg(&cfg)
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .args(["--log-level", "warn"]);
        self.spawn(c, &format!("envoy-{i}"))
    }

    fn spawn(&self, mut c: Command, what: &str) -> Result<Running> {
        let (log, f) = self.pods.log(&format!("{what}.log"))?;
        c.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        let child = c.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Running {
            proc: Proc {
                name: what.to_string(),
                child,
            },
            log,
        })
    }

    /// Waits until pod `i` listens on `port` (the proxy is up), failing when `proc` died.
    pub fn wait_listen(&self, i: usize, port: u16, proc: &mut Running) -> Result<()> {
        let t = Instant::now();
        loop {
            proc.check_alive()?;
            if self.pods.pods[i]
                .ns
                .wait_listen(port, Duration::from_millis(100))
                .is_ok()
            {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!("pod {i}: nothing listens on {port} after 20 s");
            }
        }
    }
}

/// CPU of `pids` while nothing happens for `secs`: % of one core, and thread wake-ups
/// (context switches) per second.
pub fn idle_cpu(pids: &[u32], secs: f64) -> Result<(f64, f64)> {
    let c0 = procstat::cpu_sum(pids)?;
    let s0: u64 = pids
        .iter()
        .map(|&p| procstat::switches(p))
        .sum::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1 = procstat::cpu_sum(pids)?;
    let s1: u64 = pids
        .iter()
        .map(|&p| procstat::switches(p))
        .sum::<Result<_>>()?;
    Ok(((c1 - c0) / secs * 100.0, (s1 - s0) as f64 / secs))
}

/// Stops many processes at once: SIGTERM to all, then each guard reaps (or kills) its own.
pub fn stop_all(procs: Vec<Running>) {
    for p in &procs {
        // SAFETY: signalling children we started and have not reaped.
        unsafe { libc::kill(p.pid() as i32, libc::SIGTERM) };
    }
    drop(procs);
}

/// The bench's L7 outbound config plus the noisy neighbour's virtual host `noisy.bench` ->
/// cluster `noisy` (its own nginx on [`NOISY_PORT`]).
fn scale_config(server_ip: &str) -> String {
    const CATCH_ALL: &str = "            - name: outbound\n              domains: [\"*\"]";
    let base = outbound_config(server_ip);
    assert!(
        base.contains(CATCH_ALL),
        "the outbound config's catch-all virtual host moved"
    );
    let vhost = "            - name: noisy\n              domains: [\"noisy.bench\"]\n              routes:\n              - match: {prefix: \"/\"}\n                route: {cluster: noisy}\n";
    format!(
        "{}  - name: noisy\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: noisy\n      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {NOISY_PORT}}}}}}}}}]}}]\n",
        base.replacen(CATCH_ALL, &format!("{vhost}{CATCH_ALL}"), 1)
    )
}
