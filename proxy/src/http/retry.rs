//! Retry decisions (Envoy's `retry_on` semantics) and jittered exponential back-off.

use std::time::Duration;

use rand::Rng;

use crate::route::{RetryOn, RetryPolicy};

/// How an upstream attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers with this status.
    Status(u16),
    /// The connection could not be established.
    ConnectFailure,
    /// The upstream reset or closed before response headers.
    Reset,
    /// per_try_timeout elapsed.
    PerTryTimeout,
}

/// Whether `policy` retries `outcome`.
pub fn should_retry(policy: &RetryPolicy, outcome: Outcome) -> bool {
    let on = &policy.retry_on;
    match outcome {
        Outcome::Status(s) => {
            (on.server_error && s >= 500)
                || (on.gateway_error && matches!(s, 502..=504))
                || (on.retriable_4xx && s == 409)
                || (on.retriable_status_codes && policy.retriable_status_codes.contains(&s))
        }
        Outcome::ConnectFailure => {
            on.connect_failure || on.server_error || on.gateway_error || on.reset
        }
        Outcome::Reset => on.server_error || on.gateway_error || on.reset,
        Outcome::PerTryTimeout => on.server_error || on.gateway_error,
    }
}

/// Request headers the router consumes (Envoy's "HTTP headers consumed from downstreams"); they
/// are removed before the request goes upstream.
pub const CONSUMED_HEADERS: &[&str] = &[
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
];

/// ORs the conditions of an `x-envoy-retry-on` value into `on` (unknown tokens are ignored, as
/// Envoy does for this header).
pub fn merge_retry_on(on: &mut RetryOn, value: &str) {
    for t in value.split(',').map(str::trim) {
        match t {
            "5xx" => on.server_error = true,
            "gateway-error" => on.gateway_error = true,
            "reset" => on.reset = true,
            "connect-failure" => on.connect_failure = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            _ => {}
        }
    }
}

/// A policy for requests whose route has none but whose headers ask for retries or a per-try
/// timeout.
pub fn header_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: RetryOn::default(),
        num_retries: crate::route::DEFAULT_NUM_RETRIES,
        per_try_timeout: None,
        base_interval: crate::route::DEFAULT_RETRY_BASE_INTERVAL,
        max_interval: crate::route::DEFAULT_RETRY_BASE_INTERVAL
            * crate::route::DEFAULT_RETRY_MAX_INTERVAL_FACTOR,
        retriable_status_codes: Vec::new(),
    }
}

/// Fully jittered exponential back-off: uniform in [0, min(base * 2^retry, max)).
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let base = policy.base_interval.as_millis().max(1) as u64;
    let ceiling = base
        .saturating_mul(1u64 << retry.min(20))
        .min(policy.max_interval.as_millis().max(1) as u64);
    Duration::from_millis(rand::thread_rng().gen_range(0..ceiling.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: RetryOn, codes: Vec<u16>) -> RetryPolicy {
        RetryPolicy {
            retry_on: on,
            num_retries: 1,
            per_try_timeout: None,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            retriable_status_codes: codes,
        }
    }

    #[test]
    fn retry_on_table() {
        let five = RetryOn {
            server_error: true,
            ..Default::default()
        };
        let gw = RetryOn {
            gateway_error: true,
            ..Default::default()
        };
        let cf = RetryOn {
            connect_failure: true,
            ..Default::default()
        };
        let r4 = RetryOn {
            retriable_4xx: true,
            ..Default::default()
        };
        let codes = RetryOn {
            retriable_status_codes: true,
            ..Default::default()
        };
        let reset = RetryOn {
            reset: true,
            ..Default::default()
        };
        let table = [
            (five, Outcome::Status(500), true),
            (five, Outcome::Status(503), true),
            (five, Outcome::Status(404), false),
            (five, Outcome::ConnectFailure, true),
            (five, Outcome::Reset, true),
            (five, Outcome::PerTryTimeout, true),
            (gw, Outcome::Status(500), false),
            (gw, Outcome::Status(502), true),
            (gw, Outcome::Status(504), true),
            (cf, Outcome::ConnectFailure, true),
            (cf, Outcome::Status(503), false),
            (cf, Outcome::Reset, false),
            (r4, Outcome::Status(409), true),
            (r4, Outcome::Status(400), false),
            (codes, Outcome::Status(418), true),
            (codes, Outcome::Status(500), false),
            (reset, Outcome::Reset, true),
            (reset, Outcome::Status(503), false),
        ];
        for (on, outcome, want) in table {
            assert_eq!(
                should_retry(&policy(on, vec![418]), outcome),
                want,
                "{on:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn backoff_is_bounded() {
        let p = policy(RetryOn::default(), vec![]);
        for retry in 0..10 {
            let ceiling = (25u64 << retry).min(250);
            for _ in 0..50 {
                assert!(backoff(&p, retry) < Duration::from_millis(ceiling));
            }
        }
    }
}
