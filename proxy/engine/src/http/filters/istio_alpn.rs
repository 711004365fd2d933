//! Istio's `istio.alpn` HTTP filter (istio-proxy's `AlpnFilter`), which istiod puts in every
//! outbound HTTP connection manager: the upstream TLS connection of a request offers the ALPN
//! list configured for the HTTP protocol the request goes upstream with (istiod's
//! `istio-http/1.1, istio, http/1.1` and `istio-h2, istio, h2`) instead of the cluster's
//! (`istio-peer-exchange, istio`). An Envoy sidecar's inbound listener picks its HTTP filter
//! chain for mutual TLS by exactly these names, so without them a request to an Envoy peer finds
//! no chain. A cluster whose `filter_metadata.istio.alpn_override` is `"false"` keeps its own
//! (istiod's mark on DestinationRule TLS).
//!
//! The override only changes a TLS handshake (`upstream::transport_options`); the router reads
//! it for the request's cluster, wherever the filter sits before it.

use serde::Deserialize;
use serde_norway::Value;

use crate::config::{raw::typed_config, ConfigError, FieldPath};
use crate::upstream::transport_options::AlpnList;

/// The filter's type URL (a plain Any of istio-proxy's config, as istiod sends it).
pub(crate) const TYPE: &str =
    "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";

/// The ALPN list of each upstream protocol (`None`: not overridden).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IstioAlpn {
    http10: Option<AlpnList>,
    http11: Option<AlpnList>,
    http2: Option<AlpnList>,
}

impl IstioAlpn {
    /// The list for a request going upstream over HTTP/2 (`h2`) or HTTP/1.1. HTTP/1.0's is never
    /// used: Envoy sends an HTTP/1.0 request upstream as HTTP/1.1.
    pub fn for_upstream(&self, h2: bool) -> Option<&AlpnList> {
        if h2 {
            self.http2.as_ref()
        } else {
            self.http11.as_ref()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlpn {
    #[serde(default)]
    alpn_override: Vec<RawOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    upstream_protocol: Option<String>,
    #[serde(default)]
    alpn_override: Vec<String>,
}

/// The filter's config: `typed_config` (a plain Any, or the `value` of a TypedStruct whose
/// `type_url` is [`TYPE`]; `None`: no config, nothing overridden) at `p`.
pub(crate) fn build(typed: Option<&Value>, p: &FieldPath) -> Result<IstioAlpn, ConfigError> {
    let raw: RawAlpn = match typed {
        None => RawAlpn::default(),
        Some(v) if crate::config::raw::type_url(v) == Some(TYPE) => typed_config(v, p, TYPE)?,
        // A TypedStruct: its `value` is the config's JSON form.
        Some(v) => {
            let mut body = match v.get("value") {
                Some(Value::Mapping(m)) => m.clone(),
                None | Some(Value::Null) => Default::default(),
                Some(_) => return Err(p.field("value").err("must be a mapping")),
            };
            body.insert("@type".into(), TYPE.into());
            typed_config(&Value::Mapping(body), &p.field("value"), TYPE)?
        }
    };
    let mut out = IstioAlpn::default();
    let op = p.field("alpn_override");
    let mut seen = [false; 3];
    for (i, o) in raw.alpn_override.iter().enumerate() {
        let (slot, seen) = match o.upstream_protocol.as_deref() {
            None | Some("HTTP10") => (&mut out.http10, &mut seen[0]),
            Some("HTTP11") => (&mut out.http11, &mut seen[1]),
            Some("HTTP2") => (&mut out.http2, &mut seen[2]),
            Some(other) => {
                return Err(op.index(i).field("upstream_protocol").err(format!(
                    "unknown value {other:?} (expected HTTP10, HTTP11 or HTTP2)"
                )))
            }
        };
        // The filter's map keeps the first entry of a protocol (an empty list, which
        // overrides nothing, too).
        if !std::mem::replace(seen, true) && !o.alpn_override.is_empty() {
            let list: Vec<Box<[u8]>> = o
                .alpn_override
                .iter()
                .map(|s| Box::from(s.as_bytes()))
                .collect();
            *slot = Some(list.into());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<IstioAlpn, ConfigError> {
        let v: Value = serde_norway::from_str(yaml).unwrap();
        let p = FieldPath::root().field("http_filters").index(0);
        build(Some(&v), &p.field("typed_config"))
    }

    fn names(l: Option<&AlpnList>) -> Vec<String> {
        l.into_iter()
            .flat_map(|l| l.iter())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    #[test]
    fn istiods_filter_gives_each_upstream_protocol_its_list() {
        let a = parse(
            "{'@type': type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig,
              alpn_override: [
                {alpn_override: [istio-http/1.0, istio, http/1.0]},
                {upstream_protocol: HTTP11, alpn_override: [istio-http/1.1, istio, http/1.1]},
                {upstream_protocol: HTTP2, alpn_override: [istio-h2, istio, h2]},
                {upstream_protocol: HTTP2, alpn_override: [ignored]}]}",
        )
        .unwrap();
        assert_eq!(
            names(a.for_upstream(false)),
            ["istio-http/1.1", "istio", "http/1.1"]
        );
        assert_eq!(names(a.for_upstream(true)), ["istio-h2", "istio", "h2"]);
        let ts = parse(
            "{'@type': type.googleapis.com/udpa.type.v1.TypedStruct,
              type_url: type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig,
              value: {alpn_override: [{upstream_protocol: HTTP2, alpn_override: []}, {upstream_protocol: HTTP2, alpn_override: [h2]}]}}",
        )
        .unwrap();
        assert_eq!(ts, IstioAlpn::default());
    }

    #[test]
    fn a_bad_protocol_or_field_is_named() {
        let e = parse(
            "{'@type': type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig,
              alpn_override: [{upstream_protocol: HTTP3, alpn_override: [h3]}]}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("alpn_override[0].upstream_protocol"), "{e}");
        assert!(e.contains("HTTP3"), "{e}");
        let e = parse(
            "{'@type': type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig,
              alpn: []}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("alpn"), "{e}");
    }
}
