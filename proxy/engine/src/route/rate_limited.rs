//! `retry_policy.rate_limited_retry_back_off`: a retried response's reset headers (e.g.
//! `retry-after`) set the back-off before the next attempt, as Envoy's `RetryStateImpl`.

use std::time::Duration;

use crate::config::{raw_route::RawRateLimitedRetryBackOff, ConfigError, FieldPath};

/// Envoy's default `rate_limited_retry_back_off.max_interval` (300 s).
pub const DEFAULT_RATE_LIMITED_MAX_INTERVAL: Duration = Duration::from_secs(300);

/// `RateLimitedRetryBackOff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitedBackOff {
    /// `reset_headers[]` in order: (lower-case name, format).
    pub reset_headers: Vec<(String, ResetFormat)>,
    /// `max_interval`: a longer interval is discarded and the next header tried.
    pub max_interval: Duration,
}

/// `ResetHeader.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetFormat {
    /// `SECONDS`: the value is a number of seconds.
    Seconds,
    /// `UNIX_TIMESTAMP`: the value is the Unix time (seconds) to retry at.
    UnixTimestamp,
}

impl RateLimitedBackOff {
    /// Envoy's `parseResetInterval`: the first reset header whose first value parses to an
    /// interval not above `max_interval`. `now_unix` is the current Unix time in seconds.
    pub fn reset_interval(&self, headers: &http::HeaderMap, now_unix: u64) -> Option<Duration> {
        self.reset_headers.iter().find_map(|(name, format)| {
            let v: u64 = headers.get(name.as_str())?.to_str().ok()?.parse().ok()?;
            let secs = match format {
                ResetFormat::Seconds => v,
                ResetFormat::UnixTimestamp => v.checked_sub(now_unix)?,
            };
            Some(Duration::from_secs(secs)).filter(|d| *d <= self.max_interval)
        })
    }
}

/// Compiles `rate_limited_retry_back_off` at `p`.
pub(crate) fn rate_limited_back_off(
    raw: &RawRateLimitedRetryBackOff,
    p: &FieldPath,
) -> Result<RateLimitedBackOff, ConfigError> {
    if raw.reset_headers.is_empty() {
        return Err(p
            .field("reset_headers")
            .err("at least one reset header is required"));
    }
    let mut reset_headers = Vec::with_capacity(raw.reset_headers.len());
    for (i, h) in raw.reset_headers.iter().enumerate() {
        let hp = p.field("reset_headers").index(i);
        let name = h
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| hp.field("name").err("required"))?;
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(hp
                .field("name")
                .err(format!("{name:?} is not a header name")));
        }
        let format = match h.format.as_deref() {
            None | Some("SECONDS") => ResetFormat::Seconds,
            Some("UNIX_TIMESTAMP") => ResetFormat::UnixTimestamp,
            Some(o) => return Err(hp.field("format").err(format!("unknown value {o:?}"))),
        };
        reset_headers.push((name.to_ascii_lowercase(), format));
    }
    let max_interval = match raw.max_interval {
        None => DEFAULT_RATE_LIMITED_MAX_INTERVAL,
        Some(d) if d.0 < Duration::from_millis(1) => {
            return Err(p.field("max_interval").err("must be at least 1ms"))
        }
        Some(d) => d.0,
    };
    Ok(RateLimitedBackOff {
        reset_headers,
        max_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u64) -> RateLimitedBackOff {
        RateLimitedBackOff {
            reset_headers: vec![
                ("retry-after".into(), ResetFormat::Seconds),
                ("x-reset".into(), ResetFormat::UnixTimestamp),
            ],
            max_interval: Duration::from_secs(max),
        }
    }

    fn headers(list: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in list {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn reset_interval_table() {
        let now = 1_000;
        // (response headers, max_interval s, the interval s)
        type Row = (&'static [(&'static str, &'static str)], u64, Option<u64>);
        let table: &[Row] = &[
            (&[("retry-after", "2")], 300, Some(2)),
            (&[("retry-after", "0")], 300, Some(0)),
            // Over max_interval: discarded, the next header is tried.
            (&[("retry-after", "5"), ("x-reset", "1003")], 4, Some(3)),
            (&[("retry-after", "5")], 4, None),
            // Not a number: the next header.
            (
                &[("retry-after", "soon"), ("x-reset", "1010")],
                300,
                Some(10),
            ),
            // A timestamp in the past gives nothing.
            (&[("x-reset", "999")], 300, None),
            (&[("retry-after", "-1")], 300, None),
            (&[], 300, None),
        ];
        for (list, max, want) in table {
            assert_eq!(
                policy(*max).reset_interval(&headers(list), now),
                want.map(Duration::from_secs),
                "{list:?} max {max}"
            );
        }
    }
}
