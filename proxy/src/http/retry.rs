//! Retry decisions (Envoy's `retry_on` semantics) and jittered exponential back-off.

use std::time::Duration;

use rand::Rng;

use crate::route::RetryPolicy;

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

/// Fully jittered exponential back-off: uniform in [0, min(base * 2^retry, max)).
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let base = policy.base_interval.as_millis().max(1) as u64;
    let ceiling = base
        .saturating_mul(1u64 << retry.min(20))
        .min(policy.max_interval.as_millis().max(1) as u64);
    Duration::from_millis(rand::thread_rng().gen_range(0..ceiling.max(1)))
}
