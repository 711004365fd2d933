//! `envoy.filters.http.local_ratelimit` (extensions.filters.http.local_ratelimit.v3.LocalRateLimit):
//! a default token bucket and one per configured descriptor (per config, or per config and
//! downstream connection), Envoy's 429 `local_rate_limited` reply, the not-enforced request
//! headers and the DRAFT_VERSION_03 `x-ratelimit-*` response headers.
//!
//! With `descriptors`, a request's descriptors come from the filter's own `rate_limits`, else
//! from its route's and virtual host's `rate_limits` of the filter's `stage`
//! (`route/rate_limits.rs`). Every configured descriptor equal to one of them takes a token,
//! slowest-filling first, and the first one out of tokens limits the request; the default bucket
//! takes a token too when none matched or with `always_consume_default_token_bucket` (default
//! true), as Envoy's `LocalRateLimiterImpl::requestAllowed`.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use smallvec::SmallVec;

use crate::{
    config::{
        duration::PbDuration,
        raw_route::{RawHeaderValueOption, RawRuntimeFractionalPercent},
        ConfigError, FieldPath,
    },
    route::rate_limits::{Descriptor, RateLimitEntry, RawRateLimit},
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
    descriptors: Vec<RawDescriptor>,
    stage: Option<u32>,
    local_rate_limit_per_downstream_connection: Option<bool>,
    enable_x_ratelimit_headers: Option<String>,
    vh_rate_limits: Option<String>,
    always_consume_default_token_bucket: Option<bool>,
    rate_limited_as_resource_exhausted: Option<bool>,
    enable_retry_after_header: Option<bool>,
    #[serde(default)]
    rate_limits: Vec<RawRateLimit>,
    local_cluster_rate_limit: Option<serde_json::Value>,
    max_dynamic_descriptors: Option<serde_json::Value>,
}

/// `common.ratelimit.v3.LocalRateLimitDescriptor`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    #[serde(default)]
    entries: Vec<RawDescriptorEntry>,
    token_bucket: Option<RawTokenBucket>,
}

/// `RateLimitDescriptor.Entry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptorEntry {
    key: Option<String>,
    value: Option<String>,
}

/// `type.v3.HttpStatus`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpStatus {
    code: Option<RawStatusCode>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawStatusCode {
    Number(u32),
    Name(String),
}

/// The code of a `type.v3.HttpStatus` at `p` (a number or the enum's name; None: unset).
pub(crate) fn http_status(raw: &RawHttpStatus, p: &FieldPath) -> Result<Option<u16>, ConfigError> {
    Ok(match &raw.code {
        None => None,
        Some(RawStatusCode::Number(n)) => Some(*n as u16),
        Some(RawStatusCode::Name(n)) => Some(
            STATUS_NAMES
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, c)| *c)
                .ok_or_else(|| p.field("code").err(format!("unknown value {n:?}")))?,
        ),
    })
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

/// Envoy's smallest `token_bucket.fill_interval`.
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// Envoy's status when `status` is absent or below 400.
const DEFAULT_STATUS: u16 = 429;

/// A compiled `LocalRateLimit`.
#[derive(Debug)]
pub struct LocalRateLimit {
    status: u16,
    /// `token_bucket`, the default bucket.
    bucket: Option<Limit>,
    enabled: Option<FractionalPercent>,
    enforced: Option<FractionalPercent>,
    request_headers_not_enforced: HeaderMutations,
    response_headers: HeaderMutations,
    x_headers: bool,
    /// `rate_limited_as_resource_exhausted`: a limited gRPC request gets `grpc-status` 8
    /// (RESOURCE_EXHAUSTED) instead of 14 (UNAVAILABLE).
    pub resource_exhausted: bool,
    /// `enable_retry_after_header`: a 429 carries `retry-after` (seconds to the next token).
    retry_after: bool,
    /// Unique per compiled config: the key of its buckets in a connection's [`ConnBuckets`]
    /// (an address could be reused by a later config).
    id: u64,
    /// `descriptors[]`, with their buckets.
    descriptors: Vec<DescriptorLimit>,
    /// `rate_limits[]`: the filter's own descriptor actions (else the route's).
    pub rate_limits: Vec<RateLimitEntry>,
    /// `stage`: which route `rate_limits` feed this filter.
    pub stage: u32,
    /// `vh_rate_limits`.
    pub vh_rate_limits: VhRateLimits,
    /// `always_consume_default_token_bucket` (default true).
    always_consume_default: bool,
}

/// `vh_rate_limits`: whether the virtual host's `rate_limits` apply next to the route's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhRateLimits {
    /// `OVERRIDE` (default): only when the route has none.
    Override,
    /// `INCLUDE`: always.
    Include,
    /// `IGNORE`: never.
    Ignore,
}

/// One configured descriptor and its bucket.
#[derive(Debug)]
struct DescriptorLimit {
    entries: Vec<(String, String)>,
    limit: Limit,
}

/// A configured bucket: its spec, and the bucket itself unless each connection has its own.
#[derive(Debug)]
struct Limit {
    spec: BucketSpec,
    /// The shared bucket (None: one per connection, in [`ConnBuckets`]).
    shared: Option<Mutex<Bucket>>,
}

