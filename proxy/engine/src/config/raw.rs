//! Raw serde types mirroring Envoy's v3 field names (bootstrap, listeners, network filters),
//! with `deny_unknown_fields`, and the YAML/`typed_config` decoding with field paths.

use serde::{de::DeserializeOwned, Deserialize};
use serde_norway::Value;

use super::raw_route::RawRouteConfiguration;
use super::{duration::PbDuration, path::FieldPath, raw_cluster::RawCluster, ConfigError};

/// Parses the whole YAML document into `T`, mapping errors to a path and a line/column.
/// Documents using YAML merge keys (`<<: *anchor`, which Envoy's YAML loader resolves) are
/// merged first; their field errors then carry the path but no line/column.
pub(crate) fn parse_document<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    super::yaml_limits::check(text)?;
    if text.contains("<<") {
        let mut value: Value = parse_document_direct(text)?;
        if value.apply_merge().is_ok() {
            return serde_path_to_error::deserialize(value).map_err(|e| {
                let p = FieldPath::root().join_serde(e.path());
                serde_error(
                    &p,
                    strip_path_prefix(&strip_location(&e.into_inner().to_string())),
                )
            });
        }
        // Not a usable merge (e.g. `<<` inside a string): decode the text as is.
    }
    parse_document_direct(text)
}

fn parse_document_direct<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = FieldPath::root().join_serde(e.path());
        let inner = e.into_inner();
        let (line, column) = match inner.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        let message = strip_path_prefix(&strip_location(&inner.to_string())).to_string();
        if !is_data_error(&message) {
            return ConfigError::Yaml {
                file: None,
                line,
                column,
                message,
            };
        }
        let mut err = serde_error(&path, &message);
        if let ConfigError::Field {
            line: l, column: c, ..
        } = &mut err
        {
            *l = line;
            *c = column;
        }
        err
    })
}

/// Whether a serde_norway message is about the data (a field) rather than YAML syntax.
fn is_data_error(message: &str) -> bool {
    const DATA: &[&str] = &[
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
        "unknown field",
        "missing field",
        "duplicate field",
        "invalid duration",
    ];
    DATA.iter().any(|m| message.contains(m))
}

/// serde_norway prefixes messages with the YAML path (`a.b[0]: ...`); the error carries
/// the Envoy path separately.
fn strip_path_prefix(message: &str) -> &str {
    match message.split_once(": ") {
        Some((prefix, rest))
            if !prefix.is_empty()
                && !prefix.contains(char::is_whitespace)
                && !prefix.contains('`') =>
        {
            rest
        }
        _ => message,
    }
}

/// serde_norway appends " at line L column C"; the error carries those separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Turns a serde message at `path` into a ConfigError: Envoy fields sluice does not
/// implement are reported as `<path>: not supported`.
pub(crate) fn serde_error(path: &FieldPath, message: &str) -> ConfigError {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        let supported = if expected.is_empty() {
            String::new()
        } else {
            format!(" (supported here: {expected})")
        };
        if super::unsupported_fields::is_envoy_field(name) {
            return path.err(format!("not supported{supported}"));
        }
        return path.err(format!("unknown field{supported}"));
    }
    path.err(message.to_string())
}

/// Decodes an `Any`-style `typed_config`: checks `@type` against `type_url` and decodes the
/// rest into `T` with paths under `path`.
pub(crate) fn typed_config<T: DeserializeOwned>(
    value: &Value,
    path: &FieldPath,
    type_url: &str,
) -> Result<T, ConfigError> {
    let Value::Mapping(map) = value else {
        return Err(path.err("must be a mapping with an `@type`"));
    };
    let mut map = map.clone();
    let ty = map
        .remove("@type")
        .ok_or_else(|| path.field("@type").err("missing"))?;
    let ty = ty
        .as_str()
        .ok_or_else(|| path.field("@type").err("must be a string"))?;
    if ty != type_url {
        return Err(path
            .field("@type")
            .err(format!("unsupported type {ty:?} (expected {type_url:?})")));
    }
    serde_path_to_error::deserialize(Value::Mapping(map)).map_err(|e| {
        let p = path.join_serde(e.path());
        serde_error(
            &p,
            strip_path_prefix(&strip_location(&e.into_inner().to_string())),
        )
    })
}

