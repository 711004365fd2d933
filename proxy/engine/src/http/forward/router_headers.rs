//! The router-control headers of an internal request, which Envoy's router reads and removes
//! ("HTTP headers consumed from downstreams"): `x-envoy-upstream-rq-timeout-ms`,
//! `x-envoy-upstream-rq-per-try-timeout-ms`, `x-envoy-upstream-rq-timeout-alt-response`,
//! `x-envoy-retry-on`, `x-envoy-retry-grpc-on`, `x-envoy-max-retries`,
//! `x-envoy-retriable-status-codes`, `x-envoy-retriable-header-names` and
//! `x-envoy-hedge-on-per-try-timeout`.
//!
//! Only an internal request (HCM `internal_address_config`) still has them when it is routed:
//! sanitation strips them from every other (`http/sanitize.rs`), and marks an internal one with
//! `x-envoy-internal: true`, so a request without that mark costs one header lookup here.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName};

use crate::route::{
    HeaderMatchKind, HeaderMatcher, RetryOn, RetryPolicy, DEFAULT_NUM_RETRIES,
    DEFAULT_RETRY_BASE_INTERVAL,
};

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

/// What an internal request's headers change in its forwarding.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    /// `x-envoy-upstream-rq-timeout-ms`: the route timeout (0: none).
    pub timeout: Option<Duration>,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`: the per-try timeout (0: none).
    pub per_try: Option<Duration>,
    /// `x-envoy-upstream-rq-timeout-alt-response`: a timeout is answered 204, not 504.
    pub alt_response: bool,
    /// `x-envoy-hedge-on-per-try-timeout`: `true` or `false` (other values: the route's).
    pub hedge: Option<bool>,
    retry_on: RetryOn,
    max_retries: Option<u32>,
    status_codes: Vec<u16>,
    header_names: Vec<String>,
}

/// Reads an internal request's router-control headers (`None` for any other request, or one
/// without them).
pub(super) fn read(h: &HeaderMap) -> Option<Overrides> {
    if h.get("x-envoy-internal").is_none_or(|v| v != "true") {
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
    let mut o = Overrides {
        timeout: millis(&TIMEOUT),
        per_try: millis(&PER_TRY),
        alt_response: h.contains_key(ALT_RESPONSE),
        hedge: match text(&HEDGE) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        },
        ..Overrides::default()
    };
    // Envoy's `parseRetryOn` / `parseRetryGrpcOn`: unknown tokens are ignored, and so are
    // `refused-stream`, `reset-before-request` and `http3-post-connect-failure` here (a route's
    // `retry_on` with one is refused; docs/config.md "Known divergences").
    for t in text(&RETRY_ON).into_iter().flat_map(|v| v.split(',')) {
        o.retry_on.add_http(t.trim());
    }
    for t in text(&RETRY_GRPC_ON).into_iter().flat_map(|v| v.split(',')) {
        o.retry_on.add_grpc(t.trim());
    }
    o.max_retries = text(&MAX_RETRIES).and_then(|v| v.parse().ok());
    if let Some(v) = text(&STATUS_CODES) {
        o.status_codes = v
            .split(',')
            .filter_map(|c| c.trim().parse::<u16>().ok())
            .collect();
    }
    if let Some(v) = text(&HEADER_NAMES) {
        o.header_names = v
            .split(',')
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
    }
    Some(o)
}

/// Removes the consumed headers (what Envoy's router does as it reads them).
pub(super) fn remove(h: &mut HeaderMap) {
    for n in &CONSUMED {
        h.remove(n);
    }
}

impl Overrides {
    /// The request's retry policy: the route's (`route`) with the headers merged in, as
    /// Envoy's `RetryStateImpl`: their conditions join the route's, `x-envoy-max-retries`
    /// replaces the count once any condition is set, the status codes and header names join the
    /// route's lists, and the per-try timeout header replaces the route's. A route without a
    /// policy gets Envoy's defaults (one retry, 25 ms base interval).
    pub fn retry(&self, route: Option<RetryPolicy>) -> Option<RetryPolicy> {
        let header_conditions = self.retry_on != RetryOn::default();
        if route.is_none() && !header_conditions && self.per_try.is_none() {
            return None;
        }
        let mut p = route.unwrap_or_else(default_policy);
        p.retry_on = p.retry_on.union(self.retry_on);
        if p.retry_on != RetryOn::default() {
            if let Some(n) = self.max_retries {
                p.num_retries = n;
            }
        }
        if !self.status_codes.is_empty() {
            p.retriable_status_codes.extend(&self.status_codes);
        }
        if !self.header_names.is_empty() {
            let mut all: Vec<HeaderMatcher> = p.retriable_headers.to_vec();
            all.extend(self.header_names.iter().map(|n| HeaderMatcher {
                name: n.clone(),
                kind: HeaderMatchKind::Present(true),
                invert_match: false,
                treat_missing_header_as_empty: false,
            }));
            p.retriable_headers = Arc::from(all);
        }
        if let Some(t) = self.per_try {
            p.per_try_timeout = (!t.is_zero()).then_some(t);
        }
        Some(p)
    }
}

/// The policy of a route without one (Envoy's `RetryPolicyImpl` defaults).
fn default_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: RetryOn::default(),
        num_retries: DEFAULT_NUM_RETRIES,
        per_try_timeout: None,
        per_try_idle_timeout: None,
        base_interval: DEFAULT_RETRY_BASE_INTERVAL,
        max_interval: DEFAULT_RETRY_BASE_INTERVAL * 10,
        retriable_status_codes: Vec::new(),
        retriable_headers: Arc::from(Vec::new()),
        retriable_request_headers: Arc::from(Vec::new()),
        previous_hosts: false,
        host_selection_max_attempts: 1,
        rate_limited: None,
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
        let o = read(&internal(&[
            ("x-envoy-retry-on", "bogus, gateway-error"),
            ("x-envoy-retry-grpc-on", "unavailable"),
            ("x-envoy-max-retries", "3"),
        ]))
        .unwrap();
        let p = o.retry(None).expect("a policy from the headers");
        assert!(p.retry_on.gateway_error && p.retry_on.grpc_unavailable);
        assert!(!p.retry_on.server_error);
        assert_eq!(p.num_retries, 3);
        // No condition anywhere: the count alone does not make a policy.
        let o = read(&internal(&[("x-envoy-max-retries", "3")])).unwrap();
        assert!(o.retry(None).is_none());
        // The route's conditions are kept.
        let mut route = default_policy();
        route.retry_on.server_error = true;
        let p = o.retry(Some(route)).unwrap();
        assert!(p.retry_on.server_error);
        assert_eq!(p.num_retries, 3);
    }

    #[test]
    fn timeouts_codes_and_names() {
        let o = read(&internal(&[
            ("x-envoy-upstream-rq-timeout-ms", "300"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "100"),
            ("x-envoy-upstream-rq-timeout-alt-response", ""),
            ("x-envoy-retriable-status-codes", "418, abc,500"),
            ("x-envoy-retriable-header-names", " X-Retry-Me ,,x-other"),
            ("x-envoy-hedge-on-per-try-timeout", "true"),
        ]))
        .unwrap();
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
