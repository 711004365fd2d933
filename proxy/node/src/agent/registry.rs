//! The agent's pod registry: enrolled netns cookies, their policies, and the node-mode listeners
//! the agent serves inside each pod.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
};

use sluice_common::{Counter, PROXY_MARK};
use sluice_engine::server::Server;
use tracing::info;

use super::{
    pod_admin::{self, AdminPort, DEFAULT_POD_ADMIN_PORT},
    protocol::{PodStatus, StatusReport},
};
use crate::{
    bpf::{BpfError, Datapath},
    l7capture::PodServers,
    listener::{ConnectionHandler, Direction, ListenerContext, ListenerStats},
    netns::{Netns, NetnsError},
    pod_sockets::{PodSockets, ServedSockets},
    policy::{EnrollSpec, Enrollment, Mode, PodIdentity, PolicyError},
    upstream_factory::{UpstreamFactory, DEFAULT_CONNECT_TIMEOUT},
};

// CNI release by container id and the graceful-upgrade hand-over (lifecycle helper's file).
mod lifecycle;
// Finding a pod's engine server for its admin (by NAMESPACE/NAME or netns).
mod lookup;

pub use self::lookup::PodRef;
mod metrics;

/// Why an agent request was refused. Each names the netns or value.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A value of the enrollment is malformed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The netns cannot be opened or used.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The kernel maps refused the update.
    #[error("netns {netns} (cookie {cookie}): {source}")]
    Bpf {
        netns: String,
        cookie: u64,
        source: BpfError,
    },
    /// Unenroll of a netns the agent does not know.
    #[error("netns {0} is not enrolled")]
    NotEnrolled(String),
    /// A request that does not fit the pod's state (e.g. registering listeners of a node-mode pod).
    #[error("netns {netns}: {reason}")]
    Refused { netns: String, reason: String },
    /// The L7 engine could not start for the pod.
    #[error("netns {netns}: L7 engine: {message}")]
    L7 { netns: String, message: String },
    /// An admin request for a pod the agent does not know (by `NAMESPACE/NAME` or netns).
    #[error("no enrolled pod {0}")]
    NoPod(String),
    /// An admin request for a pod without an L7 engine; the reason says why.
    #[error("pod {pod} has no L7 engine ({reason})")]
    NoEngine { pod: String, reason: String },
}

/// Names of the eBPF counters, in the order `sluice status` prints them (every [`Counter`]; the
/// `status_names_every_counter` test keeps the table complete).
pub const COUNTER_NAMES: &[(&str, Counter)] = &[
    ("captured", Counter::Captured),
    ("skip_not_enrolled", Counter::SkipNotEnrolled),
    ("skip_loopback", Counter::SkipLoopback),
    ("skip_port", Counter::SkipPort),
    ("skip_cidr", Counter::SkipCidr),
    ("skip_proxy", Counter::SkipProxy),
    ("fast_path_msgs", Counter::FastPathMsgs),
    ("fast_path_bytes", Counter::FastPathBytes),
    ("orig_dst_answered", Counter::OrigDstAnswered),
    ("peername_restored", Counter::PeernameRestored),
    ("inbound_captured", Counter::InboundCaptured),
    ("skip_not_tcp", Counter::SkipNotTcp),
    ("fast_path_miss", Counter::FastPathMiss),
    ("skip_no_listener", Counter::SkipNoListener),
    ("inbound_skip_port", Counter::InboundSkipPort),
    ("inbound_no_listener", Counter::InboundNoListener),
    ("fast_path_demoted", Counter::FastPathDemoted),
];

/// The listeners the agent serves inside one pod (node mode): 127.0.0.1/::1 on the outbound
/// port, 0.0.0.0/[::] on the inbound port (registered with sk_lookup), their counters, and the
/// pod's own L7 engine servers when the agent runs with `--config`.
struct PodListeners {
    served: ServedSockets,
    ctx: Arc<ListenerContext>,
    inbound_ctx: Arc<ListenerContext>,
    engine: Option<PodServers>,
    /// The pod's admin on 127.0.0.1:`--pod-admin-port` in its netns (with an engine).
    admin: Option<AdminPort>,
    /// The per-pod config source's guard (e.g. the pod's ADS stream): dropped, it stops.
    config: Option<Box<dyn Send + Sync>>,
}

