//! Typed clusters: discovery type, endpoints, load balancing, circuit breakers, outlier
//! detection, health checks, upstream protocol and TLS.

use std::{net::SocketAddr, ops::Range, path::PathBuf, sync::Arc, time::Duration};

use super::{ByPriority, ClusterRef};

/// Envoy's default `connect_timeout` (5 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's default `dns_refresh_rate` for STRICT_DNS (5 s).
pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);
/// Default `load_balancing_weight` of an endpoint.
pub const DEFAULT_ENDPOINT_WEIGHT: u32 = 1;
/// Default `circuit_breakers.thresholds[].max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default `circuit_breakers.thresholds[].max_pending_requests`.
pub const DEFAULT_MAX_PENDING_REQUESTS: u32 = 1024;
/// Default `circuit_breakers.thresholds[].max_requests`.
pub const DEFAULT_MAX_REQUESTS: u32 = 1024;
/// Default `circuit_breakers.thresholds[].max_retries`.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default `outlier_detection.consecutive_5xx`.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Default `outlier_detection.interval`.
pub const DEFAULT_OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
/// Default `outlier_detection.base_ejection_time`.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Default `outlier_detection.max_ejection_time`.
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Default `outlier_detection.max_ejection_percent`.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Default `least_request_lb_config.choice_count` (power of two choices).
pub const DEFAULT_LEAST_REQUEST_CHOICE_COUNT: u32 = 2;
/// Default `maglev_lb_config.table_size` (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
/// Default `ring_hash_lb_config.minimum_ring_size`.
pub const DEFAULT_RING_HASH_MIN_SIZE: u64 = 1024;
/// Default `ring_hash_lb_config.maximum_ring_size`.
pub const DEFAULT_RING_HASH_MAX_SIZE: u64 = 8 * 1024 * 1024;

/// `static_resources.clusters[]`.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `name` (unique across clusters).
    pub name: ClusterRef,
    /// `type` (default STATIC).
    pub discovery: DiscoveryType,
    /// `lb_policy` with its `*_lb_config` (default ROUND_ROBIN).
    pub lb_policy: LbPolicy,
    /// `connect_timeout` (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// `dns_refresh_rate` for STRICT_DNS (default [`DEFAULT_DNS_REFRESH_RATE`]).
    pub dns_refresh_rate: Duration,
    /// `load_assignment.endpoints[].lb_endpoints[]`, flattened in order (empty for ORIGINAL_DST).
    pub endpoints: Vec<Endpoint>,
    /// The load assignment's localities in Envoy's order (region, zone, sub_zone), each once:
    /// [`Endpoint::locality`] indexes it.
    pub localities: Arc<[Locality]>,
    /// `circuit_breakers.thresholds[]` per routing priority (the first entry of each priority;
    /// a priority without one has Envoy's defaults).
    pub circuit_breakers: ByPriority<CircuitBreakers>,
    /// `outlier_detection`, if configured (absent = no outlier detection, as in Envoy).
    pub outlier_detection: Option<OutlierDetection>,
    /// `health_checks[]`.
    pub health_checks: Vec<HealthCheck>,
    /// From `typed_extension_protocol_options` (HttpProtocolOptions `explicit_http_config`) or
    /// the legacy `http2_protocol_options`; default HTTP/1.1.
    pub protocol: UpstreamProtocol,
    /// The cluster speaks HTTP/2 to a tcp_proxy tunnel or a gRPC health check: `protocol`
    /// HTTP/2, or `use_downstream_protocol_config` with `http2_protocol_options`.
    pub h2_capable: bool,
    /// `transport_socket` `envoy.transport_sockets.tls` (UpstreamTlsContext), if any.
    pub tls: Option<UpstreamTls>,
    /// `transport_socket` `envoy.transport_sockets.upstream_proxy_protocol`: the PROXY header
    /// version its connections start with.
    pub proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// `transport_socket_matches` ([`Endpoint::transport`] picks one, or `tls`).
    pub transport_socket_matches: Vec<super::TransportSocketMatch>,
    /// `dns_lookup_family` for STRICT_DNS (default `AUTO`, as Envoy).
    pub dns_lookup_family: DnsLookupFamily,
    /// ORIGINAL_DST `original_dst_lb_config`: with `use_http_header: true`, the request header
    /// (`http_header_name`, default `x-envoy-original-dst-host`) naming the destination.
    pub original_dst_header: Option<String>,
    /// ORIGINAL_DST `upstream_port_override`: the destination's port is replaced by it.
    pub original_dst_port: Option<u16>,
    /// Connection, DNS and `common_lb_config` options.
    pub options: ClusterOptions,
    /// `alt_stat_name` when set and not empty: Envoy's observability name, which names the
    /// cluster's stats (`cluster.<alt_stat_name>.*`), `%UPSTREAM_CLUSTER%` and the admin
    /// `observability_name` (the cluster's `name` otherwise).
    pub alt_stat_name: Option<String>,
}

