//! `sluice sidecar`: the same listeners and proxy code as the agent's node mode, as a standalone
//! process inside one pod netns, dropping to uid/gid 1337 after binding (the iptables path and
//! the eBPF `sidecar` mode).
//!
//! Order matters: the process enters the pod netns and binds while it is still single-threaded
//! and root, then drops to the proxy uid keeping only CAP_NET_ADMIN (needed for `SO_MARK` on
//! upstream sockets, which eBPF capture relies on to skip the proxy), and only then starts the
//! tokio runtime, whose threads inherit the netns, the uid and the capability.
//!
//! With `--config` it serves Envoy's admin on 127.0.0.1:15000 and `/healthz/ready` on
//! 0.0.0.0:15021 in the pod ([`admin`]).

pub mod admin;

use std::{
    io::{self, BufRead as _},
    net::SocketAddr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use nix::{
    sched::{setns, CloneFlags},
    unistd::{setgid, setgroups, setuid, Gid, Uid},
};
use sluice_common::{INBOUND_PORT, OUTBOUND_PORT, PROXY_MARK};
use tracing::info;

use crate::{
    listener::{ConnectionHandler, Direction, ListenerContext, ListenerStats},
    netns::{Netns, NetnsError},
    pod_sockets::PodSockets,
    upstream_factory::{UpstreamFactory, DEFAULT_CONNECT_TIMEOUT},
};

/// What `sluice sidecar` needs.
#[derive(Clone, Debug)]
pub struct SidecarOptions {
    /// Pod netns (name under /run/netns or path).
    pub netns: String,
    /// uid and gid to run as after binding; 0 keeps root.
    pub uid: u32,
    /// The admin's port on 127.0.0.1 (0 = none; served only with an L7 engine).
    pub admin_port: u16,
    /// `/healthz/ready`'s port on 0.0.0.0 (0 = none).
    pub health_port: u16,
}

/// `CAP_NET_ADMIN` from linux/capability.h (libc does not export it).
const CAP_NET_ADMIN: u32 = 12;

/// Errors starting the sidecar; each names the netns, address or step.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The netns cannot be opened or entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A listener cannot be bound.
    #[error("netns {netns}: bind {addr}: {source}")]
    Bind {
        netns: String,
        addr: SocketAddr,
        source: io::Error,
    },
    /// Dropping privileges failed.
    #[error("dropping to uid/gid {uid}: {step}: {source}")]
    Privileges {
        uid: u32,
        step: &'static str,
        source: io::Error,
    },
    /// The runtime cannot start.
    #[error("tokio runtime: {0}")]
    Runtime(io::Error),
    /// The metrics endpoint (15090) cannot be bound.
    #[error("netns metrics endpoint {addr}: {source}")]
    Metrics { addr: SocketAddr, source: io::Error },
    /// Handing the inbound listeners to the agent failed.
    #[error("registering the inbound listeners with the agent at {control}: {reason}")]
    Register { control: PathBuf, reason: String },
}

/// Bound listeners, ready to be served.
pub struct Bound {
    netns: String,
    sockets: PodSockets,
    ports: admin::Ports,
}

/// Enters the netns with the calling (main, single) thread and binds 127.0.0.1/::1 :15001 and
/// 0.0.0.0/:: :15006 there. Call before any other thread exists.
pub fn enter_and_bind(opts: &SidecarOptions) -> Result<Bound, SidecarError> {
    let ns = Netns::open(&opts.netns)?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
        path: ns.path().to_path_buf(),
        source: e.into(),
    })?;
    add_v6_passthrough_source(&opts.netns);
    let sockets =
        PodSockets::bind_here(OUTBOUND_PORT, INBOUND_PORT).map_err(|(addr, source)| {
            SidecarError::Bind {
                netns: opts.netns.clone(),
                addr,
                source,
            }
        })?;
    let ports =
        admin::Ports::bind_here(opts.admin_port, opts.health_port).map_err(|(addr, source)| {
            SidecarError::Bind {
                netns: opts.netns.clone(),
                addr,
                source,
            }
        })?;
    Ok(Bound {
        netns: opts.netns.clone(),
        sockets,
        ports,
    })
}

