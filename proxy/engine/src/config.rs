//! Envoy v3 static bootstrap config: YAML -> raw serde types -> `validate()` -> typed runtime model.
//!
//! The supported subset is documented field by field in `docs/config.md`. Anything outside it is
//! rejected with a [`ConfigError`] naming the field path (e.g.
//! `static_resources.listeners[0]...routes[5].match.grpc: not supported`), never ignored.
//!
//! Parsing is pure: no I/O except [`load_file`] / [`load_serving_file`] reading the file, no
//! tokio, no sockets.

mod access_log_filter;
mod chain_match;
mod cluster;
mod cluster_options;
mod dns_resolver;
pub(crate) mod duration;
mod dynamic;
#[cfg(test)]
mod dynamic_tests;
mod filter_disabled;
mod hcm_request;
mod header_key_format;
mod http2_options;
mod internal_address;
pub(crate) mod istio_filters;
mod listener;
mod local_reply;
mod mongo_proxy;
mod outlier;
mod path;
mod proxy_protocol;
pub(crate) mod raw;
pub(crate) mod raw_cluster;
mod raw_cluster_options;
mod raw_dynamic;
pub(crate) mod raw_route;
mod references;
mod routing_priority;
pub(crate) mod secrets;
pub use proxy_protocol::{ListenerProxyProtocol, DEFAULT_LISTENER_FILTERS_TIMEOUT};
mod upstream_transport;
pub use upstream_transport::TransportSocketMatch;
pub(crate) mod otel;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_access_log;
#[cfg(test)]
mod tests_istio;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_proxy_protocol;
#[cfg(test)]
mod tests_tracing;
pub(crate) mod tracing;
mod tunneling;
mod typed;
mod unsupported_fields;
mod user_agent;
mod validate;
pub(crate) mod validate_chain;
mod validate_cluster;
mod yaml_limits;
pub(crate) mod zipkin;

use std::{path::Path as FsPath, sync::Arc};

pub use access_log_filter::{AccessLogFilter, CmpOp, Comparison, Logged};
pub use chain_match::{AppProtocols, ChainMatch, Cidr, ConnFacts, SourceType};
pub use cluster::{
    AutoSni, CircuitBreakers, Cluster, ClusterOptions, DataSource, DiscoveryType, DnsLookupFamily,
    Endpoint, EndpointAddress, EndpointHealth, EndpointHealthCheck, FailurePercentageEjection,
    HealthCheck, HealthCheckIntervals, HealthCheckJitter, HealthCheckKind, HealthEventLog,
    HttpCheckBody, LbPolicy, Locality, OutlierDetection, RetryBudget, ServiceNameMatcher,
    SlowStart, SuccessRateEjection, TcpKeepalive, UpstreamProtocol, UpstreamTls,
    DEFAULT_BASE_EJECTION_TIME, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONSECUTIVE_5XX,
    DEFAULT_DNS_REFRESH_RATE, DEFAULT_ENDPOINT_WEIGHT, DEFAULT_HEALTHY_PANIC_THRESHOLD,
    DEFAULT_LEAST_REQUEST_CHOICE_COUNT, DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_EJECTION_PERCENT, DEFAULT_MAX_EJECTION_TIME, DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_MAX_REQUESTS, DEFAULT_MAX_RETRIES, DEFAULT_NO_TRAFFIC_INTERVAL,
    DEFAULT_ORIGINAL_DST_CLEANUP, DEFAULT_ORIGINAL_DST_HEADER, DEFAULT_OUTLIER_INTERVAL,
    DEFAULT_OVERPROVISIONING_FACTOR, DEFAULT_RING_HASH_MAX_SIZE, DEFAULT_RING_HASH_MIN_SIZE,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT,
};
pub use dynamic::{
    AdsConfig, CallMetadata, DynamicResources, GoogleGrpc, DEFAULT_INITIAL_FETCH_TIMEOUT,
};
pub use filter_disabled::Predicate as FilterDisabled;
pub use hcm_request::{
    ConnTimeouts, EscapedSlashes, HeadLimits, PathNormalization, ServerHeader,
    ServerTransformation, StripPort, UnderscoreAction, DEFAULT_HCM_IDLE_TIMEOUT,
    DEFAULT_MAX_HEADERS_COUNT, DEFAULT_MAX_REQUEST_HEADERS_KB, DEFAULT_SERVER_NAME,
};
pub use header_key_format::HeaderKeyFormat;
pub use http2_options::{
    H2FloodLimits, Http2Options, DEFAULT_MAX_CONSECUTIVE_EMPTY_FRAMES,
    DEFAULT_MAX_PRIORITY_FRAMES_PER_STREAM, DEFAULT_MAX_WINDOW_UPDATES_PER_DATA_FRAME_SENT,
};
pub use internal_address::InternalAddresses;
pub use listener::{
    AccessLog, Admin, CodecType, FilterChain, ForwardClientCert, Http10, HttpConnectionManager,
    Listener, ListenerFilter, LogSink, NetworkFilter, TcpProxy, TcpProxyCluster, UpgradeConfig,
    Xfcc, DEFAULT_STREAM_IDLE_TIMEOUT, DEFAULT_TCP_PROXY_IDLE_TIMEOUT,
    ENVOY_DEFAULT_ACCESS_LOG_FORMAT,
};
pub use local_reply::{LocalReplyConfig, Mapper as LocalReplyMapper};
pub(crate) use path::FieldPath;
pub use routing_priority::{ByPriority, RoutingPriority};
pub use tracing::{
    CustomTag, OpenTelemetry, OtelExport, RequestIdExtension, RouteTracing, Sampling, TagValue,
    TraceProvider, TracerConfig, Tracing, Zipkin,
};
pub use tunneling::Tunneling;
pub use typed::{ClusterRef, ListenerRef};
pub use user_agent::UserAgent;

