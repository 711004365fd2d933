//! `envoy.filters.http.local_ratelimit` (extensions.filters.http.local_ratelimit.v3.LocalRateLimit):
//! one token bucket per config (or per config and downstream connection), Envoy's 429
//! `local_rate_limited` reply, the not-enforced request headers and the DRAFT_VERSION_03
//! `x-ratelimit-*` response headers.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue};
use serde::Deserialize;

use crate::{
    config::{
        duration::PbDuration,
        raw_route::{RawHeaderValueOption, RawRuntimeFractionalPercent},
        ConfigError, FieldPath,
    },
    route::{fractional_percent, mutations, mutations_at, FractionalPercent, HeaderMutations},
};

/// `@type` of the filter's config (also its per-route config).
pub const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

/// `LocalRateLimit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocalRateLimit {
    stat_prefix: Option<String>,
    status: Option<RawHttpStatus>,
    token_bucket: Option<RawTokenBucket>,
    filter_enabled: Option<RawRuntimeFractionalPercent>,
    filter_enforced: Option<RawRuntimeFractionalPercent>,
    #[serde(default)]
    request_headers_to_add_when_not_enforced: Vec<RawHeaderValueOption>,
    #[serde(default)]
    response_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    descriptors: Vec<serde_norway::Value>,
    stage: Option<u32>,
    local_rate_limit_per_downstream_connection: Option<bool>,
    enable_x_ratelimit_headers: Option<String>,
    /// `OVERRIDE` (default) / `INCLUDE` / `IGNORE`: only for descriptors, which are rejected.
    #[allow(dead_code)]
    vh_rate_limits: Option<String>,
    /// Only matters with descriptors (rejected): a no-op.
    #[allow(dead_code)]
    always_consume_default_token_bucket: Option<bool>,
    rate_limited_as_resource_exhausted: Option<bool>,
    enable_retry_after_header: Option<bool>,
}

/// `type.v3.HttpStatus`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpStatus {
    code: Option<RawStatusCode>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawStatusCode {
    Number(u32),
    Name(String),
}

/// `type.v3.TokenBucket`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenBucket {
    max_tokens: Option<u32>,
    tokens_per_fill: Option<u32>,
    fill_interval: Option<PbDuration>,
}

/// `type.v3.StatusCode` names (the 4xx/5xx ones a limit answers with, and a few others).
const STATUS_NAMES: &[(&str, u16)] = &[
    ("OK", 200),
    ("BadRequest", 400),
    ("Unauthorized", 401),
    ("PaymentRequired", 402),
    ("Forbidden", 403),
    ("NotFound", 404),
    ("MethodNotAllowed", 405),
    ("NotAcceptable", 406),
    ("RequestTimeout", 408),
    ("Conflict", 409),
    ("Gone", 410),
    ("PayloadTooLarge", 413),
    ("TooManyRequests", 429),
    ("InternalServerError", 500),
    ("NotImplemented", 501),
    ("BadGateway", 502),
    ("ServiceUnavailable", 503),
    ("GatewayTimeout", 504),
];

/// Envoy's status when `status` is absent or below 400.
const DEFAULT_STATUS: u16 = 429;

/// A compiled `LocalRateLimit`.
#[derive(Debug)]
pub struct LocalRateLimit {
    status: u16,
    bucket: Option<BucketSpec>,
    enabled: Option<FractionalPercent>,
    enforced: Option<FractionalPercent>,
    request_headers_not_enforced: HeaderMutations,
    response_headers: HeaderMutations,
    per_connection: bool,
    x_headers: bool,
    /// `rate_limited_as_resource_exhausted`: a limited gRPC request gets `grpc-status` 8
    /// (RESOURCE_EXHAUSTED) instead of 14 (UNAVAILABLE).
    pub resource_exhausted: bool,
    /// `enable_retry_after_header`: a 429 carries `retry-after` (seconds to the next token).
    retry_after: bool,
    /// The shared bucket (when not per connection).
    shared: Option<Mutex<Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct BucketSpec {
    max: f64,
    /// Tokens per second.
    rate: f64,
}

/// A token bucket with Envoy's continuous refill; starts full.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

fn percent(
    raw: &Option<RawRuntimeFractionalPercent>,
    p: &FieldPath,
) -> Result<Option<FractionalPercent>, ConfigError> {
    raw.as_ref().map(|r| fractional_percent(r, p)).transpose()
}

/// Compiles `raw` (at `p`).
pub(crate) fn build(raw: RawLocalRateLimit, p: &FieldPath) -> Result<LocalRateLimit, ConfigError> {
    if raw.stat_prefix.as_deref().unwrap_or("").is_empty() {
        return Err(p.field("stat_prefix").err("required"));
    }
    if !raw.descriptors.is_empty() {
        return Err(p.field("descriptors").unsupported("descriptors"));
    }
    if raw.stage.unwrap_or(0) != 0 {
        return Err(p.field("stage").unsupported("a stage other than 0"));
    }
    let status = match raw.status.as_ref().and_then(|s| s.code.as_ref()) {
        None => DEFAULT_STATUS,
        Some(RawStatusCode::Number(n)) => *n as u16,
        Some(RawStatusCode::Name(n)) => STATUS_NAMES
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                p.field("status")
                    .field("code")
                    .err(format!("unknown value {n:?}"))
            })?,
    };
    let status = if status < 400 { DEFAULT_STATUS } else { status };
    let bucket = match &raw.token_bucket {
        None => None,
        Some(b) => {
            let bp = p.field("token_bucket");
            let max = b
                .max_tokens
                .filter(|m| *m > 0)
                .ok_or_else(|| bp.field("max_tokens").err("must be greater than 0"))?;
            let per_fill = b.tokens_per_fill.unwrap_or(1);
            if per_fill == 0 {
                return Err(bp.field("tokens_per_fill").err("must be greater than 0"));
            }
            let interval = b
                .fill_interval
                .as_ref()
                .map(|d| d.0)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| bp.field("fill_interval").err("required, greater than 0"))?;
            Some(BucketSpec {
                max: f64::from(max),
                rate: f64::from(per_fill) / interval.as_secs_f64(),
            })
        }
    };
    let x_headers = match raw.enable_x_ratelimit_headers.as_deref() {
        None | Some("OFF") => false,
        Some("DRAFT_VERSION_03") => true,
        Some(o) => {
            return Err(p
                .field("enable_x_ratelimit_headers")
                .err(format!("unknown value {o:?}")))
        }
    };
    let per_connection = raw.local_rate_limit_per_downstream_connection == Some(true);
    let nep = p.field("request_headers_to_add_when_not_enforced");
    let not_enforced = mutations_at(
        &raw.request_headers_to_add_when_not_enforced,
        &[],
        &nep,
        &nep,
    )?;
    Ok(LocalRateLimit {
        status,
        bucket,
        enabled: percent(&raw.filter_enabled, &p.field("filter_enabled"))?,
        enforced: percent(&raw.filter_enforced, &p.field("filter_enforced"))?,
        request_headers_not_enforced: not_enforced,
        response_headers: mutations(&raw.response_headers_to_add, &[], p, "response")?,
        per_connection,
        x_headers,
        resource_exhausted: raw.rate_limited_as_resource_exhausted == Some(true),
        retry_after: raw.enable_retry_after_header == Some(true),
        shared: bucket.filter(|_| !per_connection).map(|b| {
            Mutex::new(Bucket {
                tokens: b.max,
                at: Instant::now(),
            })
        }),
    })
}