impl Cluster {
    /// The transport of an endpoint without metadata (an ORIGINAL_DST host): the first empty
    /// `match`, else the cluster's `transport_socket`.
    pub fn bare_transport(&self) -> u8 {
        super::upstream_transport::select(&self.transport_socket_matches, None, None)
    }
}

/// Envoy's default ORIGINAL_DST destination header.
pub const DEFAULT_ORIGINAL_DST_HEADER: &str = "x-envoy-original-dst-host";

/// `dns_lookup_family`: which resolved addresses a STRICT_DNS endpoint yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DnsLookupFamily {
    /// `AUTO`: IPv6 addresses if there are any, else IPv4.
    #[default]
    Auto,
    /// `V4_ONLY`.
    V4Only,
    /// `V6_ONLY`.
    V6Only,
    /// `V4_PREFERRED`: IPv4 addresses if there are any, else IPv6.
    V4Preferred,
    /// `ALL`: both families.
    All,
}

impl DnsLookupFamily {
    /// Keeps the addresses of `addrs` this family selects.
    pub fn filter(self, addrs: &mut Vec<SocketAddr>) {
        let has_v4 = addrs.iter().any(SocketAddr::is_ipv4);
        let has_v6 = addrs.iter().any(SocketAddr::is_ipv6);
        let keep_v4 = match self {
            Self::All => return,
            Self::V4Only => true,
            Self::V6Only => false,
            Self::Auto => !has_v6,
            Self::V4Preferred => has_v4,
        };
        addrs.retain(|a| a.is_ipv4() == keep_v4);
    }
}

/// `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DiscoveryType {
    /// `STATIC`: endpoints are IP addresses.
    #[default]
    Static,
    /// `STRICT_DNS`: endpoints are host names, every resolved address is an endpoint,
    /// re-resolved every `dns_refresh_rate`.
    StrictDns,
    /// `ORIGINAL_DST`: the upstream is the downstream connection's original destination.
    OriginalDst,
    /// `LOGICAL_DNS`: one endpoint, a host name; the first address of each resolution is the
    /// cluster's one host, re-resolved every `dns_refresh_rate`.
    LogicalDns,
    /// `EDS`: endpoints are IP addresses from a ClusterLoadAssignment the xDS client placed in
    /// `load_assignment`.
    Eds,
}

/// `lb_policy` and its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LbPolicy {
    /// `ROUND_ROBIN` (weighted).
    #[default]
    RoundRobin,
    /// `LEAST_REQUEST` with `least_request_lb_config.choice_count`.
    LeastRequest {
        /// `choice_count` (default [`DEFAULT_LEAST_REQUEST_CHOICE_COUNT`]).
        choice_count: u32,
    },
    /// `RANDOM`.
    Random,
    /// `RING_HASH` with `ring_hash_lb_config`.
    RingHash {
        /// `minimum_ring_size` (default [`DEFAULT_RING_HASH_MIN_SIZE`]).
        minimum_ring_size: u64,
        /// `maximum_ring_size` (default [`DEFAULT_RING_HASH_MAX_SIZE`]).
        maximum_ring_size: u64,
    },
    /// `MAGLEV` with `maglev_lb_config.table_size`.
    Maglev {
        /// `table_size` (default [`DEFAULT_MAGLEV_TABLE_SIZE`], must be prime).
        table_size: u64,
    },
    /// `CLUSTER_PROVIDED` (only with ORIGINAL_DST).
    ClusterProvided,
}

/// One `lb_endpoints[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `endpoint.address.socket_address`.
    pub address: EndpointAddress,
    /// `load_balancing_weight` (default [`DEFAULT_ENDPOINT_WEIGHT`], >= 1).
    pub weight: u32,
    /// `endpoint.hostname` (used by `auto_host_rewrite`).
    pub hostname: Option<String>,
    /// The locality's `priority` (0 = highest).
    pub priority: u32,
    /// `health_status`.
    pub health: EndpointHealth,
    /// Its locality's rank among the load assignment's localities, in Envoy's order (region,
    /// zone, sub_zone; an endpoint without `locality` is in the empty one).
    pub locality: u32,
    /// Its locality's `load_balancing_weight` in its priority (the last `LocalityLbEndpoints`
    /// of that locality and priority with both `locality` and a weight sets it; 0: none, so
    /// locality-weighted LB sends it nothing).
    pub locality_weight: u32,
    /// `metadata.filter_metadata["envoy.lb"].canary` is true (shown by the admin's /clusters).
    pub canary: bool,
    /// Its transport socket: 0 the cluster's `transport_socket`, `i + 1` its
    /// `transport_socket_matches[i]` (chosen by its and its locality's metadata).
    pub transport: u8,
    /// `endpoint.health_check_config`, when it says anything.
    pub health_check: Option<std::sync::Arc<EndpointHealthCheck>>,
}

