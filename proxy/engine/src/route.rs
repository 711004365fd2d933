//! Compiled Envoy route tables and request matching (pure: no I/O, no locks, no per-request
//! regex compilation).
//!
//! [`RouteTable::select`] takes a [`RequestView`] and returns a [`Selection`]: the virtual host
//! and route, the cluster, the rewritten path and host, and the header mutations to apply in
//! Envoy's order — or a redirect, a direct response, or no route (404 NR).

pub mod body_format;
mod build;
mod build_hash;
pub(crate) mod build_headers;
pub(crate) mod build_match;
mod build_weighted;
pub mod cookies;
mod describe;
pub mod explain;
pub mod format;
mod headers;
pub mod internal_redirect;
mod matcher;
pub mod mirror;
pub mod observe;
pub mod rate_limited;
pub mod rate_limits;
pub mod request_hash;
pub mod require_tls;
mod select;
pub mod start_time;
pub(crate) mod uri_template;
pub(crate) use select::{is_grpc, rendered_location};
#[cfg(test)]
mod tests;

use std::{collections::HashMap, sync::Arc, time::Duration};

pub(crate) use build::{build_route_table, build_weighted, KnownClusters, WeightedInput};
pub(crate) use build_headers::{mutations, mutations_at};
pub(crate) use build_match::{fractional_percent, header_matcher, percent, string_matcher};
pub use headers::{
    AppendAction, HeaderLevels, HeaderLookup, HeaderMapMut, HeaderMutations, HeaderToAdd,
};
pub use matcher::{
    HeaderMatchKind, HeaderMatcher, Int64Range, PathMatch, QueryParameterMatcher, StringMatcher,
};
pub use observe::{DomainMatch, Mismatch, SelectObserver};
pub(crate) use select::header_matches;
pub(crate) use select::request_matches;
pub use select::{Forward, HostRewriteResult, RequestView, SelectedCluster, Selection};

use crate::{
    config::{ClusterRef, RoutingPriority},
    http::filters::PerFilterConfigs,
};

/// Envoy's default route `timeout` (15 s).
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default `retry_policy.num_retries`.
pub const DEFAULT_NUM_RETRIES: u32 = 1;
/// Envoy's default `retry_back_off.base_interval` (25 ms).
pub const DEFAULT_RETRY_BASE_INTERVAL: Duration = Duration::from_millis(25);
/// Envoy's `retry_back_off.max_interval` default is this many times `base_interval`.
pub const DEFAULT_RETRY_MAX_INTERVAL_FACTOR: u32 = 10;
/// Envoy's default `cluster_not_found_response_code` (503).
pub const DEFAULT_CLUSTER_NOT_FOUND_STATUS: u16 = 503;
/// Envoy's default `redirect.response_code` (301 MOVED_PERMANENTLY).
pub const DEFAULT_REDIRECT_STATUS: u16 = 301;

/// Index of a virtual host in its [`RouteTable`] and of a route in that virtual host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteRef {
    /// Index into [`RouteTable::virtual_hosts`].
    pub vhost: u32,
    /// Index into [`VirtualHost::routes`].
    pub route: u32,
}

/// A compiled `route_config` (RouteConfiguration).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// `name`.
    pub name: String,
    /// `virtual_hosts[]`, in config order.
    pub virtual_hosts: Vec<VirtualHost>,
    /// `validate_clusters`: every cluster a route names must exist (Envoy's default for an
    /// inline route configuration); false lets a dangling name answer 503 NC at run time.
    pub validate_clusters: bool,
    /// `ignore_port_in_host_matching`: strip `:port` from the host before domain matching.
    pub ignore_port_in_host_matching: bool,
    /// `most_specific_header_mutations_wins`: apply route-config-level mutations first and
    /// route-level last (default: the reverse, so the route config level wins).
    pub most_specific_header_mutations_wins: bool,
    /// `request_headers_to_add` / `request_headers_to_remove` at route-config level.
    pub request_headers: HeaderMutations,
    /// `response_headers_to_add` / `response_headers_to_remove` at route-config level.
    pub response_headers: HeaderMutations,
    /// Domain index (lower-case), built from `virtual_hosts[].domains`.
    pub(crate) domains: DomainIndex,
    /// `typed_per_filter_config` (the least specific level).
    pub per_filter: PerFilterConfigs,
    /// `internal_only_headers`, lower-cased: removed from every request, none being internal.
    pub internal_only_headers: Vec<http::HeaderName>,
}

