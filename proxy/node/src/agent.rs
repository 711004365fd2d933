//! The node agent daemon: loads the data path, serves the root-only control socket, runs the
//! node-mode listeners of every enrolled pod, and shuts down cleanly on SIGTERM/SIGINT.

pub mod control;
pub mod fd_passing;
pub mod health;
mod leftovers;
pub mod pod_admin;
pub mod pod_config;
pub mod protocol;
pub mod registry;
mod reload;
pub mod start_retry;
pub mod upgrade;

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::UnixListener,
    signal::unix::{signal, SignalKind},
    sync::Mutex,
};
use tracing::{info, info_span, warn, Instrument as _};

use self::registry::{Handlers, Registry};
use crate::bpf::{BpfError, Datapath, LoadOptions};

/// What `sluice agent` needs.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// cgroup v2 directory the programs attach to.
    pub cgroup: PathBuf,
    /// bpffs pin directory.
    pub pin_dir: PathBuf,
    /// Control socket path (created mode 0600, its directory 0700 when created).
    pub control: PathBuf,
    /// On SIGTERM/SIGINT leave the programs attached and their links pinned
    /// ([`Datapath::persist`]) so the next agent on the same pin dir takes over without a capture
    /// gap; otherwise dropping the data path detaches them.
    pub persist: bool,
    /// On SIGTERM/SIGINT without a hand-over (the DaemonSet deleted, `--on-exit uninstall`):
    /// detach every program and remove the pins, whatever `persist` says; `persist` still
    /// covers a crash (links pinned at start). After a hand-over the successor owns them.
    pub uninstall_on_exit: bool,
    /// Graceful upgrade: take over the pods, listening sockets and links of the agent serving
    /// this control socket (see [`upgrade`]) instead of adopting pinned state.
    pub upgrade_from: Option<PathBuf>,
    /// After handing over to a new agent, how long to wait for this agent's established
    /// connections to end before exiting.
    pub drain_timeout: Duration,
    /// Serve `/healthz/ready` and `/healthz/live` here ([`health`]); ready once the data path is
    /// loaded and the control socket bound.
    pub health: Option<std::net::SocketAddr>,
    /// After handing over and draining, stay (idle, nothing held) until SIGTERM instead of
    /// exiting: in a DaemonSet an exit restarts the old pod's container, which would take the
    /// node back from the new agent.
    pub idle_after_handover: bool,
    /// Uids besides root (and the agent's own) whose processes may use the control socket
    /// (checked with `SO_PEERCRED` on every connection).
    pub control_allow_uids: Vec<u32>,
    /// Port of each node-mode L7 pod's admin on 127.0.0.1 inside its netns
    /// ([`pod_admin::DEFAULT_POD_ADMIN_PORT`]); 0 = none (the control socket still serves it).
    pub pod_admin_port: u16,
    /// How many of the agent's workers each pod is placed on (0 = every worker): a pod at full
    /// speed leaves the other workers to the other pods ([`sluice_engine::workers`]).
    pub pod_workers: usize,
    /// Serve every pod's Istio metrics here (`/stats/prometheus`, labels `pod` and
    /// `namespace`); see [`registry::Registry::metrics_targets`].
    pub metrics: Option<std::net::SocketAddr>,
    /// More conditions for `/healthz/ready` (the pod watcher's: the API server answers).
    pub ready_gates: Vec<health::ReadyGate>,
}

/// The default of [`AgentOptions::pod_workers`]: half the agent's workers ([`worker_count`]),
/// rounded up.
pub fn default_pod_workers(workers: Option<usize>) -> usize {
    worker_count(workers).div_ceil(2)
}