/// `Endpoint.HealthCheckConfig`: where and how the cluster's health checks reach this endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EndpointHealthCheck {
    /// `address`'s IP: checks go there instead of the endpoint's address.
    pub ip: Option<std::net::IpAddr>,
    /// `port_value` when not 0, else `address`'s port: checks go to this port.
    pub port: Option<u16>,
    /// `hostname`: the check's Host / `:authority`, before the health check's own `host`.
    pub hostname: Option<String>,
    /// `disable_active_health_check`: the endpoint is not checked (and counts as passing).
    pub disabled: bool,
}

impl EndpointHealthCheck {
    /// Where the checks of an endpoint at `addr` go (Envoy's `resolveHealthCheckAddress`).
    pub fn target(&self, addr: std::net::SocketAddr) -> std::net::SocketAddr {
        std::net::SocketAddr::new(
            self.ip.unwrap_or(addr.ip()),
            self.port.unwrap_or(addr.port()),
        )
    }
}

/// `core.v3.Locality`: where an endpoint runs (all empty: an entry without `locality`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    /// `region`.
    pub region: String,
    /// `zone`.
    pub zone: String,
    /// `sub_zone`.
    pub sub_zone: String,
}

/// `LbEndpoint.health_status`, as Envoy's load balancers class it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EndpointHealth {
    /// `UNKNOWN` (the default) or `HEALTHY`.
    #[default]
    Healthy,
    /// `DEGRADED`: takes the load its level's healthy hosts cannot.
    Degraded,
    /// `UNHEALTHY` or `TIMEOUT`: counted in its level, takes traffic only in panic.
    Unhealthy,
    /// `DRAINING`: excluded (not counted in its level's health), takes traffic only in panic.
    Draining,
}

impl EndpointHealth {
    /// Envoy's enum name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "HEALTHY",
            Self::Degraded => "DEGRADED",
            Self::Unhealthy => "UNHEALTHY",
            Self::Draining => "DRAINING",
        }
    }
}

/// `socket_address` of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// An IP literal (STATIC).
    Ip(SocketAddr),
    /// A host name to resolve (STRICT_DNS; an IP literal there is `Ip`).
    Dns {
        /// `address`.
        host: String,
        /// `port_value`.
        port: u16,
    },
}

/// One priority's `circuit_breakers.thresholds[]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CircuitBreakers {
    /// `max_connections` (default [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: u32,
    /// `max_pending_requests` (default [`DEFAULT_MAX_PENDING_REQUESTS`]).
    pub max_pending_requests: u32,
    /// `max_requests` (default [`DEFAULT_MAX_REQUESTS`]).
    pub max_requests: u32,
    /// `max_retries` (default [`DEFAULT_MAX_RETRIES`]).
    pub max_retries: u32,
    /// `track_remaining`: the priority's `circuit_breakers.<priority>.remaining_*` gauges.
    pub track_remaining: bool,
    /// `retry_budget`: replaces `max_retries` when set.
    pub retry_budget: Option<RetryBudget>,
}

/// `circuit_breakers.thresholds[].retry_budget` (Envoy's `RetryBudgetImpl`): the retries in
/// flight may be `budget_percent` of the priority's active and pending requests, never fewer
/// than `min_retry_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryBudget {
    /// `budget_percent` (default 20), as `f64` bits (so the thresholds stay `Eq` and `Hash`).
    pub percent_bits: u64,
    /// `min_retry_concurrency` (default 3).
    pub min_concurrency: u32,
}

impl RetryBudget {
    /// A budget of `percent` percent, at least `min_concurrency`.
    pub fn new(percent: f64, min_concurrency: u32) -> Self {
        Self {
            percent_bits: percent.to_bits(),
            min_concurrency,
        }
    }

    /// Retries allowed in flight with `active` requests active or pending: Envoy's
    /// `budget_percent / 100.0 * active`, truncated, at least the minimum.
    pub fn max(&self, active: usize) -> usize {
        let share = f64::from_bits(self.percent_bits) / 100.0 * active as f64;
        (share as usize).max(self.min_concurrency as usize)
    }
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending_requests: DEFAULT_MAX_PENDING_REQUESTS,
            max_requests: DEFAULT_MAX_REQUESTS,
            max_retries: DEFAULT_MAX_RETRIES,
            track_remaining: false,
            retry_budget: None,
        }
    }
}