/// Lower-cased domain -> virtual host index, in Envoy's four classes.
#[derive(Debug, Clone, Default)]
pub(crate) struct DomainIndex {
    /// Exact domains.
    pub(crate) exact: HashMap<String, usize>,
    /// `*<suffix>` wildcards grouped by suffix length, longest first (Envoy's layout: one
    /// hash lookup per distinct length).
    pub(crate) suffix: Vec<(usize, HashMap<String, usize>)>,
    /// `<prefix>*` wildcards grouped by prefix length, longest first.
    pub(crate) prefix: Vec<(usize, HashMap<String, usize>)>,
    /// The virtual host with domain `*`.
    pub(crate) default: Option<usize>,
}

/// `virtual_hosts[]`.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// `name`.
    pub name: String,
    /// `domains[]` as written.
    pub domains: Vec<String>,
    /// `routes[]`, first match wins.
    pub routes: Vec<Route>,
    /// `request_headers_to_add` / `request_headers_to_remove`.
    pub request_headers: HeaderMutations,
    /// `response_headers_to_add` / `response_headers_to_remove`.
    pub response_headers: HeaderMutations,
    /// `retry_policy`, used by routes without their own.
    pub retry_policy: Option<RetryPolicy>,
    /// `typed_per_filter_config` and the deprecated `cors`.
    pub per_filter: PerFilterConfigs,
    /// `rate_limits[]` (for the local rate limit filter's descriptors).
    pub rate_limits: Arc<[rate_limits::RateLimitEntry]>,
    /// `include_request_attempt_count`: `x-envoy-attempt-count` on every upstream attempt.
    pub include_request_attempt_count: bool,
    /// `include_is_timeout_retry_header`: `x-envoy-is-timeout-retry` on every retry, `true`
    /// when a per-try timeout caused it, else `false`.
    pub include_is_timeout_retry_header: bool,
    /// `include_attempt_count_in_response`: `x-envoy-attempt-count` on the response.
    pub include_attempt_count_in_response: bool,
    /// `require_tls`: a plain request gets a 301 to `https://` before any route is tried.
    pub require_tls: require_tls::RequireTls,
}

/// `routes[]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name`, if set.
    pub name: Option<String>,
    /// `match`.
    pub matcher: RouteMatch,
    /// `route` | `redirect` | `direct_response`.
    pub action: RouteAction,
    /// `request_headers_to_add` / `request_headers_to_remove`.
    pub request_headers: HeaderMutations,
    /// `response_headers_to_add` / `response_headers_to_remove`.
    pub response_headers: HeaderMutations,
    /// `typed_per_filter_config`, and the route action's deprecated `cors`.
    pub per_filter: PerFilterConfigs,
    /// `decorator`: its operation goes out as `x-envoy-decorator-operation` under the HCM's
    /// `tracing` (http/trace.rs).
    pub decorator: Option<Decorator>,
    /// `tracing`: replaces the HCM's sampling rates for this route (each unset one is 100%)
    /// and adds its custom tags.
    pub tracing: Option<crate::config::RouteTracing>,
    /// `stat_prefix` (empty: none): Envoy's per-route counters under
    /// `vhost.<virtual host>.route.<stat_prefix>.`.
    pub stat_prefix: Option<String>,
}

/// `decorator` (config.route.v3.Decorator).
#[derive(Debug, Clone)]
pub struct Decorator {
    /// `operation`, as a header value.
    pub operation: http::HeaderValue,
    /// `propagate` (default true): send the operation in `x-envoy-decorator-operation`.
    pub propagate: bool,
}

