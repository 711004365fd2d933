//! Raw serde types of Envoy's `cluster.v3.Cluster` and the messages it embeds, with
//! `deny_unknown_fields`.

use serde::Deserialize;
use serde_norway::Value;

use super::{duration::PbDuration, raw::RawAddress, raw_route::RawDataSource};

/// `cluster.v3.Cluster`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: Option<String>,
    /// `metadata` (e.g. Istio's `filter_metadata.istio.config`): shown by /config_dump and
    /// `sluice proxy-config`; only `filter_metadata.istio.alpn_override` is read (whether
    /// Istio's `istio.alpn` filter may change the cluster's ALPN).
    pub metadata: Option<serde_json::Value>,
    #[serde(rename = "type")]
    pub discovery_type: Option<String>,
    pub lb_policy: Option<String>,
    pub load_assignment: Option<RawLoadAssignment>,
    pub connect_timeout: Option<PbDuration>,
    pub dns_refresh_rate: Option<PbDuration>,
    pub circuit_breakers: Option<RawCircuitBreakers>,
    pub outlier_detection: Option<RawOutlierDetection>,
    #[serde(default)]
    pub health_checks: Vec<RawHealthCheck>,
    pub typed_extension_protocol_options: Option<serde_norway::Mapping>,
    pub http2_protocol_options: Option<Value>,
    pub transport_socket: Option<RawTransportSocket>,
    /// Read by `upstream_transport::matches`.
    pub transport_socket_matches: Option<Value>,
    /// Upstream network filters: only Istio's telemetry ones (no-ops) are accepted.
    #[serde(default)]
    pub filters: Vec<super::raw::RawNetworkFilter>,
    pub ring_hash_lb_config: Option<RawRingHashLbConfig>,
    pub maglev_lb_config: Option<RawMaglevLbConfig>,
    pub least_request_lb_config: Option<RawLeastRequestLbConfig>,
    pub round_robin_lb_config: Option<RawRoundRobinLbConfig>,
    pub dns_lookup_family: Option<String>,
    pub original_dst_lb_config: Option<RawOriginalDstLbConfig>,
    pub eds_cluster_config: Option<super::raw_dynamic::RawEdsClusterConfig>,
    /// Deprecated `max_requests_per_connection` (UInt32Value; the typed protocol options' own
    /// field wins).
    pub max_requests_per_connection: Option<u32>,
    pub per_connection_buffer_limit_bytes: Option<u32>,
    pub upstream_bind_config: Option<super::raw_cluster_options::RawBindConfig>,
    pub upstream_connection_options:
        Option<super::raw_cluster_options::RawUpstreamConnectionOptions>,
    pub respect_dns_ttl: Option<bool>,
    /// DNS clusters: a random delay below it is added to each refresh.
    pub dns_jitter: Option<PbDuration>,
    /// DNS clusters: the resolver's options (`config/dns_resolver.rs`).
    pub typed_dns_resolver_config: Option<super::dns_resolver::RawDnsResolver>,
    pub ignore_health_on_host_removal: Option<bool>,
    pub dns_failure_refresh_rate: Option<super::raw_cluster_options::RawRefreshRate>,
    pub common_lb_config: Option<super::raw_cluster_options::RawCommonLbConfig>,
    /// The name the cluster's stats and `%UPSTREAM_CLUSTER%` use (Istio sets it on every
    /// cluster).
    pub alt_stat_name: Option<String>,
    /// ORIGINAL_DST: how often hosts no request used are dropped.
    pub cleanup_interval: Option<PbDuration>,
}

/// `Cluster.OriginalDstLbConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOriginalDstLbConfig {
    pub use_http_header: Option<bool>,
    pub http_header_name: Option<String>,
    /// UInt32Value.
    pub upstream_port_override: Option<u32>,
}

/// `ClusterLoadAssignment`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoadAssignment {
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<RawLocalityLbEndpoints>,
    pub policy: Option<RawLoadAssignmentPolicy>,
}

/// `ClusterLoadAssignment.Policy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoadAssignmentPolicy {
    pub overprovisioning_factor: Option<u32>,
    pub weighted_priority_health: Option<bool>,
}

/// `LocalityLbEndpoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocalityLbEndpoints {
    /// `metadata`: only `envoy.transport_socket_match` is read (transport socket matching).
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub lb_endpoints: Vec<RawLbEndpoint>,
    /// The locality its endpoints are in (locality-weighted LB groups endpoints by it).
    pub locality: Option<RawLocality>,
    /// Locality weight: used by locality-weighted LB (with `locality`).
    pub load_balancing_weight: Option<u32>,
    pub priority: Option<u32>,
}

/// `core.v3.Locality`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub sub_zone: String,
}

/// `LbEndpoint`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLbEndpoint {
    /// `metadata` (e.g. Istio's `filter_metadata`): `envoy.lb`'s `canary` is read (the admin's
    /// /clusters shows it) and `envoy.transport_socket_match` (transport socket matching); no
    /// subset load balancing.
    pub metadata: Option<serde_json::Value>,
    pub endpoint: Option<RawEndpoint>,
    pub load_balancing_weight: Option<u32>,
    pub health_status: Option<String>,
}

