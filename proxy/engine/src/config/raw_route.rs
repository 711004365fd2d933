//! Raw serde types of Envoy's `route.v3` messages (RouteConfiguration, VirtualHost, Route,
//! matchers and actions) with `deny_unknown_fields`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_norway::Value;

use super::duration::PbDuration;

/// `RouteConfiguration`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteConfiguration {
    pub name: Option<String>,
    /// `metadata` (e.g. Istio's `filter_metadata`): accepted and never read (no filter reads it).
    #[allow(dead_code)]
    pub metadata: Option<serde_json::Value>,

    #[serde(default)]
    pub virtual_hosts: Vec<RawVirtualHost>,
    #[serde(default)]
    pub request_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    pub most_specific_header_mutations_wins: Option<bool>,
    pub ignore_port_in_host_matching: Option<bool>,
    pub validate_clusters: Option<bool>,
    pub max_direct_response_body_size_bytes: Option<u32>,
    #[serde(default)]
    pub internal_only_headers: Vec<String>,
    /// Filter name -> per-route config (`@type`d), the least specific level.
    pub typed_per_filter_config: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub request_mirror_policies: Vec<RawRequestMirrorPolicy>,
}

/// `VirtualHost`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVirtualHost {
    pub name: Option<String>,
    /// `metadata` (e.g. Istio's `filter_metadata`): accepted and never read (no filter reads it).
    #[allow(dead_code)]
    pub metadata: Option<serde_json::Value>,

    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub request_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    pub hedge_policy: Option<RawHedgePolicy>,
    #[serde(default)]
    pub rate_limits: Vec<crate::route::rate_limits::RawRateLimit>,
    pub retry_policy: Option<RawRetryPolicy>,
    /// Filter name -> per-route config (`@type`d).
    pub typed_per_filter_config: Option<BTreeMap<String, Value>>,
    /// Deprecated `cors` (config.route.v3.CorsPolicy).
    pub cors: Option<Value>,
    pub include_request_attempt_count: Option<bool>,
    pub include_attempt_count_in_response: Option<bool>,
    pub include_is_timeout_retry_header: Option<bool>,
    #[serde(default)]
    pub request_mirror_policies: Vec<RawRequestMirrorPolicy>,
    /// `require_tls` (`NONE` / `EXTERNAL_ONLY` / `ALL`).
    pub require_tls: Option<String>,
    /// The routes' retry buffer limit (below a route's own).
    pub request_body_buffer_limit: Option<u64>,
    /// Deprecated form of `request_body_buffer_limit` (below every `request_body_buffer_limit`).
    pub per_request_buffer_limit_bytes: Option<u32>,
}

/// `Route`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<String>,
    /// `metadata` (e.g. Istio's `filter_metadata.istio.config`): informational, shown by
    /// /config_dump and `sluice proxy-config`, never used for routing.
    #[allow(dead_code)]
    pub metadata: Option<serde_json::Value>,
    #[serde(rename = "match")]
    pub matcher: Option<RawRouteMatch>,
    pub route: Option<RawRouteAction>,
    pub redirect: Option<RawRedirectAction>,
    pub direct_response: Option<RawDirectResponse>,
    #[serde(default)]
    pub request_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    /// Filter name -> per-route config (`@type`d).
    pub typed_per_filter_config: Option<BTreeMap<String, Value>>,
    /// `decorator` (istiod sets one on every route; see [`RawDecorator`]).
    pub decorator: Option<RawDecorator>,
    /// `tracing`: the route's sampling rates (config/tracing.rs).
    pub tracing: Option<super::tracing::RawRouteTracing>,
    /// `stat_prefix` (Istio's VirtualService `statPrefix`): the route's own counters.
    pub stat_prefix: Option<String>,
    /// The request body kept for a retry or redirect (the listener's buffer limit otherwise).
    pub request_body_buffer_limit: Option<u64>,
    /// Deprecated form of `request_body_buffer_limit`.
    pub per_request_buffer_limit_bytes: Option<u32>,
}

/// `Decorator`: the span name of a request and, with `propagate` (default true), the
/// `x-envoy-decorator-operation` header Envoy sends with it under the HCM's `tracing`
/// (http/trace.rs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDecorator {
    /// Required, at least one character (Envoy's validation).
    pub operation: String,
    pub propagate: Option<bool>,
}

