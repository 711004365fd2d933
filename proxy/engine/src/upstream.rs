//! Cluster manager: the running clusters, their hosts, load balancing, pools and host health.
//!
//! A [`Cluster`] is built once per configuration version from a [`ClusterSpec`] (the runtime view of
//! a validated config cluster) and shared as an `Arc` by every request routed to it; requests hold
//! the `Arc` so a reload never pulls a cluster from under an in-flight request.

mod breaker_gauges;
pub mod connector;
pub mod edf;
pub mod from_config;
pub mod health;
mod host_removal;
pub mod lb;
pub mod locality;
pub mod outlier;
pub mod pool;
pub mod priority;
pub mod proxied_pools;
pub mod resources;
pub mod slow_start;
pub mod sockopts;
pub mod spec;
pub mod success_rate;
pub mod tls;
pub mod transport_options;
pub mod xxhash;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

pub use crate::config::EndpointHealth;
use crate::config::{ByPriority, RoutingPriority};

pub use self::spec::{
    Breakers, ClusterSpec, Discovery, EndpointSpec, HealthCheckSpec, LbKind, OutlierSpec, TlsSpec,
};
use crate::server::stats::{ClusterStats, StatsStore};

/// Errors raised while building clusters from their specs.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A TLS file (CA, certificate or key) could not be read or parsed.
    #[error("cluster {cluster}: tls {what} {path}: {reason}")]
    TlsFile {
        /// Cluster name.
        cluster: String,
        /// Which file: trusted_ca, certificate_chain, private_key.
        what: &'static str,
        /// File path.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// The rustls configuration could not be built.
    #[error("cluster {cluster}: tls config: {reason}")]
    Tls {
        /// Cluster name.
        cluster: String,
        /// Why it failed.
        reason: String,
    },
}

/// A host's connection pool for a request ([`Host::pool_for`]).
pub enum PoolRef<'a> {
    /// The priority's own pool.
    Own(&'a pool::HostPool<RequestBody>),
    /// The pool of the request's transport options.
    Keyed(Arc<pool::HostPool<RequestBody>>),
}

impl std::ops::Deref for PoolRef<'_> {
    type Target = pool::HostPool<RequestBody>;
    fn deref(&self) -> &Self::Target {
        match self {
            PoolRef::Own(p) => p,
            PoolRef::Keyed(p) => p,
        }
    }
}

/// The request body the cluster's pools carry: any body, boxed (the HTTP connection manager's
/// bodies are of this type).
pub type RequestBody = http_body_util::combinators::BoxBody<bytes::Bytes, pool::BoxError>;

/// Process-relative monotonic milliseconds (for lock-free timestamps in atomics).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One upstream endpoint with its health state and connection pool.
#[derive(Debug)]
pub struct Host {
    /// Address connected to.
    pub addr: SocketAddr,
    /// Load-balancing weight (>= 1).
    pub weight: u32,
    /// False while active health checking says the host is unhealthy.
    pub hc_healthy: AtomicBool,
    /// Failed its active health checks, the last one by timing out (`/active_hc_timeout`).
    pub hc_timeout: AtomicBool,
    /// Since when the host is healthy ([`now_ms`]): made, or passed its health check after
    /// failing (Envoy's `lastHcPassTime`, where a slow start window begins).
    pub healthy_since: AtomicU64,
    /// Outlier ejection end, in [`now_ms`] units; 0 when not ejected.
    pub ejected_until: AtomicU64,
    /// Envoy's ejection time backoff: grows by one per ejection, shrinks by one per outlier
    /// sweep that finds the host in service (multiplies `base_ejection_time`).
    pub eject_backoff: AtomicU32,
    /// Consecutive 5xx (and, unless split, local-origin failures) seen, for outlier detection.
    pub consecutive_5xx: AtomicU32,
    /// Consecutive gateway errors (502, 503, 504; unless split, local-origin failures).
    pub consecutive_gateway: AtomicU32,
    /// Consecutive local-origin failures (`split_external_local_origin_errors`).
    pub consecutive_local: AtomicU32,
    /// Requests and successes since the last outlier sweep (success-rate ejection).
    pub sr_external: success_rate::SuccessRate,
    /// The same for local-origin results (`split_external_local_origin_errors`).
    pub sr_local: success_rate::SuccessRate,
    /// Requests in flight to this host (least-request balancing).
    pub active_rq: AtomicUsize,
    /// Requests sent to this host.
    pub rq_total: AtomicU64,
    /// Requests that got a 5xx or failed locally.
    pub rq_error: AtomicU64,
    /// Last time an ORIGINAL_DST request picked this host ([`now_ms`]).
    pub last_used: AtomicU64,
    /// Service discovery dropped it but it passes its health checks: it stays until one fails
    /// (Envoy's `pending_dynamic_removal`, `upstream/host_removal.rs`).
    pub pending_removal: AtomicBool,
    /// The DEFAULT priority's connection pool.
    pool: pool::HostPool<RequestBody>,
    /// The HIGH priority's, made by the first HIGH request to the host: Envoy keys a host's
    /// pools by priority, so the two never share a connection.
    high_pool: OnceLock<pool::HostPool<RequestBody>>,
    /// The pools of requests with transport options ([`Host::pool_for`]), made as they come.
    keyed: arc_swap::ArcSwapOption<Vec<Arc<pool::HostPool<RequestBody>>>>,
    /// The pools of requests whose connections state a downstream in a PROXY header.
    proxied: proxied_pools::ProxiedPools,
    /// The name `auto_host_rewrite` puts in the Host (endpoint `hostname`, or the STRICT_DNS
    /// name); None keeps the request's Host.
    pub hostname: Option<Arc<str>>,
    /// Its transport socket ([`Cluster::tls`]: the cluster's, or a `transport_socket_matches`
    /// entry's).
    pub transport: u8,
    /// Its endpoint's `health_check_config`: the health checks' address and host name, or no
    /// checks at all.
    pub health_check: Option<Arc<crate::config::EndpointHealthCheck>>,
}