/// The `@type` of a typed_config value, if any.
pub(crate) fn type_url(value: &Value) -> Option<&str> {
    value.get("@type").and_then(Value::as_str)
}

/// An empty message (`{}`), e.g. a listener filter's typed_config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

/// `extensions.filters.listener.tls_inspector.v3.TlsInspector`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTlsInspector {
    /// istiod sets 512 on every inbound listener: Envoy's first read size (the buffer then
    /// doubles up to 64 KiB), a no-op for what the inspector finds.
    pub initial_read_buffer_size: Option<u32>,
    pub enable_ja3_fingerprinting: Option<bool>,
    pub enable_ja4_fingerprinting: Option<bool>,
    pub close_connection_on_client_hello_parsing_errors: Option<bool>,
}

/// `Bootstrap`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBootstrap {
    pub node: Option<RawNode>,
    pub admin: Option<RawAdmin>,
    pub static_resources: Option<RawStaticResources>,
    pub dynamic_resources: Option<super::raw_dynamic::RawDynamicResources>,
    pub tracing: Option<super::tracing::RawBootstrapTracing>,
}

/// `node` (identity only).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub id: Option<String>,
    pub cluster: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// `admin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub address: Option<RawAddress>,
    pub access_log_path: Option<String>,
}

/// `static_resources`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStaticResources {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub clusters: Vec<RawCluster>,
    #[serde(default)]
    pub secrets: Vec<super::secrets::RawSecret>,
}

/// `core.v3.Address`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAddress {
    pub socket_address: Option<RawSocketAddress>,
    pub pipe: Option<super::raw_dynamic::RawPipe>,
}

/// `core.v3.SocketAddress`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSocketAddress {
    pub address: Option<String>,
    pub port_value: Option<u32>,
    pub protocol: Option<String>,
}

/// `listener.v3.Listener`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub name: Option<String>,
    /// `metadata` (e.g. Istio's `filter_metadata`): accepted and never read (no filter reads it).
    #[allow(dead_code)]
    pub metadata: Option<serde_json::Value>,

    pub address: Option<RawAddress>,
    /// `additional_addresses[]` (istiod's dual-stack listeners: `::` beside `0.0.0.0`).
    #[serde(default)]
    pub additional_addresses: Vec<RawAdditionalAddress>,
    /// `connection_balance_config`: `exact_balance` only (istiod's, when the proxy metadata
    /// asks for it), a no-op here.
    pub connection_balance_config: Option<RawConnectionBalanceConfig>,
    #[serde(default)]
    pub filter_chains: Vec<RawFilterChain>,
    #[serde(default)]
    pub listener_filters: Vec<RawListenerFilter>,
    pub use_original_dst: Option<bool>,
    pub bind_to_port: Option<bool>,
    pub traffic_direction: Option<String>,
    pub default_filter_chain: Option<RawFilterChain>,
    /// The proxy_protocol filter's budget (istiod sets both); the inspectors' budget is
    /// sluice's own (`detect.rs`).
    pub listener_filters_timeout: Option<PbDuration>,
    pub continue_on_listener_filters_timeout: Option<bool>,
    /// istiod sets 1 on its sidecar listeners (`MAX_CONNECTIONS_PER_SOCKET_EVENT_LOOP`).
    pub max_connections_to_accept_per_socket_event: Option<u32>,
    /// istiod's gateway listeners under the EDGE connection profile (32 KiB): the HTTP
    /// connection managers' request buffer limit.
    pub per_connection_buffer_limit_bytes: Option<u32>,
    #[serde(default)]
    pub access_log: Vec<RawAccessLog>,
}

/// `Listener.ConnectionBalanceConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnectionBalanceConfig {
    pub exact_balance: Option<Value>,
    pub extend_balance: Option<Value>,
}

/// `config.listener.v3.AdditionalAddress`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdditionalAddress {
    pub address: Option<RawAddress>,
    pub socket_options: Option<Value>,
}

/// `core.v3.TypedExtensionConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTypedExtension {
    /// Informational (the extension is chosen by `typed_config`'s `@type`).
    #[allow(dead_code)]
    pub name: Option<String>,
    pub typed_config: Option<Value>,
}