/// Sidecar mode under eBPF: hands the bound inbound sockets to the agent over its control socket
/// (`register_inbound` + `SCM_RIGHTS`), so sk_lookup steers the pod's inbound connections to
/// them. Call while still root (the control socket is root-only).
pub fn register_inbound(bound: &Bound, control: &Path) -> Result<(), SidecarError> {
    use crate::agent::protocol::{Request, Response};
    let err = |reason: String| SidecarError::Register {
        control: control.to_path_buf(),
        reason,
    };
    let s = std::os::unix::net::UnixStream::connect(control).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| err(e.to_string()))?;
    let req = Request::RegisterInbound {
        netns: bound.netns.clone(),
    };
    let mut line = serde_json::to_string(&req).expect("requests always serialize");
    line.push('\n');
    let fds: Vec<i32> = bound.sockets.inbound().map(|l| l.as_raw_fd()).collect();
    crate::agent::fd_passing::send_with_fds(s.as_raw_fd(), line.as_bytes(), &fds)
        .map_err(|e| err(format!("sendmsg: {e}")))?;
    let mut answer = String::new();
    io::BufReader::new(&s)
        .read_line(&mut answer)
        .map_err(|e| err(format!("reading the answer: {e}")))?;
    match serde_json::from_str::<Response>(answer.trim_end()) {
        Ok(Response::Registered {
            cookie, listeners, ..
        }) => {
            info!(netns = %bound.netns, cookie, listeners, "inbound listeners registered with the agent");
            Ok(())
        }
        Ok(Response::Error { message }) => Err(err(message)),
        Ok(other) => Err(err(format!("unexpected answer {other:?}"))),
        Err(e) => Err(err(format!("bad answer {answer:?}: {e}"))),
    }
}

/// The inbound passthrough connects from ::6, which must be a local address for the app's answer
/// to come back; IPv4 has all of 127/8 on `lo`, IPv6 only ::1. Adds ::6/128 to `lo` (idempotent;
/// a netns without IPv6 only loses the IPv6 inbound passthrough, so that is a warning).
pub(crate) fn add_v6_passthrough_source(netns: &str) {
    let out = std::process::Command::new("ip")
        .args(["-6", "addr", "replace", "::6/128", "dev", "lo", "nodad"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => tracing::warn!(
            netns,
            error = %String::from_utf8_lossy(&o.stderr).trim(),
            "cannot add ::6 to lo: no IPv6 inbound passthrough"
        ),
        Err(e) => tracing::warn!(netns, error = %e, "cannot run ip: no IPv6 inbound passthrough"),
    }
}

/// Drops to `uid`/`uid` (no supplementary groups) keeping CAP_NET_ADMIN in the permitted and
/// effective sets. Single-threaded callers only: capabilities are per thread.
pub fn drop_privileges(uid: u32) -> Result<(), SidecarError> {
    if uid == 0 {
        return Ok(());
    }
    let err = |step, source| SidecarError::Privileges { uid, step, source };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
        return Err(err("prctl(PR_SET_KEEPCAPS)", io::Error::last_os_error()));
    }
    setgroups(&[]).map_err(|e| err("setgroups", e.into()))?;
    setgid(Gid::from_raw(uid)).map_err(|e| err("setgid", e.into()))?;
    setuid(Uid::from_raw(uid)).map_err(|e| err("setuid", e.into()))?;
    set_caps(1 << CAP_NET_ADMIN).map_err(|e| err("capset(CAP_NET_ADMIN)", e))?;
    Ok(())
}