impl PodListeners {
    /// Stops the pod's config source, then accepting (the admin port too); see
    /// [`ServedSockets::close`].
    async fn close(mut self) {
        drop(self.config.take());
        if let Some(a) = self.admin {
            a.close().await;
        }
        self.served.close().await;
    }
}

/// Node-mode sockets bound inside a pod, not served yet.
struct BoundSockets {
    netns_arg: String,
    netns: Arc<Netns>,
    sockets: PodSockets,
}

/// The handlers of the node-mode listeners.
#[derive(Clone)]
pub struct Handlers {
    /// Serves the outbound (15001) listeners.
    pub outbound: Arc<dyn ConnectionHandler>,
    /// Serves the inbound (15006) listeners.
    pub inbound: Arc<dyn ConnectionHandler>,
    /// With `--config`: each pod's listeners are served by the L7 engine instead (its own
    /// servers, upstream sockets made in the pod's netns).
    pub l7: Option<Arc<crate::l7capture::L7Config>>,
    /// With `l7`: keeps each pod's servers configured (one ADS stream per pod with
    /// `--xds-address`), see [`super::pod_config`].
    pub pod_config: Option<Arc<dyn super::pod_config::PodConfigSource>>,
}

/// One enrolled pod.
struct Pod {
    netns_arg: String,
    enrollment: Enrollment,
    listeners: Option<PodListeners>,
    /// Container id and pod name/namespace (CNI enrollments).
    identity: Option<PodIdentity>,
}

/// Every pod the agent enrolled, and the data path.
pub struct Registry {
    datapath: Datapath,
    handlers: Handlers,
    pods: HashMap<u64, Pod>,
    /// Port of each engine-served pod's admin (0 = none).
    pod_admin_port: u16,
    /// How many of the agent's workers each pod is placed on (0 = every worker).
    pod_workers: usize,
}

impl Registry {
    /// A registry over a loaded data path; `handlers` serve every node-mode listener.
    pub fn new(datapath: Datapath, handlers: Handlers) -> Self {
        Self {
            datapath,
            handlers,
            pods: HashMap::new(),
            pod_admin_port: DEFAULT_POD_ADMIN_PORT,
            pod_workers: 0,
        }
    }

    /// How many of the agent's workers each pod enrolled from now on is placed on (0 = every
    /// worker); see [`sluice_engine::workers`].
    pub fn set_pod_workers(&mut self, workers: usize) {
        self.pod_workers = workers;
    }

    /// Port of the admin bound in each engine-served pod from now on (0 = none).
    pub fn set_pod_admin_port(&mut self, port: u16) {
        self.pod_admin_port = port;
    }

    /// Enrolls or re-enrolls a pod. Everything is validated and every listener bound before the
    /// kernel map is written, so a refused request changes nothing.
    pub async fn enroll(&mut self, spec: &EnrollSpec) -> Result<PodStatus, AgentError> {
        let enrollment = spec.validate()?;
        let netns = Arc::new(Netns::open(&spec.netns)?);
        let cookie = netns.cookie()?;
        // A node-mode pod whose engine changes (l4 <-> l7) is served anew: its listeners close
        // (open connections run to their end) and new ones are bound below.
        if let Some(p) = self.pods.get_mut(&cookie) {
            if p.listeners.is_some() && p.enrollment.l4_only() != enrollment.l4_only() {
                if let Some(l) = p.listeners.take() {
                    l.close().await;
                }
            }
        }
        let had_listeners = self
            .pods
            .get(&cookie)
            .is_some_and(|p| p.listeners.is_some());
        let bound = if enrollment.mode == Mode::Node && !had_listeners {
            Some(self.bind_sockets(&spec.netns, &netns, &enrollment)?)
        } else {
            None
        };
        let bpf_err = |source| AgentError::Bpf {
            netns: spec.netns.clone(),
            cookie,
            source,
        };
        let known = self.pods.contains_key(&cookie);
        let mut result = self.datapath.set_policy(cookie, &enrollment.policy);
        if result.is_ok() && enrollment.mode != Mode::Off {
            result = self.datapath.attach_inbound(cookie, &*netns);
        }
        let listeners = match (result, bound) {
            (Ok(()), Some(b)) => {
                match self
                    .register_and_serve(cookie, b, spec.pod.as_ref(), enrollment.l4_only())
                    .await
                {
                    Ok(l) => Ok(Some(l)),
                    Err(e) => Err(e),
                }
            }
            (Ok(()), None) => Ok(None),
            (Err(e), _) => Err(bpf_err(e)),
        };
        let listeners = match listeners {
            Ok(l) => l,
            Err(e) => {
                if !known {
                    // Leave nothing behind for a pod this request introduced.
                    let _ = self.datapath.remove_netns(cookie);
                }
                return Err(e);
            }
        };
        let pod = self.pods.entry(cookie).or_insert_with(|| Pod {
            netns_arg: spec.netns.clone(),
            enrollment,
            listeners: None,
            identity: None,
        });
        pod.netns_arg = spec.netns.clone();
        pod.enrollment = enrollment;
        if spec.pod.is_some() {
            pod.identity = spec.pod.clone();
        }
        if let Some(l) = listeners {
            pod.listeners = Some(l);
        } else if enrollment.mode != Mode::Node {
            if let Some(l) = pod.listeners.take() {
                l.close().await;
            }
        }
        info!(netns = %spec.netns, cookie, mode = enrollment.mode.name(), "enrolled");
        Ok(self.pod_status(cookie))
    }

