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
    Reset(Reset),
    /// per_try_timeout elapsed.
    PerTryTimeout,
}

/// What [`Outcome::Reset`] knows of a reset (Envoy's `wouldRetryFromReset` inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// The request went out (`upstream_request_started`): `reset-before-request` no longer
    /// retries it.
    pub sent: bool,
    /// An HTTP/2 RST_STREAM with REFUSED_STREAM (`refused-stream`).
    pub refused: bool,
}

impl Reset {
    /// This reset as Envoy's retry state sees it after `started` (an earlier attempt of the
    /// request went out): `upstream_request_started` is sticky across attempts.
    pub fn after(self, started: bool) -> Reset {
        Reset {
            sent: self.sent || started,
            ..self
        }
    }

    /// A reset of a request that went out.
    pub const SENT: Reset = Reset {
        sent: true,
        refused: false,
    };
    /// A reset before the request went out.
    pub const NOT_SENT: Reset = Reset {
        sent: false,
        refused: false,
    };
}

/// Whether `policy` retries `outcome`; `headers` are the response's (for `retriable-headers`
/// and the gRPC conditions, which read `grpc-status`).
pub fn should_retry(
    policy: &RetryPolicy,
    outcome: Outcome,
    headers: Option<&http::HeaderMap>,
) -> bool {
    let on = &policy.retry_on;
    match outcome {
        // A rate-limited answer (an upstream Envoy's) is retried only by `envoy-ratelimited`
        // (Envoy's `wouldRetryFromHeaders`).
        Outcome::Status(_) if headers.is_some_and(|h| h.contains_key("x-envoy-ratelimited")) => {
            on.envoy_ratelimited
        }
        Outcome::Status(s) => {
            (on.server_error && s >= 500)
                || (on.gateway_error && matches!(s, 502..=504))
                || (on.retriable_4xx && s == 409)
                || (on.retriable_status_codes && policy.retriable_status_codes.contains(&s))
                || headers.is_some_and(|h| retry_on_headers(policy, h))
        }
        // A pool failure: `connect-failure`, else, as Envoy's `wouldRetryFromReset` falls
        // through, `reset-before-request` (nothing went out), `reset`, `5xx`, `gateway-error`.
        Outcome::ConnectFailure => {
            on.connect_failure
                || on.reset_before_request
                || on.server_error
                || on.gateway_error
                || on.reset
        }
        Outcome::Reset(r) => {
            (on.reset_before_request && !r.sent)
                || on.server_error
                || on.gateway_error
                || on.reset
                || (on.refused_stream && r.refused)
        }
        // Envoy resets a timed-out attempt (`LocalReset`) and asks `wouldRetryFromReset`.
        Outcome::PerTryTimeout => on.server_error || on.gateway_error || on.reset,
    }
}

/// `retriable-headers` and the gRPC conditions (Envoy's `wouldRetryFromHeaders`).
fn retry_on_headers(policy: &RetryPolicy, h: &http::HeaderMap) -> bool {
    let on = &policy.retry_on;
    if on.retriable_headers
        && policy
            .retriable_headers
            .iter()
            .any(|m| m.matches_any(&m.name, h))
    {
        return true;
    }
    let grpc = on.grpc_cancelled
        || on.grpc_deadline_exceeded
        || on.grpc_resource_exhausted
        || on.grpc_internal
        || on.grpc_unavailable;
    if !grpc {
        return false;
    }
    let status = super::local_reply::grpc_status(h);
    matches!(
        (status, on),
        (
            Some(1),
            RetryOn {
                grpc_cancelled: true,
                ..
            }
        ) | (
            Some(4),
            RetryOn {
                grpc_deadline_exceeded: true,
                ..
            }
        ) | (
            Some(8),
            RetryOn {
                grpc_resource_exhausted: true,
                ..
            }
        ) | (
            Some(13),
            RetryOn {
                grpc_internal: true,
                ..
            }
        ) | (
            Some(14),
            RetryOn {
                grpc_unavailable: true,
                ..
            }
        )
    )
}

