//! Envoy's downstream request header sanitation (`ConnectionManagerUtility::mutateRequestHeaders`):
//! router-control headers of external requests, `x-forwarded-for` / `x-forwarded-proto` /
//! `x-envoy-external-address` per `use_remote_address`; the client's `Connection` nominations are
//! applied first, so they can never remove a header the proxy adds.

use std::fmt::Write as _;

use http::{header, HeaderMap, HeaderName, HeaderValue};

use super::ConnInfo;
use crate::config;

/// Names looked up on every request, made once (a `&str` name is parsed at each lookup).
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const DOWNSTREAM_CLUSTER: HeaderName =
    HeaderName::from_static("x-envoy-downstream-service-cluster");
const DOWNSTREAM_NODE: HeaderName = HeaderName::from_static("x-envoy-downstream-service-node");

/// How Envoy's HCM classes a request (`mutateRequestHeaders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Its final remote address is one of `internal_address_config`'s, and it came through no
    /// proxy (no client `x-forwarded-for` under `use_remote_address`, a single entry without):
    /// `x-envoy-internal: true`, the router-control and internal-only headers kept.
    Internal,
    /// Not internal, without `use_remote_address`.
    External,
    /// Not internal, under `use_remote_address`: this proxy is where it entered the mesh.
    Edge,
}

/// Envoy's request header sanitation (`ConnectionManagerUtility::mutateRequestHeaders`): an
/// external request loses the router-control headers (no request is internal without
/// `internal_address_config`, 1.40); `use_remote_address` appends the peer to `x-forwarded-for`.
pub(super) fn request(
    cfg: &config::HttpConnectionManager,
    conn: &ConnInfo,
    scheme: &'static str,
    tls: Option<&crate::downstream_tls::TlsFacts>,
    h: &mut HeaderMap,
) -> Origin {
    super::xfcc::apply(&cfg.xfcc, tls, h);
    let origin = forwarding(cfg, conn, scheme, h);
    if let Some(ua) = &cfg.user_agent {
        add_user_agent(ua, h);
    }
    origin
}

/// Whether the request is internal (before `x-forwarded-for` is appended to): Envoy's
/// `single_xff_address` and `internal_address_config` over the final remote address.
fn is_internal(cfg: &config::HttpConnectionManager, conn: &ConnInfo, h: &HeaderMap) -> bool {
    let Some(internal) = &cfg.internal_addresses else {
        return false;
    };
    if cfg.use_remote_address {
        // Only a request without `x-forwarded-for`; its remote address is then the peer (the
        // trusted hops find no entry).
        return !h.contains_key(XFF) && internal.contains(conn.peer.ip());
    }
    // One entry and no trusted hop to skip (Envoy's `getLastAddressFromXFF` single address).
    if cfg.xff_num_trusted_hops != 0 {
        return false;
    }
    let mut values = h.get_all(XFF).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    match v.to_str() {
        Ok(s) if !s.contains(',') => s.trim().parse().is_ok_and(|ip| internal.contains(ip)),
        _ => false,
    }
}

/// `add_user_agent`, after the client's values of these headers were stripped (edge).
fn add_user_agent(ua: &config::UserAgent, h: &mut HeaderMap) {
    h.insert(DOWNSTREAM_CLUSTER, ua.cluster.clone());
    if h.get(header::USER_AGENT).is_none_or(HeaderValue::is_empty) {
        h.insert(header::USER_AGENT, ua.cluster.clone());
    }
    if let Some(n) = &ua.node {
        h.insert(DOWNSTREAM_NODE, n.clone());
    }
}