    /// Binds the node-mode sockets inside the pod ([`PodSockets::bind_in`]) and adds ::6 to the
    /// pod's `lo` for the IPv6 inbound passthrough. Either all four are bound or none.
    fn bind_sockets(
        &self,
        netns_arg: &str,
        netns: &Arc<Netns>,
        enrollment: &Enrollment,
    ) -> Result<BoundSockets, AgentError> {
        let sockets = PodSockets::bind_in(
            netns,
            enrollment.policy.outbound_port,
            enrollment.policy.inbound_port,
        )?;
        netns.run(|| crate::sidecar::add_v6_passthrough_source(netns_arg))?;
        Ok(BoundSockets {
            netns_arg: netns_arg.to_string(),
            netns: netns.clone(),
            sockets,
        })
    }

    /// Registers the inbound sockets with sk_lookup and serves all of them.
    async fn register_and_serve(
        &mut self,
        cookie: u64,
        bound: BoundSockets,
        identity: Option<&PodIdentity>,
        l4_only: bool,
    ) -> Result<PodListeners, AgentError> {
        for l in bound.sockets.inbound() {
            self.datapath
                .set_inbound_listener(cookie, l)
                .map_err(|source| AgentError::Bpf {
                    netns: bound.netns_arg.clone(),
                    cookie,
                    source,
                })?;
        }
        let upstream = UpstreamFactory::new(
            Some(bound.netns.clone()),
            Some(PROXY_MARK),
            DEFAULT_CONNECT_TIMEOUT,
        );
        // One placement for both directions: the pod's inbound and outbound work count together.
        let placement = sluice_engine::workers::get()
            .filter(|_| self.pod_workers > 0)
            .map(|w| Arc::new(w.place(self.pod_workers)));
        let ctx = |name, direction| {
            Arc::new(ListenerContext {
                name,
                direction,
                netns: bound.netns_arg.clone(),
                upstream: upstream.clone(),
                stats: ListenerStats::default(),
                placement: placement.clone(),
            })
        };
        let out_ctx = ctx("outbound", Direction::Outbound);
        let in_ctx = ctx("inbound", Direction::Inbound);
        let (outbound, inbound, engine) = match self.handlers.l7.as_ref().filter(|_| !l4_only) {
            Some(l7) => {
                let h = l7
                    .pod_handlers(&upstream, self.handlers.outbound.clone())
                    .await
                    .map_err(|e| AgentError::L7 {
                        netns: bound.netns_arg.clone(),
                        message: e.to_string(),
                    })?;
                (h.outbound, h.inbound, Some(h.servers))
            }
            None => (
                self.handlers.outbound.clone(),
                self.handlers.inbound.clone(),
                None,
            ),
        };
        let served = bound
            .sockets
            .serve(&(out_ctx.clone(), outbound), &(in_ctx.clone(), inbound))
            .map_err(|source| NetnsError::Socket {
                path: bound.netns.path().to_path_buf(),
                op: "register listener".into(),
                source,
            })?;
        let admin = self.start_admin(&bound.netns_arg, &bound.netns, engine.as_ref());
        let config = match (&self.handlers.pod_config, &engine) {
            (Some(source), Some(servers)) => {
                let pod = super::pod_config::PodInfo::new(&bound.netns_arg, &bound.netns, identity);
                Some(source.start(&pod, servers))
            }
            _ => None,
        };
        Ok(PodListeners {
            served,
            ctx: out_ctx,
            inbound_ctx: in_ctx,
            engine,
            admin,
            config,
        })
    }