impl Host {
    /// A host of the cluster's own transport without metadata (tests).
    #[cfg(test)]
    fn new(addr: SocketAddr, weight: u32) -> Arc<Self> {
        Self::of(&HostEntry {
            addr,
            weight,
            hostname: None,
            transport: 0,
            meta: HostMeta::default(),
            health_check: None,
        })
    }

    /// Where its health checks go (its endpoint's `health_check_config` address and port, else
    /// its own address).
    pub fn health_check_addr(&self) -> SocketAddr {
        self.health_check
            .as_ref()
            .map_or(self.addr, |h| h.target(self.addr))
    }

    /// Its endpoint's `disable_active_health_check`: the health checker leaves it alone.
    pub fn unchecked(&self) -> bool {
        self.health_check.as_ref().is_some_and(|h| h.disabled)
    }

    /// A new host for `e`.
    fn of(e: &HostEntry) -> Arc<Self> {
        let (addr, weight, transport) = (e.addr, e.weight, e.transport);
        Arc::new(Self {
            hostname: e.hostname.clone(),
            health_check: e.health_check.clone(),
            transport,
            addr,
            weight: weight.max(1),
            hc_healthy: AtomicBool::new(true),
            hc_timeout: AtomicBool::new(false),
            healthy_since: AtomicU64::new(now_ms()),
            ejected_until: AtomicU64::new(0),
            eject_backoff: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            sr_external: success_rate::SuccessRate::default(),
            sr_local: success_rate::SuccessRate::default(),
            active_rq: AtomicUsize::new(0),
            rq_total: AtomicU64::new(0),
            rq_error: AtomicU64::new(0),
            last_used: AtomicU64::new(now_ms()),
            pending_removal: AtomicBool::new(false),
            pool: pool::HostPool::new(RoutingPriority::Default, transport),
            high_pool: OnceLock::new(),
            keyed: arc_swap::ArcSwapOption::empty(),
            proxied: proxied_pools::ProxiedPools::default(),
        })
    }

    /// The connection pool of requests of priority `p`.
    pub fn pool(&self, p: RoutingPriority) -> &pool::HostPool<RequestBody> {
        match p {
            RoutingPriority::Default => &self.pool,
            RoutingPriority::High => self
                .high_pool
                .get_or_init(|| pool::HostPool::new(RoutingPriority::High, self.transport)),
        }
    }