/// A validated Envoy v3 static bootstrap: everything the proxy runs.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `node` (identity only; informational).
    pub node: Option<Node>,
    /// `admin.address.socket_address`, if an admin block is configured.
    pub admin: Option<Admin>,
    /// `static_resources.listeners[]`, in config order (names are unique).
    pub listeners: Vec<Listener>,
    /// `static_resources.clusters[]`, in config order (names are unique; every route and
    /// tcp_proxy reference resolves to one of them).
    pub clusters: Vec<Arc<Cluster>>,
    /// `dynamic_resources` (ADS), run by the `sluice-xds` crate.
    pub dynamic_resources: Option<DynamicResources>,
}

/// `node`: the proxy's identity (informational; shown by the admin interface).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// `node.metadata` (a Struct, sent to the management server as is).
    pub metadata: Option<serde_json::Value>,
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
}

impl Bootstrap {
    /// The cluster named `name`, if any.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| c.name.as_str() == name)
    }

    /// The listener named `name`, if any.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name.as_str() == name)
    }
}

/// Why a config was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The YAML itself is malformed (syntax), with its 1-based line and column when known.
    #[error("{}invalid YAML{}: {message}", file_prefix(file), line_col(*line, *column))]
    Yaml {
        /// The file the config came from, for [`load_file`].
        file: Option<String>,
        /// 1-based line of the error, if the YAML parser reported one.
        line: Option<usize>,
        /// 1-based column of the error, if the YAML parser reported one.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A field is unknown, unsupported, of the wrong type or has an invalid value.
    #[error("{}{path}: {message}{}", file_prefix(file), line_col(*line, *column))]
    Field {
        /// The file the config came from, for [`load_file`].
        file: Option<String>,
        /// Envoy field path, e.g. `static_resources.clusters[1].connect_timeout`.
        path: String,
        /// What is wrong with it.
        message: String,
        /// 1-based line, when the YAML parser knew it.
        line: Option<usize>,
        /// 1-based column, when the YAML parser knew it.
        column: Option<usize>,
    },
    /// The config file could not be read.
    #[error("{file}: cannot read config: {message}")]
    Io {
        /// The file path.
        file: String,
        /// The OS error.
        message: String,
    },
}

impl ConfigError {
    /// The field path the error names (empty for YAML syntax and I/O errors).
    pub fn path(&self) -> &str {
        match self {
            ConfigError::Field { path, .. } => path,
            _ => "",
        }
    }