/// `outlier_detection`: consecutive 5xx, gateway and local-origin failure ejection (Envoy's
/// `DetectorHostMonitorImpl`), and success-rate and failure-percentage ejection at each sweep
/// (Envoy's `processSuccessRateEjections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutlierDetection {
    /// `consecutive_5xx` (default [`DEFAULT_CONSECUTIVE_5XX`]; 0 never ejects).
    pub consecutive_5xx: u32,
    /// `interval` (default [`DEFAULT_OUTLIER_INTERVAL`]).
    pub interval: Duration,
    /// `base_ejection_time` (default [`DEFAULT_BASE_EJECTION_TIME`]).
    pub base_ejection_time: Duration,
    /// `max_ejection_percent` (default [`DEFAULT_MAX_EJECTION_PERCENT`], 0..=100).
    pub max_ejection_percent: u32,
    /// `max_ejection_time` (default [`DEFAULT_MAX_EJECTION_TIME`]).
    pub max_ejection_time: Duration,
    /// `enforcing_consecutive_5xx`: percent of detections that eject (default 100).
    pub enforcing_consecutive_5xx: u32,
    /// `consecutive_gateway_failure`: consecutive 502/503/504 (default 5).
    pub consecutive_gateway_failure: u32,
    /// `enforcing_consecutive_gateway_failure` (default 0: detected, never ejected).
    pub enforcing_consecutive_gateway_failure: u32,
    /// `split_external_local_origin_errors`: connect failures, resets and timeouts count apart
    /// (`consecutive_local_origin_failure`) instead of as a 503/504 (default false).
    pub split_local_origin: bool,
    /// `consecutive_local_origin_failure` (default 5; with `split_local_origin` only).
    pub consecutive_local_origin_failure: u32,
    /// `enforcing_consecutive_local_origin_failure` (default 100).
    pub enforcing_consecutive_local_origin_failure: u32,
    /// Success-rate ejection (external origin; local origin with the split).
    pub success_rate: SuccessRateEjection,
    /// Failure-percentage ejection.
    pub failure_percentage: FailurePercentageEjection,
    /// `successful_active_health_check_uneject_host` (default true): an ejected host returns
    /// at its next passing active health check.
    pub uneject_on_health_check: bool,
    /// `max_ejection_time_jitter` (default 0): a random `[0, jitter)` added to each ejection
    /// time.
    pub max_ejection_time_jitter: Duration,
    /// `always_eject_one_host` (default false): one host may be ejected whatever
    /// `max_ejection_percent` says.
    pub always_eject_one_host: bool,
}

/// Success-rate ejection: at each sweep, among hosts with at least `request_volume` requests
/// in the last interval (at least `minimum_hosts` of them), those whose success rate is below
/// mean - `stdev_factor` / 1000 x stdev are ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SuccessRateEjection {
    /// `success_rate_minimum_hosts` (default 5).
    pub minimum_hosts: u32,
    /// `success_rate_request_volume` (default 100).
    pub request_volume: u32,
    /// `success_rate_stdev_factor` (default 1900).
    pub stdev_factor: u32,
    /// `enforcing_success_rate` (default 100).
    pub enforcing: u32,
    /// `enforcing_local_origin_success_rate` (default 100).
    pub enforcing_local_origin: u32,
}

impl Default for SuccessRateEjection {
    fn default() -> Self {
        Self {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
            enforcing: 100,
            enforcing_local_origin: 100,
        }
    }
}

/// Failure-percentage ejection: at each sweep, among hosts with at least `request_volume`
/// requests in the last interval (at least `minimum_hosts` of them), those whose failure
/// percentage is at least `threshold` are ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailurePercentageEjection {
    /// `failure_percentage_threshold` (default 85).
    pub threshold: u32,
    /// `failure_percentage_minimum_hosts` (default 5).
    pub minimum_hosts: u32,
    /// `failure_percentage_request_volume` (default 50).
    pub request_volume: u32,
    /// `enforcing_failure_percentage` (default 0).
    pub enforcing: u32,
    /// `enforcing_failure_percentage_local_origin` (default 0).
    pub enforcing_local_origin: u32,
}

impl Default for FailurePercentageEjection {
    fn default() -> Self {
        Self {
            threshold: 85,
            minimum_hosts: 5,
            request_volume: 50,
            enforcing: 0,
            enforcing_local_origin: 0,
        }
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            interval: DEFAULT_OUTLIER_INTERVAL,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: DEFAULT_CONSECUTIVE_5XX,
            enforcing_consecutive_gateway_failure: 0,
            split_local_origin: false,
            consecutive_local_origin_failure: DEFAULT_CONSECUTIVE_5XX,
            enforcing_consecutive_local_origin_failure: 100,
            success_rate: SuccessRateEjection::default(),
            failure_percentage: FailurePercentageEjection::default(),
            uneject_on_health_check: true,
            max_ejection_time_jitter: Duration::ZERO,
            always_eject_one_host: false,
        }
    }
}

