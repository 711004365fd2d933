//! Runtime description of a cluster (what the cluster manager needs), built from the validated config.

use std::time::Duration;

use crate::config::ByPriority;

/// Envoy's default circuit-breaker thresholds.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Envoy's default max_pending_requests.
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// Envoy's default max_requests.
pub const DEFAULT_MAX_REQUESTS: usize = 1024;
/// Envoy's default max_retries.
pub const DEFAULT_MAX_RETRIES: usize = 3;
/// Envoy's default connect_timeout (5 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A cluster as the runtime uses it.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Cluster name.
    pub name: String,
    /// Where hosts come from.
    pub discovery: Discovery,
    /// Load-balancing policy.
    pub lb: LbKind,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Speak HTTP/2 (prior knowledge, or ALPN when TLS) to the hosts.
    pub http2: bool,
    /// `use_downstream_protocol_config`: HTTP/2 (`http2` is set) only for an HTTP/2 request,
    /// HTTP/1.1 for the others.
    pub follow_downstream: bool,
    /// A tcp_proxy tunnel speaks HTTP/2: `explicit_http_config` HTTP/2, or
    /// `use_downstream_protocol_config` with `http2_protocol_options` (Envoy's TCP upstream
    /// rule); else HTTP/1.1.
    pub tunnel_http2: bool,
    /// TLS origination (`transport_socket`; `None`: plaintext).
    pub tls: Option<TlsSpec>,
    /// `transport_socket_matches`' transport sockets, in order ([`EndpointSpec::transport`]).
    pub tls_matches: Vec<Option<TlsSpec>>,
    /// The PROXY header version of each transport (`[0]` the cluster's `transport_socket`,
    /// `[i + 1]` `transport_socket_matches[i]`'s; empty: none sends one).
    pub proxy_protocol: Vec<Option<crate::proxy_protocol::Version>>,
    /// The transport of a host without metadata (an ORIGINAL_DST host).
    pub bare_transport: u8,
    /// Circuit breaker thresholds of each routing priority.
    pub breakers: ByPriority<Breakers>,
    /// Outlier detection, when configured.
    pub outlier: Option<OutlierSpec>,
    /// Active HTTP health check, when configured.
    pub health_check: Option<HealthCheckSpec>,
    /// ORIGINAL_DST `use_http_header`: the request header naming the destination `ip:port`.
    pub orig_dst_header: Option<http::HeaderName>,
    /// ORIGINAL_DST `upstream_port_override`: every destination gets this port.
    pub orig_dst_port: Option<u16>,
    /// Connection, DNS and `common_lb_config` options, as validated.
    pub options: crate::config::ClusterOptions,
    /// The endpoints' localities in Envoy's order ([`EndpointSpec::locality`] indexes it).
    pub localities: std::sync::Arc<[crate::config::Locality]>,
    /// `alt_stat_name`, when set ([`ClusterSpec::observability_name`]).
    pub alt_stat_name: Option<std::sync::Arc<str>>,
}

impl ClusterSpec {
    /// Envoy's observability name: `alt_stat_name` when set, else the name. It names the
    /// cluster's stats scope, `%UPSTREAM_CLUSTER%` and the admin `observability_name`.
    pub fn observability_name(&self) -> &str {
        self.alt_stat_name.as_deref().unwrap_or(&self.name)
    }
}

/// Host discovery.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// Fixed IP endpoints.
    Static(Vec<EndpointSpec>),
    /// Names resolved every `refresh`; every address returned is a host.
    StrictDns {
        /// Endpoints (host names or IPs).
        endpoints: Vec<EndpointSpec>,
        /// dns_refresh_rate (Envoy default 5 s).
        refresh: Duration,
        /// dns_lookup_family (Envoy default AUTO).
        family: crate::config::DnsLookupFamily,
        /// LOGICAL_DNS: only the first address of the (one) endpoint's answer is a host.
        logical: bool,
    },
    /// Connect to the downstream connection's original destination.
    OriginalDst,
}

/// One configured endpoint.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// IP or DNS name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// load_balancing_weight (1 when unset).
    pub weight: u32,
    /// The host name `auto_host_rewrite` sends: `endpoint.hostname`, else for STRICT_DNS the
    /// resolved name (or IP literal).
    pub hostname: Option<String>,
    /// Priority level (0 = highest).
    pub priority: u32,
    /// `health_status` from the config or EDS.
    pub health: crate::config::EndpointHealth,
    /// Its locality's rank in Envoy's locality order.
    pub locality: u32,
    /// Its locality's weight in its priority (0: none).
    pub locality_weight: u32,
    /// Envoy's canary flag (endpoint metadata `envoy.lb`).
    pub canary: bool,
    /// Its transport socket: 0 `tls`, `i + 1` `tls_matches[i]`.
    pub transport: u8,
    /// `health_check_config`: where its health checks go, their host name, or none.
    pub health_check: Option<std::sync::Arc<crate::config::EndpointHealthCheck>>,
}

