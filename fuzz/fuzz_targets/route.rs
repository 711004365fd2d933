//! Header sanitation and route selection on arbitrary requests: `http::preroute` (the steps the
//! connection manager runs before forwarding) against a fixed route table loaded once.
//!
//! Input: one flag byte, then an HTTP/1 request head parsed by httparse (hyper's own head
//! parser), so the request is one hyper could hand the proxy. Flag bits: 0 = the `mesh`
//! listener (Envoy defaults: HTTP/1.0 refused with 426) instead of `edge`
//! (use_remote_address, accept_http_10), 1 = TLS downstream,
//! 2 = an external peer instead of loopback, 3 = served as HTTP/2 (authority in the URI),
//! 4-7 = the weighted-cluster pick.
#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, OnceLock},
};

use http::{HeaderValue, Request, Version};
use libfuzzer_sys::fuzz_target;
use sluice_engine::{
    config::{self, HttpConnectionManager, NetworkFilter},
    http::{preroute, retry::EXTERNAL_STRIPPED_HEADERS, ConnInfo, PreRoute},
};

fn hcms() -> &'static [Arc<HttpConnectionManager>; 2] {
    static HCMS: OnceLock<[Arc<HttpConnectionManager>; 2]> = OnceLock::new();
    HCMS.get_or_init(|| {
        let b = config::from_yaml_str(include_str!("route_table.yaml")).expect("route table");
        let hcm = |name: &str| match &b.listener(name).expect("listener").filter_chains[0].filter {
            NetworkFilter::Http(h) => h.clone(),
            NetworkFilter::Tcp(_) => unreachable!("route_table.yaml has HTTP listeners only"),
        };
        [hcm("edge"), hcm("mesh")]
    })
}

/// The request httparse reads from `head`, or `None` when hyper would have refused it.
fn request(head: &[u8], h2: bool) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(head).ok()?;
    let mut b = Request::builder().method(parsed.method?);
    let target = parsed.path?;
    let host = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    b = match (h2, host) {
        (true, Some(host)) if target.starts_with('/') => b
            .uri(format!("http://{host}{target}"))
            .version(Version::HTTP_2),
        (true, _) => b.uri(target).version(Version::HTTP_2),
        (false, _) if parsed.version? == 0 => b.uri(target).version(Version::HTTP_10),
        (false, _) => b.uri(target).version(Version::HTTP_11),
    };
    for h in parsed.headers.iter() {
        b = b.header(h.name, HeaderValue::from_bytes(h.value).ok()?);
    }
    b.body(()).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let Some(mut req) = request(head, flags & 8 != 0) else {
        return;
    };
    let edge = flags & 1 == 0;
    let cfg = &hcms()[usize::from(!edge)];
    let peer_ip = if flags & 4 != 0 {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let conn = ConnInfo {
        peer: SocketAddr::new(peer_ip, 40000),
        local: SocketAddr::from(([10, 0, 0, 1], 10001)),
        orig_dst: SocketAddr::from(([10, 0, 0, 1], 10001)),
        tls: flags & 2 != 0,
        proxy_direct: None,
    };
    let sent_xff = req.headers().contains_key("x-forwarded-for");
    let connect = req.method() == http::Method::CONNECT;
    let http10 = req.version() == Version::HTTP_10;
    let decision = preroute(cfg, &conn, &mut req, u64::from(flags >> 4) * 7);
    if let PreRoute::Refused(status) = decision {
        // 400 (no Host, bad target), 403 (upgrade not allowed), 404 (CONNECT: no CONNECT
        // routes, as Envoy answers it), 426 (HTTP/1.0 without `accept_http_10`, as Envoy);
        // nothing else is refused before routing.
        assert!(
            status == 400
                || status == 403
                || (status == 404 && connect)
                || (status == 426 && http10 && cfg.http10.is_none()),
            "refused {status} (CONNECT: {connect}, HTTP/1.0: {http10})"
        );
        return;
    }
    let h = req.headers();
    // A client cannot keep a hop-by-hop nomination alive past sanitation...
    if let Some(c) = h.get(http::header::CONNECTION) {
        assert_eq!(c, "upgrade", "Connection left after sanitation: {c:?}");
    }
    // ...nor smuggle router-control headers in, nor lose the proxy's own.
    for n in EXTERNAL_STRIPPED_HEADERS {
        assert!(!h.contains_key(*n), "{n} survived sanitation");
    }
    assert!(h.contains_key("x-request-id"));
    let scheme = if conn.tls { "https" } else { "http" };
    if edge {
        assert_eq!(h.get("x-forwarded-proto").unwrap(), scheme);
        assert!(h.contains_key("x-envoy-external-address"));
        let xff = h.get("x-forwarded-for").expect("XFF appended");
        if !peer_ip.is_loopback() {
            assert!(xff.as_bytes().ends_with(peer_ip.to_string().as_bytes()));
        }
    } else {
        assert!(h.contains_key("x-forwarded-proto"));
        assert_eq!(h.contains_key("x-forwarded-for"), sent_xff);
    }
});
