//! Checks the inventory mechanically: the fields Envoy 1.40's descriptors give each message
//! (sluice-xds's descriptor pool), and whether sluice's config loader accepts a field, found by
//! adding the field with a sample value of its proto type to a valid bootstrap ([`BASE`]) at the
//! message's place ([`SITES`]) and looking for a `not supported` / `unknown field` error at
//! exactly that field's path.

use std::collections::BTreeSet;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Value};

use super::Inventory;

/// A valid bootstrap in which every message of [`SITES`] occurs.
pub const BASE: &str = r#"
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
    filter_chains:
    - filter_chain_match: { transport_protocol: raw_buffer }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          upgrade_configs: [{ upgrade_type: websocket }]
          tracing: { custom_tags: [{ tag: t, literal: { value: v } }] }
          request_id_extension: { typed_config: { "@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig } }
          common_http_protocol_options: { idle_timeout: 3600s }
          scheme_header_transformation: { match_upstream: true }
          internal_address_config: { cidr_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 8 }] }
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config: { "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog }
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              delay: { fixed_delay: 1s }
              abort: { http_status: 503 }
              response_rate_limit: { fixed_limit: { limit_kbps: 1 } }
          - name: envoy.filters.http.cors
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: rl
              token_bucket: { max_tokens: 1, fill_interval: 1s }
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                policies:
                  p:
                    permissions:
                    - { any: true }
                    - { and_rules: { rules: [{ any: true }] } }
                    - { url_path: { path: { exact: / } } }
                    - { destination_port_range: { start: 1, end: 2 } }
                    - { destination_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }
                    principals:
                    - { any: true }
                    - { or_ids: { ids: [{ any: true }] } }
                    - { authenticated: {} }
                    - { filter_state: { key: k, string_match: { exact: v } } }
                    - { metadata: { filter: f, path: [{ key: k }], value: { list_match: { one_of: { string_match: { exact: v } } } } } }
                    - { metadata: { filter: f, path: [{ key: k }], value: { or_match: { value_matchers: [{ bool_match: true }, { double_match: { exact: 1 } }] } } } }
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: { uri: "http://authz", cluster: c, timeout: 1s }
                authorization_request: { allowed_headers: { patterns: [{ exact: x }] } }
                authorization_response: { allowed_upstream_headers: { patterns: [{ exact: x }] } }
              with_request_body: { max_request_bytes: 16 }
              filter_enabled_metadata:
                filter: envoy.filters.http.rbac
                path: [{ key: k }]
                value: { string_match: { prefix: v } }
          - name: grpc-authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service: { envoy_grpc: { cluster_name: c }, timeout: 1s }
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                p:
                  local_jwks: { inline_string: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}' }
                  from_headers: [{ name: x-jwt }]
                  claim_to_headers: [{ header_name: x-sub, claim_name: sub }]
                  normalize_payload_in_metadata: { space_delimited_claims: [scope] }
                r:
                  remote_jwks: { http_uri: { uri: "http://keys/jwks", cluster: c, timeout: 1s } }
              rules:
              - match: { prefix: / }
                requires: { provider_and_audiences: { provider_name: p, audiences: [a] } }
              - match: { prefix: /any }
                requires: { requires_any: { requirements: [{ provider_name: p }, { allow_missing: {} }] } }
              - match: { prefix: /all }
                requires: { requires_all: { requirements: [{ provider_name: p }, { provider_name: p }] } }
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          route_config:
            name: r
            request_headers_to_add: [{ header: { key: a, value: b } }]
            virtual_hosts:
            - name: v
              domains: ["*"]
              retry_policy: { retry_on: 5xx, retry_back_off: { base_interval: 1s }, rate_limited_retry_back_off: { reset_headers: [{ name: retry-after }] } }
              cors: { allow_methods: GET }
              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_methods: GET
                envoy.filters.http.rbac:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                envoy.filters.http.ext_authz:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                  check_settings: {}
                envoy.filters.http.jwt_authn:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
                  disabled: true
              routes:
              - match:
                  prefix: /
                  headers: [{ name: h, present_match: true }, { name: h2, string_match: { exact: x } }]
                  query_parameters: [{ name: q, present_match: true }]
                  cookies: [{ name: c, string_match: { exact: v } }]
                typed_per_filter_config:
                  envoy.filters.http.fault: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, config: {} }
                decorator: { operation: op }
                tracing: {}
                route:
                  cluster: c
                  max_stream_duration: { max_stream_duration: 5s }
                  upgrade_configs: [{ upgrade_type: websocket }]
                  request_mirror_policies: [{ cluster: c, request_headers_mutations: [{ remove: x-r }] }]
                  internal_redirect_policy: { max_internal_redirects: 1 }
                  rate_limits: [{ actions: [{ remote_address: {} }] }]
                  hedge_policy: { initial_requests: 1 }
                  hash_policy:
                  - { header: { header_name: x } }
                  - { cookie: { name: k, ttl: 1s, attributes: [{ name: a, value: b }] } }
                  - { connection_properties: { source_ip: true } }
                  - { query_parameter: { name: q } }
              - match: { prefix: /w }
                route: { weighted_clusters: { clusters: [{ name: c, weight: 1 }] } }
              - match: { prefix: /r }
                redirect: { host_redirect: example.com }
              - match: { prefix: /d }
                direct_response: { status: 200, body_format: { text_format: x } }
    - filter_chain_match: { destination_port: 1 }
      filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: n
          rules: { action: DENY }
      - name: envoy.filters.network.ext_authz
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz
          stat_prefix: a
          grpc_service: { envoy_grpc: { cluster_name: c } }
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c }
  - name: gateway
    address: { socket_address: { address: 127.0.0.1, port_value: 10001 } }
    listener_filters:
    - name: envoy.filters.listener.proxy_protocol
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: g, cluster: c }
  secrets:
  - name: s
    tls_certificate: { certificate_chain: { filename: /probe/c.pem }, private_key: { filename: /probe/k.pem } }
  - name: ca
    validation_context: { trusted_ca: { filename: /probe/ca.pem } }
  clusters:
  - name: c
    type: STATIC
    lb_policy: LEAST_REQUEST
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_params: { tls_maximum_protocol_version: TLSv1_3 }
          tls_certificate_sds_secret_configs: [{ name: s }]
          combined_validation_context:
            default_validation_context: { match_typed_subject_alt_names: [{ san_type: URI, matcher: { exact: u } }] }
            validation_context_sds_secret_config: { name: ca }
    transport_socket_matches:
    - name: m
      match: { tlsMode: istio }
      transport_socket:
        name: envoy.transport_sockets.upstream_proxy_protocol
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport
          config: { version: V2 }
          transport_socket: { name: envoy.transport_sockets.raw_buffer, typed_config: { "@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer } }
    least_request_lb_config: { choice_count: 2, slow_start_config: { slow_start_window: 1s } }
    circuit_breakers: { thresholds: [{ max_connections: 10, retry_budget: { min_retry_concurrency: 3 } }] }
    outlier_detection: { consecutive_5xx: 5 }
    health_checks:
    - { timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: { path: / } }
    load_assignment:
      cluster_name: c
      policy: { overprovisioning_factor: 140 }
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } }
  - name: ring
    type: STATIC
    lb_policy: RING_HASH
    ring_hash_lb_config: { minimum_ring_size: 1024 }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http_protocol_options: {} }
        upstream_http_protocol_options: { auto_sni: true }
  - { name: maglev, type: STATIC, lb_policy: MAGLEV, maglev_lb_config: { table_size: 65537 } }
  - name: orig
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    original_dst_lb_config: { use_http_header: true }
  - { name: eds, type: EDS, eds_cluster_config: { eds_config: { ads: {} } } }
