//! A cluster's transport sockets: `transport_socket` (plaintext `raw_buffer` or
//! `envoy.transport_sockets.tls` with an `UpstreamTlsContext`) and `transport_socket_matches`,
//! and which of them each endpoint uses. As Envoy's `TransportSocketMatcherImpl`: the first
//! match whose `match` fields all equal the endpoint's
//! `metadata.filter_metadata["envoy.transport_socket_match"]` ones, else the first that equals
//! its locality's, else the cluster's `transport_socket` (an empty `match` matches every
//! endpoint). Istio's `tlsMode-istio` / `tlsMode-disabled` pair is this.

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::{
    raw::typed_config,
    raw_cluster::{RawTransportSocket, RawUpstreamTlsContext},
    secrets::Secrets,
    ConfigError, FieldPath, UpstreamTls,
};
use crate::proxy_protocol::Version;
use crate::tls_common::{check_inline, data_source, params::Side, Pem, TlsParams};

const RAW_BUFFER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
const UPSTREAM_TLS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const PROXY_PROTOCOL_TYPE: &str = super::proxy_protocol::UPSTREAM_TYPE;
/// The metadata namespace endpoints and localities name their transport socket labels in.
const MATCH_NAMESPACE: &str = "envoy.transport_socket_match";

/// `Cluster.TransportSocketMatch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransportSocketMatch {
    name: Option<String>,
    #[serde(rename = "match")]
    criteria: Option<Map<String, Json>>,
    transport_socket: Option<Json>,
}

/// One compiled `transport_socket_matches` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportSocketMatch {
    /// `name` (Envoy's stats prefix of the match).
    pub name: String,
    /// `match`: labels an endpoint's (or locality's) metadata must all have.
    pub criteria: Map<String, Json>,
    /// Its `transport_socket` (`None`: plaintext).
    pub tls: Option<UpstreamTls>,
    /// Its `upstream_proxy_protocol` wrapper's header version, if it has one.
    pub proxy_protocol: Option<Version>,
}

/// A transport socket: TLS or plaintext, and the PROXY header its connections start with.
pub(crate) type Transport = (Option<UpstreamTls>, Option<Version>);

/// `transport_socket` at `p` (TLS `None`: plaintext). As in Envoy the extension is found by
/// the `typed_config` type (the `name` is not read then); without `typed_config` the name
/// `envoy.transport_sockets.raw_buffer` is plaintext. `upstream_proxy_protocol` wraps one of
/// the others.
pub(crate) fn transport_socket(
    ts: &RawTransportSocket,
    p: &FieldPath,
    secrets: &Secrets,
) -> Result<Transport, ConfigError> {
    let tcp = p.field("typed_config");
    let Some(tc) = ts.typed_config.as_ref() else {
        return match ts.name.as_deref() {
            Some("envoy.transport_sockets.raw_buffer") => Ok((None, None)),
            _ => Err(tcp.err("required")),
        };
    };
    match super::raw::type_url(tc) {
        Some(PROXY_PROTOCOL_TYPE) => {
            let (version, inner) = super::proxy_protocol::upstream(tc, &tcp)?;
            let ip = tcp.field("transport_socket");
            let inner: RawTransportSocket = serde_path_to_error::deserialize(inner)
                .map_err(|e| ip.join_serde(e.path()).err(e.inner().to_string()))?;
            match transport_socket(&inner, &ip, secrets)? {
                (_, Some(_)) => Err(ip.unsupported("a PROXY protocol socket inside another")),
                (tls, None) => Ok((tls, Some(version))),
            }
        }
        Some(RAW_BUFFER_TYPE) => Ok((None, None)),
        Some(UPSTREAM_TLS_TYPE) => {
            let raw: RawUpstreamTlsContext = typed_config(tc, &tcp, UPSTREAM_TLS_TYPE)?;
            Ok((Some(upstream_tls(raw, &tcp, secrets)?), None))
        }
        other => Err(tcp.field("@type").unsupported(&format!(
            "transport socket {:?} (envoy.transport_sockets.tls with an UpstreamTlsContext, upstream_proxy_protocol, or raw_buffer)",
            other.unwrap_or("")
        ))),
    }
}