    /// Binds and serves the pod's admin port when the pod has an engine. A port the pod already
    /// uses is a warning, not a failed enrollment: the control socket still serves the admin.
    fn start_admin(
        &self,
        netns_arg: &str,
        netns: &Netns,
        engine: Option<&PodServers>,
    ) -> Option<AdminPort> {
        let server = engine.and_then(crate::agent::pod_admin::admin_server)?;
        if self.pod_admin_port == 0 {
            return None;
        }
        match pod_admin::start_port(netns, self.pod_admin_port, server, netns_arg.to_string()) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(netns = %netns_arg, error = %e, "pod admin port not served");
                None
            }
        }
    }

    /// After an agent restart: the pinned policy map still holds the pods enrolled earlier.
    /// Finds their netns under /run/netns by cookie and serves their node-mode listeners again, so
    /// capture keeps working without re-enrollment. Returns how many pods were adopted.
    pub async fn adopt_pinned(&mut self) -> usize {
        let policies = match self.datapath.policies() {
            Ok(p) if !p.is_empty() => p,
            _ => return 0,
        };
        let Ok(dir) = std::fs::read_dir(crate::netns::NETNS_RUN_DIR) else {
            return 0;
        };
        let mut adopted = 0;
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(ns) = Netns::open(&name) else { continue };
            let Ok(cookie) = ns.cookie() else { continue };
            let Some((_, policy)) = policies.iter().find(|(c, _)| *c == cookie) else {
                continue;
            };
            let mode = match policy.mode {
                sluice_common::mode::NODE => Mode::Node,
                sluice_common::mode::SIDECAR => Mode::Sidecar,
                _ => Mode::Off,
            };
            let enrollment = Enrollment {
                mode,
                policy: *policy,
            };
            let ns = Arc::new(ns);
            // The sk_lookup link was adopted from its pin when it was persisted; after a crash
            // (links gone with the old process) it is made again here.
            if mode != Mode::Off {
                if let Err(e) = self.datapath.attach_inbound(cookie, &*ns) {
                    tracing::warn!(netns = %name, cookie, error = %e, "cannot re-attach inbound capture");
                }
            }
            let listeners = if mode == Mode::Node {
                let served = match self.bind_sockets(&name, &ns, &enrollment) {
                    Ok(b) => {
                        self.register_and_serve(cookie, b, None, enrollment.l4_only())
                            .await
                    }
                    Err(e) => Err(e),
                };
                match served {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!(netns = %name, cookie, error = %e, "cannot re-adopt pod");
                        continue;
                    }
                }
            } else {
                None
            };
            info!(netns = %name, cookie, mode = mode.name(), "adopted pod enrolled by an earlier agent");
            self.pods.insert(
                cookie,
                Pod {
                    netns_arg: name,
                    enrollment,
                    listeners,
                    identity: None,
                },
            );
            adopted += 1;
        }
        adopted
    }

    /// Registers a sidecar-mode pod's own inbound listening sockets (received over the control
    /// socket) with sk_lookup. The sockets' netns names the pod, which must be enrolled in
    /// `sidecar` mode. Returns (cookie, sockets registered). The agent's copies of the fds are
    /// closed afterwards; the SockHash entries live as long as the sidecar's sockets.
    pub fn register_inbound(
        &mut self,
        netns_arg: &str,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<(u64, usize), AgentError> {
        use std::os::fd::AsFd as _;
        let refused = |reason: String| AgentError::Refused {
            netns: netns_arg.to_string(),
            reason,
        };
        let first = fds
            .first()
            .ok_or_else(|| refused("register_inbound came without file descriptors".into()))?;
        let cookie = crate::bpf::netns_cookie_of(first.as_fd())
            .map_err(|e| refused(format!("SO_NETNS_COOKIE of the received socket: {e}")))?;
        let pod = self
            .pods
            .get(&cookie)
            .ok_or_else(|| AgentError::NotEnrolled(format!("{netns_arg} (cookie {cookie})")))?;
        if pod.enrollment.mode != Mode::Sidecar {
            return Err(refused(format!(
                "the pod is in mode {}; only sidecar-mode pods register their own listeners",
                pod.enrollment.mode.name()
            )));
        }
        for fd in &fds {
            self.datapath
                .set_inbound_listener(cookie, fd)
                .map_err(|source| AgentError::Bpf {
                    netns: netns_arg.to_string(),
                    cookie,
                    source,
                })?;
        }
        info!(
            netns = netns_arg,
            cookie,
            listeners = fds.len(),
            "sidecar inbound listeners registered"
        );
        Ok((cookie, fds.len()))
    }

    /// Removes a pod: every map entry of its cookie, then its listeners. A netns that still
    /// exists but that this agent never saw (enrolled by an earlier agent) is removed too.
    /// Returns (cookie, entries removed, entries left for the cookie afterwards).
    pub async fn unenroll(&mut self, netns_arg: &str) -> Result<(u64, usize, usize), AgentError> {
        let path = crate::netns::resolve(netns_arg);
        let known = self
            .pods
            .iter()
            .find(|(_, p)| crate::netns::resolve(&p.netns_arg) == path)
            .map(|(c, _)| *c);
        let cookie = match known {
            Some(c) => c,
            None => match Netns::open(netns_arg).and_then(|n| n.cookie()) {
                Ok(c) if self.in_kernel(c) => c,
                Ok(_) => return Err(AgentError::NotEnrolled(netns_arg.to_string())),
                Err(e) => return Err(e.into()),
            },
        };
        let removed = self
            .datapath
            .remove_netns(cookie)
            .map_err(|source| AgentError::Bpf {
                netns: netns_arg.to_string(),
                cookie,
                source,
            })?;
        if let Some(pod) = self.pods.remove(&cookie) {
            if let Some(l) = pod.listeners {
                l.close().await;
            }
        }
        let remaining = self.datapath.entries_for(cookie).unwrap_or(usize::MAX);
        info!(netns = netns_arg, cookie, removed, remaining, "unenrolled");
        Ok((cookie, removed, remaining))
    }

    fn in_kernel(&self, cookie: u64) -> bool {
        self.datapath
            .policies()
            .map(|ps| ps.iter().any(|(c, _)| *c == cookie))
            .unwrap_or(false)
    }

    fn pod_status(&self, cookie: u64) -> PodStatus {
        let entries = self.datapath.entries_for(cookie).unwrap_or(0);
        self.pod_status_with(cookie, entries)
    }

    /// A pod's status with its map entry count already known.
    fn pod_status_with(&self, cookie: u64, map_entries: usize) -> PodStatus {
        let Some(pod) = self.pods.get(&cookie) else {
            return PodStatus::default();
        };
        let mut s = PodStatus {
            netns: pod.netns_arg.clone(),
            cookie,
            mode: pod.enrollment.mode.name().to_string(),
            map_entries,
            pod: pod.identity.clone(),
            ..Default::default()
        };
        if let Some(l) = &pod.listeners {
            let st = &l.ctx.stats;
            s.listeners = l.served.addrs().iter().map(ToString::to_string).collect();
            s.accepted = st.accepted.load(Ordering::Relaxed);
            s.active = st.active.load(Ordering::Relaxed);
            s.upstream_failures = st.upstream_failures.load(Ordering::Relaxed);
            s.bytes_out = st.bytes_out.load(Ordering::Relaxed);
            s.bytes_in = st.bytes_in.load(Ordering::Relaxed);
            s.recent_destinations = st.recent().iter().map(ToString::to_string).collect();
            let ist = &l.inbound_ctx.stats;
            s.inbound_accepted = ist.accepted.load(Ordering::Relaxed);
            s.inbound_recent_destinations = ist.recent().iter().map(ToString::to_string).collect();
            s.admin = l.admin.as_ref().map(|a| a.addr().to_string());
            s.engine = Some(if l.engine.is_some() { "l7" } else { "l4" }.to_string());
            s.workers = l
                .ctx
                .placement
                .as_ref()
                .map(|p| p.workers().to_vec())
                .unwrap_or_default();
            s.engine_versions = l.engine.as_ref().map(|e| {
                let version = |s: &Option<Arc<Server>>| s.as_ref().map(|s| s.runtime().version);
                (version(&e.outbound), version(&e.inbound))
            });
        }
        s
    }

    /// The `--config` file of the L7 engine (None without one).
    pub fn l7_path(&self) -> Option<std::path::PathBuf> {
        Some(self.handlers.l7.as_ref()?.path()?.to_path_buf())
    }

    /// Stops every pod's config source (after an upgrade hand-over: the new agent has opened its
    /// own streams; the servers keep their last config while they drain).
    pub fn stop_pod_configs(&mut self) {
        for l in self.pods.values_mut().filter_map(|p| p.listeners.as_mut()) {
            drop(l.config.take());
        }
    }

    /// Whether pods' engine servers are configured by a per-pod source (xDS) rather than the
    /// `--config` file alone.
    pub fn has_pod_config(&self) -> bool {
        self.handlers.pod_config.is_some()
    }

    /// Replaces the L7 config (a SIGHUP reload): pods enrolled from now on start with it; returns
    /// the servers of every node-mode pod served by the engine, to apply it to (outside the
    /// registry lock).
    pub fn set_l7(&mut self, l7: Arc<crate::l7capture::L7Config>) -> Vec<PodServers> {
        self.handlers.l7 = Some(l7);
        self.pods
            .values()
            .filter_map(|p| p.listeners.as_ref()?.engine.clone())
            .collect()
    }

    /// The L7 engine servers of a node-mode pod served with `--config` (None for other pods):
    /// where a config for that one pod is pushed and read back.
    pub fn pod_servers(&self, cookie: u64) -> Option<&PodServers> {
        self.pods.get(&cookie)?.listeners.as_ref()?.engine.as_ref()
    }

    /// Every pod, the kernel's cookies and the counters.
    pub fn status(&self) -> StatusReport {
        // One walk of each map for every pod (see `Datapath::entries_by_cookie`).
        let entries = self.datapath.entries_by_cookie().unwrap_or_default();
        let mut cookies: Vec<u64> = self.pods.keys().copied().collect();
        cookies.sort_unstable();
        let counters = match self.datapath.counters() {
            Ok(c) => COUNTER_NAMES
                .iter()
                .map(|(n, k)| (n.to_string(), c.get(*k)))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut kernel_policies: Vec<u64> = self
            .datapath
            .policies()
            .map(|ps| ps.into_iter().map(|(c, _)| c).collect())
            .unwrap_or_default();
        kernel_policies.sort_unstable();
        StatusReport {
            pods: cookies
                .into_iter()
                .map(|c| self.pod_status_with(c, entries.get(&c).copied().unwrap_or(0)))
                .collect(),
            kernel_policies,
            counters,
            pods_per_worker: sluice_engine::workers::get()
                .map(sluice_engine::workers::Workers::pods)
                .unwrap_or_default(),
        }
    }

    /// Stops every listener and gives the data path back: the caller drops it (programs
    /// detached, maps stay pinned) or persists it (programs stay attached for the next agent).
    pub async fn shutdown(mut self) -> Datapath {
        for (_, pod) in self.pods.drain() {
            if let Some(l) = pod.listeners {
                l.close().await;
            }
        }
        self.datapath
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_every_counter() {
        let mut idx: Vec<u32> = COUNTER_NAMES.iter().map(|(_, c)| *c as u32).collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), COUNTER_NAMES.len(), "a counter is listed twice");
        // Counters are dense from 0: the highest index + 1 is the number of counters.
        assert_eq!(idx, (0..idx.len() as u32).collect::<Vec<_>>());
        assert_eq!(idx.len(), Counter::ALL.len(), "a new counter is not named");
    }
}
