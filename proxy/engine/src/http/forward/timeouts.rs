//! The route timeout of one request and the headers that tell the upstream about it (Envoy's
//! `FilterUtility::finalTimeout` and `setTimeoutHeaders`).

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue};

use super::Plan;
use crate::route::ForwardAction;

/// The request's route timeout (`None`: none): a gRPC request on a route with
/// `max_grpc_timeout` takes it from its `grpc-timeout`, any other the route's `timeout`.
pub(super) fn route_timeout(
    action: &ForwardAction,
    headers: &HeaderMap,
    grpc: bool,
) -> Option<Duration> {
    match action.grpc_timeout.filter(|_| grpc) {
        Some(g) => g.route_timeout(headers.get("grpc-timeout").and_then(|v| v.to_str().ok())),
        None => action.timeout,
    }
}

/// Sets `x-envoy-expected-rq-timeout-ms` (and, with `max_grpc_timeout`, a gRPC request's
/// `grpc-timeout`) for an attempt ([`expected_ms`]); `left`: the route timeout's time left
/// before a retry.
pub(super) fn set_headers(plan: &Plan, headers: &mut HeaderMap, left: Option<Duration>) {
    let per_try = plan.retry.as_ref().and_then(|r| r.per_try_timeout);
    let Some(expected) = expected_ms(plan.timeout, per_try, plan.hedge, left) else {
        return;
    };
    if plan.envoy_headers {
        headers.insert(
            "x-envoy-expected-rq-timeout-ms",
            HeaderValue::from(expected),
        );
    }
    if plan.grpc_expected {
        headers.insert(
            "grpc-timeout",
            grpc_timeout_value(Duration::from_millis(expected)),
        );
    }
}

/// The timeout an attempt tells the upstream, in ms: the per-try timeout when there is one below
/// the route timeout and no hedging, else the route timeout; capped at the route timeout's time
/// `left` on a retry (1 ms once it is out). `None`: infinite, no header.
fn expected_ms(
    global: Option<Duration>,
    per_try: Option<Duration>,
    hedge: bool,
    left: Option<Duration>,
) -> Option<u64> {
    let global = global.map(ms).filter(|g| *g != 0);
    // A per-try timeout at or above the route timeout is ignored.
    let per_try = per_try
        .map(ms)
        .filter(|p| *p != 0 && global.is_none_or(|g| *p < g));
    let expected = per_try.filter(|_| !hedge).or(global)?;
    let Some(g) = global else {
        return Some(expected);
    };
    // Envoy counts whole milliseconds elapsed: the time left rounded up.
    let elapsed = left.map_or(0, |l| {
        g.saturating_sub(u64::try_from(l.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
    });
    Some(if elapsed >= g {
        1
    } else {
        expected.min(g - elapsed)
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Envoy's `Grpc::Common::isGrpcRequestHeaders` (content-type `application/grpc[+...]`).
pub(super) fn is_grpc_request(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+'))
}

/// Envoy's `Grpc::Common::toGrpcTimeout`: milliseconds, moving to a coarser unit while the
/// number has more than 8 digits.
pub(super) fn grpc_timeout_value(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let mut n = d.as_millis();
    let mut unit = 'm';
    for (next, div) in [('S', 1000), ('M', 60), ('H', 60)] {
        if n <= MAX {
            break;
        }
        n /= div;
        unit = next;
    }
    HeaderValue::from_str(&format!("{}{unit}", n.min(MAX)))
        .unwrap_or(HeaderValue::from_static("0m"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::expected_ms;

    #[test]
    fn expected_timeout_is_envoys_set_timeout_headers() {
        let ms = |n: u64| Some(Duration::from_millis(n));
        // (route timeout, per-try timeout, hedging, time left) -> header
        let table = [
            (ms(5000), None, false, None, Some(5000)),
            (ms(5000), ms(1000), false, None, Some(1000)),
            (ms(5000), ms(1000), true, None, Some(5000)),
            (ms(5000), ms(5000), false, None, Some(5000)),
            (ms(5000), ms(6000), false, None, Some(5000)),
            (None, ms(1000), false, None, Some(1000)),
            (None, ms(1000), true, None, None),
            (None, None, false, None, None),
            (ms(5000), ms(1000), false, ms(700), Some(700)),
            (ms(5000), ms(1000), false, ms(3000), Some(1000)),
            (
                ms(5000),
                None,
                false,
                Some(Duration::from_micros(2_999_500)),
                Some(3000),
            ),
            (ms(5000), None, false, Some(Duration::ZERO), Some(1)),
            (None, ms(1000), false, Some(Duration::ZERO), Some(1000)),
        ];
        for (global, per_try, hedge, left, want) in table {
            assert_eq!(
                expected_ms(global, per_try, hedge, left),
                want,
                "{global:?} {per_try:?} {hedge} {left:?}"
            );
        }
    }
}