/// `RouteMatch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteMatch {
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub safe_regex: Option<RawRegexMatcher>,
    pub path_separated_prefix: Option<String>,
    pub case_sensitive: Option<bool>,
    #[serde(default)]
    pub headers: Vec<RawHeaderMatcher>,
    #[serde(default)]
    pub query_parameters: Vec<RawQueryParameterMatcher>,
    pub runtime_fraction: Option<RawRuntimeFractionalPercent>,
    pub grpc: Option<RawGrpcRouteMatchOptions>,
    #[serde(default)]
    pub cookies: Vec<RawCookieMatcher>,
    #[serde(default)]
    pub dynamic_metadata: Vec<crate::http::filters::metadata::RawMetadataMatcher>,
}

/// `core.v3.RuntimeFractionalPercent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntimeFractionalPercent {
    pub default_value: Option<RawFractionalPercent>,
    /// A runtime key: a documented no-op (sluice has no runtime layer, so the default applies,
    /// as in Envoy without `layered_runtime`).
    #[allow(dead_code)]
    pub runtime_key: Option<String>,
}

/// `type.v3.FractionalPercent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFractionalPercent {
    pub numerator: Option<u32>,
    pub denominator: Option<String>,
}

/// `RouteMatch.GrpcRouteMatchOptions` (empty).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrpcRouteMatchOptions {}

/// `type.v3.Int64Range` (proto3 JSON: an int64 is a number or a decimal string).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInt64Range {
    pub start: Option<RawInt64>,
    pub end: Option<RawInt64>,
}

/// An int64 as proto3 JSON writes it: a number or a decimal string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawInt64 {
    Number(i64),
    Text(String),
}

/// `type.matcher.v3.RegexMatcher`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegexMatcher {
    pub regex: Option<String>,
    /// Deprecated in Envoy, accepted in its empty form (RE2 is the only engine).
    #[allow(dead_code)]
    pub google_re2: Option<RawGoogleRe2>,
}

/// `RegexMatcher.GoogleRE2` (deprecated; only the empty form is accepted).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGoogleRe2 {}

/// `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStringMatcher {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub contains: Option<String>,
    pub safe_regex: Option<RawRegexMatcher>,
    pub ignore_case: Option<bool>,
}

/// `CookieMatcher`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCookieMatcher {
    /// Required (empty counts as missing).
    #[serde(default)]
    pub name: String,
    pub string_match: Option<RawStringMatcher>,
    pub invert_match: Option<bool>,
}

/// `HeaderMatcher`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMatcher {
    pub name: Option<String>,
    pub string_match: Option<RawStringMatcher>,
    pub present_match: Option<bool>,
    pub exact_match: Option<String>,
    pub prefix_match: Option<String>,
    pub suffix_match: Option<String>,
    pub contains_match: Option<String>,
    pub safe_regex_match: Option<RawRegexMatcher>,
    pub range_match: Option<RawInt64Range>,
    pub invert_match: Option<bool>,
    pub treat_missing_header_as_empty: Option<bool>,
}

/// `QueryParameterMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueryParameterMatcher {
    pub name: Option<String>,
    pub string_match: Option<RawStringMatcher>,
    pub present_match: Option<bool>,
}

/// `core.v3.HeaderValueOption`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderValueOption {
    pub header: Option<RawHeaderValue>,
    pub append: Option<bool>,
    pub append_action: Option<String>,
    pub keep_empty_value: Option<bool>,
}

