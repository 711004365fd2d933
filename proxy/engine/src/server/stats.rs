//! Counters with Envoy's names, kept across config reloads (looked up by name at build time only).

mod prometheus;
mod route;

pub use route::RouteStats;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
};

/// Gauges read from live state when stats are rendered (nothing updated on the hot path).
pub trait Gauges: Send + Sync + std::fmt::Debug {
    /// Inserts `<prefix>.<stat> -> value` for each gauge.
    fn render_gauges(&self, prefix: &str, out: &mut BTreeMap<String, u64>);
}

/// A monotonically increasing counter (or a gauge when `dec` is used).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one (gauges).
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! stat_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fm])* pub $field: Counter,)*
        }
        impl $name {
            fn render(&self, prefix: &str, out: &mut BTreeMap<String, u64>) {
                $(out.insert(format!("{prefix}.{}", stringify!($field)), self.$field.get());)*
            }
        }
    };
}

stat_struct!(
    /// `cluster.<name>.*`
    ClusterStats {
        /// Requests sent upstream (attempts).
        upstream_rq_total,
        /// Upstream 2xx responses.
        upstream_rq_2xx,
        /// Upstream 3xx responses.
        upstream_rq_3xx,
        /// Upstream 4xx responses.
        upstream_rq_4xx,
        /// Upstream 5xx responses.
        upstream_rq_5xx,
        /// Attempts that hit per_try_timeout or the route timeout.
        upstream_rq_timeout,
        /// Attempts reset by per_try_idle_timeout.
        upstream_rq_per_try_idle_timeout,
        /// Retries performed.
        upstream_rq_retry,
        /// Requests refused by max_requests/max_pending_requests.
        upstream_rq_pending_overflow,
        /// Retries refused by max_retries.
        upstream_rq_retry_overflow,
        /// Requests whose body outgrew the buffer limit: no retry or redirect then.
        retry_or_shadow_abandoned,
        /// Connections opened.
        upstream_cx_total,
        /// Connections currently open (gauge).
        upstream_cx_active,
        /// Connection attempts that failed.
        upstream_cx_connect_fail,
        /// Connection attempts that timed out.
        upstream_cx_connect_timeout,
        /// Pooled connections closed by the cluster's `idle_timeout`.
        upstream_cx_idle_timeout,
        /// Connections closed by the cluster's `max_connection_duration`.
        upstream_cx_max_duration_reached,
        /// Requests that found no healthy host.
        upstream_cx_none_healthy,
        /// Outlier ejections (outlier_detection.ejections_enforced_total).
        outlier_ejections,
        /// Health checks that passed.
        health_check_success,
        /// Health checks that failed.
        health_check_failure,
        /// Health checks started.
        health_check_attempt,
        /// Health checks that failed for no answer (a failed connect, a broken connection, a
        /// timeout).
        health_check_network_failure,
        /// Passing answers checked against a `service_name_matcher`.
        health_check_verify_cluster,
    }
);

impl ClusterStats {
    /// The counters as `.stat -> value`, but the health checker's and outlier detection's:
    /// those go with the cluster's gauges (`upstream/health/stats.rs`), as they exist only with
    /// a checker or outlier detection.
    fn render_counters(&self, out: &mut BTreeMap<String, u64>) {
        self.render("", out);
        out.retain(|k, _| !k.starts_with(".health_check_") && k != ".outlier_ejections");
    }
}

stat_struct!(
    /// `http.<stat_prefix>.*`
    HttpStats {
        /// Requests received.
        downstream_rq_total,
        /// 2xx responses sent.
        downstream_rq_2xx,
        /// 3xx responses sent.
        downstream_rq_3xx,
        /// 4xx responses sent.
        downstream_rq_4xx,
        /// 5xx responses sent.
        downstream_rq_5xx,
        /// Connections accepted.
        downstream_cx_total,
        /// Requests with no route (404 NR).
        no_route,
        /// Requests upgraded (WebSocket).
        downstream_cx_upgrades_total,
    }
);

stat_struct!(
    /// `tcp.<stat_prefix>.*`
    TcpStats {
        /// Connections proxied.
        downstream_cx_total,
        /// Connections closed because their cluster does not exist (Envoy's `NC`).
        downstream_cx_no_route,
        /// Connections closed for idleness.
        idle_timeout,
        /// Connections closed at `max_downstream_connection_duration`.
        max_downstream_connection_duration,
        /// Bytes from downstream.
        downstream_cx_rx_bytes_total,
        /// Bytes to downstream.
        downstream_cx_tx_bytes_total,
    }
);