/// Request headers Envoy strips from every external request before routing
/// (`ConnectionManagerUtility::cleanInternalHeaders`). Envoy 1.40 without
/// `internal_address_config` treats no request as internal, so none of them is ever honoured.
pub const EXTERNAL_STRIPPED_HEADERS: &[&str] = &[
    "x-envoy-internal",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Request headers Envoy strips from edge requests (`use_remote_address: true`) only.
pub const EDGE_STRIPPED_HEADERS: &[&str] = &[
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
];

/// The wait before retry number `retry + 1`: with `rate_limited_retry_back_off`, a reset header
/// of the retried response (`headers`) giving more than 1 ms sets it, jittered in
/// [interval, 1.5 x interval) (Envoy's `JitteredLowerBoundBackOffStrategy`); otherwise
/// [`backoff`].
pub fn backoff_after(
    policy: &RetryPolicy,
    retry: u32,
    headers: Option<&http::HeaderMap>,
) -> Duration {
    let reset = policy
        .rate_limited
        .as_ref()
        .zip(headers)
        .and_then(|(r, h)| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            r.reset_interval(h, now)
        });
    match reset {
        Some(d) if d > Duration::from_millis(1) => {
            let ms = d.as_millis() as u64;
            Duration::from_millis(ms + rand::thread_rng().gen_range(0..(ms / 2).max(1)))
        }
        _ => backoff(policy, retry),
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
            per_try_idle_timeout: None,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            retriable_status_codes: codes,
            retriable_headers: Vec::new().into(),
            retriable_request_headers: Vec::new().into(),
            previous_hosts: false,
            host_selection_max_attempts: 1,
            rate_limited: None,
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
        let refused = RetryOn {
            refused_stream: true,
            ..Default::default()
        };
        let before = RetryOn {
            reset_before_request: true,
            ..Default::default()
        };
        let refused_reset = Outcome::Reset(Reset {
            sent: true,
            refused: true,
        });
        let not_sent = Outcome::Reset(Reset::NOT_SENT);
        let table = [
            (refused, refused_reset, true),
            (refused, Outcome::Reset(Reset::SENT), false),
            (refused, not_sent, false),
            (refused, Outcome::ConnectFailure, false),
            (before, not_sent, true),
            (before, Outcome::Reset(Reset::SENT), false),
            (before, refused_reset, false),
            (before, Outcome::ConnectFailure, true),
            (five, refused_reset, true),
            (reset, not_sent, true),
            (five, Outcome::Status(500), true),
            (five, Outcome::Status(503), true),
            (five, Outcome::Status(404), false),
            (five, Outcome::ConnectFailure, true),
            (five, Outcome::Reset(Reset::SENT), true),
            (five, Outcome::PerTryTimeout, true),
            (gw, Outcome::Status(500), false),
            (gw, Outcome::Status(502), true),
            (gw, Outcome::Status(504), true),
            (cf, Outcome::ConnectFailure, true),
            (cf, Outcome::Status(503), false),
            (cf, Outcome::Reset(Reset::SENT), false),
            (r4, Outcome::Status(409), true),
            (r4, Outcome::Status(400), false),
            (codes, Outcome::Status(418), true),
            (codes, Outcome::Status(500), false),
            (reset, Outcome::Reset(Reset::SENT), true),
            (reset, Outcome::PerTryTimeout, true),
            (cf, Outcome::PerTryTimeout, false),
            (reset, Outcome::Status(503), false),
        ];
        for (on, outcome, want) in table {
            assert_eq!(
                should_retry(&policy(on, vec![418]), outcome, None),
                want,
                "{on:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn grpc_status_conditions_read_the_response_header() {
        let on = RetryOn {
            grpc_unavailable: true,
            grpc_cancelled: true,
            ..Default::default()
        };
        let p = policy(on, vec![]);
        let with = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-status", http::HeaderValue::from_static(v));
            should_retry(&p, Outcome::Status(200), Some(&h))
        };
        assert!(with("14"));
        assert!(with("1"));
        assert!(!with("13"));
        assert!(!should_retry(&p, Outcome::Status(200), None));
    }

    #[test]
    fn a_ratelimited_response_needs_envoy_ratelimited() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-envoy-ratelimited",
            http::HeaderValue::from_static("true"),
        );
        let five = policy(
            RetryOn {
                server_error: true,
                ..Default::default()
            },
            vec![],
        );
        assert!(!should_retry(&five, Outcome::Status(503), Some(&h)));
        assert!(should_retry(&five, Outcome::Status(503), None));
        let rl = policy(
            RetryOn {
                envoy_ratelimited: true,
                ..Default::default()
            },
            vec![],
        );
        assert!(should_retry(&rl, Outcome::Status(429), Some(&h)));
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