/// `core.v3.HeaderValue`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderValue {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// `RouteAction`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteAction {
    pub cluster: Option<String>,
    pub weighted_clusters: Option<RawWeightedClusters>,
    pub cluster_header: Option<String>,
    pub cluster_not_found_response_code: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RawRegexMatchAndSubstitute>,
    pub host_rewrite_literal: Option<String>,
    pub auto_host_rewrite: Option<bool>,
    pub host_rewrite_header: Option<String>,
    pub host_rewrite_path_regex: Option<RawRegexMatchAndSubstitute>,
    /// A substitution format string (`%REQ(...)%`, ...).
    pub host_rewrite: Option<String>,
    /// A substitution format string (`%REQ(...)%`, ...).
    pub path_rewrite: Option<String>,
    pub timeout: Option<PbDuration>,
    pub idle_timeout: Option<PbDuration>,
    pub retry_policy: Option<RawRetryPolicy>,
    #[serde(default)]
    pub hash_policy: Vec<RawHashPolicy>,
    pub max_stream_duration: Option<RawMaxStreamDuration>,
    pub max_grpc_timeout: Option<PbDuration>,
    pub grpc_timeout_offset: Option<PbDuration>,
    #[serde(default)]
    pub upgrade_configs: Vec<RawRouteUpgradeConfig>,
    pub append_x_forwarded_host: Option<bool>,
    /// Deprecated `cors` (config.route.v3.CorsPolicy).
    pub cors: Option<Value>,
    /// Empty (proto3: the same as unset): the virtual host's apply.
    #[serde(default)]
    pub request_mirror_policies: Vec<RawRequestMirrorPolicy>,
    pub hedge_policy: Option<RawHedgePolicy>,
    #[serde(default)]
    pub rate_limits: Vec<crate::route::rate_limits::RawRateLimit>,
    pub include_vh_rate_limits: Option<bool>,
    pub internal_redirect_policy: Option<RawInternalRedirectPolicy>,
    /// `core.v3.RoutingPriority` by name.
    pub priority: Option<String>,
}

/// `RouteAction.UpgradeConfig` (`connect_config` not supported: CONNECT is never routed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteUpgradeConfig {
    pub upgrade_type: Option<String>,
    pub enabled: Option<bool>,
}

/// `InternalRedirectPolicy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInternalRedirectPolicy {
    pub max_internal_redirects: Option<u32>,
    #[serde(default)]
    pub redirect_response_codes: Vec<u32>,
    /// Typed extensions (`name` + `typed_config`).
    #[serde(default)]
    pub predicates: Vec<RawRetryHostPredicate>,
    pub allow_cross_scheme_redirect: Option<bool>,
    #[serde(default)]
    pub response_headers_to_copy: Vec<String>,
}

/// `RouteAction.RequestMirrorPolicy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequestMirrorPolicy {
    pub cluster: Option<String>,
    pub cluster_header: Option<String>,
    pub runtime_fraction: Option<RawRuntimeFractionalPercent>,
    /// A documented no-op: the shadow span's sampled flag (mirrors get no span of their own,
    /// docs/config.md "Known divergences").
    #[allow(dead_code)]
    pub trace_sampled: Option<bool>,
    pub disable_shadow_host_suffix_append: Option<bool>,
    pub host_rewrite_literal: Option<String>,
    #[serde(default)]
    pub request_headers_mutations: Vec<RawHeaderMutation>,
}

/// `config.common.mutation_rules.v3.HeaderMutation`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMutation {
    pub remove: Option<String>,
    pub append: Option<RawHeaderValueOption>,
    pub remove_on_match: Option<RawRemoveOnMatch>,
}

/// `HeaderMutation.RemoveOnMatch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoveOnMatch {
    pub key_matcher: Option<RawStringMatcher>,
}

/// `RouteAction.MaxStreamDuration`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMaxStreamDuration {
    pub max_stream_duration: Option<PbDuration>,
    pub grpc_timeout_header_max: Option<PbDuration>,
    pub grpc_timeout_header_offset: Option<PbDuration>,
}

/// `WeightedCluster`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeightedClusters {
    #[serde(default)]
    pub clusters: Vec<RawClusterWeight>,
    /// Deprecated in Envoy; if set (> 0) it must equal the sum of the weights.
    pub total_weight: Option<u32>,
    /// A runtime key prefix: a documented no-op (no runtime layer, the configured weights
    /// apply, as in Envoy without `layered_runtime`).
    #[allow(dead_code)]
    pub runtime_key_prefix: Option<String>,
    /// The request header whose numeric value is the random value of the pick.
    pub header_name: Option<String>,
    /// The route's hash policy's hash is the value of the pick.
    pub use_hash_policy: Option<bool>,
}

/// `WeightedCluster.ClusterWeight`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClusterWeight {
    pub name: Option<String>,
    pub cluster_header: Option<String>,
    pub weight: Option<u32>,
    pub host_rewrite_literal: Option<String>,
    #[serde(default)]
    pub request_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<RawHeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    /// Filter name -> per-route config (`@type`d).
    pub typed_per_filter_config: Option<BTreeMap<String, Value>>,
}