/// `transport_socket_matches` (a JSON/YAML list at `p`).
pub(crate) fn matches(
    raw: Option<&serde_norway::Value>,
    p: &FieldPath,
    secrets: &Secrets,
) -> Result<Vec<TransportSocketMatch>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let list: Vec<RawTransportSocketMatch> = serde_path_to_error::deserialize(raw.clone())
        .map_err(|e| p.join_serde(e.path()).err(e.inner().to_string()))?;
    if list.len() > usize::from(u8::MAX) {
        return Err(p
            .index(usize::from(u8::MAX))
            .unsupported("more than 255 matches"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
        let mp = p.index(i);
        let tp = mp.field("transport_socket");
        let ts = m.transport_socket.ok_or_else(|| tp.err("required"))?;
        let ts: RawTransportSocket = serde_path_to_error::deserialize(ts)
            .map_err(|e| tp.join_serde(e.path()).err(e.inner().to_string()))?;
        let (tls, proxy_protocol) = transport_socket(&ts, &tp, secrets)?;
        out.push(TransportSocketMatch {
            name: m.name.unwrap_or_default(),
            criteria: m.criteria.unwrap_or_default(),
            tls,
            proxy_protocol,
        });
    }
    Ok(out)
}

/// Which transport an endpoint uses: 0 for the cluster's `transport_socket`, `i + 1` for
/// `matches[i]`, given the endpoint's and its locality's `metadata`.
pub(crate) fn select(
    matches: &[TransportSocketMatch],
    endpoint: Option<&Json>,
    locality: Option<&Json>,
) -> u8 {
    for md in [endpoint, locality] {
        let labels = md
            .and_then(|m| m.get("filter_metadata"))
            .and_then(|f| f.get(MATCH_NAMESPACE))
            .and_then(Json::as_object);
        if let Some(i) = matches.iter().position(|m| {
            m.criteria
                .iter()
                .all(|(k, want)| labels.and_then(|l| l.get(k)).is_some_and(|v| same(v, want)))
        }) {
            return (i + 1) as u8;
        }
    }
    0
}

/// Protobuf `Value` equality: numbers are doubles (`1` equals `1.0`).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn upstream_tls(
    raw: RawUpstreamTlsContext,
    p: &FieldPath,
    secrets: &Secrets,
) -> Result<UpstreamTls, ConfigError> {
    let mut tls = UpstreamTls {
        sni: raw.sni.filter(|s| !s.is_empty()),
        params: TlsParams::defaults(Side::Client),
        ..UpstreamTls::default()
    };
    let Some(ctx) = raw.common_tls_context else {
        return Ok(tls);
    };
    let cp = p.field("common_tls_context");
    let material = secrets.resolve(&ctx, &cp)?;
    if let Some(v) = &material.validation {
        if let Some((ca, cap)) = &v.trusted_ca {
            let d = data_source(ca, cap)?;
            check_inline(&d, Pem::Certificates, cap)?;
            tls.trusted_ca = Some(d);
        }
        tls.match_sans = v.san_matchers()?;
        if let (None, None, Some((_, vp))) = (&tls.trusted_ca, &material.pending, v.sans.first()) {
            if !tls.match_sans.is_empty() {
                return Err(vp
                    .field("trusted_ca")
                    .err("required to verify the server certificate's subject alt names"));
            }
        }
    }
    if let Some((c, tp)) = &material.certificate {
        let (chain, key) = c.pair(tp)?;
        let (cp, kp) = (tp.field("certificate_chain"), tp.field("private_key"));
        let (chain, key) = (data_source(chain, &cp)?, data_source(key, &kp)?);
        check_inline(&chain, Pem::Certificates, &cp)?;
        check_inline(&key, Pem::Key, &kp)?;
        tls.client_cert = Some((chain, key));
    }
    tls.params = TlsParams::build(
        ctx.tls_params.as_ref(),
        Side::Client,
        &cp.field("tls_params"),
    )?;
    tls.alpn_protocols = ctx.alpn_protocols;
    // Everything else was checked: a secret that has not arrived leaves it not ready.
    tls.pending_secret = material.pending;
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(criteria: Json) -> TransportSocketMatch {
        TransportSocketMatch {
            name: String::new(),
            criteria: criteria.as_object().cloned().unwrap(),
            tls: None,
            proxy_protocol: None,
        }
    }

    fn md(labels: Json) -> Json {
        json!({"filter_metadata": {MATCH_NAMESPACE: labels}})
    }

    #[test]
    fn endpoint_labels_first_then_locality_then_default() {
        // Istio's pair: tlsMode-istio, then an empty match for the rest.
        let istio = [m(json!({"tlsMode": "istio"})), m(json!({}))];
        assert_eq!(
            select(&istio, Some(&md(json!({"tlsMode": "istio"}))), None),
            1
        );
        assert_eq!(
            select(&istio, Some(&md(json!({"tlsMode": "disabled"}))), None),
            2
        );
        assert_eq!(select(&istio, None, None), 2);
        let only = [m(json!({"tlsMode": "istio"}))];
        assert_eq!(select(&only, None, None), 0);
        assert_eq!(
            select(
                &only,
                Some(&json!({})),
                Some(&md(json!({"tlsMode": "istio"})))
            ),
            1
        );
        // Every label must be there and equal; numbers compare as doubles.
        let two = [m(json!({"a": 1, "b": "x"}))];
        assert_eq!(
            select(
                &two,
                Some(&md(json!({"a": 1.0, "b": "x", "c": true}))),
                None
            ),
            1
        );
        assert_eq!(select(&two, Some(&md(json!({"a": 1}))), None), 0);
        assert_eq!(
            select(&two, Some(&md(json!({"a": "1", "b": "x"}))), None),
            0
        );
        // The endpoint's labels win over the locality's, whatever the order of the matches.
        let both = [m(json!({"l": "loc"})), m(json!({"e": "ep"}))];
        assert_eq!(
            select(
                &both,
                Some(&md(json!({"e": "ep"}))),
                Some(&md(json!({"l": "loc"})))
            ),
            2
        );
    }
}