/// `match` (RouteMatch).
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// `prefix` | `path` | `safe_regex` | `path_separated_prefix`.
    pub path: PathMatch,
    /// `case_sensitive` (default true; not used by safe_regex).
    pub case_sensitive: bool,
    /// `headers[]`: all must match.
    pub headers: Vec<HeaderMatcher>,
    /// `query_parameters[]`: all must match.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// `runtime_fraction.default_value` (the runtime key is a no-op): the route matches when
    /// the request's random value modulo the denominator is below the numerator.
    pub runtime_fraction: Option<FractionalPercent>,
    /// `grpc`: the request's `content-type` is `application/grpc` or `application/grpc+...`.
    pub grpc: bool,
    /// `cookies[]`: all must match.
    pub cookies: Vec<cookies::CookieMatcher>,
    /// `dynamic_metadata[]`: all must match the request's dynamic metadata (empty when the
    /// route is first chosen; a filter that clears the route cache, as jwt_authn's
    /// `clear_route_cache`, has the route chosen again with what it wrote).
    pub dynamic_metadata: Vec<crate::http::filters::metadata::MetadataMatcher>,
}

/// `type.v3.FractionalPercent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FractionalPercent {
    /// `numerator`.
    pub numerator: u32,
    /// `denominator` as a number: 100, 10000 or 1000000.
    pub denominator: u32,
}

impl FractionalPercent {
    /// Envoy's `evaluateFractionalPercent`: `random % denominator < numerator`.
    pub fn holds(&self, random: u64) -> bool {
        random % u64::from(self.denominator) < u64::from(self.numerator)
    }
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// `route`: forward to a cluster.
    Forward(Box<ForwardAction>),
    /// `redirect`.
    Redirect(Box<RedirectAction>),
    /// `direct_response`.
    DirectResponse(DirectResponse),
}

