//! The pieces a path is made of, each started in one pod side and undone by a guard on drop:
//! istio-init rules (`sluice iptables install`), `sluice sidecar`, the L7 `sluice proxy`, Envoy,
//! the node agent with its bpffs pins, and enrollments with the agent.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    super::topology::{join_cgroup, run, Cgroup, Netns, Proc, Topology},
    Programs,
};

/// Which pod a piece runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client pod (outbound capture, listener 15001).
    Client,
    /// The server pod (inbound capture, listener 15006).
    Server,
}

impl Side {
    pub fn netns(self, topo: &Topology) -> &Netns {
        match self {
            Side::Client => &topo.client,
            Side::Server => &topo.server,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// The port the side's proxy must listen on before traffic flows.
    pub fn port(self) -> u16 {
        match self {
            Side::Client => 15001,
            Side::Server => 15006,
        }
    }
}

/// A started process and its log file (for the error when it dies).
pub struct Running {
    pub proc: Proc,
    pub log: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Fails (with the log's tail) when the process exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive(&self.log)
    }
}

/// istio-init's rules in one pod, removed on drop (`sluice iptables remove`, then a flush of the
/// nat table in case the install stopped half-way).
pub struct IptablesGuard {
    netns: String,
    sluice: PathBuf,
}

impl IptablesGuard {
    /// Installs istio-init's rules in netns `ns`. The guard exists before the install, so a
    /// half-done install is undone too.
    pub fn install(sluice: &Path, ns: &str) -> Result<Self> {
        let guard = IptablesGuard {
            netns: ns.to_string(),
            sluice: sluice.to_path_buf(),
        };
        run(
            &sluice.to_string_lossy(),
            &["iptables", "install", "--netns", ns],
        )?;
        Ok(guard)
    }
}

impl Drop for IptablesGuard {
    fn drop(&mut self) {
        let _ = run(
            &self.sluice.to_string_lossy(),
            &["iptables", "remove", "--netns", &self.netns],
        );
        for args in [["-t", "nat", "-F"], ["-t", "nat", "-X"]] {
            let _ = run(
                "ip",
                &[&["netns", "exec", &self.netns, "iptables"][..], &args[..]].concat(),
            );
        }
    }
}

/// The agent's bpffs pin directory: removing the pins detaches the pinned links.
pub struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How to start a node agent (the bench's one-pod paths and the scale bench).
pub struct AgentSpec<'a> {
    pub sluice: &'a Path,
    /// The cgroup it attaches to and runs in.
    pub cgroup: &'a Cgroup,
    /// Where its control socket goes.
    pub dir: &'a Path,
    /// Makes pin and socket names unique per start.
    pub n: u32,
    /// Envoy YAML of its L7 engine (`--config`).
    pub config: Option<&'a Path>,
    /// TOKIO_WORKER_THREADS.
    pub workers: u32,
    /// More arguments.
    pub extra: &'a [&'a str],
    /// Its stdout and stderr.
    pub log: PathBuf,
}

/// Starts the agent in `spec.cgroup`, attached to it, with its own pin directory and control
/// socket. Returns once the control socket exists.
pub fn start_agent(spec: &AgentSpec) -> Result<Agent> {
    let n = spec.n;
    let pins = PinsGuard(PathBuf::from(format!(
        "/sys/fs/bpf/sl-bench-{}-{n}",
        std::process::id()
    )));
    let control = spec.dir.join(format!("agent-{n}.sock"));
    let mut c = Command::new(spec.sluice);
    c.args(["agent", "--cgroup"])
        .arg(&spec.cgroup.path)
        .arg("--pin-dir")
        .arg(&pins.0)
        .arg("--control")
        .arg(&control)
        .args(spec.extra)
        .env("TOKIO_WORKER_THREADS", spec.workers.to_string())
        .env("RUST_LOG", "warn");
    if let Some(cfg) = spec.config {
        c.arg("--config").arg(cfg);
    }
    join_cgroup(&mut c, spec.cgroup.procs_file());
    let f =
        fs::File::create(&spec.log).with_context(|| format!("create {}", spec.log.display()))?;
    c.stdout(f.try_clone()?).stderr(f);
    let child = c.spawn().context("starting sluice agent")?;
    let mut agent = Agent {
        run: Running {
            proc: Proc {
                name: "sluice agent".into(),
                child,
            },
            log: spec.log.clone(),
        },
        pins,
        control,
    };
    let t = Instant::now();
    while !agent.control.exists() {
        agent.run.check_alive()?;
        if t.elapsed() > Duration::from_secs(15) {
            bail!(
                "sluice agent: no control socket {} after 15 s",
                agent.control.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(agent)
}

/// A running node agent. Field order is drop order: the agent stops before its pins go.
pub struct Agent {
    pub run: Running,
    pub pins: PinsGuard,
    pub control: PathBuf,
}

/// Starts the pieces of one activation; `n` makes file, pin and socket names unique.
pub struct Starter<'a> {
    pub topo: &'a Topology,
    pub progs: &'a Programs,
    pub n: u32,
}

impl Starter<'_> {
    fn sluice(&self) -> Result<&Path> {
        self.progs.sluice.as_deref().context("no sluice binary")
    }

    fn workers(&self) -> String {
        self.progs.workers.to_string()
    }

    /// A log file `<what>-<side>-<n>.log` in the bench directory.
    fn log(&self, what: &str, side: Side) -> Result<(PathBuf, fs::File)> {
        let p = (self.topo.dir.path).join(format!("{what}-{}-{}.log", side.name(), self.n));
        let f = fs::File::create(&p).with_context(|| format!("create {}", p.display()))?;
        Ok((p, f))
    }

    fn spawn(&self, what: &str, side: Side, mut c: Command) -> Result<Running> {
        let (log, f) = self.log(what, side)?;
        c.stdout(f.try_clone()?).stderr(f);
        let name = format!("{what} ({} pod)", side.name());
        let child = c.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Running {
            proc: Proc { name, child },
            log,
        })
    }

    /// A file in the bench directory with `text` (proxy configs).
    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.topo.dir.path.join(name);
        fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        Ok(p)
    }