impl Limit {
    fn new(spec: BucketSpec, per_connection: bool) -> Self {
        Self {
            spec,
            shared: (!per_connection).then(|| Bucket::full(spec)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BucketSpec {
    max: f64,
    /// Tokens per second.
    rate: f64,
    /// `fill_interval`.
    interval: Duration,
}

/// A token bucket with Envoy's continuous refill; starts full.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(spec: BucketSpec) -> Mutex<Self> {
        Mutex::new(Self {
            tokens: spec.max,
            at: Instant::now(),
        })
    }
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
    if raw.local_cluster_rate_limit.is_some() {
        return Err(p
            .field("local_cluster_rate_limit")
            .unsupported("sharing a limit across a local cluster needs its membership"));
    }
    if raw.max_dynamic_descriptors.is_some() {
        return Err(p
            .field("max_dynamic_descriptors")
            .unsupported("dynamic (wildcard) descriptors not implemented"));
    }
    let stage = crate::route::rate_limits::stage(raw.stage, &p.field("stage"))?;
    let vh_rate_limits = match raw.vh_rate_limits.as_deref() {
        None | Some("OVERRIDE") => VhRateLimits::Override,
        Some("INCLUDE") => VhRateLimits::Include,
        Some("IGNORE") => VhRateLimits::Ignore,
        Some(o) => {
            return Err(p
                .field("vh_rate_limits")
                .err(format!("unknown value {o:?}")))
        }
    };
    let rp = p.field("rate_limits");
    for (i, r) in raw.rate_limits.iter().enumerate() {
        // Envoy: "'stage' field and 'disable_key' field are not supported" here.
        if let Some(f) = r.route_only_fields().next() {
            return Err(rp
                .index(i)
                .field(f)
                .unsupported("only in a route's rate_limits"));
        }
    }
    let rate_limits = crate::route::rate_limits::build(&raw.rate_limits, &rp)?;
    let status = match &raw.status {
        None => DEFAULT_STATUS,
        Some(s) => http_status(s, &p.field("status"))?.unwrap_or(DEFAULT_STATUS),
    };
    let status = if status < 400 { DEFAULT_STATUS } else { status };
    let bucket = match &raw.token_bucket {
        None => None,
        Some(b) => Some(bucket_spec(b, &p.field("token_bucket"))?),
    };
    let per_connection = raw.local_rate_limit_per_downstream_connection == Some(true);
    let descriptors = match bucket {
        Some(b) => descriptors(&raw.descriptors, b, per_connection, &p.field("descriptors"))?,
        None if raw.descriptors.is_empty() => Vec::new(),
        None => {
            return Err(p
                .field("token_bucket")
                .err("required with descriptors (their fill intervals are multiples of it)"))
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
    let nep = p.field("request_headers_to_add_when_not_enforced");
    let not_enforced = mutations_at(
        &raw.request_headers_to_add_when_not_enforced,
        &[],
        &nep,
        &nep,
    )?;
    Ok(LocalRateLimit {
        status,
        bucket: bucket.map(|b| Limit::new(b, per_connection)),
        enabled: percent(&raw.filter_enabled, &p.field("filter_enabled"))?,
        enforced: percent(&raw.filter_enforced, &p.field("filter_enforced"))?,
        request_headers_not_enforced: not_enforced,
        response_headers: mutations(&raw.response_headers_to_add, &[], p, "response")?,
        x_headers,
        resource_exhausted: raw.rate_limited_as_resource_exhausted == Some(true),
        retry_after: raw.enable_retry_after_header == Some(true),
        id: {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        },
        descriptors,
        rate_limits,
        stage,
        vh_rate_limits,
        always_consume_default: raw.always_consume_default_token_bucket != Some(false),
    })
}

/// A `token_bucket` at `p`.
fn bucket_spec(b: &RawTokenBucket, p: &FieldPath) -> Result<BucketSpec, ConfigError> {
    let max = b
        .max_tokens
        .filter(|m| *m > 0)
        .ok_or_else(|| p.field("max_tokens").err("must be greater than 0"))?;
    let per_fill = b.tokens_per_fill.unwrap_or(1);
    if per_fill == 0 {
        return Err(p.field("tokens_per_fill").err("must be greater than 0"));
    }
    let interval = b
        .fill_interval
        .as_ref()
        .map(|d| d.0)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| p.field("fill_interval").err("required, greater than 0"))?;
    if interval < MIN_FILL_INTERVAL {
        return Err(p
            .field("fill_interval")
            .err(format!("{interval:?} is below Envoy's minimum of 50ms")));
    }
    Ok(BucketSpec {
        max: f64::from(max),
        rate: f64::from(per_fill) / interval.as_secs_f64(),
        interval,
    })
}

/// `descriptors[]` at `p`: each needs entries (key and value set) and a token bucket whose
/// `fill_interval` is a multiple of the filter's (Envoy's rule); no two alike.
fn descriptors(
    raw: &[RawDescriptor],
    base: BucketSpec,
    per_connection: bool,
    p: &FieldPath,
) -> Result<Vec<DescriptorLimit>, ConfigError> {
    let mut out: Vec<DescriptorLimit> = Vec::with_capacity(raw.len());
    for (i, d) in raw.iter().enumerate() {
        let dp = p.index(i);
        if d.entries.is_empty() {
            return Err(dp.field("entries").err("at least one entry is required"));
        }
        let mut entries = Vec::with_capacity(d.entries.len());
        for (j, e) in d.entries.iter().enumerate() {
            let ep = dp.field("entries").index(j);
            let key = e.key.clone().filter(|k| !k.is_empty());
            let key = key.ok_or_else(|| ep.field("key").err("required"))?;
            let value = e.value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
                ep.field("value")
                    .unsupported("an empty value (a wildcard for dynamic descriptors)")
            })?;
            entries.push((key, value));
        }
        let tb = d
            .token_bucket
            .as_ref()
            .ok_or_else(|| dp.field("token_bucket").err("required"))?;
        let spec = bucket_spec(tb, &dp.field("token_bucket"))?;
        if spec.interval.as_millis() % base.interval.as_millis().max(1) != 0 {
            return Err(dp.field("token_bucket").field("fill_interval").err(format!(
                "{:?} is not a multiple of the filter's token_bucket.fill_interval {:?}",
                spec.interval, base.interval
            )));
        }
        if out.iter().any(|o| o.entries == entries) {
            return Err(dp.err("duplicate descriptor"));
        }
        out.push(DescriptorLimit {
            entries,
            limit: Limit::new(spec, per_connection),
        });
    }
    Ok(out)
}

/// The per-connection buckets of one downstream connection, by config and descriptor.
#[derive(Debug, Default)]
pub struct ConnBuckets(Mutex<Vec<((u64, usize), Bucket)>>);

/// Which bucket of a config: the default one or a descriptor's.
const DEFAULT_BUCKET: usize = usize::MAX;

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
    /// Whether requests need descriptors (`descriptors` configured).
    pub fn has_descriptors(&self) -> bool {
        !self.descriptors.is_empty()
    }