/// Everything but `add_user_agent`.
fn forwarding(
    cfg: &config::HttpConnectionManager,
    conn: &ConnInfo,
    scheme: &'static str,
    h: &mut HeaderMap,
) -> Origin {
    if h.contains_key(header::CONNECTION) {
        strip_connection_nominations(h);
    }
    if let Some(v) = &cfg.via {
        super::via::append(v, h);
    }
    let internal = is_internal(cfg, conn, h);
    if internal {
        h.insert("x-envoy-internal", HeaderValue::from_static("true"));
    } else {
        for n in &cfg.route_table.internal_only_headers {
            h.remove(n);
        }
        // One pass over the names usually shows there is nothing to strip.
        if h.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
            for n in super::retry::EXTERNAL_STRIPPED_HEADERS {
                h.remove(*n);
            }
        }
    }
    // `append_x_forwarded_port`: the listener's (original destination) port; a client's is
    // kept unless `use_remote_address` (observed: Envoy 1.40 then overwrites it).
    if cfg.append_x_forwarded_port
        && (cfg.use_remote_address || !h.contains_key("x-forwarded-port"))
    {
        h.insert("x-forwarded-port", HeaderValue::from(conn.orig_dst.port()));
    }
    if !cfg.use_remote_address {
        // `scheme` is `scheme_to_overwrite` when set, which replaces a client's value too.
        if cfg.scheme_to_overwrite.is_some() || !h.contains_key(XFP) {
            h.insert(XFP, HeaderValue::from_static(scheme));
        }
        return if internal {
            Origin::Internal
        } else {
            Origin::External
        };
    }
    if !internal {
        for n in super::retry::EDGE_STRIPPED_HEADERS {
            h.remove(*n);
        }
    }
    if !cfg.skip_xff_append {
        append_xff(conn, h);
    }
    h.insert(XFP, HeaderValue::from_static(scheme));
    if internal {
        return Origin::Internal;
    }
    // The client as the rest of the request sees it (rate limit descriptors too).
    let client = RemoteAddress::of(cfg, conn).resolve(h);
    if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
        h.insert("x-envoy-external-address", v);
    }
    Origin::Edge
}

/// Appends the peer to `x-forwarded-for` (`use_remote_address` without `skip_xff_append`).
fn append_xff(conn: &ConnInfo, h: &mut HeaderMap) {
    let peer = conn.peer.ip();
    // Envoy appends its own (first non-loopback) address for a loopback peer.
    let appended = if peer.is_loopback() {
        local_address()
    } else {
        peer
    };
    // Repeated lines are one list (Envoy's header map joins them).
    let mut xff = String::new();
    for v in h.get_all("x-forwarded-for") {
        match v.to_str() {
            Ok(old) if !old.is_empty() => {
                xff.push_str(old);
                xff.push(',');
            }
            _ => {}
        }
    }
    let _ = write!(xff, "{appended}");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
}

/// Applies the client's hop-by-hop nominations (`Connection: a, b`) now, before the proxy adds
/// its headers: nominated headers are removed, except those the proxy owns (XFF, XFP,
/// `x-request-id`, `x-envoy-*`, Host, framing, TE whose `trailers` Envoy keeps), whose
/// nomination is ignored. `Connection` then
/// keeps only an `upgrade` token, so nothing later can remove a header by nomination.
fn strip_connection_nominations(h: &mut HeaderMap) {
    let mut upgrade = false;
    let mut nominated: Vec<String> = Vec::new();
    for v in h.get_all(header::CONNECTION) {
        for t in v.to_str().unwrap_or("").split(',').map(str::trim) {
            if t.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            } else if !(t.is_empty()
                || t.eq_ignore_ascii_case("close")
                || t.eq_ignore_ascii_case("keep-alive"))
            {
                // Allocates only for a real nomination (rare), not for `keep-alive`.
                let t = t.to_ascii_lowercase();
                if !is_proxy_owned(&t) {
                    nominated.push(t);
                }
            }
        }
    }
    for n in &nominated {
        h.remove(n.as_str());
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::CONNECTION);
    }
}

/// Headers a client nomination must not remove: the proxy sets or reads them.
fn is_proxy_owned(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-request-id"
            | "content-length"
            | "transfer-encoding"
            | "upgrade"
            | "te"
    ) || name.starts_with("x-envoy-")
        || name.starts_with(':')
}