/// `route` (RouteAction).
#[derive(Debug, Clone)]
pub struct ForwardAction {
    /// `cluster` | `weighted_clusters` | `cluster_header`.
    pub cluster: ClusterSpecifier,
    /// `prefix_rewrite`: replaces the matched prefix/path (whole path for safe_regex).
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`.
    pub regex_rewrite: Option<RegexRewrite>,
    /// `path_rewrite`: the whole path (the query is kept) from a substitution format,
    /// rendered after the request header mutations; empty leaves the path.
    pub path_format: Option<Arc<format::HeaderValueFormat>>,
    /// The host rewrite (`host_rewrite_specifier`).
    pub host_rewrite: HostRewrite,
    /// `timeout` (default [`DEFAULT_ROUTE_TIMEOUT`]); `None` = disabled (`0s`).
    pub timeout: Option<Duration>,
    /// `idle_timeout`; `None` = not set (HCM `stream_idle_timeout` applies) — `Some(ZERO)`
    /// disables.
    pub idle_timeout: Option<Duration>,
    /// `retry_policy` (the virtual host's when the route has none).
    pub retry_policy: Option<RetryPolicy>,
    /// `hash_policy[]`.
    pub hash_policy: Vec<HashPolicy>,
    /// `cluster_not_found_response_code` (default [`DEFAULT_CLUSTER_NOT_FOUND_STATUS`]).
    pub cluster_not_found_status: u16,
    /// `max_stream_duration` (when set, `timeout` is ignored, as Envoy's "new timeouts").
    pub max_stream_duration: Option<MaxStreamDuration>,
    /// `max_grpc_timeout` and `grpc_timeout_offset` (ignored, as Envoy, once
    /// `max_stream_duration` is set).
    pub grpc_timeout: Option<GrpcTimeout>,
    /// `upgrade_configs[]`: (`upgrade_type` lower-cased, `enabled`), which override the HCM's
    /// for requests on this route (Envoy's `RouteEntry::upgradeMap`); empty: none.
    pub upgrades: Box<[(String, bool)]>,
    /// `append_x_forwarded_host`: a host rewrite appends the original Host to
    /// `x-forwarded-host`.
    pub append_x_forwarded_host: bool,
    /// `request_mirror_policies` (the virtual host's when the route sets none); empty: no
    /// mirroring, nothing done per request.
    pub mirrors: Arc<[mirror::MirrorPolicy]>,
    /// `internal_redirect_policy`: upstream redirects followed by the proxy.
    pub internal_redirect: Option<Arc<internal_redirect::InternalRedirectPolicy>>,
    /// `rate_limits[]` (for the local rate limit filter's descriptors).
    pub rate_limits: Arc<[rate_limits::RateLimitEntry]>,
    /// `include_vh_rate_limits` (deprecated): the virtual host's `rate_limits` apply too.
    pub include_vh_rate_limits: bool,
    /// `priority`: the cluster's circuit breakers and host connection pools the request uses.
    pub priority: RoutingPriority,
    /// `hedge_policy.hedge_on_per_try_timeout` (the route's policy, else the virtual host's): a
    /// per-try timeout starts another attempt without resetting the late one.
    pub hedge_on_per_try_timeout: bool,
    /// The route's (or its virtual host's) `request_body_buffer_limit` or
    /// `per_request_buffer_limit_bytes`: how much of a streamed request body is kept for a
    /// retry or redirect; `None`: the listener's `per_connection_buffer_limit_bytes`.
    pub buffer_limit: Option<u64>,
}

/// `max_stream_duration` (RouteAction.MaxStreamDuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStreamDuration {
    /// `max_stream_duration`: `None` unset, `Some(ZERO)` disabled.
    pub max: Option<Duration>,
    /// `grpc_timeout_header_max`: when set, a request's `grpc-timeout` replaces `max`, capped
    /// at this (`ZERO`: no cap).
    pub grpc_header_max: Option<Duration>,
    /// `grpc_timeout_header_offset`, subtracted from the `grpc-timeout` value.
    pub grpc_header_offset: Duration,
}

impl MaxStreamDuration {
    /// The stream's duration limit for a request with this `grpc-timeout` header value
    /// (Envoy's `ActiveStream::refreshDurationTimeout`); `None` = no limit.
    pub fn limit(&self, grpc_timeout: Option<&str>) -> Option<Duration> {
        match (
            self.grpc_header_max,
            grpc_timeout.and_then(parse_grpc_timeout),
        ) {
            (Some(cap), Some(t)) => {
                let t = if !cap.is_zero() && t > cap { cap } else { t };
                Some(t.saturating_sub(self.grpc_header_offset))
            }
            _ => self.max.filter(|d| !d.is_zero()),
        }
    }
}

/// `max_grpc_timeout` with `grpc_timeout_offset`: a gRPC request's route timeout comes from its
/// `grpc-timeout` header (Envoy's `FilterUtility::finalTimeout`), and the expected timeout is
/// sent upstream as its `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeout {
    /// `max_grpc_timeout` in ms (`0`: no cap).
    pub max_ms: u64,
    /// `grpc_timeout_offset` in ms (`0`: none).
    pub offset_ms: u64,
}

impl GrpcTimeout {
    /// The route timeout of a gRPC request whose `grpc-timeout` is `header` (`None` = none):
    /// the header's value (no header or an invalid one: infinite), less the offset when that
    /// leaves more than zero, capped at `max_grpc_timeout` (which also replaces infinity unless
    /// it is 0). `None` = no route timeout.
    pub fn route_timeout(&self, header: Option<&str>) -> Option<Duration> {
        // Envoy's `getGrpcTimeout` counts milliseconds, rounding sub-millisecond units up.
        let mut ms = header.and_then(parse_grpc_timeout).map_or(0, |d| {
            u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
        });
        if self.offset_ms < ms {
            ms -= self.offset_ms;
        }
        if self.max_ms != 0 && (ms == 0 || ms > self.max_ms) {
            ms = self.max_ms;
        }
        (ms != 0).then(|| Duration::from_millis(ms))
    }
}

/// A `grpc-timeout` value (`<up to 8 digits><H|M|S|m|u|n>`), as Envoy's
/// `Grpc::Common::getGrpcTimeout`; anything else is no timeout.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Where a forwarded request goes.
#[derive(Debug, Clone)]
pub enum ClusterSpecifier {
    /// `cluster`.
    Cluster(ClusterRef),
    /// `weighted_clusters`.
    Weighted(WeightedClusters),
    /// `cluster_header`: the (lower-case) request header naming the cluster.
    Header(String),
}

/// `weighted_clusters`.
#[derive(Debug, Clone)]
pub struct WeightedClusters {
    /// `clusters[]`, in config order.
    pub clusters: Vec<WeightedCluster>,
    /// Sum of the weights (> 0).
    pub total_weight: u64,
    /// `header_name`: a single-valued request header holding a number replaces the random
    /// value of the pick.
    pub random_header: Option<String>,
    /// `use_hash_policy`: the route's `hash_policy` hash, when the request has one, replaces
    /// the random value of the pick.
    pub use_hash_policy: bool,
}

impl WeightedClusters {
    /// The random value of the pick (Envoy's `WeightedClusterSpecifierPlugin::route`):
    /// `header_name`'s value when the request has exactly one such header holding a decimal u64
    /// (`absl::SimpleAtoi`), else with `use_hash_policy` the route's hash (`hash`, asked only
    /// then) when the request has one, else `random`.
    pub fn random_value<H: HeaderLookup + ?Sized>(
        &self,
        headers: &H,
        random: u64,
        hash: impl FnOnce() -> Option<u64>,
    ) -> u64 {
        let Some(name) = &self.random_header else {
            return match self.use_hash_policy {
                true => hash().unwrap_or(random),
                false => random,
            };
        };
        let (mut count, mut parsed) = (0, None);
        headers.for_each_value(name, &mut |v| {
            count += 1;
            parsed = v.trim_ascii().parse::<u64>().ok();
        });
        match (count, parsed) {
            (1, Some(v)) => v,
            _ => random,
        }
    }

