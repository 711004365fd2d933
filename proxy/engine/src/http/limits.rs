//! The request head limits Envoy 1.40's codec enforces before the connection manager sees a
//! request (observed against Envoy: the `hcm_max_*` and `hcm_headers_with_underscores*`
//! conformance cases):
//! - HTTP/1: a head (request line, header lines, CRLFs) longer than `max_request_headers_kb`
//!   KiB, or holding more than `max_headers_count` header lines, gets 431 `Request Header Fields
//!   Too Large` and the connection is closed (hyper's own limits are set above these, see
//!   [`hyper_buf_size`], so this check decides);
//! - `headers_with_underscores_action`: `REJECT_REQUEST` -> 400 `Bad Request` (connection
//!   closed), `DROP_HEADER` -> such headers removed.
//!
//! The head size is counted from the parsed request as `name: value` lines (what clients send;
//! extra whitespace around a value, which hyper trims, is not counted).

use http::{HeaderMap, Request, Version};

use super::target::{Refusal, UNDERSCORE};
use crate::config::{HeadLimits, UnderscoreAction};

const TOO_LARGE: Refusal = Refusal {
    status: 431,
    body: "Request Header Fields Too Large",
    details: "http1.headers_too_large",
    codec: true,
};

/// hyper's HTTP/1 read buffer limit for `limits`: room above the configured head size, so a
/// head just over it reaches [`check`] and gets Envoy's reply (hyper's own 431 has no body).
pub(crate) fn hyper_buf_size(limits: &HeadLimits) -> usize {
    (limits.max_request_headers_bytes * 2).max(8192) + 8192
}

/// hyper's header count limit for `limits` (above the configured one, for the same reason).
pub(crate) fn hyper_max_headers(limits: &HeadLimits) -> usize {
    limits.max_headers_count * 2
}

/// Applies `limits` to `req`: `Err` is the reply that refuses it (the connection is closed).
pub(crate) fn check<B>(limits: &HeadLimits, req: &mut Request<B>) -> Result<(), Refusal> {
    if req.version() != Version::HTTP_2 {
        let h = req.headers();
        if h.len() > limits.max_headers_count || head_size(req) > limits.max_request_headers_bytes {
            return Err(TOO_LARGE);
        }
    }
    match limits.underscores {
        UnderscoreAction::Allow => Ok(()),
        UnderscoreAction::Reject if has_underscore(req.headers()) => Err(UNDERSCORE),
        UnderscoreAction::Reject => Ok(()),
        UnderscoreAction::Drop => {
            drop_underscored(req.headers_mut());
            Ok(())
        }
    }
}

/// The HTTP/1 head's length in bytes: `METHOD SP target SP HTTP/1.x CRLF`, each `name: value
/// CRLF`, the final CRLF.
fn head_size<B>(req: &Request<B>) -> usize {
    let u = req.uri();
    let target = match (u.scheme_str(), u.authority()) {
        (Some(s), Some(a)) => {
            s.len() + 3 + a.as_str().len() + u.path_and_query().map_or(0, |p| p.as_str().len())
        }
        (None, Some(a)) => a.as_str().len(),
        _ => u.path_and_query().map_or(1, |p| p.as_str().len()),
    };
    let line = req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len() + 2;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    line + headers + 2
}

fn has_underscore(h: &HeaderMap) -> bool {
    h.keys().any(|k| k.as_str().contains('_'))
}

/// Removes every header whose name holds `_` (allocates only when there is one).
fn drop_underscored(h: &mut HeaderMap) {
    if !has_underscore(h) {
        return;
    }
    let names: Vec<_> = h
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn limits(kb: usize, count: usize, underscores: UnderscoreAction) -> HeadLimits {
        HeadLimits {
            max_request_headers_bytes: kb * 1024,
            max_headers_count: count,
            underscores,
        }
    }

    /// Envoy with `max_request_headers_kb: 1`: a 1024-byte head passes, 1025 bytes get 431.
    #[test]
    fn head_size_boundary_as_envoy() {
        let l = limits(1, 100, UnderscoreAction::Allow);
        // "GET / HTTP/1.1\r\n" 16 + "host: example.com\r\n" 19 + "x: <n>\r\n" 5+n + "\r\n" 2
        for (n, ok) in [(982, true), (983, false)] {
            let pad = "a".repeat(n);
            let mut r = req("/", &[("host", "example.com"), ("x", &pad)]);
            assert_eq!(check(&l, &mut r).is_ok(), ok, "{n}");
        }
        let pad = "a".repeat(972);
        let mut r = req("/0123456789", &[("host", "example.com"), ("x", &pad)]);
        assert!(check(&l, &mut r).is_ok());
    }

    /// Envoy with `max_headers_count: 3`: three header lines pass, four get 431.
    #[test]
    fn header_count_boundary_as_envoy() {
        let l = limits(60, 3, UnderscoreAction::Allow);
        let mut r = req("/", &[("host", "a"), ("x0", "v"), ("x1", "v")]);
        assert!(check(&l, &mut r).is_ok());
        let mut r = req("/", &[("host", "a"), ("x0", "v"), ("x1", "v"), ("x2", "v")]);
        assert_eq!(check(&l, &mut r), Err(TOO_LARGE));
    }

    #[test]
    fn underscores() {
        let mut r = req("/", &[("x_a", "1"), ("x-b", "2")]);
        let reject = limits(60, 100, UnderscoreAction::Reject);
        assert_eq!(check(&reject, &mut r), Err(UNDERSCORE));
        let drop = limits(60, 100, UnderscoreAction::Drop);
        assert!(check(&drop, &mut r).is_ok());
        assert!(!r.headers().contains_key("x_a") && r.headers().contains_key("x-b"));
        let allow = limits(60, 100, UnderscoreAction::Allow);
        let mut r = req("/", &[("x_a", "1")]);
        assert!(check(&allow, &mut r).is_ok() && r.headers().contains_key("x_a"));
    }
}