/// Envoy's default `no_traffic_interval` (60 s).
pub const DEFAULT_NO_TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);

/// `health_checks[]` (all four timing/threshold fields are required, as in Envoy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `timeout`.
    pub timeout: Duration,
    /// `interval`, `unhealthy_interval`, `unhealthy_edge_interval`, `healthy_edge_interval`,
    /// `no_traffic_interval`, `no_traffic_healthy_interval`.
    pub intervals: HealthCheckIntervals,
    /// `reuse_connection` (default true): a check's connection is kept for the next one.
    pub reuse_connection: bool,
    /// The health check event log: `event_log_path` (deprecated) or `event_logger`'s file
    /// sinks, and `always_log_health_check_failures` / `_success`.
    pub event_log: Option<HealthEventLog>,
    /// `unhealthy_threshold`.
    pub unhealthy_threshold: u32,
    /// `healthy_threshold`.
    pub healthy_threshold: u32,
    /// `initial_jitter`, `interval_jitter`, `interval_jitter_percent`.
    pub jitter: HealthCheckJitter,
    /// `http_health_check` or `tcp_health_check`.
    pub kind: HealthCheckKind,
}

/// A health check's jitter, as Envoy's: the first checks wait a random time below `initial`;
/// each interval grows by a random time below `percent` % of it and another below `interval`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCheckJitter {
    /// `initial_jitter`.
    pub initial: Duration,
    /// `interval_jitter`.
    pub interval: Duration,
    /// `interval_jitter_percent`.
    pub percent: u32,
}

/// Where health check events are written, one JSON line each (Envoy's `HealthCheckEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEventLog {
    /// The files (`event_log_path`, each file sink's `event_log_path`).
    pub paths: Vec<std::path::PathBuf>,
    /// `always_log_health_check_failures`: every failure, not only a host's first check.
    pub failures: bool,
    /// `always_log_health_check_success`: every pass that changes nothing.
    pub successes: bool,
}

/// The time to a host's next health check, as Envoy's `HealthCheckerImplBase::interval`
/// picks it from the check just done: whether it passed and whether it left the host's health
/// about to change (a result against it, short of the threshold: "change pending").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckIntervals {
    /// `interval`: after a pass, once the cluster has had traffic.
    pub interval: Duration,
    /// `unhealthy_interval` (default `interval`): after a failure.
    pub unhealthy: Duration,
    /// `unhealthy_edge_interval` (default `unhealthy_interval`): after a failure that leaves a
    /// healthy host short of `unhealthy_threshold`.
    pub unhealthy_edge: Duration,
    /// `healthy_edge_interval` (default `interval`): after a pass that leaves an unhealthy host
    /// short of `healthy_threshold`.
    pub healthy_edge: Duration,
    /// `no_traffic_interval` (default [`DEFAULT_NO_TRAFFIC_INTERVAL`]): until the cluster has
    /// opened an upstream connection of its own (the checker's are not counted).
    pub no_traffic: Duration,
    /// `no_traffic_healthy_interval` (default `no_traffic_interval`): until then, after a pass
    /// that changes nothing pending.
    pub no_traffic_healthy: Duration,
}

impl HealthCheckIntervals {
    /// The base interval (before jitter) after a check that `passed`, `pending` a change,
    /// on a cluster that has had `traffic`.
    pub fn next(&self, passed: bool, pending: bool, traffic: bool) -> Duration {
        match (traffic, passed, pending) {
            (true, false, true) => self.unhealthy_edge,
            (true, false, false) => self.unhealthy,
            (true, true, true) => self.healthy_edge,
            (true, true, false) => self.interval,
            (false, true, false) => self.no_traffic_healthy,
            (false, _, _) => self.no_traffic,
        }
    }
}

impl HealthCheckJitter {
    /// `base` with the interval jitter added (Envoy's `intervalWithJitter`).
    pub fn apply(&self, base: Duration) -> Duration {
        let ms = base.as_millis() as u64;
        let by_percent = u64::from(self.percent) * ms / 100;
        let random = |below: u64| {
            if below > 0 {
                rand::random::<u64>() % below
            } else {
                0
            }
        };
        let extra = random(by_percent) + random(self.interval.as_millis() as u64);
        base + Duration::from_millis(extra)
    }

