//! A request's upstream transport options (`upstream::transport_options`), as Envoy's router
//! sets them before it picks a connection pool: from the cluster's `auto_sni` /
//! `auto_san_validation` the request's host ([`auto_host`]), and from Istio's `istio.alpn`
//! filter the ALPN list of the protocol the request goes upstream with; for a cluster with an
//! `upstream_proxy_protocol` transport socket, the downstream connection's addresses (Envoy's
//! HCM sets them as the connection's `ProxyProtocolFilterState`).

use http::{header, request::Parts, HeaderMap, Version};

use super::{host::HostPlan, Plan};
use crate::upstream::{transport_options::OptionsRef, Cluster};

/// The host `auto_sni` / `auto_san_validation` name the upstream TLS connection after, as
/// Envoy 1.40's router takes it after the route's header mutations and before any endpoint is
/// chosen: the `override_auto_sni_header`'s values (`,`-joined) when present and not empty,
/// else the route's host rewrite (a literal, a regex's result, or `host_rewrite_header`'s
/// value; not `auto_host_rewrite`, which needs the endpoint), else the request's Host.
/// `None` (nothing computed) for a cluster without either option.
pub(super) fn auto_host(plan: &Plan, cluster: &Cluster, parts: &Parts) -> Option<String> {
    let auto = cluster.spec.options.auto_sni.as_ref()?;
    if let Some(name) = &auto.header {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let joined = values.join(",");
        if !joined.is_empty() {
            return Some(joined);
        }
    }
    let header = |h: &HeaderMap, n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let host = || {
        header(&parts.headers, header::HOST.as_str())
            .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
    };
    match &plan.host_rewrite {
        Some(HostPlan::Literal(l)) => Some(l.clone()),
        Some(HostPlan::Header(n)) => header(&parts.headers, n).or_else(host),
        _ => host(),
    }
}

/// The options of a request of `version` planned as `plan`, to `cluster`, whose
/// [`auto_host`] is `host`; `upgrade`: a request upgraded over HTTP/1.1 whatever the cluster
/// speaks.
pub(super) fn options<'a>(
    plan: &'a Plan,
    cluster: &'a Cluster,
    version: Version,
    host: Option<&'a str>,
    upgrade: bool,
) -> OptionsRef<'a> {
    let spec = &cluster.spec;
    let mut out = OptionsRef::default();
    if !spec.proxy_protocol.is_empty() {
        out.proxy = plan.downstream;
    }
    if let (Some(alpn), true) = (&plan.istio_alpn, spec.options.istio_alpn) {
        // Envoy's `upstreamHttpProtocol`: the downstream's (HTTP/1.0 as HTTP/1.1) when the
        // cluster uses it, else the cluster's; an upgrade goes over HTTP/1.1 here.
        let h2 = !upgrade
            && if spec.follow_downstream {
                version == Version::HTTP_2
            } else {
                spec.http2
            };
        out.alpn = alpn.for_upstream(h2);
    }
    if let (Some(auto), Some((name, ip))) = (&spec.options.auto_sni, host.map(authority_host)) {
        if auto.sni && !ip {
            out.sni = Some(name);
        }
        if auto.san {
            out.san = Some(name);
        }
    }
    out
}

/// Envoy's `parseAuthority`: the host of `authority` without a valid port (`:` and 0..=65535;
/// anything else stays part of the host) and whether it is an IP address (an IPv6 one in
/// brackets, which are then left out).
fn authority_host(authority: &str) -> (&str, bool) {
    let mut host = authority;
    if let Some((h, port)) = authority.rsplit_once(':') {
        if !authority.ends_with(']') && port.parse::<u16>().is_ok() {
            host = h;
        }
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        (bare, true)
    } else {
        (host, false)
    }
}

#[cfg(test)]
mod tests {
    use super::authority_host;

    #[test]
    fn the_host_of_an_authority_and_whether_it_is_an_ip_as_envoy_parses_it() {
        for (authority, want) in [
            ("api.example.com", ("api.example.com", false)),
            ("api.example.com:8443", ("api.example.com", false)),
            ("10.0.0.1:80", ("10.0.0.1", true)),
            ("[2001:db8::1]:443", ("2001:db8::1", true)),
            ("[2001:db8::1]", ("2001:db8::1", true)),
            // An unbracketed IPv6 address: its last group reads as a port.
            ("2001:db8::1", ("2001:db8:", false)),
            // Not a port: the whole authority is the host.
            ("host:", ("host:", false)),
            ("host:99999", ("host:99999", false)),
            ("[name]:443", ("[name]", false)),
        ] {
            assert_eq!(authority_host(authority), want, "{authority}");
        }
    }
}