    /// `prog` inside the side's netns as uid/gid 1337 (the identity istio-init's rules exempt).
    fn as_1337(&self, side: Side, prog: &Path) -> Command {
        let mut c = side.netns(self.topo).command("setpriv", None);
        c.args(["--reuid", "1337", "--regid", "1337", "--clear-groups"])
            .arg(prog);
        c
    }

    /// Installs istio-init's rules in the side's pod.
    pub fn iptables(&self, side: Side) -> Result<IptablesGuard> {
        IptablesGuard::install(self.sluice()?, &side.netns(self.topo).name)
    }

    /// `sluice sidecar` in the side's pod (15001 outbound, 15006 inbound; drops to uid 1337).
    /// With an agent's control socket (eBPF paths) it joins the bench cgroup and registers its
    /// inbound listeners with the agent, so sk_lookup steers the pod's inbound to its 15006.
    pub fn sidecar(&self, side: Side, agent_control: Option<&Path>) -> Result<Running> {
        let mut c = Command::new(self.sluice()?);
        c.args(["sidecar", "--netns", &side.netns(self.topo).name])
            .args(["--uid", "1337"])
            .env("TOKIO_WORKER_THREADS", self.workers())
            .env("RUST_LOG", "warn");
        if let Some(ctl) = agent_control {
            c.arg("--agent-control").arg(ctl);
            join_cgroup(&mut c, self.topo.cgroup.procs_file());
        }
        self.spawn("sluice-sidecar", side, c)
    }

    /// The L7 engine (`sluice proxy -c`) with Envoy's outbound config, as uid 1337.
    pub fn l7_proxy(&self, side: Side, config: &str) -> Result<Running> {
        let cfg = self.write(&format!("l7-{}.yaml", side.name()), config)?;
        let mut c = self.as_1337(side, self.sluice()?);
        c.args(["proxy", "-c", &cfg.to_string_lossy(), "-l", "warn"])
            .args(["--reload-poll-ms", "0"])
            .env("TOKIO_WORKER_THREADS", self.workers());
        self.spawn("sluice-proxy", side, c)
    }

    /// Envoy with `config` in the side's pod, as uid 1337, `--concurrency` = workers.
    pub fn envoy(&self, side: Side, config: &str) -> Result<Running> {
        let envoy = self.progs.envoy.as_deref().context("no envoy binary")?;
        let cfg = self.write(&format!("envoy-{}.yaml", side.name()), config)?;
        let mut c = self.as_1337(side, envoy);
        c.args([
            "-c",
            &cfg.to_string_lossy(),
            "--concurrency",
            &self.workers(),
        ])
        .args(["--disable-hot-restart", "--log-level", "warn"]);
        self.spawn("envoy", side, c)
    }

    /// The node agent in the bench cgroup, attached to it, with its own pin directory and
    /// control socket; `l7_config` runs its L7 engine on node-mode pods. Returns once the
    /// control socket exists.
    pub fn agent(&self, l7_config: Option<&str>) -> Result<Agent> {
        let cfg = match l7_config {
            Some(c) => Some(self.write("agent-l7.yaml", c)?),
            None => None,
        };
        let (log, _) = self.log("sluice-agent", Side::Client)?;
        start_agent(&AgentSpec {
            sluice: self.sluice()?,
            cgroup: &self.topo.cgroup,
            dir: &self.topo.dir.path,
            n: self.n,
            config: cfg.as_deref(),
            workers: self.progs.workers,
            extra: &[],
            log,
        })
    }

    /// Enrolls the side's pod with the agent (`mode` node or sidecar, fast path on or off).
    /// The agent's pins and its exit undo it.
    pub fn enroll(&self, side: Side, control: &Path, mode: &str, fast: &str) -> Result<()> {
        run(
            &self.sluice()?.to_string_lossy(),
            &[
                "enroll",
                "--netns",
                &side.netns(self.topo).name,
                "--mode",
                mode,
                "--fast-path",
                fast,
                "--control",
                &control.to_string_lossy(),
            ],
        )?;
        Ok(())
    }
}