    /// The wait before the first checks (Envoy's `initial_jitter`).
    pub fn initial_wait(&self) -> Duration {
        let ms = self.initial.as_millis() as u64;
        Duration::from_millis(if ms > 0 {
            rand::random::<u64>() % ms
        } else {
            0
        })
    }
}

/// What an HTTP health check sends beyond its headers and what it wants of the answer beyond
/// its status, as Envoy's `HttpHealthCheckerImpl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheckBody {
    /// `send`: the request body, with its length as `content-length`.
    pub send: Vec<u8>,
    /// `receive[]`: blocks the first `response_buffer_size` bytes of the answer's body must
    /// hold, in order, not necessarily together (empty blocks dropped).
    pub receive: Vec<Vec<u8>>,
    /// `response_buffer_size` (default 1024; 0: the whole body is searched).
    pub response_buffer_size: u64,
    /// `service_name_matcher`: a passing answer's `x-envoy-upstream-healthchecked-cluster`
    /// (empty when absent) must match it.
    pub service_name: Option<ServiceNameMatcher>,
}

impl Default for HttpCheckBody {
    fn default() -> Self {
        Self {
            send: Vec::new(),
            receive: Vec::new(),
            response_buffer_size: 1024,
            service_name: None,
        }
    }
}

/// A health check's `service_name_matcher`, compared by what it was built from.
#[derive(Debug, Clone)]
pub struct ServiceNameMatcher {
    /// The matcher.
    pub matcher: crate::route::StringMatcher,
    /// Its description, for equality.
    key: String,
}

impl ServiceNameMatcher {
    /// Wraps `matcher`.
    pub fn new(matcher: crate::route::StringMatcher) -> Self {
        let key = format!("{matcher:?}");
        Self { matcher, key }
    }
}

impl PartialEq for ServiceNameMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ServiceNameMatcher {}

/// The health checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// `http_health_check`.
    Http {
        /// `path` (required).
        path: String,
        /// `host` (default: the cluster name, as Envoy).
        host: Option<String>,
        /// `expected_statuses[]` as half-open ranges `[start, end)` (default `[200, 201)`).
        expected_statuses: Vec<Range<u16>>,
        /// `retriable_statuses[]`: a failing status in these counts toward
        /// `unhealthy_threshold` (any other marks the host unhealthy at once, as Envoy).
        retriable_statuses: Vec<Range<u16>>,
        /// `codec_client_type: HTTP2`: the check speaks HTTP/2 (prior knowledge, or `h2` by
        /// ALPN), whatever the cluster speaks.
        http2: bool,
        /// `method` (default GET).
        method: http::Method,
        /// `request_headers_to_remove`, then `request_headers_to_add` (literal values).
        headers: crate::route::HeaderMutations,
        /// `send`, `receive[]`, `response_buffer_size`, `service_name_matcher`.
        body: HttpCheckBody,
    },
    /// `grpc_health_check`: `grpc.health.v1.Health/Check` over HTTP/2 (whatever the cluster
    /// speaks), passing on a `SERVING` answer.
    Grpc {
        /// `service_name` (empty: the server's overall health).
        service_name: String,
        /// `authority` (default: the cluster name).
        authority: Option<String>,
        /// `initial_metadata` (literal values).
        metadata: crate::route::HeaderMutations,
    },
    /// `tcp_health_check`: connect only, or with `receive` payloads: `send` written on the
    /// (kept) connection, and a pass once every `receive` block has come, in order.
    Tcp {
        /// `send` (empty: nothing written).
        send: Vec<u8>,
        /// `receive[]` (empty: a connect passes).
        receive: Vec<Vec<u8>>,
    },
}

/// The upstream HTTP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (`explicit_http_config.http_protocol_options`, the default).
    #[default]
    Http1,
    /// HTTP/2 (`explicit_http_config.http2_protocol_options`).
    Http2,
    /// The downstream request's (`use_downstream_protocol_config`, istiod's on every cluster
    /// of a port whose protocol it sniffs): HTTP/2 for an HTTP/2 request, HTTP/1.1 otherwise.
    Downstream,
}

/// `transport_socket` `envoy.transport_sockets.tls` UpstreamTlsContext.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamTls {
    /// `sni`.
    pub sni: Option<String>,
    /// `common_tls_context.validation_context.trusted_ca`; `None` = no verification (as Envoy
    /// without a validation context).
    pub trusted_ca: Option<DataSource>,
    /// `common_tls_context.tls_certificates[0]` (certificate_chain, private_key): client cert.
    pub client_cert: Option<(DataSource, DataSource)>,
    /// `common_tls_context.alpn_protocols`.
    pub alpn_protocols: Vec<String>,
    /// The validation context's SAN matchers (empty: any name the CA vouches for).
    pub match_sans: crate::tls_common::SanMatchers,
    /// `common_tls_context.tls_params` (Envoy's client defaults: TLS 1.2 only).
    pub params: crate::tls_common::TlsParams,
    /// A secret it names has not arrived over ADS: every handshake fails, as Envoy's context
    /// before its secrets are supplied.
    pub pending_secret: Option<String>,
}

