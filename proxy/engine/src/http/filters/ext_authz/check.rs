//! One check against the HTTP authorization service, as Envoy's `RawHttpClientImpl`: the
//! request's method, its path under `path_prefix`, the body `with_request_body` read (none:
//! `Content-Length: 0`) with `x-envoy-auth-partial-body`, the default headers
//! (Host, Authorization) and the allowed ones, `headers_to_add`, and what Envoy's async client
//! adds (`x-envoy-internal`, `x-envoy-expected-rq-timeout-ms`); the answer read whole. A 200 is
//! OK, a 5xx (or no answer) an error, anything else a denial.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{header, HeaderMap, HeaderName, HeaderValue, Request};

use super::{Checked, HttpService, Verdict};
use crate::{
    http::{local_reply, Body},
    upstream::Cluster,
};

/// A denial's body is read up to this much (Envoy's async client buffers it whole).
const MAX_BODY: usize = 1 << 20;

/// The response header naming request headers to remove on success.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Asks `svc` about `req`.
pub(crate) async fn check(
    svc: &HttpService,
    req: &Checked<'_>,
    clusters: &HashMap<String, Arc<Cluster>>,
    max_denied_body: usize,
) -> Verdict {
    let started = Instant::now();
    // Only a denial's body is used, up to what it may carry.
    let keep = |head: &http::response::Parts| match (head.status.as_u16(), max_denied_body) {
        (200, _) => 0,
        (_, 0) => MAX_BODY,
        (_, n) => n.min(MAX_BODY),
    };
    let answer = super::call::call(&svc.cluster, clusters, request(svc, req), svc.timeout, keep);
    // A body that breaks off keeps what came.
    let Some(super::call::Answer {
        head: parts, body, ..
    }) = answer.await
    else {
        return Verdict::Error;
    };
    let status = parts.status.as_u16();
    if status >= 500 {
        return Verdict::Error;
    }
    let mut headers = parts.headers;
    // Envoy's async client goes through a router, which stamps the answer.
    headers.insert(
        "x-envoy-upstream-service-time",
        HeaderValue::from(started.elapsed().as_millis() as u64),
    );
    if status == 200 {
        let remove = headers
            .get_all(HEADERS_TO_REMOVE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            // Envoy never lets the service remove the request's Host.
            .filter(|n| n != header::HOST)
            .collect();
        headers.remove(HEADERS_TO_REMOVE);
        let pick = |l: &super::NameList| -> Vec<(HeaderName, HeaderValue)> {
            headers
                .iter()
                .filter(|(n, _)| !is_framing(n) && l.matches(n.as_str()))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect()
        };
        return Verdict::Ok {
            remove,
            set: pick(&svc.upstream_set),
            append: pick(&svc.upstream_append),
            response: pick(&svc.client_success),
        };
    }
    headers.remove(HEADERS_TO_REMOVE);
    let client: Vec<(HeaderName, HeaderValue)> = headers
        .iter()
        .filter(|(n, _)| denied_header(svc, n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    Verdict::Denied {
        status,
        headers: client,
        body,
    }
}

/// Whether a denial's header goes to the client: the listed ones and Envoy's defaults
/// (`:status`, Content-Length, WWW-Authenticate, Location), or with no list every one but Host.
/// The reply's Content-Length is its own body's (the service's body may have been cut).
fn denied_header(svc: &HttpService, n: &HeaderName) -> bool {
    if is_framing(n) {
        return false;
    }
    if svc.client_denied.is_empty() {
        return n != header::HOST;
    }
    n == header::WWW_AUTHENTICATE || n == header::LOCATION || svc.client_denied.matches(n.as_str())
}

/// Headers of one connection's framing, never carried from one message to another (Envoy's
/// codecs and HCM drop them before any filter sees them).
fn is_framing(n: &HeaderName) -> bool {
    n == header::CONTENT_LENGTH
        || n == header::TRANSFER_ENCODING
        || n == header::CONNECTION
        || n == header::TE
        || n == header::UPGRADE
        || n == "keep-alive"
        || n == "proxy-connection"
}

/// The check request.
fn request(svc: &HttpService, req: &Checked<'_>) -> Request<Body> {
    let mut h = HeaderMap::new();
    let body = req.body.map(|b| b.data).unwrap_or_default();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some(v) = req.authority.and_then(|a| HeaderValue::from_str(a).ok()) {
        h.insert(header::HOST, v);
    }
    for (n, v) in req.headers {
        // The client's own partial-body header never reaches the service.
        if is_framing(n) || n == header::HOST || n == super::body::PARTIAL_HEADER {
            continue;
        }
        let allowed = n == header::AUTHORIZATION || svc.allowed.matches(n.as_str());
        if allowed && !svc.disallowed.matches(n.as_str()) {
            h.append(n.clone(), v.clone());
        }
    }
    if let Some(b) = &req.body {
        h.insert(
            super::body::PARTIAL_HEADER,
            HeaderValue::from_static(if b.partial { "true" } else { "false" }),
        );
    }
    for (n, v) in &svc.headers_to_add {
        h.insert(n.clone(), v.clone());
    }
    h.insert("x-envoy-internal", HeaderValue::from_static("true"));
    if let Some(t) = svc.timeout {
        h.insert(
            "x-envoy-expected-rq-timeout-ms",
            HeaderValue::from(millis(t)),
        );
    }
    let uri = match &svc.path_override {
        Some(p) => Ok(p.clone()),
        None if svc.path_prefix.is_empty() => req.path.parse(),
        None => format!("{}{}", svc.path_prefix, req.path).parse(),
    };
    let mut r = Request::new(match body {
        [] => local_reply::empty(),
        data => local_reply::full(bytes::Bytes::copy_from_slice(data)),
    });
    *r.method_mut() = req.method.clone();
    // The request's path parsed as a URI when it came; the prefix was checked at load.
    *r.uri_mut() = uri.unwrap_or_else(|_| http::Uri::from_static("/"));
    *r.headers_mut() = h;
    r
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}
