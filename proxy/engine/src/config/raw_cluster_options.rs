//! Raw serde types of the cluster's connection, DNS and load-balancing options
//! (`upstream_connection_options`, `dns_failure_refresh_rate`, `common_lb_config`, the upstream
//! `common_http_protocol_options`), with `deny_unknown_fields`.

use serde::Deserialize;

use super::duration::PbDuration;

/// `core.v3.UpstreamConnectionOptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamConnectionOptions {
    pub tcp_keepalive: Option<RawTcpKeepalive>,
}

/// `core.v3.BindConfig` (`source_address` and `extra_source_addresses`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBindConfig {
    pub source_address: Option<super::raw::RawSocketAddress>,
    #[serde(default)]
    pub extra_source_addresses: Vec<RawExtraSourceAddress>,
}

/// `core.v3.ExtraSourceAddress`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtraSourceAddress {
    pub address: Option<super::raw::RawSocketAddress>,
    pub socket_options: Option<serde_norway::Value>,
}

/// `core.v3.TcpKeepalive` (each a UInt32Value; unset = the kernel's default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcpKeepalive {
    pub keepalive_probes: Option<u32>,
    pub keepalive_time: Option<u32>,
    pub keepalive_interval: Option<u32>,
}

/// `Cluster.RefreshRate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRefreshRate {
    pub base_interval: Option<PbDuration>,
    pub max_interval: Option<PbDuration>,
}

/// `Cluster.CommonLbConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommonLbConfig {
    pub healthy_panic_threshold: Option<RawPercent>,
    pub zone_aware_lb_config: Option<RawZoneAwareLbConfig>,
    pub update_merge_window: Option<PbDuration>,
    pub locality_weighted_lb_config: Option<RawLocalityWeightedLbConfig>,
}

/// `CommonLbConfig.LocalityWeightedLbConfig` (no fields).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocalityWeightedLbConfig {}

/// `type.v3.Percent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPercent {
    pub value: Option<f64>,
}

/// `CommonLbConfig.ZoneAwareLbConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZoneAwareLbConfig {
    pub routing_enabled: Option<RawPercent>,
    pub min_cluster_size: Option<u64>,
    pub fail_traffic_on_panic: Option<bool>,
}

/// `core.v3.HttpProtocolOptions` inside the upstream `HttpProtocolOptions`
/// (`common_http_protocol_options`): `max_requests_per_connection`, `idle_timeout`, `max_connection_duration`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamCommonHttpOptions {
    pub max_requests_per_connection: Option<u32>,
    pub max_response_headers_kb: Option<u32>,
    pub idle_timeout: Option<super::duration::PbDuration>,
    pub max_connection_duration: Option<super::duration::PbDuration>,
}

/// `core.v3.UpstreamHttpProtocolOptions` (HttpProtocolOptions' `upstream_http_protocol_options`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamHttpProtocolOptions {
    pub auto_sni: Option<bool>,
    pub auto_san_validation: Option<bool>,
    pub override_auto_sni_header: Option<String>,
}