    /// Envoy's pick: `random % total_weight` falls in one cluster's cumulative weight range.
    pub fn pick(&self, random: u64) -> &WeightedCluster {
        let mut value = random % self.total_weight;
        for c in &self.clusters {
            if value < u64::from(c.weight) {
                return c;
            }
            value -= u64::from(c.weight);
        }
        // Unreachable: total_weight is the sum of the weights. Fall back to the last one.
        self.clusters.last().expect("validated non-empty")
    }
}

/// `weighted_clusters.clusters[]`.
#[derive(Debug, Clone)]
pub struct WeightedCluster {
    /// `name` (empty when `cluster_header` is set).
    pub name: ClusterRef,
    /// `cluster_header`: the (lower-case) request header naming the cluster.
    pub cluster_header: Option<String>,
    /// `host_rewrite_literal`: the Host set right after this cluster's request headers, before
    /// the route-level mutations (no `x-envoy-original-host`, as Envoy).
    pub host_rewrite: Option<String>,
    /// `weight`.
    pub weight: u32,
    /// `request_headers_to_add` / `request_headers_to_remove` (applied before the route's).
    pub request_headers: HeaderMutations,
    /// `response_headers_to_add` / `response_headers_to_remove` (applied before the route's).
    pub response_headers: HeaderMutations,
    /// `typed_per_filter_config`.
    pub per_filter: PerFilterConfigs,
}

/// `regex_rewrite` (RegexMatchAndSubstitute).
#[derive(Debug, Clone)]
pub struct RegexRewrite {
    /// `pattern.regex`, compiled.
    pub pattern: regex::Regex,
    /// `substitution` translated to the regex crate's syntax (`\1` -> `${1}`).
    pub substitution: String,
}

impl RegexRewrite {
    /// Replaces every match in `path` (no query) as RE2's GlobalReplace does.
    pub fn apply<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        self.pattern.replace_all(path, self.substitution.as_str())
    }
}

/// Host rewrite of a forwarded request.
#[derive(Debug, Clone, Default)]
pub enum HostRewrite {
    /// Keep the downstream host.
    #[default]
    None,
    /// `host_rewrite_literal`.
    Literal(String),
    /// `auto_host_rewrite: true`: the chosen endpoint's host name (STRICT_DNS) — the runtime
    /// applies it once the endpoint is known.
    Auto,
    /// `host_rewrite_header`: the first value of this (lower-case) request header, read after
    /// the request header mutations; absent or empty keeps the Host.
    Header(String),
    /// `host_rewrite_path_regex`: the path (without query) rewritten by the regex.
    PathRegex(RegexRewrite),
    /// `host_rewrite`: a substitution format rendered after the request header mutations (a
    /// missing value is `-`, as Envoy's); empty keeps the Host.
    Format(Arc<format::HeaderValueFormat>),
}