/// HTTP filter counters by (HCM stat prefix, name).
type FilterCounters = BTreeMap<(String, String), DynCounter>;

/// A counter named at run time (a filter's). A lazy one is shown once it counted, as Envoy
/// creates such counters on first use; one also asked for eagerly is always shown.
#[derive(Debug)]
struct DynCounter {
    counter: Arc<Counter>,
    lazy: bool,
}

impl DynCounter {
    /// Its value, when it is shown.
    fn shown(&self) -> Option<u64> {
        let v = self.counter.get();
        (v > 0 || !self.lazy).then_some(v)
    }
}

/// The counter under `key` in `map` (created on first use).
fn dyn_counter<K: Ord>(map: &Mutex<BTreeMap<K, DynCounter>>, key: K, lazy: bool) -> Arc<Counter> {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    let e = m.entry(key).or_insert_with(|| DynCounter {
        counter: Arc::default(),
        lazy,
    });
    e.lazy &= lazy;
    e.counter.clone()
}

/// Every named stats block, shared by all config versions.
#[derive(Debug, Default)]
pub struct StatsStore {
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    http: Mutex<BTreeMap<String, Arc<HttpStats>>>,
    /// Counters of an HCM's filters (`http.<stat_prefix>.<name>`, e.g. `rbac.allowed`), by
    /// stat prefix and name.
    http_filters: Mutex<FilterCounters>,
    /// Counters named in full by their filter (`<stat_prefix>.rbac.allowed` of a network RBAC
    /// filter).
    named: Mutex<BTreeMap<String, DynCounter>>,
    tcp: Mutex<BTreeMap<String, Arc<TcpStats>>>,
    /// Routes' `stat_prefix` counters by (virtual host, stat prefix).
    routes: Mutex<BTreeMap<(String, String), Arc<RouteStats>>>,
    /// Each cluster name's gauges, one per built cluster of that name, oldest first: the
    /// newest still alive is shown (a cluster built for a config that was then rejected dies
    /// and the running one shows again).
    cluster_gauges: Mutex<BTreeMap<String, Vec<Weak<dyn Gauges>>>>,
    /// `server.*` counters.
    pub server: ServerStats,
    /// Istio's standard metrics.
    pub istio: Arc<super::istio::IstioMetrics>,
    /// Admin `/healthcheck/fail` was called (and no `/healthcheck/ok` since): the server fails
    /// its health checks (Envoy's `failHealthcheck`). Server state rather than a counter, kept
    /// here because every config version is built with the store.
    pub health_check_failed: Arc<std::sync::atomic::AtomicBool>,
}

stat_struct!(
    /// `server.*`
    ServerStats {
        /// Config reloads applied.
        reloads,
        /// Config reloads rejected.
        reload_failures,
        /// Downstream connections accepted on any listener.
        downstream_cx_total,
    }
);