    /// `filter_enabled` for a request's random value (absent: off).
    pub fn enabled(&self, random: u64) -> bool {
        self.enabled.is_some_and(|e| e.holds(random))
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

    /// Takes a token from bucket `which` (a descriptor index or [`DEFAULT_BUCKET`]): the
    /// shared one, or the connection's. Returns whether one was left, and what is left.
    fn take_from(&self, which: usize, conn: Option<&ConnBuckets>, now: Instant) -> (bool, f64) {
        let Some(Limit { spec, shared }) = self.limit(which) else {
            return (true, 0.0);
        };
        let spec = *spec;
        if let Some(m) = shared {
            return Self::take(spec, &mut m.lock().unwrap_or_else(|e| e.into_inner()), now);
        }
        let Some(c) = conn else {
            return (true, spec.max);
        };
        let key = (self.id, which);
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

    /// Bucket `which`: a descriptor index or [`DEFAULT_BUCKET`] (None when not configured).
    fn limit(&self, which: usize) -> Option<&Limit> {
        match which {
            DEFAULT_BUCKET => self.bucket.as_ref(),
            i => Some(&self.descriptors[i].limit),
        }
    }

    /// Envoy's `LocalRateLimitFilter::decodeHeaders` for a request with `descriptors`; `conn`
    /// holds the connection's buckets.
    pub fn check(
        &self,
        conn: Option<&ConnBuckets>,
        random: u64,
        descriptors: &[Descriptor<'_>],
    ) -> Option<Verdict> {
        if !self.enabled(random) {
            return None;
        }
        // The configured descriptors a request descriptor equals, slowest-filling first.
        let mut matched: SmallVec<[usize; 4]> = descriptors
            .iter()
            .filter_map(|d| {
                self.descriptors.iter().position(|c| {
                    c.entries.len() == d.len()
                        && c.entries
                            .iter()
                            .zip(d.iter())
                            .all(|((ck, cv), (k, v))| ck == k && cv == v)
                })
            })
            .collect();
        if matched.is_empty() && self.bucket.is_none() {
            return None;
        }
        matched.sort_by(|a, b| {
            self.descriptors[*a]
                .limit
                .spec
                .rate
                .total_cmp(&self.descriptors[*b].limit.spec.rate)
        });
        let now = Instant::now();
        // The bucket that decided (Envoy's token bucket context) and what it has left.
        let mut decided = None;
        for &i in &matched {
            let (ok, left) = self.take_from(i, conn, now);
            if !ok {
                decided = Some((i, false, left));
                break;
            }
            decided.get_or_insert((i, true, left));
        }
        let blocked = decided.is_some_and(|(_, ok, _)| !ok);
        if !blocked && (matched.is_empty() || self.always_consume_default) {
            let (ok, left) = self.take_from(DEFAULT_BUCKET, conn, now);
            if !ok || matched.is_empty() {
                decided = Some((DEFAULT_BUCKET, ok, left));
            }
        }
        let (which, allowed, left) = decided?;
        let spec = self.limit(which)?.spec;
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
