//! `sluice proxy -c envoy.yaml`: the running proxy — config versions, listeners, connection
//! dispatch (original destination, protocol detection, filter chains) and hot reload.
//!
//! A config version is a [`Runtime`]: clusters built from the bootstrap plus every listener's
//! filter chains resolved to them. The [`Server`] holds one listener slot per listener name whose
//! runtime is swapped atomically on reload; each request loads the current one, so requests in
//! flight finish on the version they started with and the next request uses the new one. Every
//! config source gives the server a new version through one entry, [`Server::apply`]; file
//! reload (`reload`) is one such source.

mod apply;
mod boxed_io;
pub mod cli;
pub(crate) mod conn_log;
pub mod drain;
#[cfg(test)]
mod drain_tests;
mod endpoints;
pub mod istio;
mod listener;
pub mod observer;
mod proxy_proto;
mod rbac_gate;
mod reload;
pub mod stats;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{net::TcpStream, task::JoinHandle};

pub use self::listener::{original_dst, ChainRt, ListenerRt, ServeError};
pub use self::observer::ConnObserver;
use self::stats::StatsStore;
use crate::{
    config,
    http::Hcm,
    tcp_proxy::TcpProxy,
    upstream::{self, connector::Connector, from_config::cluster_spec, Cluster},
};

/// Errors of the proxy runtime.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The config was rejected (the error names the field).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A cluster could not be built (TLS files).
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    /// A listener or the admin address could not be bound.
    #[error("bind {addr} (listener {listener}): {source}")]
    Bind {
        /// Listener name (`admin` for the admin interface).
        listener: String,
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The tokio runtime could not start.
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
}

/// One config version.
#[derive(Debug)]
pub struct Runtime {
    /// The validated config.
    pub bootstrap: Arc<config::Bootstrap>,
    /// The config file as JSON (for /config_dump); shared by every server started from the
    /// same document (node mode: two per pod).
    pub source: Arc<serde_json::Value>,
    /// Clusters by name.
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// Cluster names in config order.
    pub cluster_order: Vec<String>,
    /// Each cluster's config as built or last updated by [`Server::update_endpoints`] (to keep
    /// unchanged clusters across reloads).
    fingerprints: Mutex<HashMap<String, ClusterFingerprint>>,
    /// Listeners by name.
    pub listeners: HashMap<String, Arc<ListenerRt>>,
    /// Version number (1 for the initial config).
    pub version: u64,
    /// Which resources came from the file and which from xDS (for /config_dump).
    pub origin: Arc<crate::admin::ConfigOrigin>,
}

impl Runtime {
    /// Initial discovery of every cluster (STRICT_DNS resolution) before the version serves.
    pub async fn warm(&self) {
        futures_util::future::join_all(self.clusters.values().map(|c| c.warm())).await;
    }