    /// The connection pool of requests of priority `p` with transport options `o`: the
    /// priority's own pool without options the host's transport uses (TLS ones on a plaintext
    /// host change nothing, nor addresses on one sending no PROXY header), else the host's
    /// keyed pool for them, made by the first such request (with addresses to state, one of
    /// [`proxied_pools::ProxiedPools`], uncapped). Past
    /// [`transport_options::MAX_KEYED_POOLS`] keyed pools, those neither in use nor holding a
    /// connection go, else the least recently used one (its connections close once free).
    pub fn pool_for(
        &self,
        p: RoutingPriority,
        o: transport_options::OptionsRef<'_>,
        cluster: &Cluster,
    ) -> PoolRef<'_> {
        let o = o.used_by(
            cluster.tls(self.transport).is_some(),
            cluster.proxy_protocol(self.transport).is_some(),
        );
        if o.is_none() {
            return PoolRef::Own(self.pool(p));
        }
        if let Some(pair) = o.proxy {
            return PoolRef::Keyed(self.proxied.get(p, &o, self.transport, pair));
        }
        let find = |v: &Option<Arc<Vec<Arc<pool::HostPool<RequestBody>>>>>| {
            v.as_deref()
                .and_then(|v| v.iter().find(|x| x.is_for(p, &o)).cloned())
        };
        if let Some(found) = find(&self.keyed.load()) {
            if let Some(k) = found.keyed_transport() {
                k.touch();
            }
            return PoolRef::Keyed(found);
        }
        let new = Arc::new(pool::HostPool::keyed(p, self.transport, o.to_owned()));
        let mut chosen = new.clone();
        self.keyed.rcu(|cur| {
            if let Some(found) = find(cur) {
                chosen = found;
                return cur.clone();
            }
            let mut v: Vec<_> = cur.as_deref().cloned().unwrap_or_default();
            if v.len() >= transport_options::MAX_KEYED_POOLS {
                // In use: held by a request besides this list and its copy here.
                v.retain(|x| Arc::strong_count(x) > 2 || x.holds_connections());
            }
            if v.len() >= transport_options::MAX_KEYED_POOLS {
                let lru = v
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, x)| x.keyed_transport().map_or(0, |k| k.last_used()))
                    .map(|(i, _)| i);
                if let Some(i) = lru {
                    v.swap_remove(i);
                }
            }
            v.push(new.clone());
            chosen = new.clone();
            Some(Arc::new(v))
        });
        PoolRef::Keyed(chosen)
    }

    /// Closes its pools' connections idle for `timeout` or past their
    /// `max_connection_duration` ([`pool::HostPool::drop_idle`]) and lets go of the keyed
    /// pools left without a connection; returns how many connections it closed for being idle.
    pub fn drop_idle(&self, timeout: Option<Duration>) -> u64 {
        let mut closed = 0;
        let mut add = |n: u64| closed += n;
        add(self.pool.drop_idle(timeout));
        if let Some(p) = self.high_pool.get() {
            add(p.drop_idle(timeout));
        }
        add(self.proxied.drop_idle(timeout));
        let keyed = self.keyed.load();
        if let Some(v) = keyed.as_deref() {
            v.iter().for_each(|p| add(p.drop_idle(timeout)));
            if v.iter().any(|p| !p.holds_connections()) {
                self.keyed.rcu(|cur| {
                    // Kept while in use (held by a request besides this list).
                    let v: Vec<_> = cur
                        .as_deref()
                        .into_iter()
                        .flatten()
                        .filter(|p| Arc::strong_count(p) > 1 || p.holds_connections())
                        .cloned()
                        .collect();
                    (!v.is_empty()).then(|| Arc::new(v))
                });
            }
        }
        closed
    }

    /// Whether one of its pools holds a connection ([`pool::HostPool::holds_connections`]).
    pub fn holds_connections(&self) -> bool {
        self.pool.holds_connections()
            || self.high_pool.get().is_some_and(|p| p.holds_connections())
            || self
                .keyed
                .load()
                .as_deref()
                .is_some_and(|v| v.iter().any(|p| p.holds_connections()))
            || self.proxied.holds_connections()
    }

    /// Whether outlier detection currently ejects this host.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Healthy for load balancing: passing health checks and not ejected.
    pub fn is_healthy(&self, now: u64) -> bool {
        self.hc_healthy.load(Ordering::Relaxed) && !self.is_ejected(now)
    }

    /// Envoy's `health_flags` text for /clusters, given the host's `health_status`.
    pub fn health_flags(&self, eds: EndpointHealth) -> String {
        let mut flags = String::new();
        if !self.hc_healthy.load(Ordering::Relaxed) {
            flags.push_str("/failed_active_hc");
        }
        if self.is_ejected(now_ms()) {
            flags.push_str("/failed_outlier_check");
        }
        flags.push_str(match eds {
            EndpointHealth::Unhealthy => "/failed_eds_health",
            EndpointHealth::Degraded => "/degraded_eds_health",
            EndpointHealth::Healthy | EndpointHealth::Draining => "",
        });
        if self.pending_removal.load(Ordering::Relaxed) {
            flags.push_str("/pending_dynamic_removal");
        }
        if self.hc_timeout.load(Ordering::Relaxed) {
            flags.push_str("/active_hc_timeout");
        }
        if eds == EndpointHealth::Draining {
            flags.push_str("/eds_status_draining");
        }
        if flags.is_empty() {
            flags.push_str("healthy");
        }
        flags
    }
}

/// A host set's localities in Envoy's order ([`HostMeta::locality`] indexes it).
pub type Localities = Arc<[crate::config::Locality]>;

/// A host's place in its cluster: its priority level and its `health_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostMeta {
    /// Priority level (0 = highest).
    pub priority: u32,
    /// `health_status` from the config or EDS.
    pub health: EndpointHealth,
    /// Its locality's rank in Envoy's locality order (locality-weighted LB).
    pub locality: u32,
    /// Its locality's weight in its priority (0: none, no traffic with locality-weighted LB).
    pub locality_weight: u32,
    /// Envoy's canary flag (endpoint metadata `envoy.lb`; the admin shows it).
    pub canary: bool,
}

impl HostMeta {
    /// What a configured endpoint says about its place in the cluster.
    fn of(e: &EndpointSpec) -> Self {
        Self {
            priority: e.priority,
            health: e.health,
            locality: e.locality,
            locality_weight: e.locality_weight,
            canary: e.canary,
        }
    }
}

