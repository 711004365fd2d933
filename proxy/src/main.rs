//! The `sluice` binary: a thin clap dispatcher into sluice-node (agent, CLI, sidecar, iptables,
//! install-cni), sluice-engine (`sluice proxy`) and sluice-xds (a `dynamic_resources` bootstrap).

use std::{path::PathBuf, sync::Arc};

mod cli;
mod explain;
mod install_cni;
mod pod_watch;
mod pod_xds;
mod proxy_config;
mod proxy_status;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use sluice_node::{
    agent::{self, protocol::DEFAULT_CONTROL, AgentOptions},
    bpf, iptables,
    l7capture::L7Config,
    listener::ConnectionHandler,
    outbound::Passthrough,
    policy::EnrollSpec,
    services::Services,
    sidecar::{self, SidecarOptions},
};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "eBPF transparent redirection and an Envoy-style proxy"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
// Parsed once per process: the size difference between subcommands does not matter.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run the Envoy-compatible proxy from an Envoy v3 static bootstrap: `sluice proxy -c envoy.yaml`.
    Proxy(sluice_engine::server::cli::ProxyArgs),
    /// istioctl's proxy-config views (listener, route, cluster, endpoint, all) of a proxy's
    /// admin interface (`127.0.0.1:15000`) or of a saved config dump (`-f dump.json`).
    ProxyConfig(proxy_config::Args),
    /// istioctl's proxy-status (CDS/LDS/EDS/RDS SYNCED, NOT SENT, STALE, NACK; control plane)
    /// from each proxy's own xDS client state (admin `/xds_status`).
    ProxyStatus(proxy_status::Args),
    /// How a config routes one request: listener, filter chain, virtual hosts, routes and why
    /// they matched or not, rewrites, header changes, cluster and endpoints.
    Explain(explain::Args),
    /// Run the node agent: load the eBPF data path, serve the control socket and node-mode pods.
    Agent {
        /// cgroup v2 directory to attach to (default: the cgroup v2 mount).
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// bpffs directory for pins.
        #[arg(long, default_value = bpf::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Control socket (created mode 0600).
        #[arg(long, default_value = DEFAULT_CONTROL)]
        control: PathBuf,
        /// Static service table (VIP:port -> endpoints), stand-in for the L7 engine's clusters.
        #[arg(long)]
        services: Option<PathBuf>,
        /// On exit leave the programs attached (links pinned) so the next agent on the same pin
        /// dir takes over without a capture gap.
        #[arg(long)]
        persist: bool,
        /// What SIGTERM/SIGINT does when no successor took over: keep (with --persist the
        /// programs stay attached for the next agent) or uninstall (detach everything and remove
        /// the pins: the DaemonSet's setting, so deleting it leaves nothing behind).
        #[arg(long, value_enum, default_value_t = OnExit::Keep)]
        on_exit: OnExit,
        /// Envoy v3 bootstrap: node-mode 15001/15006 connections go to its `virtualOutbound` /
        /// `virtualInbound` listeners (L7 routing) instead of the TCP passthrough.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Graceful upgrade: take over every pod, listening socket and link from the agent
        /// serving this control socket; it stops accepting, drains and exits.
        #[arg(long, conflicts_with = "upgrade_from_if_present")]
        upgrade_from: Option<PathBuf>,
        /// Like --upgrade-from, but only when an agent answers on this socket; otherwise start
        /// fresh (the DaemonSet's command: the first pod on a node has nobody to take over from).
        #[arg(long)]
        upgrade_from_if_present: Option<PathBuf>,
        /// Serve `/healthz/ready` and `/healthz/live` on this address (e.g. 0.0.0.0:15021);
        /// off by default so agents started side by side (tests) never share a port.
        #[arg(long)]
        health_addr: Option<std::net::SocketAddr>,
        /// Serve every pod's Istio metrics (Prometheus text, labels `pod` and `namespace`) on
        /// `/stats/prometheus` at this address; off by default, like --health-addr.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// After handing over to a new agent and draining, wait for SIGTERM instead of exiting
        /// (DaemonSet: an exit would restart this container, which would take over again).
        #[arg(long)]
        idle_after_handover: bool,
        /// A uid (besides root) whose processes may use the control socket; repeatable. Every
        /// control connection's peer is checked with SO_PEERCRED.
        #[arg(long = "control-allow-uid")]
        control_allow_uids: Vec<u32>,
        /// After handing over to a new agent: how long to let established connections finish
        /// (e.g. 30s, 500ms, 2m).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        drain_timeout: std::time::Duration,
        /// The agent's worker threads, each serving its share of the connections on its own
        /// runtime (default: TOKIO_WORKER_THREADS, else one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// How many workers each pod is placed on (those with the fewest pods when it enrolls):
        /// its connections run only there, so a pod driven at full speed leaves the rest to the
        /// other pods (default: half the workers, at least one; 0 = every worker).
        #[arg(long)]
        pod_workers: Option<usize>,
        /// The scheduler slice each worker asks the kernel for, in µs (Linux 6.12+; 100 to
        /// 100000; 0 = the kernel's default): a task of another pod that wakes on a worker's
        /// core waits at most this long for it.
        #[arg(long, default_value_t = sluice_engine::workers::slice::MIN_SLICE_US)]
        worker_slice_us: u32,
        /// How many of a pod's task polls a worker runs before it turns to the next pod with
        /// work on it: a quiet pod sharing a worker with a busy one waits one such turn, not
        /// for every connection of the busy pod (0 = no turns: one queue for all pods' tasks).
        #[arg(long, default_value_t = sluice_engine::workers::DEFAULT_TURN)]
        pod_turn: usize,
        /// A pod's turn on a worker also ends once its polls have run this many µs (at least
        /// one poll runs; 0 = by --pod-turn alone): a quiet pod's ready task waits at most about
        /// this long per busy pod on its worker, however cheap or dear the busy pod's polls, at
        /// the cost of the busy pod's rate (an I/O poll per turn).
        #[arg(long, default_value_t = sluice_engine::workers::lane::DEFAULT_TURN_US)]
        pod_turn_us: u32,
        /// A pod's turn, in task polls, while another pod has had a turn on the same worker
        /// within --pod-turn-shared-window-us (at most --pod-turn; 0 = --pod-turn always): short turns
        /// keep a quiet pod's latency next to a busy one, at the busy one's throughput, paid
        /// only while the worker is shared.
        #[arg(long, default_value_t = sluice_engine::workers::lane::DEFAULT_SHARED_TURN)]
        pod_turn_shared: usize,
        /// How long, in µs, a worker counts as shared (its turns --pod-turn-shared polls) after
        /// two pods' turns followed each other on it.
        #[arg(long, default_value_t = sluice_engine::workers::lane::DEFAULT_SHARED_WINDOW_US)]
        pod_turn_shared_window_us: u32,
        /// A worker that has run this many µs without sleeping gives its core up between two
        /// pods' turns (sched_yield), so a task waiting for that core (a quiet pod's client or
        /// server) runs within this long instead of at the next scheduler tick (0 = never;
        /// needs --pod-turn > 0).
        #[arg(long, default_value_t = sluice_engine::workers::give_way::DEFAULT_US)]
        worker_yield_us: u32,
        /// Each node-mode L7 pod's admin (Envoy's paths) on 127.0.0.1:PORT inside the pod's
        /// netns; 0 = none (the control socket's `admin` op still serves it).
        #[arg(long, default_value_t = agent::pod_admin::DEFAULT_POD_ADMIN_PORT)]
        pod_admin_port: u16,
        /// Per-pod xDS (node mode).
        #[command(flatten)]
        xds: pod_xds::XdsArgs,
        /// The pod watcher.
        #[command(flatten)]
        watch: pod_watch::WatchArgs,
    },
    /// Enroll (or re-enroll) a pod network namespace.
    Enroll {
        #[command(flatten)]
        spec: EnrollArgs,
        #[arg(long, default_value = DEFAULT_CONTROL)]
        control: PathBuf,
    },
    /// Remove a pod network namespace: its map entries and its listeners.
    Unenroll {
        /// Name under /run/netns or a path.
        #[arg(long)]
        netns: String,
        #[arg(long, default_value = DEFAULT_CONTROL)]
        control: PathBuf,
    },
    /// Enrolled pods and the eBPF counters.
    Status {
        #[arg(long, default_value = DEFAULT_CONTROL)]
        control: PathBuf,
        /// Print the raw JSON report.
        #[arg(long)]
        json: bool,
        /// Only pods whose netns, namespace/name or container id contains this text.
        #[arg(long)]
        pod: Option<String>,
        /// Order of the pod rows.
        #[arg(long, value_enum, default_value_t = cli::SortBy::Name)]
        sort: cli::SortBy,
    },
    /// Run the outbound (15001) and inbound (15006) listeners as a process inside a pod netns.
    Sidecar {
        /// Name under /run/netns or a path.
        #[arg(long)]
        netns: String,
        /// uid/gid to drop to after binding (0 keeps root).
        #[arg(long, default_value_t = sluice_common::PROXY_UID)]
        uid: u32,
        /// Static service table, as for the agent.
        #[arg(long)]
        services: Option<PathBuf>,
        /// Envoy v3 bootstrap for the L7 engine, as for the agent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Register the inbound listeners with this agent (sidecar mode: sk_lookup steers to
        /// the sidecar's 15006); the fds travel over the control socket with SCM_RIGHTS.
        #[arg(long)]
        agent_control: Option<PathBuf>,
        /// Serve the pod's Istio metrics on `/stats/prometheus` at this address inside the pod
        /// netns, like Envoy's 15090; `off` disables it.
        #[arg(long, default_value = "0.0.0.0:15090")]
        metrics_addr: sidecar::MetricsAddr,
        /// With --config: Envoy's admin on 127.0.0.1:PORT in the pod; 0 = none.
        #[arg(long, default_value_t = sluice_node::admin_port::DEFAULT_ADMIN_PORT)]
        admin_port: u16,
        /// `/healthz/ready` on 0.0.0.0:PORT in the pod (200 while the listeners serve); 0 = none.
        #[arg(long, default_value_t = sidecar::admin::DEFAULT_HEALTH_PORT)]
        health_port: u16,
        /// The pod's own ADS stream, as for the agent's node-mode pods (node id from
        /// POD_NAME/POD_NAMESPACE, else the netns name and `default`, and the pod's addresses).
        #[command(flatten)]
        xds: pod_xds::XdsArgs,
    },
    /// Install sluice-cni on the node (binary + entry in the primary CNI config) and keep it
    /// installed; the DaemonSet's second container (see sluice_node::cni::install).
    InstallCni(install_cni::InstallCniArgs),
    /// Mount bpffs at /sys/fs/bpf unless it is mounted (the DaemonSet's privileged init
    /// container, whose mount propagates to the host).
    MountBpffs,
    /// The iptables baseline: istio-init's nat rules inside a pod netns.
    Iptables {
        #[arg(value_enum)]
        action: IptablesAction,
        /// Name under /run/netns or a path.
        #[arg(long)]
        netns: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum IptablesAction {
    Install,
    Remove,
}

/// `sluice enroll` options; values are kept as text and validated by `EnrollSpec::validate`
/// so the CLI and the agent refuse exactly the same things with the same messages.
#[derive(clap::Args)]
struct EnrollArgs {
    /// Name under /run/netns or a path.
    #[arg(long)]
    netns: String,
    /// node | sidecar | off.
    #[arg(long)]
    mode: Option<String>,
    /// Outbound destination ports never captured, comma separated.
    #[arg(long)]
    exclude_outbound_ports: Option<String>,
    /// Only these outbound destination ports are captured.
    #[arg(long)]
    include_outbound_ports: Option<String>,
    /// Outbound destination CIDRs never captured.
    #[arg(long)]
    exclude_outbound_cidrs: Option<String>,
    /// Only destinations in these CIDRs are captured.
    #[arg(long)]
    include_outbound_cidrs: Option<String>,
    /// Inbound ports never captured (default 15008,15090,15021,15020).
    #[arg(long)]
    exclude_inbound_ports: Option<String>,
    /// on | off (default off): sk_msg fast path between app and proxy. Opt-in: a socket in the
    /// SockHash gets the kernel's tcp_bpf receive path, whose blocking reads can return a
    /// spurious EAGAIN, which some applications treat as an error.
    #[arg(long)]
    fast_path: Option<String>,
    /// Do not capture sockets of uid/gid 1337 (Istio sidecar behaviour).
    #[arg(long)]
    exempt_uid: bool,
    /// While no proxy listens in the pod, let connections go direct instead of failing.
    #[arg(long)]
    fail_open: bool,
    /// l7 | l4 (node mode): l4 serves this pod with the L4 passthrough even when the agent has
    /// an L7 config (--config); default: the agent's config when it has one.
    #[arg(long)]
    engine: Option<String>,
}

impl From<EnrollArgs> for EnrollSpec {
    fn from(a: EnrollArgs) -> Self {
        EnrollSpec {
            netns: a.netns,
            mode: a.mode,
            exclude_outbound_ports: a.exclude_outbound_ports,
            include_outbound_ports: a.include_outbound_ports,
            exclude_outbound_cidrs: a.exclude_outbound_cidrs,
            include_outbound_cidrs: a.include_outbound_cidrs,
            exclude_inbound_ports: a.exclude_inbound_ports,
            fast_path: a.fast_path,
            exempt_uid: a.exempt_uid,
            fail_open: a.fail_open,
            engine: a.engine,
            pod: None,
        }
    }
}

/// `sluice agent --on-exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnExit {
    /// Leave the data path to the next agent (pins, with --persist).
    Keep,
    /// Detach every program and remove the pins.
    Uninstall,
}

