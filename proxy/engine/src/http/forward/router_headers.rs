//! The router-control headers of an internal request, which Envoy's router reads and removes
//! ("HTTP headers consumed from downstreams"): `x-envoy-upstream-rq-timeout-ms`,
//! `x-envoy-upstream-rq-per-try-timeout-ms`, `x-envoy-upstream-rq-timeout-alt-response`,
//! `x-envoy-retry-on`, `x-envoy-retry-grpc-on`, `x-envoy-max-retries`,
//! `x-envoy-retriable-status-codes`, `x-envoy-retriable-header-names` and
//! `x-envoy-hedge-on-per-try-timeout`.
//!
//! Only an internal request (HCM `internal_address_config`) still has them when it is routed:
//! sanitation strips them from every other (`http/sanitize.rs`) and marks an internal one with
//! `x-envoy-internal: true`. The caller looks only under an HCM with `internal_address_config`,
//! so any other request pays nothing here.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName};

use crate::route::{HeaderMatchKind, HeaderMatcher, RetryOn, RetryPolicy};

const INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
const TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
const PER_TRY: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
const ALT_RESPONSE: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-alt-response");
const RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
const RETRY_GRPC_ON: HeaderName = HeaderName::from_static("x-envoy-retry-grpc-on");
const MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
const STATUS_CODES: HeaderName = HeaderName::from_static("x-envoy-retriable-status-codes");
const HEADER_NAMES: HeaderName = HeaderName::from_static("x-envoy-retriable-header-names");
const HEDGE: HeaderName = HeaderName::from_static("x-envoy-hedge-on-per-try-timeout");

/// The headers the router consumes: none of them goes upstream.
const CONSUMED: [HeaderName; 9] = [
    TIMEOUT,
    PER_TRY,
    ALT_RESPONSE,
    RETRY_ON,
    RETRY_GRPC_ON,
    MAX_RETRIES,
    STATUS_CODES,
    HEADER_NAMES,
    HEDGE,
];

