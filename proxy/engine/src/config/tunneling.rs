//! tcp_proxy `tunneling_config`: the connection's bytes go upstream inside an HTTP CONNECT
//! (Istio's DestinationRule `tunnel`, egress through a CONNECT proxy), as Envoy's
//! `TunnelingConfigHelper` builds the request.

use std::net::SocketAddr;

use serde::Deserialize;
use serde_norway::Value;

use super::{path::FieldPath, ConfigError};

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
    /// `hostname`: the CONNECT's authority, with its command operators.
    pub hostname: TunnelHost,
    /// `headers_to_add` (literal values).
    pub headers: crate::route::HeaderMutations,
}

/// The tunnel's host name, in parts.
#[derive(Debug, Clone)]
pub struct TunnelHost(Vec<HostPart>);

#[derive(Debug, Clone)]
enum HostPart {
    Text(String),
    LocalAddress,
    LocalAddressWithoutPort,
    LocalPort,
    RemoteAddress,
    RemoteAddressWithoutPort,
    RemotePort,
}

impl TunnelHost {
    /// The host name for a connection from `remote` to `local` (its original destination).
    pub fn render(&self, local: SocketAddr, remote: SocketAddr) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                HostPart::Text(t) => out.push_str(t),
                HostPart::LocalAddress => out.push_str(&local.to_string()),
                HostPart::LocalAddressWithoutPort => out.push_str(&local.ip().to_string()),
                HostPart::LocalPort => out.push_str(&local.port().to_string()),
                HostPart::RemoteAddress => out.push_str(&remote.to_string()),
                HostPart::RemoteAddressWithoutPort => out.push_str(&remote.ip().to_string()),
                HostPart::RemotePort => out.push_str(&remote.port().to_string()),
            }
        }
        out
    }

    /// Parses `raw` (at `p`): text and the downstream address operators.
    fn parse(raw: &str, p: &FieldPath) -> Result<Self, ConfigError> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(start) = rest.find('%') {
            if start > 0 {
                parts.push(HostPart::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                return Err(p.err(format!("unterminated command operator in {raw:?}")));
            };
            parts.push(match &after[..end] {
                "DOWNSTREAM_LOCAL_ADDRESS" => HostPart::LocalAddress,
                "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => HostPart::LocalAddressWithoutPort,
                "DOWNSTREAM_LOCAL_PORT" => HostPart::LocalPort,
                "DOWNSTREAM_REMOTE_ADDRESS" => HostPart::RemoteAddress,
                "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => HostPart::RemoteAddressWithoutPort,
                "DOWNSTREAM_REMOTE_PORT" => HostPart::RemotePort,
                other => {
                    return Err(p.unsupported(&format!(
                        "command operator %{other}% (the downstream address operators only)"
                    )))
                }
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(HostPart::Text(rest.to_string()));
        }
        Ok(Self(parts))
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
    if let Some(i) = headers.add.iter().position(|a| a.format.is_some()) {
        return Err(ap
            .index(i)
            .field("header")
            .field("value")
            .unsupported("command operators in a tunnel's headers"));
    }
    Ok(Tunneling {
        hostname: TunnelHost::parse(hostname, &p.field("hostname"))?,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_takes_the_downstream_addresses() {
        let p = FieldPath::root();
        let h = TunnelHost::parse(
            "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%:%DOWNSTREAM_LOCAL_PORT%/%DOWNSTREAM_REMOTE_ADDRESS%",
            &p,
        )
        .unwrap();
        let (local, remote) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:4000".parse().unwrap(),
        );
        assert_eq!(h.render(local, remote), "10.0.0.1:80/10.0.0.2:4000");
        let lit = TunnelHost::parse("proxy.example:3128", &p).unwrap();
        assert_eq!(lit.render(local, remote), "proxy.example:3128");
        let e = TunnelHost::parse("%FILTER_STATE(x:PLAIN)%", &p).unwrap_err();
        assert!(e.to_string().contains("FILTER_STATE"), "{e}");
        assert!(TunnelHost::parse("a%b", &p).is_err());
    }
}
