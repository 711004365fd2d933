//! tcp_proxy `tunneling_config`: the connection's bytes go upstream inside an HTTP CONNECT
//! (Istio's DestinationRule `tunnel`, egress through a CONNECT proxy), as Envoy's
//! `TunnelingConfigHelper` builds the request.

use std::net::SocketAddr;

use serde::Deserialize;
use serde_norway::Value;

use super::{path::FieldPath, ConfigError};
use crate::route::format::{FormatContext, HeaderValueFormat};

/// `TcpProxy.TunnelingConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTunnelingConfig {
    hostname: Option<String>,
    use_post: Option<bool>,
    #[serde(default)]
    headers_to_add: Vec<super::raw_route::RawHeaderValueOption>,
    /// Puts the CONNECT answer's headers in the connection's filter state, which nothing here
    /// reads: a no-op.
    #[allow(dead_code)]
    propagate_response_headers: Option<bool>,
    post_path: Option<String>,
    /// As `propagate_response_headers`, for trailers: a no-op.
    #[allow(dead_code)]
    propagate_response_trailers: Option<bool>,
    request_id_extension: Option<Value>,
    request_id_header: Option<String>,
    request_id_metadata_key: Option<String>,
}

/// How a tcp_proxy opens its tunnel: `CONNECT hostname` with `headers`.
#[derive(Debug, Clone)]
pub struct Tunneling {
    /// `hostname`: the CONNECT's authority, with its command operators (the header
    /// formatter's: the downstream addresses and ports, `%HOSTNAME%`, `%START_TIME%`, ...).
    hostname: HeaderValueFormat,
    /// `headers_to_add`, with the same operators.
    headers: crate::route::HeaderMutations,
}

impl Tunneling {
    /// What a connection from `remote` to `local` (its original destination) renders from.
    fn context(local: SocketAddr, remote: SocketAddr) -> FormatContext<'static> {
        FormatContext {
            downstream_local: Some(local),
            downstream_remote: Some(remote),
            ..FormatContext::default()
        }
    }

    /// The host name for a connection from `remote` to `local`.
    pub fn host(&self, local: SocketAddr, remote: SocketAddr) -> String {
        self.hostname.render(&Self::context(local, remote))
    }

    /// Adds `headers_to_add` to the CONNECT of a connection from `remote` to `local`.
    pub fn add_headers(&self, h: &mut http::HeaderMap, local: SocketAddr, remote: SocketAddr) {
        self.headers.apply_with(h, &Self::context(local, remote));
    }
}

/// `tunneling_config` at `p`.
pub(crate) fn tunneling(raw: &RawTunnelingConfig, p: &FieldPath) -> Result<Tunneling, ConfigError> {
    let hostname = raw
        .hostname
        .as_deref()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| p.field("hostname").err("required"))?;
    let refused = [
        ("use_post", raw.use_post == Some(true)),
        (
            "post_path",
            raw.post_path.as_deref().is_some_and(|s| !s.is_empty()),
        ),
        ("request_id_extension", raw.request_id_extension.is_some()),
        (
            "request_id_header",
            raw.request_id_header
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
        ),
        (
            "request_id_metadata_key",
            raw.request_id_metadata_key
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
        ),
    ];
    if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
        return Err(p
            .field(field)
            .unsupported("not implemented (CONNECT tunnels only, without a request id)"));
    }
    let ap = p.field("headers_to_add");
    let headers = crate::route::build_headers::mutations_at(&raw.headers_to_add, &[], &ap, &ap)?;
    let hostname = HeaderValueFormat::parse_template(hostname)
        .map_err(|e| p.field("hostname").unsupported(&e))?;
    Ok(Tunneling { hostname, headers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(hostname: &str) -> Result<Tunneling, ConfigError> {
        let raw: RawTunnelingConfig =
            serde_norway::from_str(&format!("{{hostname: \"{hostname}\"}}")).unwrap();
        tunneling(&raw, &FieldPath::root())
    }

    #[test]
    fn the_host_name_takes_the_downstream_addresses() {
        let t = tunnel(
            "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%:%DOWNSTREAM_LOCAL_PORT%/%DOWNSTREAM_REMOTE_ADDRESS%",
        )
        .unwrap();
        let (local, remote) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:4000".parse().unwrap(),
        );
        assert_eq!(t.host(local, remote), "10.0.0.1:80/10.0.0.2:4000");
        let lit = tunnel("proxy.example:3128").unwrap();
        assert_eq!(lit.host(local, remote), "proxy.example:3128");
        let e = tunnel("%FILTER_STATE(x:PLAIN)%").unwrap_err();
        assert!(e.to_string().contains("FILTER_STATE"), "{e}");
        assert!(tunnel("a%b").is_err());
    }
}