    /// Builds clusters and listeners of `bootstrap` (starts their DNS and health-check tasks).
    /// A cluster whose config is unchanged from `previous` is kept as is (pools, host health,
    /// outlier state, DNS answers); the others are built new.
    pub fn build(
        bootstrap: config::Bootstrap,
        source: Arc<serde_json::Value>,
        stats: &StatsStore,
        version: u64,
        previous: Option<&Runtime>,
        connector: &Connector,
    ) -> Result<Self, ServerError> {
        let mut clusters = HashMap::new();
        let mut cluster_order = Vec::new();
        let mut fingerprints = HashMap::new();
        for c in &bootstrap.clusters {
            let name = c.name.as_str().to_string();
            let fingerprint = ClusterFingerprint::of(c);
            let kept = previous.and_then(|p| {
                let same = p
                    .fingerprints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&name)
                    == Some(&fingerprint);
                same.then(|| p.clusters.get(&name).cloned()).flatten()
            });
            let cl = match kept {
                Some(cl) => cl,
                None => Cluster::build_with(cluster_spec(c), stats, connector.clone())?,
            };
            cluster_order.push(name.clone());
            clusters.insert(name.clone(), cl);
            fingerprints.insert(name, fingerprint);
        }
        let mut listeners = HashMap::new();
        let local = crate::http::spans::Local::of(bootstrap.node.as_ref());
        // Built on first use, once per reporter for the whole version.
        let mut istio_series: HashMap<istio::Reporter, Arc<istio::ClusterSeries>> = HashMap::new();
        for l in &bootstrap.listeners {
            let reporter =
                istio::Reporter::of_listener(l.traffic_direction.as_deref(), l.name.as_str());
            let chains = l
                .filter_chains
                .iter()
                .map(|fc| match &fc.filter {
                    config::NetworkFilter::Http(h) => {
                        let series = istio_series.entry(reporter).or_insert_with(|| {
                            Arc::new(istio::ClusterSeries::build(
                                clusters.keys().map(String::as_str),
                                &stats.istio,
                                reporter,
                            ))
                        });
                        ChainRt::Http(Arc::new(Hcm::build(
                            h.clone(),
                            &clusters,
                            stats,
                            series.clone(),
                            &local,
                        )))
                    }
                    config::NetworkFilter::Tcp(t) => {
                        let names: Vec<&config::ClusterRef> = match &t.cluster {
                            config::TcpProxyCluster::Single(c) => vec![c],
                            config::TcpProxyCluster::Weighted(w) => {
                                w.clusters.iter().map(|c| &c.name).collect()
                            }
                        };
                        // A name with no cluster stays `None`: its connections are closed
                        // (NC), as in Envoy.
                        let resolved: Vec<Option<Arc<Cluster>>> = names
                            .iter()
                            .map(|n| clusters.get(n.as_str()).cloned())
                            .collect();
                        ChainRt::Tcp(Arc::new(TcpProxy {
                            log: Arc::new(crate::http::access_log::AccessLogger::start(
                                &t.access_log,
                            )),
                            cfg: t.clone(),
                            stats: stats.tcp(&t.stat_prefix),
                            istio: resolved
                                .iter()
                                .map(|c| {
                                    c.as_ref().map(|c| {
                                        let d = istio::Destination::of_cluster(&c.spec.name);
                                        stats.istio.tcp(reporter, d)
                                    })
                                })
                                .collect(),
                            clusters: resolved,
                        }))
                    }
                })
                .collect();
            // Each chain's network RBAC filters, with their counters.
            let rbac = l
                .filter_chains
                .iter()
                .map(|fc| {
                    (!fc.rbac.is_empty())
                        .then(|| fc.rbac.iter().map(|r| r.runtime(stats)).collect())
                })
                .collect();
            // Each chain's network ext_authz filters, with their counters and clusters.
            let ext_authz = l
                .filter_chains
                .iter()
                .map(|fc| {
                    (!fc.ext_authz.is_empty()).then(|| {
                        Arc::new(crate::network_ext_authz::AuthzGate::new(
                            &fc.ext_authz,
                            &fc.rbac,
                            &clusters,
                            stats,
                        ))
                    })
                })
                .collect();
            listeners.insert(
                l.name.as_str().to_string(),
                Arc::new(ListenerRt {
                    log: (!l.access_log.is_empty()).then(|| {
                        Arc::new(crate::http::access_log::AccessLogger::start(&l.access_log))
                    }),
                    proxy_proto: l
                        .proxy_protocol
                        .as_ref()
                        .map(|pp| proxy_proto::ProxyProtoRt::new(pp, stats)),
                    cfg: l.clone(),
                    chains,
                    rbac,
                    ext_authz,
                }),
            );
        }
        Ok(Self {
            bootstrap: Arc::new(bootstrap),
            source,
            clusters,
            cluster_order,
            fingerprints: Mutex::new(fingerprints),
            listeners,
            version,
            origin: Arc::default(),
        })
    }
}

/// A cluster's config in two parts: all of it, and all but its endpoints (an endpoint-only
/// change keeps the running cluster and swaps its hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterFingerprint {
    full: String,
    shape: String,
}

impl ClusterFingerprint {
    pub(crate) fn of(c: &config::Cluster) -> Self {
        let mut shape = c.clone();
        shape.endpoints = Vec::new();
        Self {
            full: format!("{c:?}"),
            shape: format!("{shape:?}"),
        }
    }
}