/// How to find the downstream remote address Envoy's HCM settles on (the final remote address
/// of `mutateRequestHeaders`), once the headers went through [`request`].
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddress {
    peer: std::net::IpAddr,
    /// `x-forwarded-for` entries to skip from the right; None: the peer.
    xff_skip: Option<usize>,
}

impl RemoteAddress {
    /// With `use_remote_address` the peer, or with `xff_num_trusted_hops` the address that many
    /// hops left of the one the proxy appended (the last client entry `hops - 1` back, which
    /// is where it stands under `skip_xff_append`); without it the `x-forwarded-for` address
    /// `xff_num_trusted_hops` from the right, else the peer.
    pub fn of(cfg: &config::HttpConnectionManager, conn: &ConnInfo) -> Self {
        let hops = cfg.xff_num_trusted_hops as usize;
        let skip = if cfg.use_remote_address && cfg.skip_xff_append {
            hops.saturating_sub(1)
        } else {
            hops
        };
        Self {
            peer: conn.peer.ip(),
            xff_skip: (!cfg.use_remote_address || hops > 0).then_some(skip),
        }
    }

    /// [`Self::resolve`] as Envoy's downstream remote address: the peer with its port, or the
    /// `x-forwarded-for` address with port 0.
    pub fn resolve_addr(&self, h: &HeaderMap, peer: std::net::SocketAddr) -> std::net::SocketAddr {
        self.trusted_xff(h)
            .map_or(peer, |ip| std::net::SocketAddr::new(ip, 0))
    }

    /// The address, read from the (sanitized) request headers `h`.
    pub fn resolve(&self, h: &HeaderMap) -> std::net::IpAddr {
        self.trusted_xff(h).unwrap_or(self.peer)
    }

    /// The `x-forwarded-for` address trusted, if it is one (not the peer).
    fn trusted_xff(&self, h: &HeaderMap) -> Option<std::net::IpAddr> {
        self.xff_skip.and_then(|skip| xff_from_right(h, skip))
    }
}

/// The `x-forwarded-for` address `skip` entries from the right, if it parses.
fn xff_from_right(h: &HeaderMap, skip: usize) -> Option<std::net::IpAddr> {
    let mut all: Vec<&str> = Vec::new();
    for v in h.get_all("x-forwarded-for") {
        all.extend(v.to_str().ok()?.split(','));
    }
    all.iter().rev().nth(skip)?.trim().parse().ok()
}