/// What an internal request's headers change in its forwarding (the retry headers as sent:
/// they are parsed into the request's retry policy, [`Overrides::retry`]).
#[derive(Debug, Default)]
pub(super) struct Overrides<'h> {
    /// `x-envoy-upstream-rq-timeout-ms`: the route timeout (0: none).
    pub timeout: Option<Duration>,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`: the per-try timeout (0: none).
    pub per_try: Option<Duration>,
    /// `x-envoy-upstream-rq-timeout-alt-response`: a timeout is answered 204, not 504.
    pub alt_response: bool,
    /// `x-envoy-hedge-on-per-try-timeout`: `true` or `false` (other values: the route's).
    pub hedge: Option<bool>,
    retry_on: Option<&'h str>,
    retry_grpc_on: Option<&'h str>,
    max_retries: Option<u32>,
    status_codes: Option<&'h str>,
    header_names: Option<&'h str>,
}

/// Reads an internal request's router-control headers (`None` for any other request, or one
/// without them).
pub(super) fn read(h: &HeaderMap) -> Option<Overrides<'_>> {
    if h.get(INTERNAL).is_none_or(|v| v != "true") {
        return None;
    }
    if !CONSUMED.iter().any(|n| h.contains_key(n)) {
        return None;
    }
    let text = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok());
    let millis = |n: &HeaderName| {
        text(n)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    Some(Overrides {
        timeout: millis(&TIMEOUT),
        per_try: millis(&PER_TRY),
        alt_response: h.contains_key(ALT_RESPONSE),
        hedge: match text(&HEDGE) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        },
        retry_on: text(&RETRY_ON),
        retry_grpc_on: text(&RETRY_GRPC_ON),
        max_retries: text(&MAX_RETRIES).and_then(|v| v.parse().ok()),
        status_codes: text(&STATUS_CODES),
        header_names: text(&HEADER_NAMES),
    })
}

/// Removes the consumed headers (what Envoy's router does as it reads them).
pub(super) fn remove(h: &mut HeaderMap) {
    for n in &CONSUMED {
        h.remove(n);
    }
}

impl Overrides<'_> {
    /// The request's retry policy: the route's (`route`) with the headers merged in, as
    /// Envoy's `RetryStateImpl`: their conditions join the route's, `x-envoy-max-retries`
    /// replaces the count once any condition is set, the status codes and header names join the
    /// route's lists, and the per-try timeout header replaces the route's. A route without a
    /// policy gets Envoy's defaults (one retry, 25 ms base interval).
    pub fn retry(&self, route: Option<RetryPolicy>) -> Option<RetryPolicy> {
        let headers = self.retry_on.is_some() || self.retry_grpc_on.is_some();
        if route.is_none() && !headers && self.per_try.is_none() {
            return None;
        }
        let mut p = route.unwrap_or_default();
        // Envoy's `parseRetryOn` / `parseRetryGrpcOn`: unknown tokens are ignored.
        for t in self.retry_on.into_iter().flat_map(|v| v.split(',')) {
            p.retry_on.add_http(t.trim());
        }
        for t in self.retry_grpc_on.into_iter().flat_map(|v| v.split(',')) {
            p.retry_on.add_grpc(t.trim());
        }
        if p.retry_on != RetryOn::default() {
            if let Some(n) = self.max_retries {
                p.num_retries = n;
            }
        }
        if let Some(v) = self.status_codes {
            let codes = v.split(',').filter_map(|c| c.trim().parse::<u16>().ok());
            p.retriable_status_codes.extend(codes);
        }
        if let Some(v) = self.header_names {
            let mut all: Vec<HeaderMatcher> = p.retriable_headers.to_vec();
            all.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(|n| HeaderMatcher {
                        name: n.to_ascii_lowercase(),
                        kind: HeaderMatchKind::Present(true),
                        invert_match: false,
                        treat_missing_header_as_empty: false,
                    }),
            );
            p.retriable_headers = Arc::from(all);
        }
        if let Some(t) = self.per_try {
            p.per_try_timeout = (!t.is_zero()).then_some(t);
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn internal(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-envoy-internal", HeaderValue::from_static("true"));
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_an_internal_request_is_read() {
        let mut h = internal(&[("x-envoy-retry-on", "5xx")]);
        assert!(read(&h).is_some());
        h.remove("x-envoy-internal");
        assert!(read(&h).is_none());
        assert!(read(&internal(&[])).is_none(), "nothing to read");
    }

    #[test]
    fn header_conditions_join_the_routes_and_max_retries_needs_one() {
        let h = internal(&[
            ("x-envoy-retry-on", "bogus, gateway-error"),
            ("x-envoy-retry-grpc-on", "unavailable"),
            ("x-envoy-max-retries", "3"),
        ]);
        let o = read(&h).unwrap();
        let p = o.retry(None).expect("a policy from the headers");
        assert!(p.retry_on.gateway_error && p.retry_on.grpc_unavailable);
        assert!(!p.retry_on.server_error);
        assert_eq!(p.num_retries, 3);
        // No condition anywhere: the count alone does not make a policy.
        let h = internal(&[("x-envoy-max-retries", "3")]);
        let o = read(&h).unwrap();
        assert!(o.retry(None).is_none());
        // The route's conditions are kept.
        let mut route = RetryPolicy::default();
        route.retry_on.server_error = true;
        let p = o.retry(Some(route)).unwrap();
        assert!(p.retry_on.server_error);
        assert_eq!(p.num_retries, 3);
    }

    #[test]
    fn timeouts_codes_and_names() {
        let h = internal(&[
            ("x-envoy-upstream-rq-timeout-ms", "300"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "100"),
            ("x-envoy-upstream-rq-timeout-alt-response", ""),
            ("x-envoy-retriable-status-codes", "418, abc,500"),
            ("x-envoy-retriable-header-names", " X-Retry-Me ,,x-other"),
            ("x-envoy-hedge-on-per-try-timeout", "true"),
        ]);
        let o = read(&h).unwrap();
        assert_eq!(o.timeout, Some(Duration::from_millis(300)));
        assert!(o.alt_response);
        assert_eq!(o.hedge, Some(true));
        let p = o.retry(None).expect("a per-try timeout makes a policy");
        assert_eq!(p.per_try_timeout, Some(Duration::from_millis(100)));
        assert_eq!(p.retriable_status_codes, [418, 500]);
        let names: Vec<&str> = p
            .retriable_headers
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["x-retry-me", "x-other"]);
        assert_eq!(p.retry_on, RetryOn::default(), "no condition: no retry");
    }

    #[test]
    fn consumed_headers_are_removed() {
        let mut h = internal(&[("x-envoy-retry-on", "5xx"), ("x-envoy-custom", "keep")]);
        remove(&mut h);
        assert!(!h.contains_key("x-envoy-retry-on"));
        assert_eq!(h["x-envoy-custom"], "keep");
        assert_eq!(h["x-envoy-internal"], "true");
    }
}
