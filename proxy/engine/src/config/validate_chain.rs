//! Raw `filter_chain_match` -> [`ChainMatch`], Envoy's refusal of chains whose matches
//! overlap, and the refusal of a downstream `transport_socket` (naming SDS when it needs it).

use std::net::IpAddr;

use serde_norway::Value;

use super::{
    chain_match::{overlaps, ChainMatch, Cidr, SourceType},
    path::FieldPath,
    raw::{RawCidrRange, RawFilterChainMatch},
    ConfigError,
};

/// Validates one `filter_chain_match` (absent: matches anything).
pub(crate) fn chain_match(
    raw: Option<RawFilterChainMatch>,
    p: &FieldPath,
) -> Result<ChainMatch, ConfigError> {
    let raw = raw.unwrap_or_default();
    let port = |v: u32, fp: FieldPath, zero_ok: bool| {
        u16::try_from(v)
            .ok()
            .filter(|p| zero_ok || *p != 0)
            .ok_or_else(|| fp.err(format!("{v} is not a valid port")))
    };
    let destination_port = match raw.destination_port {
        None => None,
        Some(v) => Some(port(v, p.field("destination_port"), false)?),
    };
    let mut server_names = Vec::with_capacity(raw.server_names.len());
    for (i, n) in raw.server_names.iter().enumerate() {
        let np = p.field("server_names").index(i);
        let name = match n.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && !rest.contains('*') => rest,
            None if !n.is_empty() && !n.contains('*') => n.as_str(),
            _ => return Err(np.err(format!("{n:?}: partial wildcards are not supported"))),
        };
        server_names.push(name.to_string());
    }
    let source_type = match raw.source_type.as_deref() {
        None | Some("ANY") => SourceType::Any,
        Some("SAME_IP_OR_LOOPBACK") => SourceType::Local,
        Some("EXTERNAL") => SourceType::External,
        Some(other) => {
            return Err(p.field("source_type").err(format!(
                "unknown value {other:?} (expected ANY, SAME_IP_OR_LOOPBACK or EXTERNAL)"
            )))
        }
    };
    let mut source_ports = Vec::with_capacity(raw.source_ports.len());
    for (i, v) in raw.source_ports.iter().enumerate() {
        source_ports.push(port(*v, p.field("source_ports").index(i), true)?);
    }
    if let Some(t) = raw.transport_protocol.as_deref().filter(|t| t.is_empty()) {
        return Err(p.field("transport_protocol").err(format!("{t:?} is empty")));
    }
    Ok(ChainMatch {
        destination_port,
        prefix_ranges: cidrs(&raw.prefix_ranges, &p.field("prefix_ranges"))?,
        server_names,
        transport_protocol: raw.transport_protocol,
        application_protocols: raw.application_protocols,
        direct_source_prefix_ranges: cidrs(
            &raw.direct_source_prefix_ranges,
            &p.field("direct_source_prefix_ranges"),
        )?,
        source_type,
        source_prefix_ranges: cidrs(&raw.source_prefix_ranges, &p.field("source_prefix_ranges"))?,
        source_ports,
    })
}

fn cidrs(raw: &[RawCidrRange], p: &FieldPath) -> Result<Vec<Cidr>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| cidr(r, &p.index(i)))
        .collect()
}

/// One `core.v3.CidrRange` at `rp`.
pub(crate) fn cidr(r: &RawCidrRange, rp: &FieldPath) -> Result<Cidr, ConfigError> {
    let a = r
        .address_prefix
        .as_deref()
        .ok_or_else(|| rp.field("address_prefix").err("required"))?;
    let ip: IpAddr = a.parse().map_err(|_| {
        rp.field("address_prefix")
            .err(format!("{a:?} is not an IP address"))
    })?;
    let len = r.prefix_len.unwrap_or(0);
    u8::try_from(len)
        .ok()
        .and_then(|l| Cidr::new(ip, l))
        .ok_or_else(|| {
            rp.field("prefix_len")
                .err(format!("{len} is too long for {ip}"))
        })
}

/// Envoy's refusal of two chains with the same (or overlapping) matching rules, naming the
/// later chain's `filter_chain_match`. `chains` yields each chain's match and path.
pub(crate) fn check_overlaps(chains: &[(&ChainMatch, FieldPath)]) -> Result<(), ConfigError> {
    for (i, (m, p)) in chains.iter().enumerate() {
        for (o, _) in &chains[..i] {
            if *o == *m {
                return Err(p
                    .field("filter_chain_match")
                    .err("multiple filter chains with the same matching rules are defined"));
            }
            if overlaps(o, m) {
                return Err(p
                    .field("filter_chain_match")
                    .err("multiple filter chains with overlapping matching rules are defined"));
            }
        }
    }
    Ok(())
}

/// A chain's `transport_socket`: `envoy.transport_sockets.tls` (a `DownstreamTlsContext`,
/// secrets from files or inline: one that needs SDS is refused naming the SDS field) or
/// `raw_buffer` (plaintext, as without one).
pub(crate) fn transport_socket(
    v: &Value,
    p: &FieldPath,
    secrets: &super::secrets::Secrets,
    handshake_timeout: Option<std::time::Duration>,
) -> Result<Option<std::sync::Arc<crate::downstream_tls::DownstreamTls>>, ConfigError> {
    use super::raw::{type_url, typed_config};
    use crate::downstream_tls::{build, TYPE};
    let ts: super::raw_cluster::RawTransportSocket = serde_path_to_error::deserialize(v.clone())
        .map_err(|e| p.join_serde(e.path()).err(e.inner().to_string()))?;
    let tp = p.field("typed_config");
    match ts.typed_config.as_ref() {
        Some(tc) if type_url(tc) == Some(TYPE) => {
            let raw = typed_config(tc, &tp, TYPE)?;
            let tls = build(raw, &tp, secrets)?;
            Ok(Some(std::sync::Arc::new(match handshake_timeout {
                Some(t) => tls.with_handshake_timeout(t),
                None => tls,
            })))
        }
        Some(tc) if type_url(tc) == Some(RAW_BUFFER) => Ok(None),
        None if ts.name.as_deref() == Some("envoy.transport_sockets.raw_buffer") => Ok(None),
        Some(tc) => Err(tp.field("@type").unsupported(&format!(
            "transport socket {:?} (envoy.transport_sockets.tls with a DownstreamTlsContext, or raw_buffer)",
            type_url(tc).unwrap_or("")
        ))),
        None => Err(tp.err("required (a DownstreamTlsContext)")),
    }
}

/// `@type` of the plaintext transport socket.
const RAW_BUFFER: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