/// `retry_policy`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// `retry_on`, parsed.
    pub retry_on: RetryOn,
    /// `num_retries` (default [`DEFAULT_NUM_RETRIES`]).
    pub num_retries: u32,
    /// `per_try_timeout`; `None` = the route timeout applies.
    pub per_try_timeout: Option<Duration>,
    /// `per_try_idle_timeout`: an attempt that gets no response bytes for this long (from its
    /// connection being ready) is reset as a per-try timeout; `None` = none (`0s`).
    pub per_try_idle_timeout: Option<Duration>,
    /// `retry_back_off.base_interval` (default [`DEFAULT_RETRY_BASE_INTERVAL`]).
    pub base_interval: Duration,
    /// `retry_back_off.max_interval` (default 10 x base_interval).
    pub max_interval: Duration,
    /// `retriable_status_codes[]` (used with `retriable-status-codes`).
    pub retriable_status_codes: Vec<u16>,
    /// `retriable_headers[]` (used with `retriable-headers`): a response with a header any of
    /// them matches is retried.
    pub retriable_headers: Arc<[HeaderMatcher]>,
    /// `retriable_request_headers[]`: when not empty, only a request one of them matches is
    /// retried at all.
    pub retriable_request_headers: Arc<[HeaderMatcher]>,
    /// `retry_host_predicate` `envoy.retry_host_predicates.previous_hosts`: a retry avoids the
    /// hosts already tried, re-picking up to `host_selection_retry_max_attempts` times.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (default 1, as Envoy).
    pub host_selection_max_attempts: u32,
    /// `rate_limited_retry_back_off`: a retried response's reset header sets the back-off.
    pub rate_limited: Option<rate_limited::RateLimitedBackOff>,
}

/// The conditions of `retry_on` (a comma-separated list in Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RetryOn {
    /// `5xx`: any 5xx response, connect failure or reset.
    pub server_error: bool,
    /// `gateway-error`: 502, 503, 504.
    pub gateway_error: bool,
    /// `reset`: upstream reset / no response.
    pub reset: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `refused-stream`: an HTTP/2 RST_STREAM with REFUSED_STREAM (istiod's default policy).
    pub refused_stream: bool,
    /// `reset-before-request`: a reset before the request went out.
    pub reset_before_request: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `retriable-status-codes`: the codes in `retriable_status_codes`.
    pub retriable_status_codes: bool,
    /// `retriable-headers`: a response header matched by `retriable_headers`.
    pub retriable_headers: bool,
    /// `envoy-ratelimited`: a response with `x-envoy-ratelimited` (never retried otherwise).
    pub envoy_ratelimited: bool,
    /// `cancelled`: response header `grpc-status: 1`.
    pub grpc_cancelled: bool,
    /// `deadline-exceeded`: `grpc-status: 4`.
    pub grpc_deadline_exceeded: bool,
    /// `resource-exhausted`: `grpc-status: 8`.
    pub grpc_resource_exhausted: bool,
    /// `internal`: `grpc-status: 13`.
    pub grpc_internal: bool,
    /// `unavailable`: `grpc-status: 14`.
    pub grpc_unavailable: bool,
}

/// The policy of a route without one (Envoy's `RetryPolicyImpl` defaults): no condition, one
/// retry, the default back-off.
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: DEFAULT_NUM_RETRIES,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            base_interval: DEFAULT_RETRY_BASE_INTERVAL,
            max_interval: DEFAULT_RETRY_BASE_INTERVAL * DEFAULT_RETRY_MAX_INTERVAL_FACTOR,
            retriable_status_codes: Vec::new(),
            retriable_headers: Arc::from(Vec::new()),
            retriable_request_headers: Arc::from(Vec::new()),
            previous_hosts: false,
            host_selection_max_attempts: 1,
            rate_limited: None,
        }
    }
}

impl RetryOn {
    /// Adds the HTTP condition `token` names (Envoy's `parseRetryOn`: `retry_on`,
    /// `x-envoy-retry-on`); false when it names none sluice implements.
    pub fn add_http(&mut self, token: &str) -> bool {
        match token {
            "5xx" => self.server_error = true,
            "gateway-error" => self.gateway_error = true,
            "reset" => self.reset = true,
            "connect-failure" => self.connect_failure = true,
            "retriable-4xx" => self.retriable_4xx = true,
            "retriable-status-codes" => self.retriable_status_codes = true,
            "retriable-headers" => self.retriable_headers = true,
            "envoy-ratelimited" => self.envoy_ratelimited = true,
            "refused-stream" => self.refused_stream = true,
            "reset-before-request" => self.reset_before_request = true,
            // Fires only for a request sent over HTTP/3, which sluice never sends upstream
            // (Envoy's `RETRY_ON_HTTP3_POST_CONNECT_FAILURE` without HTTP/3 is the same).
            "http3-post-connect-failure" => {}
            _ => return false,
        }
        true
    }

