//! The PROXY protocol's config: the `envoy.filters.listener.proxy_protocol` listener filter
//! (Istio's `gatewayTopology.proxyProtocol`) and the `envoy.transport_sockets.upstream_proxy_protocol`
//! transport socket (a DestinationRule's `trafficPolicy.proxyProtocol`, wrapping the cluster's
//! own transport socket). The protocol itself is `crate::proxy_protocol`.

use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::{path::FieldPath, raw::typed_config, ConfigError};
use crate::proxy_protocol::{parse::Accept, Version};

/// Type URL of the listener filter's config.
pub(crate) const LISTENER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol";
/// Type URL of the upstream transport socket's config.
pub(crate) const UPSTREAM_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport";

/// Envoy's default `listener_filters_timeout`.
pub const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// The listener filter, with the listener's budget for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerProxyProtocol {
    /// Which versions, and whether a connection may come without a header.
    pub accept: Accept,
    /// `stat_prefix`: the counters are `proxy_proto.[<prefix>.]...`.
    pub stat_prefix: String,
    /// The listener's `listener_filters_timeout` (default 15 s; 0: none): how long a header
    /// may take to arrive.
    pub timeout: Option<Duration>,
    /// The listener's `continue_on_listener_filters_timeout`: past the timeout, serve the
    /// connection as it is (its own addresses) instead of closing it.
    pub continue_on_timeout: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerProxyProtocol {
    #[serde(default)]
    rules: Vec<serde_json::Value>,
    allow_requests_without_proxy_protocol: Option<bool>,
    pass_through_tlvs: Option<serde_json::Value>,
    #[serde(default)]
    disallowed_versions: Vec<String>,
    stat_prefix: Option<String>,
    tlv_location: Option<String>,
}

/// The listener filter's `typed_config` at `p` (`None`: absent, the defaults).
pub(crate) fn listener_filter(
    tc: Option<&Value>,
    p: &FieldPath,
    timeout: Option<Duration>,
    continue_on_timeout: bool,
) -> Result<ListenerProxyProtocol, ConfigError> {
    let raw: RawListenerProxyProtocol = match tc {
        Some(tc) => typed_config(tc, p, LISTENER_TYPE)?,
        None => RawListenerProxyProtocol::default(),
    };
    if !raw.rules.is_empty() {
        return Err(p
            .field("rules")
            .unsupported("TLVs to dynamic metadata (no filter here reads them)"));
    }
    if raw.pass_through_tlvs.is_some() {
        return Err(p
            .field("pass_through_tlvs")
            .unsupported("passing TLVs on (the upstream header carries none)"));
    }
    if let Some(l) = raw.tlv_location.filter(|l| l != "DYNAMIC_METADATA") {
        return Err(p
            .field("tlv_location")
            .unsupported(&format!("{l:?} (TLVs are not kept)")));
    }
    let mut accept = Accept {
        without: raw.allow_requests_without_proxy_protocol.unwrap_or(false),
        ..Accept::default()
    };
    for (i, v) in raw.disallowed_versions.iter().enumerate() {
        match version(v, &p.field("disallowed_versions").index(i))? {
            Version::V1 => accept.v1 = false,
            Version::V2 => accept.v2 = false,
        }
    }
    if !accept.v1 && !accept.v2 {
        return Err(p
            .field("disallowed_versions")
            .err("all proxy protocol versions are disallowed"));
    }
    Ok(ListenerProxyProtocol {
        accept,
        stat_prefix: raw.stat_prefix.unwrap_or_default(),
        timeout,
        continue_on_timeout,
    })
}

/// `ProxyProtocolConfig.Version`.
fn version(v: &str, p: &FieldPath) -> Result<Version, ConfigError> {
    match v {
        "V1" => Ok(Version::V1),
        "V2" => Ok(Version::V2),
        other => Err(p.err(format!("unknown version {other:?} (V1 or V2)"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTransport {
    config: Option<RawProxyProtocolConfig>,
    transport_socket: Option<Value>,
    allow_unspecified_address: Option<bool>,
    tlv_as_pool_key: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxyProtocolConfig {
    version: Option<String>,
    pass_through_tlvs: Option<serde_json::Value>,
    #[serde(default)]
    added_tlvs: Vec<serde_json::Value>,
}

/// The upstream transport socket's `typed_config` at `p`: its version and the transport
/// socket it wraps (required, as Envoy validates it).
pub(crate) fn upstream(tc: &Value, p: &FieldPath) -> Result<(Version, Value), ConfigError> {
    let raw: RawUpstreamTransport = typed_config(tc, p, UPSTREAM_TYPE)?;
    let inner = raw
        .transport_socket
        .ok_or_else(|| p.field("transport_socket").err("required"))?;
    let cp = p.field("config");
    let config = raw.config.unwrap_or_default();
    if config.pass_through_tlvs.is_some() {
        return Err(cp
            .field("pass_through_tlvs")
            .unsupported("passing TLVs on (the listener filter keeps none)"));
    }
    if !config.added_tlvs.is_empty() {
        return Err(cp.field("added_tlvs").unsupported("TLVs in the header"));
    }
    if raw.tlv_as_pool_key == Some(true) {
        return Err(p
            .field("tlv_as_pool_key")
            .unsupported("true (the header carries no TLVs)"));
    }
    // allow_unspecified_address: every downstream connection here has IP addresses, so the
    // header never has a null one to allow; accepted either way.
    let _ = raw.allow_unspecified_address;
    let version = match config.version.as_deref() {
        None => Version::V1,
        Some(v) => version(v, &cp.field("version"))?,
    };
    Ok((version, inner))
}