/// The agent's worker threads: `--workers`, else TOKIO_WORKER_THREADS, else one per core.
pub fn worker_count(workers: Option<usize>) -> usize {
    workers
        .or_else(|| std::env::var("TOKIO_WORKER_THREADS").ok()?.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Loading or attaching the eBPF programs failed (a host path check's error is complete on
    /// its own: it names the path and what to do).
    #[error("{}", datapath_message(cgroup, pins, source))]
    Datapath {
        cgroup: PathBuf,
        pins: PathBuf,
        source: Box<BpfError>,
    },
    /// The control socket cannot be created.
    #[error("control socket {path}: {source}")]
    Control { path: PathBuf, source: io::Error },
    /// Installing the signal handlers failed.
    #[error("signal handler: {0}")]
    Signal(io::Error),
    /// The health endpoint cannot be bound.
    #[error("health endpoint {addr}: {source}")]
    Health {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    /// The metrics endpoint cannot be bound.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    /// Taking over from the old agent failed.
    #[error(transparent)]
    Upgrade(#[from] upgrade::UpgradeError),
}

fn datapath_message(cgroup: &Path, pins: &Path, source: &BpfError) -> String {
    match source {
        BpfError::Host(e) => e.to_string(),
        e => format!(
            "loading the data path (cgroup {}, pins {}): {e}",
            cgroup.display(),
            pins.display()
        ),
    }
}

impl StartError {
    /// Whether the host's input caused it (a path, a mount, the kernel refusing the data path):
    /// worth retrying, as fixing the host fixes it.
    pub fn from_host(&self) -> bool {
        matches!(self, Self::Datapath { .. } | Self::Control { .. })
    }
}

/// What a successful start attempt holds.
struct Started {
    handover: Option<upgrade::Handover>,
    datapath: Datapath,
    control: UnixListener,
}

/// One start attempt: take over (upgrade), load the data path, pin its links (`--persist`),
/// bind the control socket. On failure whatever the attempt created is removed again
/// ([`leftovers`]): the host is as before, and the next attempt starts from there.
fn start_once(opts: &AgentOptions) -> Result<Started, StartError> {
    // Upgrade: the old agent pins its links before our load adopts them.
    let handover = match &opts.upgrade_from {
        Some(old) => Some(upgrade::begin(old)?),
        None => None,
    };
    let before = leftovers::Snapshot::take(&opts.pin_dir, &opts.control);
    let datapath_err = |source| StartError::Datapath {
        cgroup: opts.cgroup.clone(),
        pins: opts.pin_dir.clone(),
        source: Box::new(source),
    };
    let attempt = || {
        let mut datapath = Datapath::load(&LoadOptions {
            cgroup: opts.cgroup.clone(),
            pin_dir: opts.pin_dir.clone(),
        })
        .map_err(datapath_err)?;
        if opts.persist {
            // Crash safety: the links are pinned from the start, so even a SIGKILL leaves
            // capture attached (and each pod's fail-open/closed flag in force) for the next agent.
            datapath.pin_links_now().map_err(datapath_err)?;
        }
        let control = bind_control(&opts.control).map_err(|source| StartError::Control {
            path: opts.control.clone(),
            source,
        })?;
        Ok((datapath, control))
    };
    match attempt() {
        Ok((datapath, control)) => Ok(Started {
            handover,
            datapath,
            control,
        }),
        Err(e) => {
            // The attempt's data path is dropped by now: unpinned links are detached.
            before.remove_new();
            Err(e)
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT (or until a new agent took over with
/// `--upgrade-from`). `handlers` serve every node-mode listener.
///
/// With a health endpoint (the DaemonSet) a start-up failure caused by the host
/// ([`StartError::from_host`]) does not end the process: it stays live and not ready, saying
/// why, and retries ([`start_retry`]). Without one nobody could see that state, so the error is
/// returned (a manual run).
pub async fn run(opts: AgentOptions, handlers: Handlers) -> Result<(), StartError> {
    // Before the control socket exists: whoever sees it may send SIGHUP (a reload).
    let mut hup = signal(SignalKind::hangup()).map_err(StartError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signal)?;
    // Bound first so liveness answers during the load; not ready yet.
    let health = match opts.health {
        Some(addr) => {
            let gates = opts.ready_gates.clone();
            let h = health::Health::bind_gated(addr, gates);
            Some(h.map_err(|source| StartError::Health { addr, source })?)
        }
        None => None,
    };
    crate::bpf::limit_heap_retention();
    let started = match &health {
        Some(h) => {
            let signals = (&mut term, &mut int);
            let attempts = || start_once(&opts);
            match start_retry::until_started("agent", h, signals, StartError::from_host, attempts)
                .await?
            {
                start_retry::Outcome::Started(s) => s,
                start_retry::Outcome::Stopped => return Ok(()),
            }
        }
        None => start_once(&opts)?,
    };
    let Started {
        handover,
        datapath,
        control,
    } = started;
    let mut registry = Registry::new(datapath, handlers);
    registry.set_pod_admin_port(opts.pod_admin_port);
    registry.set_pod_workers(opts.pod_workers);
    let (adopted, pending) = match handover {
        Some(h) => {
            let (pods, fds, pending) = h.into_parts();
            (registry.adopt_handover(pods, fds).await, Some(pending))
        }
        None => (registry.adopt_pinned().await, None),
    };
    if let Some(p) = pending {
        let d = upgrade::commit(p)?;
        info!(old_connections = d.connections, old_drain = ?d.drain_timeout, "took over from the old agent");
    }
    let upgrade_state = Arc::new(upgrade::UpgradeState::new(opts.drain_timeout));
    let mut upgraded = false;
    let registry = Arc::new(Mutex::new(registry));
    let metrics = match opts.metrics {
        Some(addr) => Some(serve_metrics(addr, registry.clone()).await?),
        None => None,
    };
    let mut clients = tokio::task::JoinSet::new();
    info!(
        cgroup = %opts.cgroup.display(),
        control = %opts.control.display(),
        adopted,
        "agent ready"
    );
    if let Some(h) = &health {
        h.set_ready(true);
        info!(addr = %h.addr(), "health endpoint ready");
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = upgrade_state.committed() => { upgraded = true; break }
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            _ = hup.recv() => {
                clients.spawn(reload::l7_config(registry.clone()).instrument(info_span!("reload")));
            }
            r = control.accept() => match r {
                Ok((stream, _)) => {
                    if let Err(why) = control::admit(&stream, &opts.control_allow_uids) {
                        warn!(%why, "control connection refused");
                        continue;
                    }
                    if clients.len() >= control::MAX_CLIENTS {
                        warn!(max = control::MAX_CLIENTS, "too many control connections: closing the new one");
                        continue;
                    }
                    let reg = registry.clone();
                    let up = upgrade_state.clone();
                    clients.spawn(control::serve_client(stream, reg, up).instrument(info_span!("control")));
                }
                Err(e) => warn!(error = %e, "control accept failed"),
            },
        }
    }
    info!("shutting down");
    // Probes go to the new agent from now on (or fail: this one is leaving).
    drop(health);
    drop(metrics);
    drop(control);
    if !upgraded {
        let _ = std::fs::remove_file(&opts.control);
    }
    // Abort the control connections (each holds a clone of the registry), then take it back.
    // After an upgrade this also closes requests that queued behind the hand-over, so their
    // clients retry on the path, which is the new agent's now.
    clients.shutdown().await;
    let mut stopped = false;
    if upgraded {
        // One stream per pod at the control plane: the new agent's.
        registry.lock().await.stop_pod_configs();
        // Serve our established connections to their end or the drain deadline. The first
        // SIGTERM (the controller deleting the old pod once the new one is ready) does not cut
        // them: the drain goes on within the pod's grace period; a second signal does.
        let drain = upgrade_state.drain();
        tokio::pin!(drain);
        loop {
            tokio::select! {
                _ = &mut drain => break,
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if stopped {
                warn!("second signal while draining: cutting the rest");
                break;
            }
            stopped = true;
            info!("signal while draining: serving the open connections until they end or the drain deadline (a second signal cuts them)");
        }
    }
    let registry = match Arc::try_unwrap(registry) {
        Ok(m) => m.into_inner(),
        Err(_) => unreachable!("every control task was aborted and joined"),
    };
    let datapath = registry.shutdown().await;
    if opts.uninstall_on_exit && !upgraded {
        let pins = opts.pin_dir.clone();
        datapath
            .unload_and_unpin()
            .map_err(|source| StartError::Datapath {
                cgroup: opts.cgroup.clone(),
                pins: opts.pin_dir.clone(),
                source: Box::new(source),
            })?;
        // The directory itself (empty now); another tool's files keep it.
        let _ = std::fs::remove_dir(&pins);
        info!(pins = %pins.display(), "uninstall: programs detached and pins removed");
    } else if opts.persist && !upgraded {
        datapath.persist().map_err(|source| StartError::Datapath {
            cgroup: opts.cgroup.clone(),
            pins: opts.pin_dir.clone(),
            source: Box::new(source),
        })?;
        info!(pins = %opts.pin_dir.display(), "programs left attached for the next agent");
    } else {
        drop(datapath);
        info!("programs detached");
    }
    if upgraded && opts.idle_after_handover && !stopped {
        info!("handed over and drained: idle until SIGTERM");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    Ok(())
}

fn bind_control(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(l)
}

/// The scrape endpoint of `--metrics-addr`: each scrape reads the registry's pods briefly and
/// encodes outside the lock.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    registry: Arc<Mutex<Registry>>,
) -> Result<crate::metrics_endpoint::MetricsEndpoint, StartError> {
    let render: crate::metrics_endpoint::Render = Arc::new(move || {
        let registry = registry.clone();
        Box::pin(async move {
            let targets = registry.lock().await.metrics_targets();
            sluice_engine::server::istio::encode::text(targets)
        })
    });
    let ep = crate::metrics_endpoint::MetricsEndpoint::bind(addr, render)
        .await
        .map_err(|source| StartError::Metrics { addr, source })?;
    info!(addr = %ep.addr(), "metrics endpoint ready");
    Ok(ep)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pod_may_use_half_the_workers_rounded_up() {
        let half = |n| super::default_pod_workers(Some(n));
        assert_eq!(
            [half(0), half(1), half(2), half(3), half(8)],
            [1, 1, 1, 2, 4]
        );
    }
}