/// The per-connection buckets of one downstream connection, by config.
#[derive(Debug, Default)]
pub struct ConnBuckets(Mutex<Vec<(usize, Bucket)>>);

/// The outcome of one request.
pub struct Verdict {
    /// Answer with this local reply (status; body `local_rate_limited`).
    pub limited: Option<u16>,
    /// Limited but not enforced: add `request_headers_to_add_when_not_enforced`.
    pub not_enforced: bool,
    /// The `x-ratelimit-*` values for the response (limit, remaining, reset seconds).
    pub x_headers: Option<(u32, u32, u64)>,
    /// `retry-after` seconds for an enforced 429 (with `enable_retry_after_header`).
    pub retry_after: Option<u64>,
}

impl LocalRateLimit {
    /// Whether a request needs a per-connection bucket.
    pub fn per_connection(&self) -> bool {
        self.per_connection && self.bucket.is_some()
    }

    fn take(spec: BucketSpec, b: &mut Bucket, now: Instant) -> (bool, f64) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * spec.rate).min(spec.max);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            (true, b.tokens)
        } else {
            (false, b.tokens)
        }
    }

    /// Envoy's `LocalRateLimitFilter::decodeHeaders`; `conn` holds the connection's buckets.
    pub fn check(&self, conn: Option<&ConnBuckets>, random: u64) -> Option<Verdict> {
        if !self.enabled.is_some_and(|e| e.holds(random)) {
            return None;
        }
        let spec = self.bucket?;
        let now = Instant::now();
        let (allowed, left) = match (&self.shared, conn) {
            (Some(m), _) => Self::take(spec, &mut m.lock().unwrap_or_else(|e| e.into_inner()), now),
            (None, Some(c)) => {
                let key = self as *const Self as usize;
                let mut v = c.0.lock().unwrap_or_else(|e| e.into_inner());
                let i = match v.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        v.push((
                            key,
                            Bucket {
                                tokens: spec.max,
                                at: now,
                            },
                        ));
                        v.len() - 1
                    }
                };
                Self::take(spec, &mut v[i].1, now)
            }
            (None, None) => (true, spec.max),
        };
        // Seconds until the next token.
        let next_token = || {
            if left >= 1.0 {
                0
            } else {
                Duration::from_secs_f64((1.0 - left) / spec.rate)
                    .as_secs_f64()
                    .ceil() as u64
            }
        };
        let x_headers = self
            .x_headers
            .then(|| (spec.max as u32, left.floor() as u32, next_token()));
        let enforced = !allowed && self.enforced.is_some_and(|e| e.holds(random >> 20));
        Some(Verdict {
            limited: enforced.then_some(self.status),
            not_enforced: !allowed && !enforced,
            x_headers,
            retry_after: (enforced && self.retry_after && self.status == 429)
                .then(|| next_token().max(1)),
        })
    }

    /// `request_headers_to_add_when_not_enforced`.
    pub fn not_enforced_headers(&self, h: &mut HeaderMap) {
        self.request_headers_not_enforced.apply(h);
    }

    /// The limited reply's `response_headers_to_add`, then `retry-after` unless they set it.
    pub fn limited_headers(&self, h: &mut HeaderMap, retry_after: Option<u64>) {
        self.response_headers.apply(h);
        if let Some(secs) = retry_after.filter(|_| !h.contains_key(http::header::RETRY_AFTER)) {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}

/// Adds DRAFT_VERSION_03's headers.
pub fn apply_x_headers(v: (u32, u32, u64), h: &mut HeaderMap) {
    h.insert("x-ratelimit-limit", HeaderValue::from(v.0));
    h.insert("x-ratelimit-remaining", HeaderValue::from(v.1));
    h.insert("x-ratelimit-reset", HeaderValue::from(v.2));
}