impl StatsStore {
    /// The stats of cluster `name` (created on first use).
    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        let mut m = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }
    /// Adds the gauges of a newly built cluster `name`.
    pub fn add_cluster_gauges(&self, name: &str, gauges: Weak<dyn Gauges>) {
        let mut m = self
            .cluster_gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let list = m.entry(name.to_string()).or_default();
        list.retain(|g| g.strong_count() > 0);
        list.push(gauges);
    }
    /// The live gauges of cluster `name`, rendered under `prefix` into `out`.
    fn render_cluster_gauges(&self, name: &str, prefix: &str, out: &mut BTreeMap<String, u64>) {
        let g = self
            .cluster_gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .and_then(|list| list.iter().rev().find_map(Weak::upgrade));
        if let Some(g) = g {
            g.render_gauges(prefix, out);
        }
    }
    /// The stats of HTTP connection manager `stat_prefix`.
    pub fn http(&self, prefix: &str) -> Arc<HttpStats> {
        let mut m = self.http.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(prefix.to_string()).or_default().clone()
    }
    /// The counter `http.<prefix>.<name>` of an HTTP filter (created on first use); a `lazy`
    /// one is shown once it is not zero.
    pub fn http_filter_counter(&self, prefix: &str, name: &str, lazy: bool) -> Arc<Counter> {
        dyn_counter(
            &self.http_filters,
            (prefix.to_string(), name.to_string()),
            lazy,
        )
    }
    /// The counter `name` (created on first use); a `lazy` one is shown once it is not zero.
    pub fn named_counter(&self, name: &str, lazy: bool) -> Arc<Counter> {
        dyn_counter(&self.named, name.to_string(), lazy)
    }
    /// The named counters to show, into `out`.
    fn render_named(&self, out: &mut BTreeMap<String, u64>) {
        let m = self.named.lock().unwrap_or_else(|e| e.into_inner());
        for (name, c) in m.iter() {
            if let Some(v) = c.shown() {
                out.insert(name.clone(), v);
            }
        }
    }
    /// The filter counters of HCM `prefix`, rendered under `scope` into `out`.
    fn render_http_filters(&self, prefix: &str, scope: &str, out: &mut BTreeMap<String, u64>) {
        let m = self.http_filters.lock().unwrap_or_else(|e| e.into_inner());
        for ((p, name), c) in m.range((prefix.to_string(), String::new())..) {
            if p != prefix {
                break;
            }
            if let Some(v) = c.shown() {
                out.insert(format!("{scope}.{name}"), v);
            }
        }
    }
    /// The counters of routes with `stat_prefix` `prefix` in virtual host `vhost` (created on
    /// first use).
    pub fn route(&self, vhost: &str, prefix: &str) -> Arc<RouteStats> {
        let mut m = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((vhost.to_string(), prefix.to_string()))
            .or_default()
            .clone()
    }
    /// The stats of tcp_proxy `stat_prefix`.
    pub fn tcp(&self, prefix: &str) -> Arc<TcpStats> {
        let mut m = self.tcp.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(prefix.to_string()).or_default().clone()
    }
    /// Envoy's `/stats/prometheus` text of the counters (see [`prometheus`]).
    pub fn render_prometheus(&self) -> String {
        let mut f = prometheus::Families::default();
        let scope = |s: &dyn Fn(&mut BTreeMap<String, u64>)| {
            let mut m = BTreeMap::new();
            s(&mut m);
            m
        };
        for (n, s) in self
            .clusters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f.add(
                "cluster",
                "envoy_cluster_name",
                n,
                &scope(&|m| {
                    s.render_counters(m);
                    self.render_cluster_gauges(n, "", m);
                }),
            );
        }
        for (n, s) in self.http.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let m = scope(&|m| {
                s.render("", m);
                self.render_http_filters(n, "", m);
            });
            f.add("http", "envoy_http_conn_manager_prefix", n, &m);
        }
        for (n, s) in self.tcp.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            f.add("tcp", "envoy_tcp_prefix", n, &scope(&|m| s.render("", m)));
        }
        for ((vhost, route), s) in self.routes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            f.add_route(vhost, route, &scope(&|m| s.render("", m)));
        }
        f.add_server(&scope(&|m| self.server.render("", m)));
        f.add_named(&scope(&|m| self.render_named(m)));
        f.text()
    }

    /// Envoy's `/stats` text: `name: value` lines, sorted.
    pub fn render(&self) -> String {
        let mut all = BTreeMap::new();
        for (n, s) in self
            .clusters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let prefix = format!("cluster.{n}");
            // Envoy's names (`health_check.success`, ...); a stat Envoy makes on first use
            // is shown once it is not zero.
            let mut own = BTreeMap::new();
            s.render_counters(&mut own);
            for (k, v) in own {
                let (name, lazy) = prometheus::envoy_stat(k.trim_start_matches('.'));
                if !lazy || v != 0 {
                    all.insert(format!("{prefix}.{name}"), v);
                }
            }
            self.render_cluster_gauges(n, &prefix, &mut all);
        }
        for (n, s) in self.http.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            s.render(&format!("http.{n}"), &mut all);
            self.render_http_filters(n, &format!("http.{n}"), &mut all);
        }
        for (n, s) in self.tcp.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            s.render(&format!("tcp.{n}"), &mut all);
        }
        for ((vhost, route), s) in self.routes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            s.render(&format!("vhost.{vhost}.route.{route}"), &mut all);
        }
        self.server.render("server", &mut all);
        self.render_named(&mut all);
        let mut out = String::new();
        for (k, v) in all {
            let _ = writeln!(out, "{k}: {v}");
        }
        out
    }
}