/// One host a cluster should have: what the config or DNS says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// Address connected to.
    pub addr: SocketAddr,
    /// Load-balancing weight.
    pub weight: u32,
    /// The name `auto_host_rewrite` sends.
    pub hostname: Option<Arc<str>>,
    /// Its transport socket (see [`Host::transport`]).
    pub transport: u8,
    /// Priority and health status.
    pub meta: HostMeta,
    /// Its endpoint's `health_check_config` (see [`Host::health_check`]).
    pub health_check: Option<Arc<crate::config::EndpointHealthCheck>>,
}

/// One priority level of a [`HostSet`]: a run of its hosts and the balancer's tables over them.
#[derive(Debug)]
pub struct Level {
    /// Its hosts: `HostSet::hosts[range]`.
    pub range: std::ops::Range<usize>,
    /// Ring, maglev table or round-robin order over the level's hosts whose `health_status` is
    /// healthy (indexes into the level's hosts), when the balancer needs one.
    pub healthy_table: Option<lb::HashTable>,
    /// The same over every host of the level (panic), when some host is not healthy by
    /// `health_status` (otherwise `healthy_table` is it).
    pub all_table: Option<lb::HashTable>,
    /// How many of its hosts are healthy by `health_status`.
    pub eds_healthy: usize,
    /// Its localities, with `locality_weighted_lb_config`.
    pub locality: Option<locality::LocalityLevel>,
}

/// The current host list of a cluster plus the structures the balancer derives from it.
#[derive(Debug, Default)]
pub struct HostSet {
    /// All hosts, by priority, in config order within a priority.
    pub hosts: Vec<Arc<Host>>,
    /// Each host's priority and health status (parallel to `hosts`).
    pub meta: Vec<HostMeta>,
    /// The priority levels present, highest first.
    pub levels: Vec<Level>,
    /// The localities [`HostMeta::locality`] indexes (for the admin's views).
    pub localities: Localities,
}

impl HostSet {
    /// Orders `hosts` into priority levels and builds each level's tables for balancer `kind`
    /// (and its localities when `locality_weighted`).
    pub fn build(
        kind: &LbKind,
        mut hosts: Vec<(Arc<Host>, HostMeta)>,
        locality_weighted: bool,
    ) -> Self {
        hosts.sort_by_key(|(_, m)| m.priority);
        let (hosts, meta): (Vec<_>, Vec<_>) = hosts.into_iter().unzip();
        let mut levels = Vec::new();
        let mut start = 0;
        while start < hosts.len() {
            let prio = meta[start].priority;
            let end = start
                + meta[start..]
                    .iter()
                    .take_while(|m| m.priority == prio)
                    .count();
            let members: Vec<u32> = (start..end)
                .filter(|i| meta[*i].health == EndpointHealth::Healthy)
                .map(|i| (i - start) as u32)
                .collect();
            let level_hosts = &hosts[start..end];
            let picked: Vec<Arc<Host>> = members
                .iter()
                .map(|i| level_hosts[*i as usize].clone())
                .collect();
            let locality =
                locality_weighted.then(|| locality::LocalityLevel::build(&meta[start..end]));
            let some_unhealthy = members.len() < level_hosts.len();
            let (healthy_table, all_table) = match &locality {
                Some(loc) if kind.hashes() => {
                    let healthy = |i: usize| meta[start + i].health == EndpointHealth::Healthy;
                    let table = |take: &dyn Fn(usize) -> bool| {
                        let (m, w) = locality::hashing_weights(loc, level_hosts, take);
                        let hs: Vec<Arc<Host>> =
                            m.iter().map(|i| level_hosts[*i as usize].clone()).collect();
                        lb::HashTable::hashing(kind, &hs, &w).remap(&m)
                    };
                    (
                        Some(table(&healthy)),
                        some_unhealthy.then(|| table(&|_| true)),
                    )
                }
                _ => (
                    lb::HashTable::build(kind, &picked).map(|t| t.remap(&members)),
                    some_unhealthy
                        .then(|| lb::HashTable::build(kind, level_hosts))
                        .flatten(),
                ),
            };
            levels.push(Level {
                range: start..end,
                healthy_table,
                all_table,
                eds_healthy: members.len(),
                locality,
            });
            start = end;
        }
        Self {
            hosts,
            meta,
            levels,
            localities: Arc::from([]),
        }
    }