    /// Adds the gRPC condition `token` names (Envoy's `parseRetryGrpcOn`: `retry_on`,
    /// `x-envoy-retry-grpc-on`); false when it names none.
    pub fn add_grpc(&mut self, token: &str) -> bool {
        match token {
            "cancelled" => self.grpc_cancelled = true,
            "deadline-exceeded" => self.grpc_deadline_exceeded = true,
            "internal" => self.grpc_internal = true,
            "resource-exhausted" => self.grpc_resource_exhausted = true,
            "unavailable" => self.grpc_unavailable = true,
            _ => return false,
        }
        true
    }
}

/// `hash_policy[]`.
#[derive(Debug, Clone)]
pub struct HashPolicy {
    /// What is hashed.
    pub kind: HashPolicyKind,
    /// `terminal`: stop at this policy if it produced a hash.
    pub terminal: bool,
}

/// The hashed request property.
#[derive(Debug, Clone)]
pub enum HashPolicyKind {
    /// `header.header_name` (lower-case): every value of the header, each rewritten by
    /// `header.regex_rewrite` when set, sorted and hashed in turn, each hash seeding the next
    /// (Envoy's order-independent hash of a repeated header).
    Header {
        name: String,
        rewrite: Option<RegexRewrite>,
    },
    /// `query_parameter.name`: the first value of that query parameter, as sent (no decoding).
    QueryParameter(String),
    /// `cookie.name`; with `ttl`, a cookie generated when the request has none.
    Cookie {
        name: String,
        generate: Option<CookieGen>,
    },
    /// `connection_properties.source_ip: true`.
    SourceIp,
}

/// How a cookie hash policy with a `ttl` makes the cookie a request lacks: the
/// `Set-Cookie` value after the cookie's own `name="value"` (Envoy's order:
/// `; Max-Age=ttl` unless 0, `; Path=path` when set, each attribute, `; HttpOnly`).
#[derive(Debug, Clone)]
pub struct CookieGen {
    /// Everything after the value, from `; ` on.
    pub suffix: String,
}

/// `redirect` (RedirectAction).
#[derive(Debug, Clone)]
pub struct RedirectAction {
    /// `scheme_redirect`, or `https` for `https_redirect: true`.
    pub scheme: Option<String>,
    /// `host_redirect`.
    pub host: Option<String>,
    /// `port_redirect`.
    pub port: Option<u16>,
    /// `path_redirect` | `prefix_rewrite` | `regex_rewrite`.
    pub path: RedirectPath,
    /// `response_code` as a status (default [`DEFAULT_REDIRECT_STATUS`]).
    pub status: u16,
    /// `strip_query`.
    pub strip_query: bool,
}

/// How a redirect builds its path.
#[derive(Debug, Clone)]
pub enum RedirectPath {
    /// Keep the request path.
    Keep,
    /// `path_redirect` (replaces the whole path; the request query is kept unless the
    /// redirect path has its own query or `strip_query`).
    Path(String),
    /// `prefix_rewrite` (replaces the matched prefix, like the route action's).
    PrefixRewrite(String),
    /// `regex_rewrite`.
    RegexRewrite(RegexRewrite),
    /// `path_rewrite`: a substitution format rendered when the redirect is answered
    /// (`http::route_reply`); until then, and when it renders empty, the request's path.
    Format(Arc<format::HeaderValueFormat>),
}

/// `direct_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    /// `status`.
    pub status: u16,
    /// `body.inline_string`, or `body.inline_bytes` (base64 in YAML and proto JSON; istiod's
    /// VirtualService `directResponse.body.bytes`), sent as is.
    pub body: Option<bytes::Bytes>,
    /// `body_format`: the body rendered per request (`%LOCAL_REPLY_BODY%` is `body`).
    pub body_format: Option<body_format::BodyFormat>,
}