/// An Envoy `DataSource`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataSource {
    /// `filename`.
    File(PathBuf),
    /// `inline_string`.
    Inline(String),
}

impl DataSource {
    /// Its bytes: the file's (read now) or the inline text's.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            DataSource::File(p) => std::fs::read(p),
            DataSource::Inline(s) => Ok(s.clone().into_bytes()),
        }
    }
}

/// Envoy's default `common_lb_config.healthy_panic_threshold` (50 %).
pub const DEFAULT_HEALTHY_PANIC_THRESHOLD: f64 = 50.0;

/// The cluster's connection, DNS and `common_lb_config` options (module `cluster_options`).
/// `slow_start_config` (of `round_robin_lb_config` or `least_request_lb_config`; a
/// DestinationRule's `loadBalancer.warmup`): a host healthy for less than `window` takes a
/// share of its weight that grows with the time (`upstream/slow_start.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// `slow_start_window` (positive; unset or 0 disables slow start).
    pub window: Duration,
    /// `aggression.default_value` (default 1.0: linear; not positive is 1.0, as Envoy at run
    /// time).
    pub aggression: f64,
    /// `min_weight_percent` as a fraction (default 0.1).
    pub min_weight: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    /// `slow_start_config` of the ROUND_ROBIN or LEAST_REQUEST balancer.
    pub slow_start: Option<SlowStart>,
    /// The typed options' `common_http_protocol_options.max_response_headers_kb` (1..=8192;
    /// `None`: Envoy's defaults, 80 KiB for HTTP/1 and 60 KiB for HTTP/2): a larger upstream
    /// response head resets the request as a protocol error.
    pub max_response_headers_kb: Option<u32>,
    /// The typed options' `http_protocol_options.header_key_format` (explicit or under
    /// `use_downstream_protocol_config`): the case of the request header names written to an
    /// HTTP/1 upstream (proper case), or the response's kept for the client (`preserve_case`).
    pub header_key_format: super::HeaderKeyFormat,
    /// `max_requests_per_connection` (the typed HttpProtocolOptions'
    /// `common_http_protocol_options` one, else the deprecated cluster field; `None`: unset or 0,
    /// no limit): a connection carries at most this many requests.
    pub max_requests_per_connection: Option<u32>,
    /// `upstream_connection_options.tcp_keepalive`, set on every upstream socket.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `per_connection_buffer_limit_bytes` (Envoy's default 1 MiB): the HTTP/2 flow-control
    /// windows of the cluster's connections; a flow-control bound, never a size cap (HTTP/1
    /// bodies are read piece by piece anyway).
    pub buffer_limit_bytes: Option<u32>,
    /// `dns_failure_refresh_rate` (`base_interval`, `max_interval`): after a failed resolution
    /// the next one comes after a backoff in this range instead of `dns_refresh_rate`.
    pub dns_failure_refresh: Option<(Duration, Duration)>,
    /// `common_lb_config.healthy_panic_threshold.value`, percent (default
    /// [`DEFAULT_HEALTHY_PANIC_THRESHOLD`]; 0 disables panic mode).
    pub healthy_panic_threshold: f64,
    /// `common_lb_config.zone_aware_lb_config.fail_traffic_on_panic`: a cluster in panic
    /// mode has no host (503) instead of all of them.
    pub fail_traffic_on_panic: bool,
    /// `upstream_bind_config.source_address`: every upstream socket is bound to it before
    /// connecting (Istio's inbound clusters use `127.0.0.6`, port 0).
    pub source_address: Option<SocketAddr>,
    /// `upstream_bind_config.extra_source_addresses[0]`, of the other IP family: an upstream
    /// of that family is connected to from it (Envoy picks the bind address by family).
    pub extra_source_address: Option<SocketAddr>,
    /// `load_assignment.policy.overprovisioning_factor`, percent (default
    /// [`DEFAULT_OVERPROVISIONING_FACTOR`]): a priority level's health is its healthy share times
    /// this, capped at 100.
    pub overprovisioning_factor: u32,
    /// `load_assignment.policy.weighted_priority_health`: a level's health counts endpoint
    /// weights instead of endpoints.
    pub weighted_priority_health: bool,
    /// `common_lb_config.locality_weighted_lb_config` is set: within a priority level a
    /// locality is picked first, by its weight scaled by its availability (`upstream/locality.rs`).
    pub locality_weighted_lb: bool,
    /// `ignore_health_on_host_removal`: a host that service discovery removes goes at once.
    /// Unset (Envoy's default), a cluster with active health checking keeps a removed host
    /// that passes its checks until it fails one.
    pub ignore_health_on_host_removal: bool,
    /// ORIGINAL_DST `cleanup_interval` (default [`DEFAULT_ORIGINAL_DST_CLEANUP`]): a host no
    /// request used for this long is dropped with its connections' pool. Other types ignore it,
    /// as Envoy does.
    pub original_dst_cleanup: Duration,
    /// The typed HttpProtocolOptions' `common_http_protocol_options.idle_timeout` (default
    /// [`DEFAULT_UPSTREAM_IDLE_TIMEOUT`]; `0s`: `None`, no limit): a pooled connection without
    /// a request for this long is not used again and closes.
    pub upstream_idle_timeout: Option<Duration>,
    /// The typed HttpProtocolOptions' `common_http_protocol_options.max_connection_duration`
    /// (unset or `0s`: `None`, no limit): a connection that old takes no new request and closes
    /// once its requests end.
    pub upstream_max_connection_duration: Option<Duration>,
    /// The HTTP/2 options' `connection_keepalive` (`interval`, `timeout`): PINGs every
    /// interval, the connection closed when one is not answered within the timeout.
    pub h2_keepalive: Option<(Duration, Duration)>,
    /// The HTTP/2 options' `max_concurrent_streams` (a DestinationRule's
    /// `maxConcurrentStreams`): streams one connection carries at once; past it a request
    /// opens another connection (`None`: Envoy's 2^31 - 1, one connection).
    pub h2_max_concurrent_streams: Option<u32>,
    /// DNS clusters' `dns_jitter`: each refresh comes up to this much later (a random share).
    pub dns_jitter: Option<Duration>,
    /// The typed HttpProtocolOptions' `upstream_http_protocol_options` (`None`: neither
    /// `auto_sni` nor `auto_san_validation`).
    pub auto_sni: Option<AutoSni>,
    /// Istio's `istio.alpn` filter may change the ALPN of the cluster's TLS connections: not
    /// when the cluster's `filter_metadata.istio.alpn_override` is `"false"` (istiod's mark on
    /// a cluster whose TLS is a DestinationRule's own, not Istio's mutual TLS).
    pub istio_alpn: bool,
}