"#;

const HCM: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";
const ROUTES: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes";

/// Where each probed message occurs in [`BASE`]: (message, JSON pointer). A message not listed
/// here is checked against the descriptors only, and may list only rejected fields: when one of
/// its fields becomes supported, add the message to [`BASE`] and here.
pub fn sites() -> Vec<(&'static str, String)> {
    let rc = format!("{HCM}/route_config");
    let vh = format!("{rc}/virtual_hosts/0");
    let c = "/static_resources/clusters/0";
    let la = format!("{c}/load_assignment");
    let tls = format!("{c}/transport_socket/typed_config");
    let rbac = format!("{HCM}/http_filters/3/typed_config");
    let authz = format!("{HCM}/http_filters/4/typed_config");
    let jwt = format!("{HCM}/http_filters/6/typed_config");
    let policy = format!("{rbac}/rules/policies/p");
    vec![
        ("config.listener.v3.Listener", "/static_resources/listeners/0".into()),
        ("extensions.filters.listener.tls_inspector.v3.TlsInspector", "/static_resources/listeners/0/listener_filters/0/typed_config".into()),
        ("extensions.filters.listener.proxy_protocol.v3.ProxyProtocol", "/static_resources/listeners/1/listener_filters/0/typed_config".into()),
        ("extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport", "/static_resources/clusters/0/transport_socket_matches/0/transport_socket/typed_config".into()),
        ("config.core.v3.ProxyProtocolConfig", "/static_resources/clusters/0/transport_socket_matches/0/transport_socket/typed_config/config".into()),
        ("extensions.upstreams.http.v3.HttpProtocolOptions", "/static_resources/clusters/1/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into()),
        ("config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget", "/static_resources/clusters/0/circuit_breakers/thresholds/0/retry_budget".into()),
        ("config.core.v3.UpstreamHttpProtocolOptions", "/static_resources/clusters/1/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/upstream_http_protocol_options".into()),
        ("extensions.filters.http.router.v3.Router", format!("{HCM}/http_filters/7/typed_config")),
        ("config.listener.v3.FilterChainMatch", "/static_resources/listeners/0/filter_chains/0/filter_chain_match".into()),
        ("extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", HCM.into()),
        ("extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig", format!("{HCM}/upgrade_configs/0")),
        ("extensions.filters.network.http_connection_manager.v3.HttpFilter", format!("{HCM}/http_filters/0")),
        ("extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing", format!("{HCM}/tracing")),
        ("type.tracing.v3.CustomTag", format!("{HCM}/tracing/custom_tags/0")),
        ("extensions.filters.network.http_connection_manager.v3.RequestIDExtension", format!("{HCM}/request_id_extension")),
        ("extensions.request_id.uuid.v3.UuidRequestIdConfig", format!("{HCM}/request_id_extension/typed_config")),
        ("config.core.v3.HttpProtocolOptions", format!("{HCM}/common_http_protocol_options")),
        ("config.core.v3.SchemeHeaderTransformation", format!("{HCM}/scheme_header_transformation")),
        ("extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.InternalAddressConfig", format!("{HCM}/internal_address_config")),
        ("extensions.filters.http.fault.v3.HTTPFault", format!("{HCM}/http_filters/0/typed_config")),
        ("extensions.filters.common.fault.v3.FaultDelay", format!("{HCM}/http_filters/0/typed_config/delay")),
        ("extensions.filters.http.fault.v3.FaultAbort", format!("{HCM}/http_filters/0/typed_config/abort")),
        ("extensions.filters.common.fault.v3.FaultRateLimit", format!("{HCM}/http_filters/0/typed_config/response_rate_limit")),
        ("extensions.filters.common.fault.v3.FaultRateLimit.FixedLimit", format!("{HCM}/http_filters/0/typed_config/response_rate_limit/fixed_limit")),
        ("extensions.filters.http.local_ratelimit.v3.LocalRateLimit", format!("{HCM}/http_filters/2/typed_config")),
        ("type.v3.TokenBucket", format!("{HCM}/http_filters/2/typed_config/token_bucket")),
        ("extensions.filters.http.rbac.v3.RBAC", rbac.clone()),
        ("extensions.filters.network.rbac.v3.RBAC", "/static_resources/listeners/0/filter_chains/1/filters/0/typed_config".into()),
        ("extensions.filters.network.ext_authz.v3.ExtAuthz", "/static_resources/listeners/0/filter_chains/1/filters/1/typed_config".into()),
        ("extensions.filters.http.rbac.v3.RBACPerRoute", format!("{vh}/typed_per_filter_config/envoy.filters.http.rbac")),
        ("config.rbac.v3.RBAC", format!("{rbac}/rules")),
        ("extensions.filters.http.ext_authz.v3.ExtAuthz", authz.clone()),
        ("extensions.filters.http.ext_authz.v3.HttpService", format!("{authz}/http_service")),
        ("extensions.filters.http.ext_authz.v3.BufferSettings", format!("{authz}/with_request_body")),
        ("config.core.v3.HttpUri", format!("{authz}/http_service/server_uri")),
        ("config.core.v3.GrpcService", format!("{HCM}/http_filters/5/typed_config/grpc_service")),
        ("config.core.v3.GrpcService.EnvoyGrpc", format!("{HCM}/http_filters/5/typed_config/grpc_service/envoy_grpc")),
        ("extensions.filters.http.ext_authz.v3.AuthorizationRequest", format!("{authz}/http_service/authorization_request")),
        ("extensions.filters.http.ext_authz.v3.AuthorizationResponse", format!("{authz}/http_service/authorization_response")),
        ("type.matcher.v3.ListStringMatcher", format!("{authz}/http_service/authorization_request/allowed_headers")),
        ("type.matcher.v3.MetadataMatcher", format!("{authz}/filter_enabled_metadata")),
        ("type.matcher.v3.MetadataMatcher.PathSegment", format!("{authz}/filter_enabled_metadata/path/0")),
        ("type.matcher.v3.ValueMatcher", format!("{authz}/filter_enabled_metadata/value")),
        ("extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", format!("{vh}/typed_per_filter_config/envoy.filters.http.ext_authz")),
        ("extensions.filters.http.jwt_authn.v3.JwtAuthentication", jwt.clone()),
        ("extensions.filters.http.jwt_authn.v3.JwtProvider", format!("{jwt}/providers/p")),
        ("extensions.filters.http.jwt_authn.v3.JwtHeader", format!("{jwt}/providers/p/from_headers/0")),
        ("extensions.filters.http.jwt_authn.v3.RemoteJwks", format!("{jwt}/providers/r/remote_jwks")),
        ("extensions.filters.http.jwt_authn.v3.JwtClaimToHeader", format!("{jwt}/providers/p/claim_to_headers/0")),
        ("extensions.filters.http.jwt_authn.v3.JwtProvider.NormalizePayload", format!("{jwt}/providers/p/normalize_payload_in_metadata")),
        ("extensions.filters.http.jwt_authn.v3.RequirementRule", format!("{jwt}/rules/0")),
        ("extensions.filters.http.jwt_authn.v3.JwtRequirement", format!("{jwt}/rules/0/requires")),
        ("extensions.filters.http.jwt_authn.v3.ProviderWithAudiences", format!("{jwt}/rules/0/requires/provider_and_audiences")),
        ("extensions.filters.http.jwt_authn.v3.JwtRequirementOrList", format!("{jwt}/rules/1/requires/requires_any")),
        ("extensions.filters.http.jwt_authn.v3.JwtRequirementAndList", format!("{jwt}/rules/2/requires/requires_all")),
        ("extensions.filters.http.jwt_authn.v3.PerRouteConfig", format!("{vh}/typed_per_filter_config/envoy.filters.http.jwt_authn")),
        ("extensions.filters.http.ext_authz.v3.CheckSettings", format!("{vh}/typed_per_filter_config/envoy.filters.http.ext_authz/check_settings")),
        ("config.rbac.v3.Policy", policy.clone()),
        ("config.rbac.v3.Permission", format!("{policy}/permissions/0")),
        ("config.rbac.v3.Permission.Set", format!("{policy}/permissions/1/and_rules")),
        ("type.matcher.v3.PathMatcher", format!("{policy}/permissions/2/url_path")),
        ("type.v3.Int32Range", format!("{policy}/permissions/3/destination_port_range")),
        ("config.core.v3.CidrRange", format!("{policy}/permissions/4/destination_ip")),
        ("config.rbac.v3.Principal", format!("{policy}/principals/0")),
        ("config.rbac.v3.Principal.Set", format!("{policy}/principals/1/or_ids")),
        ("config.rbac.v3.Principal.Authenticated", format!("{policy}/principals/2/authenticated")),
        ("type.matcher.v3.FilterStateMatcher", format!("{policy}/principals/3/filter_state")),
        ("type.matcher.v3.ListMatcher", format!("{policy}/principals/4/metadata/value/list_match")),
        ("type.matcher.v3.OrMatcher", format!("{policy}/principals/5/metadata/value/or_match")),
        ("type.matcher.v3.DoubleMatcher", format!("{policy}/principals/5/metadata/value/or_match/value_matchers/1/double_match")),
        ("extensions.filters.http.cors.v3.CorsPolicy", format!("{vh}/typed_per_filter_config/envoy.filters.http.cors")),
        ("config.route.v3.CorsPolicy", format!("{vh}/cors")),
        ("config.accesslog.v3.AccessLog", format!("{HCM}/access_log/0")),
        ("config.route.v3.RouteConfiguration", rc.clone()),
        ("config.core.v3.HeaderValueOption", format!("{rc}/request_headers_to_add/0")),
        ("config.core.v3.HeaderValue", format!("{rc}/request_headers_to_add/0/header")),
        ("config.route.v3.VirtualHost", vh.clone()),
        ("config.route.v3.RetryPolicy", format!("{vh}/retry_policy")),
        ("config.route.v3.RetryPolicy.RetryBackOff", format!("{vh}/retry_policy/retry_back_off")),
        ("config.route.v3.RetryPolicy.RateLimitedRetryBackOff", format!("{vh}/retry_policy/rate_limited_retry_back_off")),
        ("config.route.v3.RetryPolicy.ResetHeader", format!("{vh}/retry_policy/rate_limited_retry_back_off/reset_headers/0")),
        ("config.route.v3.Route", format!("{ROUTES}/0")),
        ("config.route.v3.FilterConfig", format!("{ROUTES}/0/typed_per_filter_config/envoy.filters.http.fault")),
        ("config.route.v3.Decorator", format!("{ROUTES}/0/decorator")),
        ("config.route.v3.Tracing", format!("{ROUTES}/0/tracing")),
        ("config.route.v3.RouteMatch", format!("{ROUTES}/0/match")),
        ("config.route.v3.HeaderMatcher", format!("{ROUTES}/0/match/headers/0")),
        ("type.matcher.v3.StringMatcher", format!("{ROUTES}/0/match/headers/1/string_match")),
        ("config.route.v3.QueryParameterMatcher", format!("{ROUTES}/0/match/query_parameters/0")),
        ("config.route.v3.CookieMatcher", format!("{ROUTES}/0/match/cookies/0")),
        ("config.route.v3.RouteAction", format!("{ROUTES}/0/route")),
        ("config.route.v3.RouteAction.MaxStreamDuration", format!("{ROUTES}/0/route/max_stream_duration")),
        ("config.route.v3.RouteAction.UpgradeConfig", format!("{ROUTES}/0/route/upgrade_configs/0")),
        ("config.route.v3.RouteAction.RequestMirrorPolicy", format!("{ROUTES}/0/route/request_mirror_policies/0")),
        ("config.common.mutation_rules.v3.HeaderMutation", format!("{ROUTES}/0/route/request_mirror_policies/0/request_headers_mutations/0")),
        ("config.route.v3.InternalRedirectPolicy", format!("{ROUTES}/0/route/internal_redirect_policy")),
        ("config.route.v3.RouteAction.HashPolicy", format!("{ROUTES}/0/route/hash_policy/0")),
        ("config.route.v3.RateLimit", format!("{ROUTES}/0/route/rate_limits/0")),
        ("config.route.v3.HedgePolicy", format!("{ROUTES}/0/route/hedge_policy")),
        ("config.route.v3.RouteAction.HashPolicy.Header", format!("{ROUTES}/0/route/hash_policy/0/header")),
        ("config.route.v3.RouteAction.HashPolicy.Cookie", format!("{ROUTES}/0/route/hash_policy/1/cookie")),
        ("config.route.v3.RouteAction.HashPolicy.CookieAttribute", format!("{ROUTES}/0/route/hash_policy/1/cookie/attributes/0")),
        ("config.route.v3.RouteAction.HashPolicy.ConnectionProperties", format!("{ROUTES}/0/route/hash_policy/2/connection_properties")),
        ("config.route.v3.RouteAction.HashPolicy.QueryParameter", format!("{ROUTES}/0/route/hash_policy/3/query_parameter")),
        ("config.route.v3.WeightedCluster", format!("{ROUTES}/1/route/weighted_clusters")),
        ("config.route.v3.WeightedCluster.ClusterWeight", format!("{ROUTES}/1/route/weighted_clusters/clusters/0")),
        ("config.route.v3.RedirectAction", format!("{ROUTES}/2/redirect")),
        ("config.route.v3.DirectResponseAction", format!("{ROUTES}/3/direct_response")),
        ("config.core.v3.SubstitutionFormatString", format!("{ROUTES}/3/direct_response/body_format")),
        ("config.bootstrap.v3.Bootstrap.StaticResources", "/static_resources".into()),
        ("extensions.transport_sockets.tls.v3.Secret", "/static_resources/secrets/0".into()),
        ("extensions.transport_sockets.tls.v3.TlsCertificate", "/static_resources/secrets/0/tls_certificate".into()),
        ("extensions.transport_sockets.tls.v3.CertificateValidationContext", "/static_resources/secrets/1/validation_context".into()),
        ("config.cluster.v3.Cluster", c.into()),
        ("config.cluster.v3.Cluster.TransportSocketMatch", format!("{c}/transport_socket_matches/0")),
        ("config.core.v3.TransportSocket", format!("{c}/transport_socket")),
        ("extensions.transport_sockets.tls.v3.UpstreamTlsContext", tls.clone()),
        ("extensions.transport_sockets.tls.v3.CommonTlsContext", format!("{tls}/common_tls_context")),
        ("extensions.transport_sockets.tls.v3.TlsParameters", format!("{tls}/common_tls_context/tls_params")),
        ("extensions.transport_sockets.tls.v3.SdsSecretConfig", format!("{tls}/common_tls_context/tls_certificate_sds_secret_configs/0")),
        ("extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext", format!("{tls}/common_tls_context/combined_validation_context")),
        ("extensions.transport_sockets.tls.v3.SubjectAltNameMatcher", format!("{tls}/common_tls_context/combined_validation_context/default_validation_context/match_typed_subject_alt_names/0")),
        ("config.cluster.v3.Cluster.LeastRequestLbConfig", format!("{c}/least_request_lb_config")),
        ("config.cluster.v3.Cluster.SlowStartConfig", format!("{c}/least_request_lb_config/slow_start_config")),
        ("config.cluster.v3.Cluster.RingHashLbConfig", "/static_resources/clusters/1/ring_hash_lb_config".into()),
        ("config.cluster.v3.Cluster.MaglevLbConfig", "/static_resources/clusters/2/maglev_lb_config".into()),
        ("config.cluster.v3.Cluster.OriginalDstLbConfig", "/static_resources/clusters/3/original_dst_lb_config".into()),
        ("config.cluster.v3.Cluster.EdsClusterConfig", "/static_resources/clusters/4/eds_cluster_config".into()),
        ("config.cluster.v3.CircuitBreakers", format!("{c}/circuit_breakers")),
        ("config.cluster.v3.CircuitBreakers.Thresholds", format!("{c}/circuit_breakers/thresholds/0")),
        ("config.cluster.v3.OutlierDetection", format!("{c}/outlier_detection")),
        ("config.core.v3.HealthCheck", format!("{c}/health_checks/0")),
        ("config.core.v3.HealthCheck.HttpHealthCheck", format!("{c}/health_checks/0/http_health_check")),
        ("config.endpoint.v3.ClusterLoadAssignment", la.clone()),
        ("config.endpoint.v3.ClusterLoadAssignment.Policy", format!("{la}/policy")),
        ("config.endpoint.v3.LocalityLbEndpoints", format!("{la}/endpoints/0")),
        ("config.endpoint.v3.LbEndpoint", format!("{la}/endpoints/0/lb_endpoints/0")),
        ("config.endpoint.v3.Endpoint", format!("{la}/endpoints/0/lb_endpoints/0/endpoint")),
        ("config.core.v3.Address", format!("{la}/endpoints/0/lb_endpoints/0/endpoint/address")),
        ("config.core.v3.SocketAddress", format!("{la}/endpoints/0/lb_endpoints/0/endpoint/address/socket_address")),
    ]
}

/// The descriptor of `message` (full name without `envoy.`), if Envoy 1.40 has it.
pub fn descriptor(message: &str) -> Option<MessageDescriptor> {
    sluice_xds::pool::pool().get_message_by_name(&format!("envoy.{message}"))
}

/// The proto names of `message`'s fields, in field-number order.
pub fn proto_fields(message: &MessageDescriptor) -> Vec<String> {
    let mut fields: Vec<FieldDescriptor> = message.fields().collect();
    fields.sort_by_key(FieldDescriptor::number);
    fields.into_iter().map(|f| f.name().to_string()).collect()
}

/// The inventory's fields that Envoy's protos mark `deprecated`.
pub fn deprecated(inv: &Inventory) -> BTreeSet<String> {
    inv.fields
        .iter()
        .filter(|f| {
            descriptor(f.message())
                .and_then(|m| m.get_field_by_name(f.field()))
                .and_then(|d| d.field_descriptor_proto().options.clone())
                .is_some_and(|o| o.deprecated())
        })
        .map(|f| f.name.clone())
        .collect()
}

/// The base bootstrap as a JSON value.
pub fn base() -> Value {
    serde_norway::from_str(BASE).expect("probe BASE is YAML")
}

/// A JSON pointer as the loader's field path (`/a/b/0/c` -> `a.b[0].c`).
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Whether the loader accepts `field` (of the message at `pointer` in [`BASE`]): the config with
/// the field set to a sample value gets no `not supported` / `unknown field` error at its path.
/// Returns the loader's verdict and its error text (if any) for the failure message.
pub fn loader_accepts(pointer: &str, field: &FieldDescriptor) -> (bool, Option<String>) {
    let mut doc = base();
    let at = doc
        .pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("probe site {pointer} is not a mapping in BASE"));
    at.insert(field.name().to_string(), sample(field));
    let text = serde_json::to_string(&doc).expect("JSON");
    let want = format!("{}.{}", field_path(pointer), field.name());
    match sluice_engine::config::from_yaml_str(&text) {
        Ok(_) => (true, None),
        Err(e) => {
            let rejected = e.path() == want
                && (e.message().starts_with("not supported")
                    || e.message().starts_with("unknown field"));
            (!rejected, Some(e.to_string()))
        }
    }
}

/// A plausible value of the field's proto type in Envoy's JSON form.
fn sample(field: &FieldDescriptor) -> Value {
    if let (true, Kind::Message(entry)) = (field.is_map(), field.kind()) {
        return json!({ "k": sample_kind(&entry.map_entry_value_field().kind()) });
    }
    let one = sample_kind(&field.kind());
    if field.is_list() {
        json!([one])
    } else {
        one
    }
}

fn sample_kind(kind: &Kind) -> Value {
    match kind {
        Kind::String => json!("x"),
        Kind::Bytes => json!("eA=="),
        Kind::Bool => json!(true),
        Kind::Double | Kind::Float => json!(1.0),
        Kind::Enum(e) => e
            .get_value(0)
            .map_or(json!(0), |v| json!(v.name().to_string())),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Duration" => json!("1s"),
            "google.protobuf.BoolValue" => json!(true),
            "google.protobuf.StringValue" => json!("x"),
            "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!(1.0),
            n if n.starts_with("google.protobuf.") && n.ends_with("Int32Value") => json!(1),
            n if n.starts_with("google.protobuf.") && n.ends_with("Int64Value") => json!(1),
            _ => json!({}),
        },
        _ => json!(1),
    }
}
