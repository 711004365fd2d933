//! The measured paths and how each is brought up and torn down: direct, the istio-init iptables
//! rules with sluice or Envoy as a uid-1337 sidecar, the eBPF capture with sluice as a sidecar,
//! in-process in the node agent, and with the sk_msg fast path off (all in the client pod only),
//! and the two-hop variants with the same proxy in the server pod too (inbound capture), as Istio
//! deploys it. Every activation checks that the request really took each hop.

pub mod envoy;
pub mod start;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    topology::{run, Topology},
    workloads,
};
pub use envoy::prepare as prepare_envoy;
use start::{IptablesGuard, PinsGuard, Running, Side, Starter};

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
    /// `IptablesSluice` in both pods: the server pod's rules send inbound to its sidecar's 15006.
    TwoHopIptablesSluice,
    /// `EbpfSidecar` in both pods: sk_lookup steers the server pod's inbound to its sidecar.
    TwoHopEbpfSidecar,
    /// `IptablesEnvoy` in both pods: the server-side Envoy runs Istio's inbound listener.
    TwoHopIptablesEnvoy,
}

impl PathKind {
    pub const ALL: [PathKind; 11] = [
        PathKind::Direct,
        PathKind::IptablesSluice,
        PathKind::IptablesSluiceL7,
        PathKind::EbpfSidecar,
        PathKind::EbpfNode,
        PathKind::EbpfNodeL7,
        PathKind::EbpfNoFast,
        PathKind::IptablesEnvoy,
        PathKind::TwoHopIptablesSluice,
        PathKind::TwoHopEbpfSidecar,
        PathKind::TwoHopIptablesEnvoy,
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
            PathKind::TwoHopIptablesSluice => "2hop:iptables+sluice",
            PathKind::TwoHopEbpfSidecar => "2hop:ebpf+sluice-sidecar",
            PathKind::TwoHopIptablesEnvoy => "2hop:iptables+envoy",
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

    /// The Envoy paths.
    pub fn needs_envoy(self) -> bool {
        matches!(
            self,
            PathKind::IptablesEnvoy | PathKind::TwoHopIptablesEnvoy
        )
    }

    /// A proxy in the server pod too (client sidecar + server sidecar).
    pub fn two_hop(self) -> bool {
        self.one_hop() != self
    }

    /// The same proxy and capture with the client pod's hop only (itself for one-hop paths).
    pub fn one_hop(self) -> PathKind {
        match self {
            PathKind::TwoHopIptablesSluice => PathKind::IptablesSluice,
            PathKind::TwoHopEbpfSidecar => PathKind::EbpfSidecar,
            PathKind::TwoHopIptablesEnvoy => PathKind::IptablesEnvoy,
            p => p,
        }
    }

    /// The pods a proxy runs in.
    fn sides(self) -> &'static [Side] {
        match self {
            PathKind::Direct => &[],
            p if p.two_hop() => &[Side::Client, Side::Server],
            _ => &[Side::Client],
        }
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

/// What `sluice --help` (and `sluice sidecar --help`) must list for each sluice path.
pub fn check_sluice(bin: &Path, paths: &[PathKind]) -> Result<()> {
    let bin_s = bin.to_string_lossy();
    let help = run(&bin_s, &["--help"])?;
    let sidecar_help = run(&bin_s, &["sidecar", "--help"]).unwrap_or_default();
    let has = |cmd: &str| help.lines().any(|l| l.trim_start().starts_with(cmd));
    for p in paths.iter().filter(|p| p.needs_sluice()) {
        let need: &[&str] = match p.one_hop() {
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
        if need.contains(&"agent")
            && need.contains(&"sidecar")
            && !sidecar_help.contains("--agent-control")
        {
            bail!(
                "path {} cannot run: `{} sidecar` has no --agent-control (inbound listener \
                 registration with the agent)",
                p.name(),
                bin.display()
            );
        }
    }
    Ok(())
}

/// A path that is up. Drop order: the proxies, the agent, then the rules and pins.
pub struct Active {
    pub kind: PathKind,
    /// The proxy processes, client pod's first.
    proxies: Vec<Running>,
    agent: Option<Running>,
    iptables: Vec<IptablesGuard>,
    pins: Option<PinsGuard>,
}

impl Active {
    /// The processes whose CPU and RSS are the proxies' (the agent in node mode; both sidecars
    /// on the two-hop paths).
    pub fn proxy_pids(&self) -> Vec<u32> {
        match self.kind {
            PathKind::EbpfNode | PathKind::EbpfNodeL7 | PathKind::EbpfNoFast => {
                self.agent.iter().map(Running::pid).collect()
            }
            _ => self.proxies.iter().map(Running::pid).collect(),
        }
    }

    /// Fails when a proxy or the agent died.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in self.proxies.iter_mut().chain(self.agent.as_mut()) {
            p.check_alive()?;
        }
        Ok(())
    }

    /// Waits until each side's proxy listens (15001 client, 15006 server).
    fn wait_ready(&mut self, topo: &Topology) -> Result<()> {
        for &side in self.kind.sides() {
            let ns = side.netns(topo);
            let t = Instant::now();
            loop {
                if let Err(e) = self.check_alive() {
                    let ss = ns.exec("ss", &["-tanp"]).unwrap_or_default();
                    bail!("{e:#}\nsockets in the {} pod:\n{ss}", side.name());
                }
                if ns
                    .wait_listen(side.port(), Duration::from_millis(200))
                    .is_ok()
                {
                    break;
                }
                if t.elapsed() > Duration::from_secs(15) {
                    bail!(
                        "path {}: nothing listens on {} in the {} pod after 15 s",
                        self.kind.name(),
                        side.port(),
                        side.name()
                    );
                }
            }
        }
        // Let Envoy finish initialising its workers (the listener socket is bound before they run).
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }

    /// One request through the path: nginx must see 127.0.0.6 (the server-side proxy's
    /// source) on two-hop paths and the client pod's address otherwise, and every proxy process
    /// must have run meanwhile. A path that silently skips a hop fails here. Retries for 5 s
    /// (an eBPF sidecar registers its inbound listeners with the agent after it listens).
    fn check_hops(&mut self, topo: &Topology) -> Result<()> {
        let want = if self.kind.two_hop() {
            "127.0.0.6"
        } else {
            topo.client_ip.as_str()
        };
        let pids = self.proxy_pids();
        let cpu0 = pids
            .iter()
            .map(|&p| workloads::cpu_ns(p))
            .collect::<Result<Vec<_>>>()?;
        let t = Instant::now();
        loop {
            self.check_alive()?;
            let seen = workloads::server_peer(topo);
            match &seen {
                Ok(peer) if peer == want => break,
                _ if t.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(peer) => bail!(
                    "path {}: nginx saw the request from {peer}, expected {want} (a hop was skipped)",
                    self.kind.name()
                ),
                Err(e) => bail!("path {}: probe request failed: {e:#}", self.kind.name()),
            }
        }
        for (pid, c0) in pids.into_iter().zip(cpu0) {
            if workloads::cpu_ns(pid)? <= c0 {
                bail!(
                    "path {}: proxy pid {pid} used no CPU while a request went through the path \
                     (its hop was skipped)",
                    self.kind.name()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        // Stop the proxies, then the agent, then remove rules and pins.
        self.proxies.clear();
        self.agent.take();
        self.iptables.clear();
        self.pins.take();
    }
}

/// Brings a path up and checks its hops; `n` makes pin and socket names unique per activation.
pub fn activate(kind: PathKind, topo: &Topology, progs: &Programs, n: u32) -> Result<Active> {
    use PathKind::*;
    let mut a = Active {
        kind,
        proxies: Vec::new(),
        agent: None,
        iptables: Vec::new(),
        pins: None,
    };
    let s = Starter { topo, progs, n };
    let outbound = || envoy::outbound_config(&topo.server_ip);
    match kind {
        Direct => {}
        IptablesSluice | IptablesSluiceL7 | IptablesEnvoy | TwoHopIptablesSluice
        | TwoHopIptablesEnvoy => {
            for &side in kind.sides() {
                a.iptables.push(s.iptables(side)?);
                let cfg = match side {
                    Side::Client => outbound(),
                    Side::Server => envoy::inbound_config(),
                };
                a.proxies.push(match kind.one_hop() {
                    IptablesSluice => s.sidecar(side, None)?,
                    IptablesSluiceL7 => s.l7_proxy(side, &cfg)?,
                    _ => s.envoy(side, &cfg)?,
                });
            }
        }
        EbpfSidecar | EbpfNode | EbpfNodeL7 | EbpfNoFast | TwoHopEbpfSidecar => {
            let l7 = (kind == EbpfNodeL7).then(outbound);
            let agent = s.agent(l7.as_deref())?;
            let control = agent.control.clone();
            a.pins = Some(agent.pins);
            a.agent = Some(agent.run);
            let sidecar = kind.one_hop() == EbpfSidecar;
            let mode = if sidecar { "sidecar" } else { "node" };
            let fast = if kind == EbpfNoFast { "off" } else { "on" };
            // Inbound capture is sk_lookup, per netns: the server pod's nginx and iperf3 need
            // not be in the bench cgroup (they never connect out, so connect4 has nothing to do).
            for &side in kind.sides() {
                s.enroll(side, &control, mode, fast)?;
                if sidecar {
                    a.proxies.push(s.sidecar(side, Some(&control))?);
                }
            }
        }
    }
    a.wait_ready(topo)?;
    a.check_hops(topo)?;
    Ok(a)
}