    /// The hosts as entries (what built them).
    fn entries(&self) -> impl Iterator<Item = HostEntry> + '_ {
        self.hosts.iter().zip(&self.meta).map(|(h, m)| HostEntry {
            addr: h.addr,
            weight: h.weight,
            hostname: h.hostname.clone(),
            transport: h.transport,
            meta: *m,
            health_check: h.health_check.clone(),
        })
    }
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Everything the config said about the cluster.
    pub spec: ClusterSpec,
    /// Current hosts (swapped by DNS refresh).
    pub hosts: ArcSwap<HostSet>,
    /// Held by whoever replaces `hosts` (discovery, health checking), so no update is lost.
    host_writer: Mutex<()>,
    /// ORIGINAL_DST hosts created on demand, keyed by destination.
    orig_dst_hosts: Mutex<HashMap<SocketAddr, Arc<Host>>>,
    /// TLS origination of each transport socket (`[0]` the cluster's `transport_socket`,
    /// `[i + 1]` `transport_socket_matches[i]`'s; `None`: plaintext).
    transports: Box<[Option<tls::TlsOrigin>]>,
    /// Counters, shared across config versions.
    pub stats: Arc<ClusterStats>,
    /// Round-robin cursor.
    rr: AtomicUsize,
    /// Circuit-breaker counts of each routing priority (a route's `priority` picks one).
    pub resources: ByPriority<resources::Resources>,
    /// Opens this cluster's upstream sockets (the capture side's netns/mark hook).
    pub connector: connector::Connector,
    /// True once the first STRICT_DNS resolution is done (always true for other types).
    dns_ready: tokio::sync::watch::Sender<bool>,
    /// True once every host has had its first active health check (true without health
    /// checks).
    hc_ready: tokio::sync::watch::Sender<bool>,
    /// Counts host set changes: the health checker checks a new host at once.
    host_changes: tokio::sync::watch::Sender<u64>,
    /// When the cluster was built ([`now_ms`]): Envoy's outlier sweeps run every `interval`
    /// from then, and an ejected host returns at a sweep.
    pub outlier_epoch_ms: u64,
    /// The success-rate sweeps evaluated so far and what the last found.
    pub outlier_sweeps: success_rate::Sweeps,
}

/// How the request asks for a host: a hash for hash balancers, the original destination for
/// ORIGINAL_DST clusters.
#[derive(Debug, Clone, Copy, Default)]
pub struct LbContext {
    /// Hash computed from the route's hash_policy (None: no policy matched).
    pub hash: Option<u64>,
    /// Original destination of the downstream connection.
    pub orig_dst: Option<SocketAddr>,
}

impl Cluster {
    /// The TLS origination of a host's `transport` (`None`: plaintext).
    pub fn tls(&self, transport: u8) -> Option<&tls::TlsOrigin> {
        self.transports
            .get(usize::from(transport))
            .and_then(Option::as_ref)
    }

    /// The PROXY header version a host's `transport` starts its connections with, if any.
    pub fn proxy_protocol(&self, transport: u8) -> Option<crate::proxy_protocol::Version> {
        self.spec
            .proxy_protocol
            .get(usize::from(transport))
            .copied()
            .flatten()
    }

