//! The request target and Host as Envoy 1.40's HTTP/1 codec and connection manager see them,
//! before routing (each outcome observed against a real Envoy, docs/conformance.md):
//! - repeated `Host` headers are joined with `,` (so `Host: a` + `Host: b` routes as `a,b` and
//!   is forwarded so; never first-wins, which let two hops pick two virtual hosts);
//! - an absolute-form target (`GET http://user:pw@a/x`) routes on, and forwards as Host, its
//!   authority without the userinfo; the target becomes origin-form;
//! - `CONNECT` is never routed (sluice supports no CONNECT routes): 404 with the connection
//!   closed for an authority-form target, 400 `Bad Request` for any other target;
//! - an authority-form target with any other method is a 400 `Bad Request`;
//! - an HTTP/1 method outside the codec's list ([`HTTP1_METHODS`]: lower case, `M-SEARCH`,
//!   an extension token) is a 400 `Bad Request`; `QUERY` a 400 without a body.

use http::{header, uri::Authority, HeaderMap, HeaderValue, Method, Request, Uri, Version};

/// Why a request is refused before routing: the status and body of Envoy's reply (the
/// connection is closed after it) and what its access log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) body: &'static str,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`.
    pub(crate) details: &'static str,
    /// Envoy's HTTP/1 codec refuses it before the request exists: its log line has no
    /// request (`"- - HTTP/1.1"`) and flag `DPE`.
    pub(crate) codec: bool,
}

/// A request the codec cannot parse (an unknown method, an authority-form target).
pub(crate) const BAD_REQUEST: Refusal = Refusal {
    status: 400,
    body: "Bad Request",
    details: "http1.codec_error",
    codec: true,
};
/// A header name with an underscore under `headers_with_underscores_action: REJECT_REQUEST`.
pub(crate) const UNDERSCORE: Refusal = Refusal {
    details: "http1.unexpected_underscore",
    ..BAD_REQUEST
};
/// A CONNECT with an origin-form target.
const INVALID_URL: Refusal = Refusal {
    details: "http1.invalid_url",
    ..BAD_REQUEST
};
/// QUERY without a body's content type: past the parser, refused by the connection manager.
const EMPTY_BAD_REQUEST: Refusal = Refusal {
    status: 400,
    body: "",
    details: "query_missing_content_type",
    codec: false,
};
const CONNECT_NO_ROUTE: Refusal = Refusal {
    status: 404,
    body: "",
    details: "route_not_found",
    codec: false,
};

/// The methods Envoy 1.40's HTTP/1 codec (BalsaParser) accepts; any other is a 400. Observed
/// one by one against Envoy (`MSEARCH` passes, `M-SEARCH` does not).
#[rustfmt::skip]
pub(crate) const HTTP1_METHODS: [&str; 34] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "ACL", "BIND",
    "CHECKOUT", "COPY", "LINK", "LOCK", "MSEARCH", "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL",
    "MOVE", "NOTIFY", "PROPFIND", "PROPPATCH", "PURGE", "REBIND", "REPORT", "SEARCH", "SOURCE",
    "SUBSCRIBE", "UNBIND", "UNLINK", "UNLOCK", "UNSUBSCRIBE",
];

/// Normalises `req`'s target and Host in place, or says why Envoy refuses it.
pub(crate) fn normalize<B>(req: &mut Request<B>) -> Result<(), Refusal> {
    if req.version() != Version::HTTP_2 && !HTTP1_METHODS.contains(&req.method().as_str()) {
        // QUERY passes the parser and is refused after it, without a body.
        return Err(if req.method().as_str() == "QUERY" {
            EMPTY_BAD_REQUEST
        } else {
            BAD_REQUEST
        });
    }
    let authority_form = req.uri().authority().is_some() && req.uri().scheme().is_none();
    if req.method() == Method::CONNECT {
        // HTTP/2 CONNECT carries only `:authority`; both forms end at the route table, which
        // has no CONNECT matcher.
        return Err(if authority_form || req.version() == Version::HTTP_2 {
            CONNECT_NO_ROUTE
        } else {
            INVALID_URL
        });
    }
    if req.version() == Version::HTTP_2 {
        return Ok(());
    }
    if authority_form {
        return Err(BAD_REQUEST);
    }
    if let Some(a) = req.uri().authority() {
        // Absolute form: the URI's authority (userinfo dropped) replaces the Host header.
        let host = strip_userinfo(a);
        let v = HeaderValue::from_str(host).map_err(|_| BAD_REQUEST)?;
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|_| BAD_REQUEST)?;
        *req.uri_mut() = path;
        req.headers_mut().insert(header::HOST, v);
        return Ok(());
    }
    join_repeated_host(req.headers_mut());
    Ok(())
}

/// The authority without `userinfo@`.
fn strip_userinfo(a: &Authority) -> &str {
    let s = a.as_str();
    s.rsplit_once('@').map_or(s, |(_, host)| host)
}

/// Joins repeated `Host` headers into one, comma-separated, as Envoy's header map does.
fn join_repeated_host(h: &mut HeaderMap) {
    let mut all = h.get_all(header::HOST).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in h.get_all(header::HOST).iter().skip(1) {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    fn hosts(r: &Request<()>) -> Vec<&str> {
        r.headers()
            .get_all(header::HOST)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn repeated_hosts_are_joined() {
        let mut r = req("GET", "/x", &["one.example", "two.example"]);
        normalize(&mut r).unwrap();
        assert_eq!(hosts(&r), ["one.example,two.example"]);
        let mut r = req("GET", "/x", &["one.example"]);
        normalize(&mut r).unwrap();
        assert_eq!(hosts(&r), ["one.example"]);
    }

    #[test]
    fn absolute_form_drops_userinfo_and_sets_host() {
        let mut r = req(
            "GET",
            "http://user:pw@one.example:8080/x?q",
            &["two.example"],
        );
        normalize(&mut r).unwrap();
        assert_eq!(hosts(&r), ["one.example:8080"]);
        assert_eq!(r.uri().to_string(), "/x?q");
    }

    #[test]
    fn connect_and_authority_form_are_refused() {
        let mut r = req("CONNECT", "one.example:443", &["one.example:443"]);
        assert_eq!(normalize(&mut r), Err(CONNECT_NO_ROUTE));
        let mut r = req("CONNECT", "/x", &["one.example"]);
        assert_eq!(normalize(&mut r), Err(INVALID_URL));
        let mut r = req("GET", "one.example:443", &["one.example"]);
        assert_eq!(normalize(&mut r), Err(BAD_REQUEST));
    }
}