/// A listener name's current runtime; persists across reloads while the listener exists.
#[derive(Debug)]
pub struct ListenerSlot {
    /// The current version of this listener.
    pub rt: ArcSwap<ListenerRt>,
    /// Raised when the listener is removed or re-bound: its connections drain.
    pub drain: drain::ListenerDrain,
}

struct Bound {
    /// The listener's `address`, then its `additional_addresses`.
    addrs: Vec<SocketAddr>,
    slot: Arc<ListenerSlot>,
    /// The accept loops, one per address; none for `bind_to_port: false` listeners (hand-off
    /// targets only).
    tasks: Vec<JoinHandle<()>>,
    /// The bound sockets by address (those of `tasks`).
    sockets: Vec<(SocketAddr, Arc<tokio::net::TcpListener>)>,
}

/// The running proxy.
pub struct Server {
    current: ArcSwap<Runtime>,
    /// Counters (shared by every config version).
    pub stats: Arc<StatsStore>,
    bound: Mutex<HashMap<String, Bound>>,
    config_path: Option<PathBuf>,
    reload_lock: tokio::sync::Mutex<()>,
    bind_listeners: bool,
    /// Opens every upstream socket (clusters, passthrough).
    pub(crate) connector: Connector,
    /// `/ready` answers 200: at once for a static bootstrap, after the first complete xDS
    /// configuration for one with `dynamic_resources` ([`Server::set_ready`]).
    ready: std::sync::atomic::AtomicBool,
    /// Admin `/xds_status`: registered by the xDS client driving this server, if any.
    xds_status: std::sync::OnceLock<crate::admin::StatusProvider>,
    /// How long a removed listener's connections may stay open (`--drain-time-s`).
    drain_time: Duration,
}

/// How [`Server::start_with`] runs.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Bind the listeners' addresses (`sluice proxy`). False when a caller that owns the sockets
    /// (the capture side binding 15001/15006 inside a pod's network namespace) hands accepted
    /// connections to [`Server::serve_captured`] instead.
    pub bind_listeners: bool,
    /// Serve the admin interface when the config has one.
    pub admin: bool,
    /// Opens upstream sockets; the default connects from the calling process's netns. The node
    /// agent passes a factory that creates them inside the pod's netns with `SO_MARK`.
    pub connector: Connector,
    /// How long the connections of a removed or re-bound listener may stay open once its drain
    /// starts (Envoy's `--drain-time-s`; [`drain::DEFAULT_DRAIN_TIME`]).
    pub drain_time: Duration,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            bind_listeners: true,
            admin: true,
            connector: Connector::default(),
            drain_time: drain::DEFAULT_DRAIN_TIME,
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config_path", &self.config_path)
            .finish()
    }
}