/// The host's first non-loopback IPv4 address (Envoy's `Utility::getLocalAddress(v4)`, used
/// for `x-forwarded-for` when the peer is loopback), else 127.0.0.1; looked up once.
pub(crate) fn local_address() -> std::net::IpAddr {
    static ADDR: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        nix::ifaddrs::getifaddrs()
            .ok()
            .and_then(|mut it| {
                it.find_map(|ifa| {
                    let ip = std::net::IpAddr::V4(ifa.address?.as_sockaddr_in()?.ip());
                    (!ip.is_loopback()).then_some(ip)
                })
            })
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn hcm(use_remote_address: bool, hops: u32) -> config::HttpConnectionManager {
        let b = config::from_yaml_str(
            "static_resources:\n  listeners:\n  - name: l\n    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          stat_prefix: s\n          http_filters: [{ name: envoy.filters.http.router }]\n          route_config: { virtual_hosts: [] }\n",
        )
        .expect("valid");
        let config::NetworkFilter::Http(h) = &b.listeners[0].filter_chains[0].filter else {
            panic!("not an HCM")
        };
        let mut h = Arc::unwrap_or_clone(h.clone());
        h.use_remote_address = use_remote_address;
        h.xff_num_trusted_hops = hops;
        h
    }

    fn conn(peer: &str) -> ConnInfo {
        let local = "10.1.1.1:80".parse().unwrap();
        ConnInfo {
            peer: peer.parse().unwrap(),
            local,
            orig_dst: local,
            tls: false,
            proxy_direct: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn a_client_xfcc_is_kept_only_under_always_forward_only() {
        let xfcc = || headers(&[("x-forwarded-client-cert", "By=spiffe://evil")]);
        let mut h = xfcc();
        request(
            &hcm(false, 0),
            &conn("127.0.0.1:5000"),
            "http",
            None,
            &mut h,
        );
        assert!(!h.contains_key("x-forwarded-client-cert"), "SANITIZE");
        let mut cfg = hcm(true, 0);
        cfg.xfcc.mode = crate::config::ForwardClientCert::AlwaysForwardOnly;
        let mut h = xfcc();
        request(&cfg, &conn("10.0.0.2:5000"), "http", None, &mut h);
        assert_eq!(h["x-forwarded-client-cert"], "By=spiffe://evil");
    }

    #[test]
    fn external_requests_lose_router_control_headers() {
        let mut h = headers(&[
            ("x-envoy-upstream-rq-timeout-ms", "2000"),
            ("x-envoy-internal", "true"),
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-custom", "keep"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        request(
            &hcm(false, 0),
            &conn("127.0.0.1:5000"),
            "http",
            None,
            &mut h,
        );
        assert!(!h.contains_key("x-envoy-upstream-rq-timeout-ms"));
        assert!(!h.contains_key("x-envoy-internal"));
        assert!(!h.contains_key("x-envoy-retry-on"));
        assert_eq!(h["x-envoy-custom"], "keep");
        assert_eq!(h["x-forwarded-proto"], "https", "a client's XFP is kept");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert!(!h.contains_key("x-envoy-external-address"));
    }

    #[test]
    fn use_remote_address_appends_the_peer() {
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        request(
            &hcm(true, 0),
            &conn("198.51.100.7:5000"),
            "http",
            None,
            &mut h,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9,198.51.100.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-envoy-external-address"], "198.51.100.7");
        // One trusted hop: the client is the last XFF entry before the append.
        let mut h = headers(&[("x-forwarded-for", "192.0.2.1, 203.0.113.9")]);
        request(
            &hcm(true, 1),
            &conn("198.51.100.7:5000"),
            "http",
            None,
            &mut h,
        );
        assert_eq!(h["x-envoy-external-address"], "203.0.113.9");
        // A loopback peer is replaced by the host's own address in XFF (Envoy's local address).
        let mut h = HeaderMap::new();
        request(&hcm(true, 0), &conn("127.0.0.1:5000"), "http", None, &mut h);
        assert_eq!(h["x-forwarded-for"], local_address().to_string().as_str());
        assert_eq!(h["x-envoy-external-address"], "127.0.0.1");
    }

    #[test]
    fn skip_xff_append_keeps_the_clients_list() {
        let mut cfg = hcm(true, 1);
        cfg.skip_xff_append = true;
        cfg.via = Some(HeaderValue::from_static("1.1 p"));
        let mut h = headers(&[("x-forwarded-for", "192.0.2.1, 203.0.113.9")]);
        request(&cfg, &conn("198.51.100.7:5000"), "http", None, &mut h);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 203.0.113.9");
        // The trusted hop is counted as if the peer had been appended.
        assert_eq!(h["x-envoy-external-address"], "203.0.113.9");
        assert_eq!(h["via"], "1.1 p");
        let mut h = HeaderMap::new();
        request(&cfg, &conn("198.51.100.7:5000"), "http", None, &mut h);
        assert!(!h.contains_key("x-forwarded-for"));
        assert_eq!(h["x-envoy-external-address"], "198.51.100.7");
    }

    #[test]
    fn connection_nominations_cannot_remove_proxy_headers() {
        let mut h = headers(&[
            (
                "connection",
                "x-forwarded-for, x-request-id, X-Forwarded-Proto, x-envoy-external-address, x-custom, keep-alive",
            ),
            ("x-custom", "dropped"),
            ("x-request-id", "client-id"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        request(
            &hcm(true, 0),
            &conn("198.51.100.7:5000"),
            "http",
            None,
            &mut h,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9,198.51.100.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-envoy-external-address"], "198.51.100.7");
        assert_eq!(h["x-request-id"], "client-id");
        assert!(
            !h.contains_key("x-custom"),
            "an ordinary nomination is honoured"
        );
        assert!(
            !h.contains_key("connection"),
            "nothing is left to nominate later"
        );
        // An upgrade keeps its `Connection: upgrade` (and only that).
        let mut h = headers(&[
            ("connection", "Upgrade, x-forwarded-proto"),
            ("upgrade", "websocket"),
        ]);
        request(
            &hcm(false, 0),
            &conn("198.51.100.7:5000"),
            "http",
            None,
            &mut h,
        );
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    /// An HCM whose internal addresses are 10/8.
    fn internal_hcm(use_remote_address: bool) -> config::HttpConnectionManager {
        let mut cfg = hcm(use_remote_address, 0);
        let ten = config::Cidr::new("10.0.0.0".parse().unwrap(), 8).unwrap();
        cfg.internal_addresses = Some(config::InternalAddresses::new(vec![ten]));
        cfg
    }

    #[test]
    fn a_peer_in_the_internal_ranges_without_xff_is_internal_under_use_remote_address() {
        let cfg = internal_hcm(true);
        let mut h = headers(&[
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-downstream-service-cluster", "c"),
        ]);
        let origin = request(&cfg, &conn("10.1.2.3:5000"), "http", None, &mut h);
        assert_eq!(origin, Origin::Internal);
        assert_eq!(h["x-envoy-internal"], "true");
        assert_eq!(h["x-envoy-retry-on"], "5xx");
        assert_eq!(h["x-envoy-downstream-service-cluster"], "c");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert!(!h.contains_key("x-envoy-external-address"));
        // A client XFF means another proxy was on the way: an edge request.
        let mut h = headers(&[("x-forwarded-for", "10.9.9.9"), ("x-envoy-retry-on", "5xx")]);
        let origin = request(&cfg, &conn("10.1.2.3:5000"), "http", None, &mut h);
        assert_eq!(origin, Origin::Edge);
        assert!(!h.contains_key("x-envoy-internal"));
        assert!(!h.contains_key("x-envoy-retry-on"));
        // A peer outside the ranges.
        let mut h = headers(&[("x-envoy-internal", "true")]);
        let origin = request(&cfg, &conn("192.168.1.1:5000"), "http", None, &mut h);
        assert_eq!(origin, Origin::Edge);
        assert!(!h.contains_key("x-envoy-internal"));
    }

    #[test]
    fn without_use_remote_address_a_single_internal_xff_entry_is_internal() {
        let cfg = internal_hcm(false);
        for (xff, want) in [
            (Some("10.1.2.3"), Origin::Internal),
            (Some(" 10.1.2.3 "), Origin::Internal),
            (Some("10.1.2.3,10.1.2.4"), Origin::External),
            (Some("192.168.1.1"), Origin::External),
            (Some("not-an-ip"), Origin::External),
            (None, Origin::External),
        ] {
            let mut h = HeaderMap::new();
            if let Some(x) = xff {
                h.insert("x-forwarded-for", HeaderValue::from_static(x));
            }
            let origin = request(&cfg, &conn("10.1.1.1:5000"), "http", None, &mut h);
            assert_eq!(origin, want, "{xff:?}");
            assert_eq!(h.contains_key("x-envoy-internal"), want == Origin::Internal);
        }
        // Two XFF lines are two addresses.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.1.2.3"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.1.2.4"));
        assert_eq!(
            request(&cfg, &conn("10.1.1.1:5000"), "http", None, &mut h),
            Origin::External
        );
    }
}
