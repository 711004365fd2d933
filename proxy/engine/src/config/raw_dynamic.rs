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

/// `core.v3.GrpcService`: Envoy's own gRPC client to a configured cluster, or Google's gRPC
/// client to a target URI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrpcService {
    pub envoy_grpc: Option<RawEnvoyGrpc>,
    pub google_grpc: Option<RawGoogleGrpc>,
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

/// `GrpcService.GoogleGrpc`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGoogleGrpc {
    pub target_uri: Option<String>,
    pub channel_credentials: Option<RawChannelCredentials>,
    #[serde(default)]
    pub call_credentials: Vec<RawCallCredentials>,
    /// Required by Envoy (its stats prefix); sluice keeps no per-service gRPC stats.
    pub stat_prefix: Option<String>,
    pub credentials_factory_name: Option<String>,
}

/// `GoogleGrpc.ChannelCredentials`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChannelCredentials {
    pub ssl_credentials: Option<RawSslCredentials>,
    pub local_credentials: Option<super::raw::Empty>,
    pub google_default: Option<super::raw::Empty>,
}

/// `GoogleGrpc.SslCredentials`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSslCredentials {
    pub root_certs: Option<super::raw_route::RawDataSource>,
    pub private_key: Option<super::raw_route::RawDataSource>,
    pub cert_chain: Option<super::raw_route::RawDataSource>,
}

/// `GoogleGrpc.CallCredentials` (one of).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCallCredentials {
    pub access_token: Option<String>,
    pub from_plugin: Option<RawMetadataCredentialsFromPlugin>,
    pub google_compute_engine: Option<super::raw::Empty>,
    pub google_refresh_token: Option<String>,
    pub service_account_jwt_access: Option<serde_json::Value>,
    pub google_iam: Option<serde_json::Value>,
    pub sts_service: Option<serde_json::Value>,
}

/// `CallCredentials.MetadataCredentialsFromPlugin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetadataCredentialsFromPlugin {
    pub name: Option<String>,
    pub typed_config: Option<serde_json::Value>,
}

/// `envoy.config.grpc_credential.v3.FileBasedMetadataConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFileBasedMetadataConfig {
    #[serde(rename = "@type")]
    #[allow(dead_code)]
    pub type_url: Option<String>,
    pub secret_data: Option<super::raw_route::RawDataSource>,
    pub header_key: Option<String>,
    pub header_prefix: Option<String>,
}