/// Load-balancing policies.
#[derive(Debug, Clone)]
pub enum LbKind {
    /// Weighted round robin.
    RoundRobin,
    /// Power of `choice_count` choices on active requests.
    LeastRequest {
        /// How many random hosts to compare (Envoy default 2).
        choice_count: u32,
    },
    /// Uniform random.
    Random,
    /// Consistent hashing on a ring.
    RingHash {
        /// Minimum ring entries (Envoy default 1024).
        min_ring_size: u64,
        /// Maximum ring entries (Envoy default 8M).
        max_ring_size: u64,
    },
    /// Maglev table.
    Maglev {
        /// Table entries, a prime (Envoy default 65537).
        table_size: u64,
    },
}

impl LbKind {
    /// Whether the balancer picks by the request's hash (ring hash, maglev): only these ask the
    /// route's hash policy, and so make a cookie policy's cookie.
    pub fn hashes(&self) -> bool {
        matches!(self, LbKind::RingHash { .. } | LbKind::Maglev { .. })
    }
}

/// A TLS origination context: the validated `UpstreamTlsContext`.
pub type TlsSpec = crate::config::UpstreamTls;

/// One routing priority's circuit-breaker thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Breakers {
    /// Max open connections to the cluster.
    pub max_connections: usize,
    /// Max requests waiting for a connection.
    pub max_pending_requests: usize,
    /// Max requests in flight.
    pub max_requests: usize,
    /// Max retries in flight.
    pub max_retries: usize,
    /// Publish the `remaining_*` gauges (`track_remaining`).
    pub track_remaining: bool,
    /// `retry_budget`, which replaces `max_retries`.
    pub retry_budget: Option<crate::config::RetryBudget>,
}

impl Default for Breakers {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending_requests: DEFAULT_MAX_PENDING,
            max_requests: DEFAULT_MAX_REQUESTS,
            max_retries: DEFAULT_MAX_RETRIES,
            track_remaining: false,
            retry_budget: None,
        }
    }
}

/// Outlier detection: the cluster's validated `outlier_detection` (`upstream/outlier.rs`).
pub type OutlierSpec = crate::config::OutlierDetection;

/// Active HTTP health check.
#[derive(Debug, Clone)]
pub struct HealthCheckSpec {
    /// The time between a host's checks, by its last result (Envoy's intervals).
    pub intervals: crate::config::HealthCheckIntervals,
    /// `reuse_connection`: a host's connection is kept from check to check.
    pub reuse_connection: bool,
    /// `initial_jitter`, `interval_jitter`, `interval_jitter_percent`.
    pub jitter: crate::config::HealthCheckJitter,
    /// Per-check timeout.
    pub timeout: Duration,
    /// Failures before a healthy host is marked unhealthy.
    pub unhealthy_threshold: u32,
    /// Successes before an unhealthy host is marked healthy.
    pub healthy_threshold: u32,
    /// Request path.
    pub path: String,
    /// Host header (default: the cluster name, like Envoy).
    pub host: String,
    /// Accepted statuses as [start, end) ranges (default 200..201).
    pub expected: Vec<(u16, u16)>,
    /// `retriable_statuses`: failing statuses that count toward `unhealthy_threshold` (any
    /// other failing status marks the host unhealthy at once).
    pub retriable: Vec<(u16, u16)>,
    /// Request method (`method`, default GET).
    pub method: http::Method,
    /// `request_headers_to_remove` then `request_headers_to_add`, after Host and user-agent.
    pub headers: crate::route::HeaderMutations,
    /// `tcp_health_check`: a successful connect is a pass (no HTTP request), or with
    /// `tcp_receive` the payload exchange.
    pub tcp_only: bool,
    /// `grpc_health_check`: the service name asked about (empty: the server's health) and the
    /// call's `initial_metadata`; `host` is its authority.
    pub grpc: Option<(String, crate::route::HeaderMutations)>,
    /// The health check event log, if any.
    pub event_log: Option<crate::config::HealthEventLog>,
    /// `codec_client_type: HTTP2`: an HTTP check over HTTP/2.
    pub http2: bool,
    /// `tcp_health_check.send`.
    pub tcp_send: Vec<u8>,
    /// `tcp_health_check.receive[]`: blocks to find in order in what the host sends back.
    pub tcp_receive: Vec<Vec<u8>>,
    /// An HTTP check's body and what it wants of the answer's body and headers.
    pub http_body: crate::config::HttpCheckBody,
}