/// `Endpoint`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub address: Option<RawAddress>,
    pub hostname: Option<String>,
    pub health_check_config: Option<RawEndpointHealthCheck>,
}

/// `Endpoint.HealthCheckConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpointHealthCheck {
    pub port_value: Option<u32>,
    pub hostname: Option<String>,
    pub address: Option<RawAddress>,
    pub disable_active_health_check: Option<bool>,
}

/// `CircuitBreakers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCircuitBreakers {
    #[serde(default)]
    pub thresholds: Vec<RawThresholds>,
}

/// `CircuitBreakers.Thresholds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawThresholds {
    pub priority: Option<String>,
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
    pub track_remaining: Option<bool>,
    pub retry_budget: Option<RawRetryBudget>,
}

/// `CircuitBreakers.Thresholds.RetryBudget`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryBudget {
    /// `type.v3.Percent`.
    pub budget_percent: Option<RawPercent>,
    pub min_retry_concurrency: Option<u32>,
    pub budget_interval: Option<PbDuration>,
}

/// `type.v3.Percent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPercent {
    pub value: Option<f64>,
}

/// `OutlierDetection`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub interval: Option<PbDuration>,
    pub base_ejection_time: Option<PbDuration>,
    pub max_ejection_percent: Option<u32>,
    pub max_ejection_time: Option<PbDuration>,
    pub enforcing_consecutive_5xx: Option<u32>,
    pub enforcing_success_rate: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    pub enforcing_consecutive_gateway_failure: Option<u32>,
    pub split_external_local_origin_errors: Option<bool>,
    pub consecutive_local_origin_failure: Option<u32>,
    pub enforcing_consecutive_local_origin_failure: Option<u32>,
    pub enforcing_local_origin_success_rate: Option<u32>,
    pub success_rate_minimum_hosts: Option<u32>,
    pub success_rate_request_volume: Option<u32>,
    pub success_rate_stdev_factor: Option<u32>,
    pub failure_percentage_threshold: Option<u32>,
    pub enforcing_failure_percentage: Option<u32>,
    pub enforcing_failure_percentage_local_origin: Option<u32>,
    pub failure_percentage_minimum_hosts: Option<u32>,
    pub failure_percentage_request_volume: Option<u32>,
    pub successful_active_health_check_uneject_host: Option<bool>,
    pub max_ejection_time_jitter: Option<PbDuration>,
    pub always_eject_one_host: Option<bool>,
}

/// `core.v3.HealthCheck`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub timeout: Option<PbDuration>,
    pub interval: Option<PbDuration>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub no_traffic_interval: Option<PbDuration>,
    pub unhealthy_interval: Option<PbDuration>,
    pub unhealthy_edge_interval: Option<PbDuration>,
    pub healthy_edge_interval: Option<PbDuration>,
    pub no_traffic_healthy_interval: Option<PbDuration>,
    pub reuse_connection: Option<bool>,
    pub event_log_path: Option<String>,
    #[serde(default)]
    pub event_logger: Vec<super::raw::RawTypedExtension>,
    pub always_log_health_check_failures: Option<bool>,
    pub always_log_health_check_success: Option<bool>,
    pub interval_jitter: Option<PbDuration>,
    pub interval_jitter_percent: Option<u32>,
    pub initial_jitter: Option<PbDuration>,
    pub http_health_check: Option<RawHttpHealthCheck>,
    pub tcp_health_check: Option<RawTcpHealthCheck>,
    pub grpc_health_check: Option<RawGrpcHealthCheck>,
}

/// `HealthCheck.GrpcHealthCheck`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrpcHealthCheck {
    pub service_name: Option<String>,
    pub authority: Option<String>,
    #[serde(default)]
    pub initial_metadata: Vec<super::raw_route::RawHeaderValueOption>,
}

/// `HealthCheck.HttpHealthCheck`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpHealthCheck {
    pub path: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub expected_statuses: Vec<RawInt64Range>,
    #[serde(default)]
    pub retriable_statuses: Vec<RawInt64Range>,
    /// `type.v3.CodecClientType` by name.
    pub codec_client_type: Option<String>,
    /// `core.v3.RequestMethod` by name.
    pub method: Option<String>,
    #[serde(default)]
    pub request_headers_to_add: Vec<super::raw_route::RawHeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    pub send: Option<RawPayload>,
    #[serde(default)]
    pub receive: Vec<RawPayload>,
    pub response_buffer_size: Option<u64>,
    pub service_name_matcher: Option<super::raw_route::RawStringMatcher>,
}

/// `HealthCheck.TcpHealthCheck` (connect-only: `send`/`receive` are not supported).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcpHealthCheck {
    pub send: Option<RawPayload>,
    #[serde(default)]
    pub receive: Vec<RawPayload>,
}

/// `HealthCheck.Payload`: `text` (hex) or `binary` (base64 in YAML / JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPayload {
    pub text: Option<String>,
    pub binary: Option<String>,
}