fn main() -> std::process::ExitCode {
    // Every error of the library names its operation and value and includes its cause, so the
    // top-level message alone is complete (no chain, no backtrace).
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    // `sluice proxy` sets up its own logging from --log-level.
    let cli = match cli.cmd {
        Cmd::Proxy(args) => return Ok(sluice_xds::proxy::run(args)?),
        Cmd::ProxyConfig(args) => return proxy_config::run(&args),
        Cmd::ProxyStatus(args) => return proxy_status::run(&args),
        Cmd::Explain(args) => return explain::run(&args),
        cmd => Cli { cmd },
    };
    // RUST_LOG (default info), behind a reload layer so an admin `/logging` can change it.
    sluice_engine::admin::logging::init(
        &std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    match cli.cmd {
        Cmd::Proxy(_) | Cmd::ProxyConfig(_) | Cmd::ProxyStatus(_) | Cmd::Explain(_) => {
            unreachable!("dispatched above")
        }
        Cmd::Agent {
            cgroup,
            pin_dir,
            control,
            services,
            persist,
            on_exit,
            config,
            upgrade_from,
            upgrade_from_if_present,
            health_addr,
            metrics_addr,
            idle_after_handover,
            control_allow_uids,
            drain_timeout,
            workers,
            pod_workers,
            worker_slice_us,
            pod_turn,
            pod_turn_us,
            pod_turn_shared,
            pod_turn_shared_window_us,
            worker_yield_us,
            pod_admin_port,
            xds,
            watch,
        } => {
            let upgrade_from = upgrade_from
                .or_else(|| upgrade_from_if_present.filter(|sock| cli::agent_answers(sock)));
            let cgroup = match cgroup {
                Some(c) => c,
                None => bpf::default_cgroup_root()?,
            };
            // Connections run on the agent's own workers (one single-threaded runtime each);
            // the runtime built below keeps the accept loops, the control socket, xDS and config
            // builds. Installed
            // first, so every upstream pool built from here on has a slot per worker.
            let worker_count = agent::worker_count(workers);
            sluice_engine::workers::install(worker_count, pod_turn, move || {
                sluice_engine::workers::slice::for_worker(worker_slice_us);
                sluice_engine::workers::give_way::for_worker(worker_yield_us);
                sluice_engine::workers::lane::turn_time_for_worker(pod_turn_us);
                sluice_engine::workers::lane::shared_turn_for_worker(
                    pod_turn_shared,
                    pod_turn_shared_window_us,
                );
            })
            .context("the agent's workers")?;
            let handler = passthrough(services.as_deref())?;
            let l7 = match config {
                Some(p) => Some(Arc::new(
                    L7Config::load(&p).with_context(|| format!("config {}", p.display()))?,
                )),
                None => None,
            };
            let directory = pod_watch::directory(&watch);
            let (l7, pod_config) = pod_xds::setup(&xds, l7, directory.clone())?;
            let handlers = agent::registry::Handlers {
                outbound: handler,
                inbound: Arc::new(sluice_node::inbound::InboundPassthrough),
                l7,
                pod_config,
            };
            let pod_workers = pod_workers.unwrap_or_else(|| agent::default_pod_workers(workers));
            // Two threads: a config build (an xDS push, a SIGHUP reload, an enrollment) on one
            // leaves the other to accept every pod's connections.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(sluice_engine::workers::THREAD_STACK)
                .on_thread_start(move || sluice_engine::workers::slice::for_worker(worker_slice_us))
                .enable_all()
                .build()
                .context("tokio runtime")?;
            let ready_gates = pod_watch::start(&watch, &control, &rt, directory)?
                .into_iter()
                .collect();
            rt.block_on(agent::run(
                AgentOptions {
                    cgroup,
                    pin_dir,
                    control,
                    persist,
                    uninstall_on_exit: on_exit == OnExit::Uninstall,
                    upgrade_from,
                    drain_timeout,
                    health: health_addr,
                    idle_after_handover,
                    control_allow_uids,
                    pod_admin_port,
                    pod_workers,
                    metrics: metrics_addr,
                    ready_gates,
                },
                handlers,
            ))?;
        }
        Cmd::Enroll { spec, control } => {
            let pod = cli::enroll(&control, spec.into())?;
            println!("enrolled {}", cli::pod_line(&pod));
        }
        Cmd::Unenroll { netns, control } => {
            let (cookie, removed, remaining) = cli::unenroll(&control, &netns)?;
            println!(
                "unenrolled netns={netns} cookie={cookie} removed_entries={removed} remaining_entries={remaining}"
            );
        }
        Cmd::Status {
            control,
            json,
            pod,
            sort,
        } => {
            let mut s = cli::status(&control)?;
            cli::select_pods(&mut s, pod.as_deref(), sort);
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", cli::format_status(&s));
            }
        }
        Cmd::Sidecar {
            netns,
            uid,
            services,
            config,
            agent_control,
            metrics_addr,
            admin_port,
            health_port,
            xds,
        } => {
            let handler = passthrough(services.as_deref())?;
            let l7 = match config {
                Some(p) => Some(Arc::new(
                    L7Config::load(&p).with_context(|| format!("config {}", p.display()))?,
                )),
                None => None,
            };
            let (l7, pod_config) = pod_xds::setup(&xds, l7, None)?;
            let opts = SidecarOptions {
                netns,
                uid,
                admin_port: if l7.is_some() { admin_port } else { 0 },
                health_port,
            };
            // Still single-threaded here: enter, bind, register with the agent (root-only
            // socket), drop privileges, then start the runtime.
            let bound = sidecar::enter_and_bind(&opts)?;
            // In the pod netns now: its addresses make the node id.
            let pod = pod_config
                .as_ref()
                .map(|_| sluice_node::agent::pod_config::PodInfo::sidecar_here(&opts.netns));
            if let Some(control) = &agent_control {
                sidecar::register_inbound(&bound, control)?;
            }
            sidecar::drop_privileges(uid)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_stack_size(sluice_engine::workers::THREAD_STACK)
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(async move {
                let mut servers = sluice_node::l7capture::PodServers::default();
                let _stream;
                let inbound: Arc<dyn ConnectionHandler> =
                    Arc::new(sluice_node::inbound::InboundPassthrough);
                let (outbound, inbound, engine) = match l7 {
                    Some(l7) => {
                        let upstream = sluice_node::upstream_factory::UpstreamFactory::new(
                            None,
                            Some(sluice_common::PROXY_MARK),
                            sluice_node::upstream_factory::DEFAULT_CONNECT_TIMEOUT,
                        );
                        let h = l7.pod_handlers(&upstream, handler).await?;
                        servers = h.servers;
                        // Held while the sidecar serves; dropping it closes the ADS stream.
                        _stream = pod_config
                            .as_ref()
                            .zip(pod.as_ref())
                            .map(|(source, pod)| source.start(pod, &servers));
                        let engine = agent::pod_admin::admin_server(&servers);
                        (h.outbound, h.inbound, engine)
                    }
                    None => (handler, inbound, None),
                };
                let _metrics = match metrics_addr.0 {
                    Some(addr) => Some(sidecar::serve_metrics(addr, &servers).await?),
                    None => None,
                };
                sidecar::serve(bound, outbound, inbound, engine).await?;
                anyhow::Ok(())
            })?;
        }
        Cmd::InstallCni(args) => install_cni::run(args)?,
        Cmd::MountBpffs => {
            bpf::ensure_bpffs(std::path::Path::new(bpf::BPFFS))?;
            println!("bpffs mounted at {}", bpf::BPFFS);
        }
        Cmd::Iptables { action, netns } => match action {
            IptablesAction::Install => {
                iptables::install(&netns)?;
                println!("installed istio-init rules (iptables + ip6tables) in netns {netns}");
            }
            IptablesAction::Remove => {
                iptables::remove(&netns)?;
                println!("removed istio-init rules from netns {netns}");
            }
        },
    }
    Ok(())
}

fn passthrough(services: Option<&std::path::Path>) -> Result<Arc<dyn ConnectionHandler>> {
    let table = match services {
        Some(p) => Services::load(p)?,
        None => Services::default(),
    };
    Ok(Arc::new(Passthrough::new(Arc::new(table))))
}

/// `30s`, `500ms`, `2m` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 30s, 500ms, 2m)");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        _ => Err(bad()),
    }
}