/// `UpstreamHttpProtocolOptions`: a request's upstream TLS handshake takes its name from the
/// request's host (after the route's host rewrite), or from `header` when the request has it
/// and it is not empty (`override_auto_sni_header`), port left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoSni {
    /// `auto_sni`: the name is the SNI (unless it is an IP address).
    pub sni: bool,
    /// `auto_san_validation`: a SAN of the server certificate must match the name.
    pub san: bool,
    /// `override_auto_sni_header`, lower-cased.
    pub header: Option<http::HeaderName>,
}

/// Envoy's default idle timeout of upstream HTTP connections (1 hour).
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Envoy's default ORIGINAL_DST `cleanup_interval` (5 s).
pub const DEFAULT_ORIGINAL_DST_CLEANUP: Duration = Duration::from_secs(5);

/// Envoy's default `ClusterLoadAssignment.policy.overprovisioning_factor` (140 %).
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            slow_start: None,
            max_response_headers_kb: None,
            header_key_format: super::HeaderKeyFormat::Lower,
            max_requests_per_connection: None,
            tcp_keepalive: None,
            buffer_limit_bytes: None,
            dns_failure_refresh: None,
            healthy_panic_threshold: DEFAULT_HEALTHY_PANIC_THRESHOLD,
            fail_traffic_on_panic: false,
            source_address: None,
            extra_source_address: None,
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
            weighted_priority_health: false,
            locality_weighted_lb: false,
            ignore_health_on_host_removal: false,
            original_dst_cleanup: DEFAULT_ORIGINAL_DST_CLEANUP,
            upstream_idle_timeout: Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT),
            upstream_max_connection_duration: None,
            dns_jitter: None,
            h2_keepalive: None,
            h2_max_concurrent_streams: None,
            auto_sni: None,
            istio_alpn: true,
        }
    }
}

/// `upstream_connection_options.tcp_keepalive`: `SO_KEEPALIVE` on, and each value that is set
/// (`TCP_KEEPCNT`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpKeepalive {
    /// `keepalive_probes`.
    pub probes: Option<u32>,
    /// `keepalive_time`, seconds.
    pub time: Option<u32>,
    /// `keepalive_interval`, seconds.
    pub interval: Option<u32>,
}