fn set_caps(mask: u32) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let hdr = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: mask,
            permitted: mask,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: header and two data structs, the layout capset(2) expects for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Serves the bound listeners until SIGTERM/SIGINT (or the admin's `/quitquitquit`): outbound
/// with `outbound`, inbound with `inbound`; `engine` answers the admin port. Upstream sockets are
/// made in the current netns (the pod's) and marked. The admin's `/drain_listeners` closes the
/// capture listeners and keeps the process. On the signal the listeners, the admin and health
/// ports close at once (freeing them for the next owner) and the process returns when the open
/// connections have ended (or on a second signal).
pub async fn serve(
    bound: Bound,
    outbound: Arc<dyn ConnectionHandler>,
    inbound: Arc<dyn ConnectionHandler>,
    engine: Option<Arc<sluice_engine::server::Server>>,
) -> Result<(), SidecarError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Before the admin port serves: its `/quitquitquit` is a SIGTERM.
    let mut term = signal(SignalKind::terminate()).map_err(SidecarError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(SidecarError::Runtime)?;
    let mut operator =
        admin::Operator::start(bound.ports, engine, &bound.netns).map_err(SidecarError::Runtime)?;
    let upstream = UpstreamFactory::new(None, Some(PROXY_MARK), DEFAULT_CONNECT_TIMEOUT);
    let ctx = |name, direction| {
        Arc::new(ListenerContext {
            name,
            direction,
            netns: bound.netns.clone(),
            upstream: upstream.clone(),
            stats: ListenerStats::default(),
            // A sidecar serves one pod: nothing to share its workers with.
            placement: None,
        })
    };
    let out_ctx = ctx("outbound", Direction::Outbound);
    let in_ctx = ctx("inbound", Direction::Inbound);
    let mut served = bound
        .sockets
        .serve(&(out_ctx.clone(), outbound), &(in_ctx.clone(), inbound))
        .map_err(SidecarError::Runtime)?;
    operator.set_ready(true);
    info!(netns = %bound.netns, uid = nix::unistd::getuid().as_raw(), "sidecar ready");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            req = operator.drain_requested() => admin::drain(&mut served, &operator, req).await,
        }
    }
    info!("shutting down");
    operator.set_ready(false);
    served.close().await;
    operator.close().await;
    // The ports are free now (a mode switch can hand them to the agent); connections in flight
    // run to their end. A second signal exits at once.
    info!("listeners closed; draining open connections");
    loop {
        let active = out_ctx
            .stats
            .active
            .load(std::sync::atomic::Ordering::Relaxed)
            + in_ctx
                .stats
                .active
                .load(std::sync::atomic::Ordering::Relaxed);
        if active == 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("drained");
    Ok(())
}

/// `--metrics-addr`: an address, or `off` (None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("{s:?}: {e} (an address like 0.0.0.0:15090, or off)"))
    }
}

/// Serves the Istio metrics of the pod's engine `servers` on `addr` in the current netns (the
/// pod's), like Envoy's 15090. `POD_NAMESPACE` (set by Istio's injector) gives the workload
/// namespace labels; there are no `pod`/`namespace` labels (Prometheus' discovery adds them).
pub async fn serve_metrics(
    addr: SocketAddr,
    servers: &crate::l7capture::PodServers,
) -> Result<crate::metrics_endpoint::MetricsEndpoint, SidecarError> {
    use sluice_engine::server::istio::encode::{text, Target};
    let target = Target {
        workload_namespace: std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty()),
        metrics: [&servers.outbound, &servers.inbound]
            .into_iter()
            .flatten()
            .map(|s| Arc::clone(&s.stats.istio))
            .collect(),
        ..Target::default()
    };
    let render: crate::metrics_endpoint::Render = Arc::new(move || {
        let target = target.clone();
        Box::pin(async move { text(vec![target]) })
    });
    let ep = crate::metrics_endpoint::MetricsEndpoint::bind(addr, render)
        .await
        .map_err(|source| SidecarError::Metrics { addr, source })?;
    info!(addr = %ep.addr(), "metrics endpoint ready");
    Ok(ep)
}