/// `listener_filters[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerFilter {
    pub name: Option<String>,
    pub typed_config: Option<Value>,
    pub filter_disabled: Option<Value>,
}

/// `filter_chains[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilterChain {
    pub name: Option<String>,
    pub filter_chain_match: Option<RawFilterChainMatch>,
    #[serde(default)]
    pub filters: Vec<RawNetworkFilter>,
    /// Parsed only to refuse it with a precise reason (downstream TLS, SDS).
    pub transport_socket: Option<Value>,
    pub transport_socket_connect_timeout: Option<PbDuration>,
    /// A no-op: istiod labels a chain with the config it came from (`filter_metadata.istio`);
    /// nothing here reads filter chain metadata.
    #[allow(dead_code)]
    pub metadata: Option<Value>,
}

/// `filter_chain_match`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilterChainMatch {
    pub destination_port: Option<u32>,
    #[serde(default)]
    pub prefix_ranges: Vec<RawCidrRange>,
    #[serde(default)]
    pub server_names: Vec<String>,
    pub transport_protocol: Option<String>,
    #[serde(default)]
    pub application_protocols: Vec<String>,
    #[serde(default)]
    pub direct_source_prefix_ranges: Vec<RawCidrRange>,
    pub source_type: Option<String>,
    #[serde(default)]
    pub source_prefix_ranges: Vec<RawCidrRange>,
    #[serde(default)]
    pub source_ports: Vec<u32>,
}

/// `core.v3.CidrRange`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCidrRange {
    pub address_prefix: Option<String>,
    pub prefix_len: Option<u32>,
}

/// `filters[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetworkFilter {
    pub name: Option<String>,
    pub typed_config: Option<Value>,
}

/// `HttpConnectionManager`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHcm {
    pub stat_prefix: Option<String>,
    pub codec_type: Option<String>,
    pub route_config: Option<RawRouteConfiguration>,
    #[serde(default)]
    pub http_filters: Vec<RawHttpFilter>,
    pub stream_idle_timeout: Option<PbDuration>,
    pub request_timeout: Option<PbDuration>,
    pub request_headers_timeout: Option<PbDuration>,
    pub scheme_header_transformation: Option<RawSchemeHeaderTransformation>,
    pub drain_timeout: Option<PbDuration>,
    pub delayed_close_timeout: Option<PbDuration>,
    #[serde(default)]
    pub access_log: Vec<RawAccessLog>,
    pub use_remote_address: Option<bool>,
    /// Default true: the connection's addresses are what an `upstream_proxy_protocol`
    /// transport socket states.
    pub add_proxy_protocol_connection_state: Option<bool>,
    pub internal_address_config: Option<super::internal_address::RawInternalAddressConfig>,
    pub xff_num_trusted_hops: Option<u32>,
    pub skip_xff_append: Option<bool>,
    pub via: Option<String>,
    pub preserve_external_request_id: Option<bool>,
    #[serde(default)]
    pub upgrade_configs: Vec<RawUpgradeConfig>,
    pub strip_matching_host_port: Option<bool>,
    pub strip_any_host_port: Option<bool>,
    pub normalize_path: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub path_with_escaped_slashes_action: Option<String>,
    pub server_name: Option<String>,
    pub server_header_transformation: Option<String>,
    pub generate_request_id: Option<bool>,
    pub always_set_request_id_in_response: Option<bool>,
    pub max_request_headers_kb: Option<u32>,
    pub common_http_protocol_options: Option<RawHttpProtocolOptions>,
    pub forward_client_cert_details: Option<String>,
    pub add_user_agent: Option<bool>,
    pub local_reply_config: Option<super::local_reply::RawLocalReplyConfig>,
    pub proxy_100_continue: Option<bool>,
    pub http2_protocol_options: Option<RawHttp2Options>,
    pub http_protocol_options: Option<RawHttp1Options>,
    pub strip_trailing_host_dot: Option<bool>,
    pub append_x_forwarded_port: Option<bool>,
    pub set_current_client_cert_details: Option<RawSetCurrentClientCertDetails>,
    pub tracing: Option<super::tracing::RawHcmTracing>,
    /// `RequestIDExtension` (read by `tracing::request_id_extension`).
    pub request_id_extension: Option<Value>,
}

