//! A request's upstream transport options (`upstream::transport_options`), as Envoy's router
//! sets them before it picks a connection pool: from the cluster's `auto_sni` /
//! `auto_san_validation` the request's host (after the route's host rewrite, or the
//! `override_auto_sni_header`), and from Istio's `istio.alpn` filter the ALPN list of the
//! protocol the request goes upstream with. All borrowed: nothing is allocated per request.

use http::{header, request::Parts, Version};

use super::Plan;
use crate::upstream::{transport_options::OptionsRef, Cluster};

/// The options of a request with head `parts` planned as `plan`, to `cluster`.
pub(super) fn options<'a>(
    plan: &'a Plan,
    cluster: &'a Cluster,
    parts: &'a Parts,
) -> OptionsRef<'a> {
    let spec = &cluster.spec;
    let mut out = OptionsRef::default();
    if let (Some(alpn), true) = (&plan.istio_alpn, spec.options.istio_alpn) {
        // Envoy's `upstreamHttpProtocol`: the downstream's (HTTP/1.0 as HTTP/1.1) when the
        // cluster uses it, else the cluster's.
        let h2 = if spec.follow_downstream {
            parts.version == Version::HTTP_2
        } else {
            spec.http2
        };
        out.alpn = alpn.for_upstream(h2);
    }
    if let Some(auto) = &spec.options.auto_sni {
        let value = auto
            .header
            .as_ref()
            .and_then(|h| parts.headers.get(h))
            .filter(|v| !v.is_empty())
            .or_else(|| parts.headers.get(header::HOST))
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        if let Some((host, ip)) = value.map(authority_host) {
            if auto.sni && !ip {
                out.sni = Some(host);
            }
            if auto.san {
                out.san = Some(host);
            }
        }
    }
    out
}

/// Envoy's `parseAuthority`: the host of `authority` without its port (and an IPv6 address
/// without its brackets), and whether it is an IP address.
fn authority_host(authority: &str) -> (&str, bool) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((v6, _)) = rest.split_once(']') {
            return (v6, v6.parse::<std::net::Ipv6Addr>().is_ok());
        }
    }
    let host = match authority.rsplit_once(':') {
        // More than one colon without brackets: an IPv6 address as it is.
        Some((h, _)) if h.contains(':') => authority,
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    (host, host.parse::<std::net::IpAddr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::authority_host;

    #[test]
    fn the_host_of_an_authority_and_whether_it_is_an_ip() {
        assert_eq!(
            authority_host("api.example.com"),
            ("api.example.com", false)
        );
        assert_eq!(
            authority_host("api.example.com:8443"),
            ("api.example.com", false)
        );
        assert_eq!(authority_host("10.0.0.1:80"), ("10.0.0.1", true));
        assert_eq!(authority_host("[2001:db8::1]:443"), ("2001:db8::1", true));
        assert_eq!(authority_host("2001:db8::1"), ("2001:db8::1", true));
    }
}