/// `type.v3.Int64Range` (`[start, end)`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInt64Range {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// `core.v3.TransportSocket`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTransportSocket {
    pub name: Option<String>,
    pub typed_config: Option<Value>,
}

/// `UpstreamTlsContext`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTlsContext {
    pub sni: Option<String>,
    pub common_tls_context: Option<RawCommonTlsContext>,
}

/// `CommonTlsContext`: its certificate and validation context are read through
/// [`super::secrets::Secrets::resolve`], which also follows the SDS references.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommonTlsContext {
    #[serde(default)]
    pub tls_certificates: Vec<RawTlsCertificate>,
    #[serde(default)]
    pub tls_certificate_sds_secret_configs: Vec<super::secrets::RawSdsSecretConfig>,
    pub validation_context: Option<RawValidationContext>,
    pub validation_context_sds_secret_config: Option<super::secrets::RawSdsSecretConfig>,
    pub combined_validation_context: Option<super::secrets::RawCombinedValidationContext>,
    pub tls_params: Option<super::secrets::RawTlsParams>,
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
}

/// `TlsCertificate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTlsCertificate {
    pub certificate_chain: Option<RawDataSource>,
    pub private_key: Option<RawDataSource>,
}

impl RawTlsCertificate {
    /// `certificate_chain` and `private_key`, both required (at `tp`).
    pub(crate) fn pair(
        &self,
        tp: &super::FieldPath,
    ) -> Result<(&RawDataSource, &RawDataSource), super::ConfigError> {
        let chain = self
            .certificate_chain
            .as_ref()
            .ok_or_else(|| tp.field("certificate_chain").err("required"))?;
        let key = self
            .private_key
            .as_ref()
            .ok_or_else(|| tp.field("private_key").err("required"))?;
        Ok((chain, key))
    }
}

/// `CertificateValidationContext`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawValidationContext {
    pub trusted_ca: Option<RawDataSource>,
    /// Matched against the peer certificate's DNS, URI, email and IP SANs.
    #[serde(default)]
    pub match_subject_alt_names: Vec<super::raw_route::RawStringMatcher>,
    #[serde(default)]
    pub match_typed_subject_alt_names: Vec<crate::tls_common::san::RawSanMatcher>,
}

/// `upstreams.http.v3.HttpProtocolOptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpProtocolOptions {
    pub explicit_http_config: Option<RawExplicitHttpConfig>,
    /// Same shape as `explicit_http_config`: each protocol's options when it is the one used.
    pub use_downstream_protocol_config: Option<RawExplicitHttpConfig>,
    pub common_http_protocol_options:
        Option<super::raw_cluster_options::RawUpstreamCommonHttpOptions>,
    pub upstream_http_protocol_options:
        Option<super::raw_cluster_options::RawUpstreamHttpProtocolOptions>,
}

/// `HttpProtocolOptions.ExplicitHttpConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExplicitHttpConfig {
    pub http_protocol_options: Option<RawUpstreamHttp1Options>,
    pub http2_protocol_options: Option<RawUpstreamHttp2Options>,
}

/// An upstream `core.v3.Http1ProtocolOptions`: `header_key_format`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamHttp1Options {
    pub header_key_format: Option<super::header_key_format::RawHeaderKeyFormat>,
}

/// An upstream `core.v3.Http2ProtocolOptions`: `connection_keepalive` and
/// `max_concurrent_streams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamHttp2Options {
    pub connection_keepalive: Option<RawKeepaliveSettings>,
    pub max_concurrent_streams: Option<u32>,
}

/// `core.v3.KeepaliveSettings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeepaliveSettings {
    pub interval: Option<PbDuration>,
    pub timeout: Option<PbDuration>,
    pub interval_jitter: Option<RawPercent>,
    pub connection_idle_interval: Option<PbDuration>,
}

/// `Cluster.RingHashLbConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRingHashLbConfig {
    pub minimum_ring_size: Option<u64>,
    pub maximum_ring_size: Option<u64>,
}

/// `Cluster.MaglevLbConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMaglevLbConfig {
    pub table_size: Option<u64>,
}

/// `Cluster.LeastRequestLbConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLeastRequestLbConfig {
    pub choice_count: Option<u32>,
    pub slow_start_config: Option<RawSlowStartConfig>,
}

/// `Cluster.RoundRobinLbConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoundRobinLbConfig {
    pub slow_start_config: Option<RawSlowStartConfig>,
}

/// `Cluster.SlowStartConfig` (a DestinationRule's `loadBalancer.warmup`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlowStartConfig {
    pub slow_start_window: Option<PbDuration>,
    pub aggression: Option<RawRuntimeDouble>,
    pub min_weight_percent: Option<RawPercent>,
}

/// `core.v3.RuntimeDouble`: the runtime key is a no-op (no runtime layer; its default applies,
/// as in Envoy without `layered_runtime`; istiod sends `"("`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntimeDouble {
    pub default_value: Option<f64>,
    #[allow(dead_code)]
    pub runtime_key: Option<String>,
}