/// The HCM's `http_protocol_options` (core.v3.Http1ProtocolOptions; other fields rejected).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp1Options {
    pub accept_http_10: Option<bool>,
    pub default_host_for_http_10: Option<String>,
    pub header_key_format: Option<super::header_key_format::RawHeaderKeyFormat>,
}

/// The HCM's `http2_protocol_options` (core.v3.Http2ProtocolOptions; other fields rejected).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp2Options {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    pub max_consecutive_inbound_frames_with_empty_payload: Option<u32>,
    pub max_inbound_priority_frames_per_stream: Option<u32>,
    pub max_inbound_window_update_frames_per_data_frame_sent: Option<u32>,
}

/// `set_current_client_cert_details`: which parts of the peer certificate SANITIZE_SET and
/// APPEND_FORWARD put into `x-forwarded-client-cert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSetCurrentClientCertDetails {
    pub subject: Option<bool>,
    pub cert: Option<bool>,
    pub chain: Option<bool>,
    pub dns: Option<bool>,
    pub uri: Option<bool>,
}

/// `common_http_protocol_options` (HttpProtocolOptions; the timeouts and the other fields are
/// not supported).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpProtocolOptions {
    pub max_headers_count: Option<u32>,
    pub headers_with_underscores_action: Option<String>,
    pub max_stream_duration: Option<PbDuration>,
    pub idle_timeout: Option<PbDuration>,
    pub max_connection_duration: Option<PbDuration>,
    pub max_requests_per_connection: Option<u32>,
}

/// `upgrade_configs[]` (UpgradeConfig; per-upgrade `filters` are not supported).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpgradeConfig {
    pub upgrade_type: Option<String>,
    pub enabled: Option<bool>,
}

/// `http_filters[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpFilter {
    pub name: Option<String>,
    pub typed_config: Option<Value>,
    pub disabled: Option<bool>,
    /// A no-op: Envoy runs the optional filters it knows; the ones sluice does not are refused.
    #[allow(dead_code)]
    pub is_optional: Option<bool>,
}

/// `access_log[]` (AccessLog).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessLog {
    /// Informational: Envoy (and sluice) pick the logger by the typed_config `@type`.
    #[allow(dead_code)]
    pub name: Option<String>,
    pub typed_config: Option<Value>,
    pub filter: Option<super::access_log_filter::RawAccessLogFilter>,
}

/// `FileAccessLog`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFileAccessLog {
    pub path: Option<String>,
    pub log_format: Option<crate::route::body_format::RawBodyFormat>,
}

/// `StdoutAccessLog`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStdoutAccessLog {
    pub log_format: Option<crate::route::body_format::RawBodyFormat>,
}

/// `TcpProxy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcpProxy {
    pub stat_prefix: Option<String>,
    pub cluster: Option<String>,
    pub weighted_clusters: Option<RawTcpWeightedClusters>,
    pub idle_timeout: Option<PbDuration>,
    pub max_downstream_connection_duration: Option<PbDuration>,
    pub max_connect_attempts: Option<u32>,
    #[serde(default)]
    pub access_log: Vec<RawAccessLog>,
    /// `hash_policy[]`: `source_ip` only (what istiod sends for a consistent-hash
    /// DestinationRule on a TCP port).
    #[serde(default)]
    pub hash_policy: Vec<RawTcpHashPolicy>,
    pub tunneling_config: Option<super::tunneling::RawTunnelingConfig>,
}

/// `type.v3.HashPolicy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcpHashPolicy {
    pub source_ip: Option<Value>,
    pub filter_state: Option<Value>,
}

/// `TcpProxy.weighted_clusters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcpWeightedClusters {
    #[serde(default)]
    pub clusters: Vec<RawTcpWeightedCluster>,
}

/// `TcpProxy.weighted_clusters.clusters[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcpWeightedCluster {
    pub name: Option<String>,
    pub weight: Option<u32>,
}

/// `HttpConnectionManager.scheme_header_transformation` (`config.core.v3.SchemeHeaderTransformation`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchemeHeaderTransformation {
    pub scheme_to_overwrite: Option<String>,
    pub match_upstream: Option<bool>,
}