    /// Connects to `addr` over its `transport` (no timeout: callers wrap it in theirs); an
    /// `upstream_proxy_protocol` transport starts the connection with a PROXY header, before
    /// any TLS, stating `downstream` (source, destination), else (none: a health check's or a
    /// mirror's connection) its own addresses (v1) or LOCAL (v2), as Envoy.
    pub async fn connect_transport(
        &self,
        addr: SocketAddr,
        transport: u8,
        downstream: Option<(SocketAddr, SocketAddr)>,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let mut tcp = self.connector.connect(addr).await?;
        if let Some(version) = self.proxy_protocol(transport) {
            let own = (tcp.local_addr()?, addr);
            let header = crate::proxy_protocol::encode::header(version, downstream, own);
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &header).await?;
        }
        Ok(tcp)
    }

    /// Builds a cluster and starts its background tasks (DNS, health checks), which stop once the
    /// cluster is dropped.
    pub fn build(spec: ClusterSpec, stats: &StatsStore) -> Result<Arc<Self>, UpstreamError> {
        Self::build_with(spec, stats, connector::Connector::default())
    }

    /// [`build`](Self::build) with the connector that opens its upstream sockets.
    pub fn build_with(
        spec: ClusterSpec,
        stats: &StatsStore,
        connector: connector::Connector,
    ) -> Result<Arc<Self>, UpstreamError> {
        let connector = match spec.options.source_address {
            Some(src) => connector.bound_to(src, spec.options.extra_source_address),
            None => connector,
        };
        let tls = std::iter::once(&spec.tls)
            .chain(&spec.tls_matches)
            .map(|t| match t {
                Some(t) => tls::TlsOrigin::build(&spec.name, t, spec.http2).map(Some),
                None => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let hosts = match &spec.discovery {
            Discovery::Static(eps) => static_addrs(eps).map(|e| (Host::of(&e), e.meta)).collect(),
            Discovery::StrictDns { .. } | Discovery::OriginalDst => Vec::new(),
        };
        let mut set = HostSet::build(&spec.lb, hosts, spec.options.locality_weighted_lb);
        set.localities = spec.localities.clone();
        let spec_discovery_is_dns = matches!(spec.discovery, Discovery::StrictDns { .. });
        let has_hc = spec.health_check.is_some();
        let resources = spec.breakers.map(|b| resources::Resources::new(*b));
        let cluster = Arc::new(Self {
            stats: stats.cluster(spec.observability_name()),
            spec,
            hosts: ArcSwap::from_pointee(set),
            host_writer: Mutex::new(()),
            orig_dst_hosts: Mutex::new(HashMap::new()),
            transports: tls,
            rr: AtomicUsize::new(0),
            resources,
            connector,
            dns_ready: tokio::sync::watch::Sender::new(!spec_discovery_is_dns),
            hc_ready: tokio::sync::watch::Sender::new(!has_hc),
            host_changes: tokio::sync::watch::Sender::new(0),
            outlier_epoch_ms: now_ms(),
            outlier_sweeps: success_rate::Sweeps::default(),
        });
        let gauges: Arc<dyn crate::server::stats::Gauges> = cluster.clone();
        stats.add_cluster_gauges(cluster.spec.observability_name(), Arc::downgrade(&gauges));
        if let Discovery::StrictDns { refresh, .. } = &cluster.spec.discovery {
            let failure = cluster.spec.options.dns_failure_refresh;
            let jitter = cluster.spec.options.dns_jitter;
            tokio::spawn(dns_loop(
                Arc::downgrade(&cluster),
                *refresh,
                jitter,
                failure,
            ));
        }
        // Built outside a runtime (a config check), a cluster has no pool traffic to sweep.
        let o = &cluster.spec.options;
        let (idle, max) = (o.upstream_idle_timeout, o.upstream_max_connection_duration);
        if let (Some(every), Ok(rt)) = (
            idle.into_iter().chain(max).min(),
            tokio::runtime::Handle::try_current(),
        ) {
            rt.spawn(idle_sweep(Arc::downgrade(&cluster), idle, every));
        }
        if matches!(cluster.spec.discovery, Discovery::OriginalDst) {
            let every = cluster.spec.options.original_dst_cleanup;
            tokio::spawn(orig_dst_cleanup(Arc::downgrade(&cluster), every));
        }
        if let Some(hc) = cluster.spec.health_check.clone() {
            tokio::spawn(health::run(Arc::downgrade(&cluster), hc));
        }
        Ok(cluster)
    }

    /// Picks a host, or None when the cluster has no usable host (503 UH).
    pub fn choose_host(&self, ctx: &LbContext) -> Option<Arc<Host>> {
        if matches!(self.spec.discovery, Discovery::OriginalDst) {
            let mut dst = ctx.orig_dst?;
            // `upstream_port_override` wins over the connection's and the header's port.
            if let Some(port) = self.spec.orig_dst_port {
                dst.set_port(port);
            }
            let mut map = self
                .orig_dst_hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // A host made on demand has no metadata: the transport an endpoint without any
            // gets (an empty `match`, else the cluster's).
            let transport = self.spec.bare_transport;
            let host = map.entry(dst).or_insert_with(|| {
                Host::of(&HostEntry {
                    addr: dst,
                    weight: 1,
                    hostname: None,
                    transport,
                    meta: HostMeta::default(),
                    health_check: None,
                })
            });
            return Some(host.clone());
        }
        // A success-rate sweep that is due ejects before this choice, as Envoy's timer would.
        if let Some(o) = &self.spec.outlier {
            success_rate::sweep_if_due(self, o, now_ms());
        }
        let set = self.hosts.load();
        lb::choose(&self.spec.lb, &set, &self.rr, ctx, &self.spec.options)
    }

    /// Every host currently known with its priority and health status (original-destination
    /// hosts are priority 0, healthy).
    pub fn hosts_with_meta(&self) -> Vec<(Arc<Host>, HostMeta)> {
        self.hosts_view().0
    }

    /// [`hosts_with_meta`](Self::hosts_with_meta) with the localities their
    /// [`HostMeta::locality`] indexes, from one host set.
    pub fn hosts_view(&self) -> (Vec<(Arc<Host>, HostMeta)>, Localities) {
        let set = self.hosts.load();
        let mut v: Vec<(Arc<Host>, HostMeta)> = set
            .hosts
            .iter()
            .cloned()
            .zip(set.meta.iter().copied())
            .collect();
        if matches!(self.spec.discovery, Discovery::OriginalDst) {
            let map = self
                .orig_dst_hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            v.extend(map.values().map(|h| (h.clone(), HostMeta::default())));
        }
        (v, set.localities.clone())
    }

    /// Every host currently known (static, resolved or original-destination ones).
    pub fn all_hosts(&self) -> Vec<Arc<Host>> {
        self.hosts_with_meta().into_iter().map(|(h, _)| h).collect()
    }

    /// Records a finished attempt's result for outlier detection.
    pub fn record_outcome(&self, host: &Host, result: outlier::HostResult) {
        if result.failed() {
            host.rq_error.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(o) = &self.spec.outlier {
            outlier::record(self, o, host, result);
        }
    }

    /// Whether its hosts are its config's endpoints (STATIC, EDS), so an endpoint-only update can
    /// replace them in place ([`replace_endpoints`](Self::replace_endpoints)).
    pub fn takes_endpoint_updates(&self) -> bool {
        matches!(self.spec.discovery, Discovery::Static(_))
    }

    /// An endpoint-only update (EDS): the hosts of `spec`'s static endpoints replace the current
    /// ones, keeping hosts (pools, health, outlier state) that did not change.
    pub fn replace_endpoints(&self, spec: &ClusterSpec) {
        if let Discovery::Static(eps) = &spec.discovery {
            self.set_hosts(static_addrs(eps).collect(), &spec.localities);
        }
    }

    /// Replaces the host list (DNS refresh, EDS), keeping hosts (and their pools, health and
    /// outlier state) whose address, weight and host name did not change, whatever their
    /// priority or health status now.
    fn set_hosts(&self, mut entries: Vec<HostEntry>, localities: &Localities) {
        entries.sort_by_key(|e| e.meta.priority);
        let _writer = self.host_writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.hosts.load();
        if old.hosts.len() == entries.len()
            && old.entries().eq(entries.iter().cloned())
            && old.localities == *localities
        {
            return;
        }
        // Envoy's order: the update's hosts, then the dropped ones that stay.
        let kept = self.dropped_but_kept(&old, &entries);
        let checked = self.spec.health_check.as_ref();
        let mut hosts: Vec<(Arc<Host>, HostMeta)> = Vec::with_capacity(entries.len() + kept.len());
        hosts.extend(entries.into_iter().map(|e| {
            let host = old
                .hosts
                .iter()
                .find(|h| {
                    h.addr == e.addr
                        && h.weight == e.weight
                        && h.hostname == e.hostname
                        && h.transport == e.transport
                        // Envoy refuses the in-place update only with a health checker.
                        && (checked.is_none() || h.health_check == e.health_check)
                })
                .cloned()
                .unwrap_or_else(|| Host::of(&e));
            host.pending_removal.store(false, Ordering::Relaxed);
            (host, e.meta)
        }));
        hosts.extend(kept);
        self.store_hosts(hosts, localities.clone());
    }

    /// Builds the balancer's tables over `hosts` and makes them current (the caller holds
    /// `host_writer`).
    fn store_hosts(&self, hosts: Vec<(Arc<Host>, HostMeta)>, localities: Localities) {
        let mut set = HostSet::build(&self.spec.lb, hosts, self.spec.options.locality_weighted_lb);
        set.localities = localities;
        self.hosts.store(Arc::new(set));
        self.host_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever the host set does.
    pub(crate) fn host_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.host_changes.subscribe()
    }
}

/// The static endpoints with an IP literal.
fn static_addrs(eps: &[EndpointSpec]) -> impl Iterator<Item = HostEntry> + '_ {
    eps.iter().filter_map(|e| {
        e.host.parse::<std::net::IpAddr>().ok().map(|ip| HostEntry {
            addr: SocketAddr::new(ip, e.port),
            weight: e.weight,
            hostname: e.hostname.as_deref().map(Arc::from),
            transport: e.transport,
            meta: HostMeta::of(e),
            health_check: e.health_check.clone(),
        })
    })
}

/// The upstream `idle_timeout`: a sweep every quarter of it (at least 50 ms) closes the pooled
/// connections idle for the whole timeout, so an idle connection closes within 1.25 times it
/// (Envoy's per-connection timer closes it at the timeout); a connection is never used past
/// it either way ([`pool::HostPool`] checks on take).
async fn idle_sweep(cluster: Weak<Cluster>, timeout: Option<Duration>, shortest: Duration) {
    let every = (shortest / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = cluster.upgrade() else { return };
        let closed: u64 = c.all_hosts().iter().map(|h| h.drop_idle(timeout)).sum();
        c.stats.upstream_cx_idle_timeout.add(closed);
    }
}

/// ORIGINAL_DST: every `interval` (`cleanup_interval`), drops the hosts no request has used
/// since the last sweep and no connection pool holds (Envoy's cleanup with
/// `original_dst_rely_on_idle_timeout`: a host with a kept-alive connection stays until the
/// connection closes, at the upstream idle timeout at the latest).
async fn orig_dst_cleanup(cluster: Weak<Cluster>, interval: Duration) {
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    loop {
        // tokio clamps a far deadline (istiod's inbound clusters set about 292 years).
        tokio::time::sleep(interval).await;
        let Some(c) = cluster.upgrade() else { return };
        let mut map = c.orig_dst_hosts.lock().unwrap_or_else(|e| e.into_inner());
        let cutoff = now_ms().saturating_sub(interval_ms);
        map.retain(|_, h| {
            h.last_used.load(Ordering::Relaxed) > cutoff
                || Arc::strong_count(h) > 1
                || h.holds_connections()
        });
    }
}

/// STRICT_DNS / LOGICAL_DNS: resolves at once (awaited by [`Cluster::warm`]), then every
/// `refresh` plus a random share of `jitter` (`dns_jitter`) after a success; after a failed
/// resolution `refresh` alone, or, with
/// `dns_failure_refresh_rate` (`failure`: base, max), after a backoff doubling from the base up
/// to the max (Envoy's failure refresh).
async fn dns_loop(
    cluster: Weak<Cluster>,
    refresh: Duration,
    jitter: Option<Duration>,
    failure: Option<(Duration, Duration)>,
) {
    let mut backoff = None;
    loop {
        let ok = {
            let Some(c) = cluster.upgrade() else { return };
            let ok = c.resolve().await;
            c.dns_ready.send_replace(true);
            ok
        };
        let wait = match (ok, failure) {
            (false, Some((base, max))) => {
                let next = backoff.map_or(base, |b: Duration| (b * 2).min(max));
                backoff = Some(next);
                next
            }
            // A failure without a failure rate: the refresh rate, without jitter (Envoy's fixed
            // back-off).
            (false, None) => refresh,
            (true, _) => {
                backoff = None;
                // Envoy: a uniform random delay below the jitter, in milliseconds.
                let extra = jitter.map_or(0, |j| {
                    let below = u64::try_from(j.as_millis()).unwrap_or(u64::MAX).max(1);
                    rand::Rng::gen_range(&mut rand::thread_rng(), 0..below)
                });
                refresh + Duration::from_millis(extra)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

impl Cluster {
    /// Initial host discovery before the cluster takes traffic (Envoy's cluster warming):
    /// the first STRICT_DNS resolution (bounded by [`DNS_WARM_TIMEOUT`]), then the first active
    /// health-check round (bounded by the check's timeout plus [`HC_WARM_MARGIN`]).
    pub async fn warm(&self) {
        let mut dns = self.dns_ready.subscribe();
        let _ = tokio::time::timeout(DNS_WARM_TIMEOUT, dns.wait_for(|v| *v)).await;
        if let Some(hc) = &self.spec.health_check {
            let mut rx = self.hc_ready.subscribe();
            let _ = tokio::time::timeout(hc.timeout + HC_WARM_MARGIN, rx.wait_for(|v| *v)).await;
        }
    }

    /// Waits (bounded by [`DNS_WARM_TIMEOUT`]) for the first STRICT_DNS resolution; the health
    /// checker starts after it so its first round covers the resolved hosts.
    pub(crate) async fn dns_resolved(cluster: &Weak<Self>) {
        let Some(mut rx) = cluster.upgrade().map(|c| c.dns_ready.subscribe()) else {
            return;
        };
        let _ = tokio::time::timeout(DNS_WARM_TIMEOUT, rx.wait_for(|v| *v)).await;
    }

    /// Marks the first health checks done (every host checked once).
    pub(crate) fn health_round_done(&self) {
        self.hc_ready.send_replace(true);
    }

    /// Resolves every STRICT_DNS endpoint; every address returned becomes a host (LOGICAL_DNS:
    /// only the first one). A failed resolution keeps the previous hosts (Envoy keeps the last
    /// good answer). Returns whether every endpoint resolved.
    async fn resolve(&self) -> bool {
        let Discovery::StrictDns {
            endpoints,
            family,
            logical,
            ..
        } = &self.spec.discovery
        else {
            return true;
        };
        let mut ok = true;
        let mut addrs = Vec::new();
        for e in endpoints {
            match tokio::net::lookup_host((e.host.as_str(), e.port)).await {
                Ok(it) => {
                    let mut found: Vec<SocketAddr> = it.collect();
                    family.filter(&mut found);
                    if *logical {
                        found.truncate(1);
                    }
                    let name: Option<Arc<str>> = e.hostname.as_deref().map(Arc::from);
                    for a in found {
                        if !addrs.iter().any(|x: &HostEntry| x.addr == a) {
                            addrs.push(HostEntry {
                                addr: a,
                                weight: e.weight,
                                hostname: name.clone(),
                                transport: e.transport,
                                meta: HostMeta::of(e),
                                health_check: e.health_check.clone(),
                            });
                        }
                    }
                }
                Err(err) => {
                    ok = false;
                    tracing::warn!(cluster = %self.spec.name, host = %e.host, error = %err, "dns resolution failed")
                }
            }
        }
        if !addrs.is_empty() || endpoints.is_empty() {
            self.set_hosts(addrs, &self.spec.localities);
        }
        ok
    }
}

/// Bound on the initial STRICT_DNS resolution of a new config version.
pub const DNS_WARM_TIMEOUT: Duration = Duration::from_secs(5);
/// Added to the health check `timeout` to bound the wait for the first health-check round.
pub const HC_WARM_MARGIN: Duration = Duration::from_millis(500);

#[cfg(test)]
#[path = "upstream/original_dst_tests.rs"]
mod original_dst_tests;

#[cfg(test)]
#[path = "upstream/keyed_pool_tests.rs"]
mod keyed_pool_tests;