/// Reads `path` as generic JSON (for /config_dump); `Null` when it can't.
pub fn source_json(path: &std::path::Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_norway::from_str::<serde_json::Value>(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

impl Server {
    /// Builds the first config version, binds every listener and the admin address and starts
    /// serving. `config_path` enables reloads.
    pub async fn start(
        bootstrap: config::Bootstrap,
        source: impl Into<Arc<serde_json::Value>>,
        config_path: Option<PathBuf>,
    ) -> Result<Arc<Self>, ServerError> {
        Self::start_with(bootstrap, source, config_path, StartOptions::default()).await
    }

    /// [`start`](Self::start) with options (e.g. no listener binding for the capture side).
    pub async fn start_with(
        bootstrap: config::Bootstrap,
        source: impl Into<Arc<serde_json::Value>>,
        config_path: Option<PathBuf>,
        opts: StartOptions,
    ) -> Result<Arc<Self>, ServerError> {
        bootstrap.check_references()?;
        let stats = Arc::new(StatsStore::default());
        let rt = Runtime::build(bootstrap, source.into(), &stats, 1, None, &opts.connector)?;
        rt.warm().await;
        let admin = rt.bootstrap.admin.clone();
        let ready = rt.bootstrap.dynamic_resources.is_none();
        let server = Arc::new(Self {
            current: ArcSwap::from_pointee(rt),
            stats,
            bound: Mutex::new(HashMap::new()),
            config_path,
            reload_lock: tokio::sync::Mutex::new(()),
            bind_listeners: opts.bind_listeners,
            connector: opts.connector.clone(),
            ready: std::sync::atomic::AtomicBool::new(ready),
            xds_status: std::sync::OnceLock::new(),
            drain_time: opts.drain_time,
        });
        server.reconcile_listeners().await?;
        if let Some(a) = admin.filter(|_| opts.admin) {
            let l = tokio::net::TcpListener::bind(a.address)
                .await
                .map_err(|source| ServerError::Bind {
                    listener: "admin".into(),
                    addr: a.address,
                    source,
                })?;
            tokio::spawn(crate::admin::serve(l, server.clone()));
        }
        Ok(server)
    }

    /// Marks the server initialized (`/ready` 200); the xDS client calls it once the first
    /// complete configuration is applied.
    pub fn set_ready(&self, ready: bool) {
        self.ready
            .store(ready, std::sync::atomic::Ordering::Release);
    }

    /// Registers what admin `/xds_status` prints (the xDS client's state; first call wins).
    pub fn set_xds_status(&self, provider: crate::admin::StatusProvider) {
        let _ = self.xds_status.set(provider);
    }

    /// The registered `/xds_status` provider, if an xDS client drives this server.
    pub fn xds_status(&self) -> Option<&crate::admin::StatusProvider> {
        self.xds_status.get()
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current config version.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Serves a connection the capture side accepted (the node agent's or a sidecar's 15001 /
    /// 15006) as listener `listener` would. The caller already knows the original destination
    /// (`orig_dst`, from SO_ORIGINAL_DST or the socket's local address under sk_lookup) and runs
    /// this inside its own per-connection span; the engine adds neither a second lookup nor a
    /// second span, and reports the bytes each way and upstream failures to `observer` (the
    /// capture listener's counters). Returns when the connection is done.
    pub async fn serve_captured(
        self: &Arc<Self>,
        listener: &str,
        stream: TcpStream,
        orig_dst: SocketAddr,
        observer: Arc<dyn ConnObserver>,
    ) -> Result<(), listener::ServeError> {
        let slot = {
            let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
            bound.get(listener).map(|b| b.slot.clone())
        };
        let slot = slot.ok_or_else(|| listener::ServeError::NoListener(listener.to_string()))?;
        listener::serve_captured(self.clone(), slot, stream, orig_dst, observer).await;
        Ok(())
    }

    /// Stops accepting on the named listeners (admin `/drain_listeners`): their accept loops
    /// end and their sockets close; open connections run to their end. Returns how many
    /// listeners stopped.
    pub fn stop_accepting(&self, names: &[String]) -> usize {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for (name, b) in bound.iter_mut() {
            if names.contains(name) && !b.tasks.is_empty() {
                for t in &b.tasks {
                    t.abort();
                }
                // The sockets close once the aborted loops let go of them too.
                b.sockets.clear();
                n += 1;
            }
        }
        n
    }

    /// The slot of the listener bound at `addr`, if any (original-destination hand-off).
    pub(crate) fn slot_for_addr(&self, addr: SocketAddr) -> Option<Arc<ListenerSlot>> {
        let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound
            .values()
            .find(|b| b.addrs.contains(&addr))
            .or_else(|| {
                // A wildcard of the destination's family first (a dual-stack listener pair
                // binds `0.0.0.0` and `::` of one port), else one of the other family.
                let wildcard = |same_family: bool| {
                    bound.values().find(move |b| {
                        b.addrs.iter().any(|a| {
                            a.ip().is_unspecified()
                                && a.port() == addr.port()
                                && (!same_family || a.is_ipv4() == addr.is_ipv4())
                        })
                    })
                };
                wildcard(true).or_else(|| wildcard(false))
            })
            .map(|b| b.slot.clone())
    }

    fn binds(&self, l: &ListenerRt) -> bool {
        self.bind_listeners && l.cfg.bind_to_port
    }

    /// Binds new listeners, drops removed ones, and points existing ones at the current version.
    /// A listener whose addresses changed is re-bound; an address it keeps (or one a removed
    /// listener had) hands its socket over instead of being bound anew, so no connection is
    /// refused in between. All or nothing: when a new address cannot be bound, nothing changes.
    /// A dropped listener (removed or re-bound) drains its open connections (module `drain`);
    /// one updated in place keeps them, and they pick up the new version per request.
    async fn reconcile_listeners(self: &Arc<Self>) -> Result<(), ServerError> {
        let rt = self.runtime();
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        let kept = |name: &String, b: &Bound| {
            rt.listeners.get(name).is_some_and(|l| {
                l.cfg.addresses().eq(b.addrs.iter().copied()) && self.binds(l) != b.tasks.is_empty()
            })
        };
        let gone: Vec<String> = bound
            .iter()
            .filter(|(name, b)| !kept(name, b))
            .map(|(name, _)| name.clone())
            .collect();
        // The sockets the listeners that go would close, by address.
        let handed: HashMap<SocketAddr, Arc<tokio::net::TcpListener>> = gone
            .iter()
            .flat_map(|n| bound[n].sockets.iter().cloned())
            .collect();
        // Every socket the new listeners need, before anything changes.
        let mut starting = Vec::new();
        for (name, l) in &rt.listeners {
            if bound.contains_key(name) && !gone.contains(name) {
                continue;
            }
            let mut sockets = Vec::new();
            if self.binds(l) {
                for addr in l.cfg.addresses() {
                    let tcp = match handed.get(&addr) {
                        Some(tcp) => tcp.clone(),
                        None => {
                            Arc::new(listener::bind(addr).map_err(|source| ServerError::Bind {
                                listener: name.clone(),
                                addr,
                                source,
                            })?)
                        }
                    };
                    sockets.push((addr, tcp));
                }
            }
            starting.push((name.clone(), l.clone(), sockets));
        }
        for name in &gone {
            let Some(b) = bound.remove(name) else {
                continue;
            };
            for t in &b.tasks {
                t.abort();
            }
            b.slot.drain.start(self.drain_time);
            tracing::info!(listener = %name, addrs = ?b.addrs, drain_s = self.drain_time.as_secs(), "listener removed; draining its connections");
        }
        for (name, b) in bound.iter() {
            if let Some(l) = rt.listeners.get(name) {
                b.slot.rt.store(l.clone());
            }
        }
        for (name, l, sockets) in starting {
            let addrs: Vec<SocketAddr> = l.cfg.addresses().collect();
            let slot = Arc::new(ListenerSlot {
                rt: ArcSwap::new(l),
                drain: drain::ListenerDrain::default(),
            });
            let tasks: Vec<_> = sockets
                .iter()
                .map(|(_, tcp)| {
                    tokio::spawn(listener::accept_loop(
                        self.clone(),
                        slot.clone(),
                        tcp.clone(),
                    ))
                })
                .collect();
            tracing::info!(listener = %name, addrs = ?addrs, bound = !tasks.is_empty(), "listener started");
            bound.insert(
                name,
                Bound {
                    addrs,
                    slot,
                    tasks,
                    sockets,
                },
            );
        }
        Ok(())
    }
}

/// Runs `sluice proxy` until SIGINT/SIGTERM (blocking; builds its own tokio runtime).
pub fn run(args: cli::ProxyArgs) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(crate::workers::THREAD_STACK)
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(run_async(args))
}

/// [`run`] inside an existing tokio runtime.
pub async fn run_async(args: cli::ProxyArgs) -> Result<(), ServerError> {
    init_tracing(&args.log_level);
    let (bootstrap, source) = config::load_serving_file(&args.config_path)?;
    let opts = StartOptions {
        drain_time: args.drain_time(),
        ..StartOptions::default()
    };
    let server =
        Server::start_with(bootstrap, source, Some(args.config_path.clone()), opts).await?;
    tracing::info!(config = %args.config_path.display(), "sluice proxy started");
    reload::spawn_watchers(server.clone(), args.reload_poll());
    wait_for_shutdown().await?;
    tracing::info!("sluice proxy shutting down");
    Ok(())
}

/// The proxy's logs (stderr) at `level` (a tracing filter; `info` when it does not parse),
/// changeable at run time through the admin's `POST /logging`.
pub fn init_tracing(level: &str) {
    crate::admin::logging::init(level);
}

/// Returns on SIGINT or SIGTERM.
pub async fn wait_for_shutdown() -> Result<(), ServerError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServerError::Runtime)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