/// `type.matcher.v3.RegexMatchAndSubstitute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegexMatchAndSubstitute {
    pub pattern: Option<RawRegexMatcher>,
    pub substitution: Option<String>,
}

/// `RetryPolicy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryPolicy {
    pub retry_on: Option<String>,
    pub num_retries: Option<u32>,
    pub per_try_timeout: Option<PbDuration>,
    pub per_try_idle_timeout: Option<PbDuration>,
    pub retry_back_off: Option<RawRetryBackOff>,
    #[serde(default)]
    pub retriable_status_codes: Vec<u32>,
    #[serde(default)]
    pub retriable_headers: Vec<RawHeaderMatcher>,
    #[serde(default)]
    pub retriable_request_headers: Vec<RawHeaderMatcher>,
    #[serde(default)]
    pub retry_host_predicate: Vec<RawRetryHostPredicate>,
    pub host_selection_retry_max_attempts: Option<RawInt64>,
    pub rate_limited_retry_back_off: Option<RawRateLimitedRetryBackOff>,
}

/// `RetryPolicy.RateLimitedRetryBackOff`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimitedRetryBackOff {
    #[serde(default)]
    pub reset_headers: Vec<RawResetHeader>,
    pub max_interval: Option<PbDuration>,
}

/// `RetryPolicy.ResetHeader`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResetHeader {
    pub name: Option<String>,
    pub format: Option<String>,
}

/// `RetryPolicy.RetryHostPredicate` (a typed extension: `name` + `typed_config`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryHostPredicate {
    pub name: Option<String>,
    pub typed_config: Option<serde_json::Value>,
}

/// `RetryPolicy.RetryBackOff`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryBackOff {
    pub base_interval: Option<PbDuration>,
    pub max_interval: Option<PbDuration>,
}

/// `RouteAction.HashPolicy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHashPolicy {
    pub header: Option<RawHashHeader>,
    pub cookie: Option<RawHashCookie>,
    pub connection_properties: Option<RawHashConnectionProperties>,
    pub query_parameter: Option<RawHashQueryParameter>,
    pub terminal: Option<bool>,
}

/// `HashPolicy.Header`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHashHeader {
    pub header_name: Option<String>,
    pub regex_rewrite: Option<RawRegexMatchAndSubstitute>,
}

/// `HashPolicy.QueryParameter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHashQueryParameter {
    pub name: Option<String>,
}

/// `HashPolicy.Cookie`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHashCookie {
    pub name: Option<String>,
    pub ttl: Option<PbDuration>,
    pub path: Option<String>,
    #[serde(default)]
    pub attributes: Vec<RawCookieAttribute>,
}

/// `HashPolicy.CookieAttribute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCookieAttribute {
    pub name: Option<String>,
    pub value: Option<String>,
}

/// `HashPolicy.ConnectionProperties`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHashConnectionProperties {
    pub source_ip: Option<bool>,
}

/// `RedirectAction`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedirectAction {
    pub https_redirect: Option<bool>,
    pub scheme_redirect: Option<String>,
    pub host_redirect: Option<String>,
    pub port_redirect: Option<u32>,
    pub path_redirect: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RawRegexMatchAndSubstitute>,
    pub path_rewrite: Option<String>,
    pub response_code: Option<String>,
    pub strip_query: Option<bool>,
}

/// `DirectResponseAction`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDirectResponse {
    pub status: Option<u32>,
    pub body: Option<RawDataSource>,
    pub body_format: Option<crate::route::body_format::RawBodyFormat>,
}

/// `core.v3.DataSource`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDataSource {
    pub filename: Option<String>,
    pub inline_string: Option<String>,
    /// Base64 in proto JSON (istiod sends SDS secrets so); read by TLS contexts
    /// (`tls_common::data_source`) and direct_response bodies, refused as `required
    /// inline_string` elsewhere.
    pub inline_bytes: Option<String>,
}

/// `HedgePolicy`: Envoy 1.40 implements only `hedge_on_per_try_timeout`; `initial_requests`
/// and `additional_request_chance` are marked not implemented there and have no effect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHedgePolicy {
    pub initial_requests: Option<u32>,
    #[allow(dead_code)]
    pub additional_request_chance: Option<serde_json::Value>,
    pub hedge_on_per_try_timeout: Option<bool>,
}