    /// What is wrong (without path, file or position).
    pub fn message(&self) -> &str {
        match self {
            ConfigError::Yaml { message, .. }
            | ConfigError::Field { message, .. }
            | ConfigError::Io { message, .. } => message,
        }
    }

    /// A field error at `path` with `message` (no file or position yet).
    pub(crate) fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            file: None,
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }

    fn with_file(mut self, name: &str) -> Self {
        match &mut self {
            ConfigError::Yaml { file, .. } | ConfigError::Field { file, .. } => {
                *file = Some(name.to_string())
            }
            ConfigError::Io { .. } => {}
        }
        self
    }
}

fn file_prefix(file: &Option<String>) -> String {
    file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

fn line_col(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (at line {l} column {c})"),
        _ => String::new(),
    }
}

/// Reads and validates the Envoy v3 bootstrap YAML at `path`; errors carry the file name.
pub fn load_file(path: impl AsRef<FsPath>) -> Result<Bootstrap, ConfigError> {
    let (name, text) = read_text(path.as_ref())?;
    from_yaml_str(&text).map_err(|e| e.with_file(&name))
}

/// The file's name (for errors) and text.
fn read_text(path: &FsPath) -> Result<(String, String), ConfigError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((name, text)),
        Err(e) => Err(ConfigError::Io {
            file: name,
            message: e.to_string(),
        }),
    }
}

/// Reads a config file for a server to run: the validated bootstrap and the file as JSON (for
/// /config_dump), from one read. A bootstrap that serves nothing — an empty file, or no
/// listener — is refused (Envoy refuses an empty bootstrap), at start and at reload alike.
pub fn load_serving_file(
    path: impl AsRef<FsPath>,
) -> Result<(Bootstrap, serde_json::Value), ConfigError> {
    let (name, text) = read_text(path.as_ref())?;
    let serving = || {
        if text.trim().is_empty() {
            return Err(ConfigError::field(
                "static_resources.listeners",
                "the config file is empty: a bootstrap without listeners serves nothing",
            ));
        }
        let bootstrap = from_yaml_str(&text)?;
        if bootstrap.listeners.is_empty() {
            return Err(ConfigError::field(
                "static_resources.listeners",
                "no listeners: a bootstrap without listeners serves nothing",
            ));
        }
        let source = serde_norway::from_str(&text).unwrap_or(serde_json::Value::Null);
        Ok((bootstrap, source))
    };
    serving().map_err(|e: ConfigError| e.with_file(&name))
}

/// Parses and validates an Envoy v3 bootstrap from YAML text (JSON is valid YAML too).
pub fn from_yaml_str(text: &str) -> Result<Bootstrap, ConfigError> {
    let raw: raw::RawBootstrap = raw::parse_document(text)?;
    validate::bootstrap(raw)
}

/// One cluster alone (JSON, as it would sit at `static_resources.clusters[index]`), through the
/// same parsing and validation as in a whole bootstrap; for the xDS client's endpoint-only
/// updates, which fall back to a whole-config check (and its exact error) on any failure.
pub fn cluster_from_json(value: serde_json::Value, index: usize) -> Result<Cluster, ConfigError> {
    cluster_from_json_with(value, index, Vec::new())
}

/// [`cluster_from_json`] with the secrets its TLS contexts may name (as they would sit at
/// `static_resources.secrets`).
pub fn cluster_from_json_with(
    value: serde_json::Value,
    index: usize,
    secrets: Vec<serde_json::Value>,
) -> Result<Cluster, ConfigError> {
    let p = FieldPath::root()
        .field("static_resources")
        .field("clusters")
        .index(index);
    let raw: raw_cluster::RawCluster =
        serde_path_to_error::deserialize(value).map_err(|e| p.err(e.to_string()))?;
    let sp = FieldPath::root().field("static_resources").field("secrets");
    let raw_secrets: Vec<secrets::RawSecret> =
        serde_path_to_error::deserialize(serde_json::Value::Array(secrets))
            .map_err(|e| sp.err(e.to_string()))?;
    validate_cluster::cluster(raw, &p, &secrets::Secrets::build(raw_secrets, &sp)?)
}
