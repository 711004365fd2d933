//! Raw serde types of the bootstrap's `dynamic_resources` (ADS only), the `pipe` address and a
//! cluster's `eds_cluster_config`, with `deny_unknown_fields`. Validated in `dynamic.rs`.

use serde::Deserialize;

use super::duration::PbDuration;

/// `Bootstrap.dynamic_resources`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDynamicResources {
    pub ads_config: Option<RawApiConfigSource>,
    pub lds_config: Option<RawConfigSource>,
    pub cds_config: Option<RawConfigSource>,
}

/// `core.v3.ApiConfigSource` (the ADS stream).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiConfigSource {
    pub api_type: Option<String>,
    pub transport_api_version: Option<String>,
    #[serde(default)]
    pub grpc_services: Vec<RawGrpcService>,
    pub set_node_on_first_message_only: Option<bool>,
}

/// `core.v3.GrpcService` (Envoy's own gRPC client to a configured cluster only).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrpcService {
    pub envoy_grpc: Option<RawEnvoyGrpc>,
    /// Sent as metadata (headers) on every stream to the service.
    #[serde(default)]
    pub initial_metadata: Vec<super::raw_route::RawHeaderValue>,
    /// Accepted; the stream has no deadline (Envoy's ADS ignores it too).
    #[allow(dead_code)]
    pub timeout: Option<PbDuration>,
}

/// `GrpcService.EnvoyGrpc`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvoyGrpc {
    pub cluster_name: Option<String>,
}

/// `core.v3.ConfigSource` (only `ads: {}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfigSource {
    pub ads: Option<super::raw::Empty>,
    pub initial_fetch_timeout: Option<PbDuration>,
    pub resource_api_version: Option<String>,
}

/// `core.v3.Pipe` (a unix socket address; only for the ADS cluster).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipe {
    pub path: Option<String>,
    /// Only for listening pipes; sluice only connects to them.
    #[allow(dead_code)]
    pub mode: Option<u32>,
}

/// `Cluster.EdsClusterConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEdsClusterConfig {
    pub eds_config: Option<RawConfigSource>,
    /// The EDS resource name; the xDS client reads it (default: the cluster name).
    #[allow(dead_code)]
    pub service_name: Option<String>,
}
