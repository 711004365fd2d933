//! Typed listeners, filter chains, http_connection_manager, tcp_proxy and admin.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use super::{
    chain_match::{self, ChainMatch, ConnFacts},
    hcm_request::{ConnTimeouts, HeadLimits, PathNormalization, ServerHeader, StripPort},
    ClusterRef, ListenerRef,
};
use crate::route::{RouteTable, WeightedClusters};

/// Envoy's default `stream_idle_timeout` of the http_connection_manager (5 minutes).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Envoy's default `idle_timeout` of tcp_proxy (1 hour).
pub const DEFAULT_TCP_PROXY_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default access log format (used for stdout and file access logs; `%...%` are Envoy
/// command operators, one line per request).
pub const ENVOY_DEFAULT_ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% \
%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \
%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// `admin`: the admin interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// `admin.address.socket_address` (an IP address and port).
    pub address: SocketAddr,
    /// `admin.access_log_path` (deprecated in Envoy but common), if set.
    pub access_log_path: Option<PathBuf>,
}

/// `static_resources.listeners[]`.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `name` (unique across listeners).
    pub name: ListenerRef,
    /// `address.socket_address` (`address` must be an IP literal, `protocol` TCP).
    pub address: SocketAddr,
    /// `additional_addresses[].address`: more addresses bound to the same listener (istiod's
    /// dual-stack `::` beside `0.0.0.0`), each distinct from the others and from `address`.
    pub additional_addresses: Vec<SocketAddr>,
    /// `use_original_dst`: hand connections whose original destination (SO_ORIGINAL_DST)
    /// matches another listener to that listener (Envoy's deprecated v2 behaviour for 15001).
    pub use_original_dst: bool,
    /// `bind_to_port` (default true): false for listeners that only receive connections
    /// handed over by a `use_original_dst` listener.
    pub bind_to_port: bool,
    /// `traffic_direction` (`INBOUND`, `OUTBOUND`; None when UNSPECIFIED or absent): Istio's
    /// metrics reporter and the admin's `/drain_listeners?inboundonly`.
    pub traffic_direction: Option<String>,
    /// `listener_filters[]`, in order.
    pub listener_filters: Vec<ListenerFilter>,
    /// `listener_filters[].filter_disabled`, for the filters that have one.
    pub filter_disabled: Vec<(ListenerFilter, super::FilterDisabled)>,
    /// The `envoy.filters.listener.proxy_protocol` filter's config (it runs first).
    pub proxy_protocol: Option<super::ListenerProxyProtocol>,
    /// `filter_chains[]`, in config order, then `default_filter_chain` if set; see
    /// [`Listener::select_chain`].
    pub filter_chains: Vec<FilterChain>,
    /// `access_log[]`: one line per connection when it closes (also one no filter chain
    /// takes: flag `NR`).
    pub access_log: Vec<AccessLog>,
    /// `max_connections_to_accept_per_socket_event` (unset: no bound): the accept loop yields
    /// to the other tasks of its thread after this many connections in a row, as Envoy's
    /// listener returns to its event loop.
    pub max_accepts_per_event: Option<u32>,
}

impl Listener {
    /// `address`, then the `additional_addresses`.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.address).chain(self.additional_addresses.iter().copied())
    }

    /// Envoy's filter chain choice for a connection with `facts` ([`chain_match::select`]
    /// over the chains' `filter_chain_match`, then `default_filter_chain`); `None` means Envoy
    /// closes the connection.
    pub fn select_chain(&self, facts: &ConnFacts<'_>) -> Option<usize> {
        let matched = self.filter_chains.iter().filter(|c| !c.is_default);
        chain_match::select(matched.map(|c| &c.matcher), facts)
            .or_else(|| self.filter_chains.iter().position(|c| c.is_default))
    }

    /// The chain a connection gets, as the data path chooses it: [`Self::select_chain`], then,
    /// when the protocol was detected (`http`: `Some(is_http)`) on a listener whose chains do
    /// not match on the protocol themselves (no `server_names`, `transport_protocol` or
    /// `application_protocols`), the first chain of that kind admitting the connection.
    /// Returns the chain index and whether it is of the detected kind (`false`: none is; the
    /// caller may pass the connection through).
    pub fn choose_chain(&self, facts: &ConnFacts<'_>, http: Option<bool>) -> Option<(usize, bool)> {
        let idx = self.select_chain(facts)?;
        let Some(want_http) = http else {
            return Some((idx, true));
        };
        if self.matches_protocol() {
            return Some((idx, true));
        }
        let is_http = |c: &FilterChain| matches!(c.filter, NetworkFilter::Http(_));
        if is_http(&self.filter_chains[idx]) == want_http {
            return Some((idx, true));
        }
        match self.filter_chains.iter().position(|c| {
            is_http(c) == want_http && (c.is_default || chain_match::admits(&c.matcher, facts))
        }) {
            Some(i) => Some((i, true)),
            None => Some((idx, false)),
        }
    }

    /// Whether some chain matches on what the inspectors detect (server name, transport or
    /// application protocol): the choice is then Envoy's alone.
    pub fn matches_protocol(&self) -> bool {
        self.filter_chains.iter().any(|c| {
            let m = &c.matcher;
            !m.server_names.is_empty()
                || m.transport_protocol.is_some()
                || !m.application_protocols.is_empty()
        })
    }

    /// Whether protocol detection runs before the chain choice (captured listeners and
    /// listeners with listener filters).
    pub fn detects_protocol(&self) -> bool {
        self.use_original_dst
            || self
                .listener_filters
                .iter()
                .any(|f| *f != ListenerFilter::ProxyProtocol)
    }

    /// Whether the `envoy.filters.listener.original_dst` listener filter is configured.
    pub fn has_original_dst_filter(&self) -> bool {
        self.listener_filters.contains(&ListenerFilter::OriginalDst)
    }

    /// Whether the listener filter `f` is configured.
    pub fn has_filter(&self, f: ListenerFilter) -> bool {
        self.listener_filters.contains(&f)
    }

    /// Whether the listener filter `f` runs on a connection to `port` (configured, and its
    /// `filter_disabled` does not hold).
    pub fn runs_filter(&self, f: ListenerFilter, port: u16) -> bool {
        self.has_filter(f)
            && !self
                .filter_disabled
                .iter()
                .any(|(g, p)| *g == f && p.holds(port))
    }
}

/// `listener_filters[].name` (typed_config, if present, must be the matching empty message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerFilter {
    /// `envoy.filters.listener.original_dst`: the connection's destination is its
    /// SO_ORIGINAL_DST.
    OriginalDst,
    /// `envoy.filters.listener.http_inspector`: sniff HTTP/1 vs HTTP/2 on plaintext.
    HttpInspector,
    /// `envoy.filters.listener.tls_inspector`: sniff TLS SNI/ALPN.
    TlsInspector,
    /// `envoy.filters.listener.proxy_protocol`: read (and consume) a PROXY header, the
    /// connection's addresses becoming the ones it states ([`Listener::proxy_protocol`]).
    ProxyProtocol,
}

/// `filter_chains[]` (or the listener's `default_filter_chain`): one match and exactly one
/// terminal network filter (after Istio's telemetry-only filters, which are no-ops).
#[derive(Debug, Clone)]
pub struct FilterChain {
    /// `name`, if set.
    pub name: Option<String>,
    /// `filter_chain_match` (empty: matches any connection).
    pub matcher: ChainMatch,
    /// The listener's `default_filter_chain` (kept last in `filter_chains`): taken when no
    /// chain matches; its own `filter_chain_match` is ignored.
    pub is_default: bool,
    /// Index of the terminal filter in `filters[]`.
    pub terminal_index: usize,
    /// The terminal network filter.
    pub filter: NetworkFilter,
    /// The network RBAC filters before it, in order.
    pub rbac: Vec<Arc<crate::rbac::network::NetworkRbac>>,
    /// The network ext_authz filters before it, in order.
    pub ext_authz: Vec<Arc<crate::network_ext_authz::NetworkExtAuthz>>,
    /// `transport_socket` `envoy.transport_sockets.tls`: TLS termination (None: plaintext).
    pub tls: Option<Arc<crate::downstream_tls::DownstreamTls>>,
}

/// A terminal network filter.
#[derive(Debug, Clone)]
pub enum NetworkFilter {
    /// `envoy.filters.network.http_connection_manager`.
    Http(Arc<HttpConnectionManager>),
    /// `envoy.filters.network.tcp_proxy`.
    Tcp(Arc<TcpProxy>),
}

/// `forward_client_cert_details` with `set_current_client_cert_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Xfcc {
    /// The mode.
    pub mode: ForwardClientCert,
    /// `set_current_client_cert_details.cert`.
    pub cert: bool,
    /// `set_current_client_cert_details.chain`.
    pub chain: bool,
    /// `set_current_client_cert_details.subject`.
    pub subject: bool,
    /// `set_current_client_cert_details.uri`.
    pub uri: bool,
    /// `set_current_client_cert_details.dns`.
    pub dns: bool,
}

/// `forward_client_cert_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    /// `SANITIZE` (default): the header is removed.
    #[default]
    Sanitize,
    /// `FORWARD_ONLY`: kept on a mutual TLS connection, removed otherwise.
    ForwardOnly,
    /// `APPEND_FORWARD`: this hop's details appended on a mutual TLS connection.
    AppendForward,
    /// `SANITIZE_SET`: replaced by this hop's details on a mutual TLS connection.
    SanitizeSet,
    /// `ALWAYS_FORWARD_ONLY`: kept as the client sent it, always.
    AlwaysForwardOnly,
}

/// `envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`.
#[derive(Debug, Clone)]
pub struct HttpConnectionManager {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// The listener's `per_connection_buffer_limit_bytes` (Envoy's default 1 MiB; `0`: `None`,
    /// no limit): how much of a streamed request body is kept for a retry or redirect when the
    /// route sets no `request_body_buffer_limit` (`http/forward/retained_body.rs`).
    pub buffer_limit: Option<u64>,
    /// `codec_type` (default AUTO).
    pub codec_type: CodecType,
    /// `route_config`, compiled.
    pub route_table: Arc<RouteTable>,
    /// `http_filters` before the router (empty: the router alone).
    pub http_filters: Arc<crate::http::filters::HttpFilters>,
    /// `stream_idle_timeout` (default [`DEFAULT_STREAM_IDLE_TIMEOUT`]); `None` = disabled (`0s`).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout` (default disabled); `None` = disabled.
    pub request_timeout: Option<Duration>,
    /// `request_headers_timeout`: from the first byte of an HTTP/1 request head to its end,
    /// else 408 and the connection closes (`http::head_timer`); `None` (unset or `0s`): the
    /// hardening default [`crate::http::DEFAULT_HEADER_READ_TIMEOUT`] applies instead.
    pub request_headers_timeout: Option<Duration>,
    /// `scheme_header_transformation.scheme_to_overwrite`: the request's `:scheme` and
    /// `x-forwarded-proto` whatever the connection.
    pub scheme_to_overwrite: Option<&'static str>,
    /// `scheme_header_transformation.match_upstream`: `:scheme` follows the upstream's transport
    /// once the request goes upstream (what response header formats read).
    pub scheme_match_upstream: bool,
    /// `access_log[]`, each with Envoy's default format.
    pub access_log: Vec<AccessLog>,
    /// `add_proxy_protocol_connection_state` (default true): an `upstream_proxy_protocol`
    /// transport socket states the connection's addresses; false: as a connection without a
    /// downstream (v1: the upstream connection's own, v2: LOCAL).
    pub proxy_protocol_state: bool,
    /// `use_remote_address` (default false): append the peer to `x-forwarded-for`, set
    /// `x-forwarded-proto` from the connection and `x-envoy-external-address`.
    pub use_remote_address: bool,
    /// `internal_address_config`: the final remote addresses whose requests are internal (kept
    /// router-control and internal-only headers, `x-envoy-internal: true`); None: no request is.
    pub internal_addresses: Option<super::InternalAddresses>,
    /// `xff_num_trusted_hops` (default 0): with `use_remote_address`, the client address is the
    /// `x-forwarded-for` entry this many hops from the right (before the append).
    pub xff_num_trusted_hops: u32,
    /// `skip_xff_append`: with `use_remote_address`, the peer is not appended to
    /// `x-forwarded-for` (it is still the remote address).
    pub skip_xff_append: bool,
    /// `via` (non-empty): appended to the `via` header of every request and response.
    pub via: Option<http::HeaderValue>,
    /// `preserve_external_request_id` (default false): with `use_remote_address`, keep an
    /// external request's `x-request-id` instead of generating a new one.
    pub preserve_external_request_id: bool,
    /// `forward_client_cert_details` and `set_current_client_cert_details`: what happens to
    /// `x-forwarded-client-cert` (`http/xfcc.rs`).
    pub xfcc: Xfcc,
    /// `add_user_agent` (default false): the node's identity in
    /// `x-envoy-downstream-service-cluster` / `-node` and a missing `user-agent`
    /// (`config/user_agent.rs`).
    pub user_agent: Option<super::user_agent::UserAgent>,
    /// `local_reply_config`: how local replies are rewritten (`http/local_reply_map.rs`).
    pub local_reply: Option<Arc<super::LocalReplyConfig>>,
    /// `http_protocol_options.accept_http_10` (default false): HTTP/1.0 requests are served
    /// instead of refused with 426; one without Host then takes `default_host_for_http_10`
    /// (else 400).
    pub http10: Option<Http10>,
    /// `http_protocol_options.header_key_format`: the case of the response header names
    /// written to an HTTP/1 client (proper case), or the request's kept for the upstream
    /// (`preserve_case`).
    pub header_key_format: super::HeaderKeyFormat,
    /// `strip_trailing_host_dot` (default false): `a.example.` routes and goes upstream as
    /// `a.example` (before the port stripping).
    pub strip_trailing_host_dot: bool,
    /// `append_x_forwarded_port` (default false): `x-forwarded-port` from the listener's port.
    pub append_x_forwarded_port: bool,
    /// `http2_protocol_options`: the downstream HTTP/2 SETTINGS and flood limits.
    pub http2: super::Http2Options,
    /// `proxy_100_continue` (default false): forward `Expect: 100-continue` instead of
    /// answering `100 Continue` at once and removing it (`http/expect_continue.rs`).
    pub proxy_100_continue: bool,
    /// `upgrade_configs[]`: the `Upgrade` types forwarded as tunnels (others are refused 403).
    pub upgrade_configs: Vec<UpgradeConfig>,
    /// `strip_matching_host_port` / `strip_any_host_port`.
    pub strip_port: StripPort,
    /// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`.
    pub path_normalization: PathNormalization,
    /// `server_name`, `server_header_transformation`.
    pub server_header: ServerHeader,
    /// `max_request_headers_kb`, `common_http_protocol_options.max_headers_count` and
    /// `.headers_with_underscores_action`.
    pub head_limits: HeadLimits,
    /// `generate_request_id` (default true): add an `x-request-id` when absent (and replace an
    /// external one under `use_remote_address`); false: never.
    pub generate_request_id: bool,
    /// `always_set_request_id_in_response` (default false): copy the request's `x-request-id`
    /// into every response.
    pub always_set_request_id_in_response: bool,
    /// `common_http_protocol_options.max_stream_duration` (`None`: unset or `0s`): a stream
    /// whose response has not started by then gets 504 `downstream duration timeout`; a
    /// response body still streaming then is reset.
    pub max_stream_duration: Option<Duration>,
    /// `common_http_protocol_options.idle_timeout` / `.max_connection_duration`.
    pub conn_timeouts: ConnTimeouts,
    /// `tracing` (None: unset): the trace decision packed into `x-request-id` and the route
    /// decorators' `x-envoy-decorator-operation` (http/trace.rs); with a provider (its own or
    /// the bootstrap's), spans (http/spans.rs).
    pub tracing: Option<super::Tracing>,
    /// `request_id_extension` (the UUID extension and its options).
    pub request_id: super::RequestIdExtension,
}

impl HttpConnectionManager {
    /// A request's `:scheme` on a connection with (`tls`) or without TLS:
    /// `scheme_to_overwrite` when set.
    pub fn request_scheme(&self, tls: bool) -> &'static str {
        self.scheme_to_overwrite
            .unwrap_or(if tls { "https" } else { "http" })
    }
}

/// `http_protocol_options` with `accept_http_10: true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http10 {
    /// `default_host_for_http_10`: the Host of an HTTP/1.0 request that has none.
    pub default_host: Option<http::HeaderValue>,
}

/// One `upgrade_configs[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpgradeConfig {
    /// `upgrade_type`, lower-cased (matched case-insensitively against `Upgrade`).
    pub upgrade_type: String,
    /// `enabled` (default true).
    pub enabled: bool,
}

/// `codec_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CodecType {
    /// `AUTO`: HTTP/2 if the connection starts with the h2 preface (or ALPN h2), else HTTP/1.1.
    #[default]
    Auto,
    /// `HTTP1`.
    Http1,
    /// `HTTP2` (prior knowledge on plaintext).
    Http2,
}

/// `access_log[]`.
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// Where lines go (`typed_config`).
    pub sink: LogSink,
    /// `filter`: which requests are logged (all without one).
    pub filter: Option<super::AccessLogFilter>,
    /// The logger's `log_format`; `None`: Envoy's default format
    /// ([`ENVOY_DEFAULT_ACCESS_LOG_FORMAT`]).
    pub format: Option<Arc<crate::route::body_format::BodyFormat>>,
}

/// An access log's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    /// `envoy.access_loggers.stdout`.
    Stdout,
    /// `envoy.access_loggers.file` with `path`.
    File {
        /// `path` of the log file (appended to).
        path: PathBuf,
    },
}

/// `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`.
#[derive(Debug, Clone)]
pub struct TcpProxy {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// `cluster` or `weighted_clusters`.
    pub cluster: TcpProxyCluster,
    /// `idle_timeout` (default [`DEFAULT_TCP_PROXY_IDLE_TIMEOUT`]); `None` = disabled (`0s`).
    pub idle_timeout: Option<Duration>,
    /// `max_connect_attempts` (default 1, at least 1): connects tried, each to a host picked
    /// anew, before the connection is given up (`UF,URX`).
    pub max_connect_attempts: u32,
    /// `max_downstream_connection_duration` (at least 1 ms, as Envoy validates): the
    /// connection is closed that long after it reached the filter, flag `DT`; `None`: no limit.
    pub max_downstream_connection_duration: Option<Duration>,
    /// `access_log[]`: one line per connection, when it closes.
    pub access_log: Vec<AccessLog>,
    /// `hash_policy: [{source_ip: {}}]`: a hashing balancer (RING_HASH, MAGLEV) picks by the
    /// client's address; without it by a random value, as Envoy.
    pub hash_source_ip: bool,
    /// `tunneling_config`: the bytes go inside an HTTP CONNECT to the upstream.
    pub tunneling: Option<super::Tunneling>,
}

/// The upstream cluster of a tcp_proxy.
#[derive(Debug, Clone)]
pub enum TcpProxyCluster {
    /// `cluster`.
    Single(ClusterRef),
    /// `weighted_clusters.clusters[]` (name, weight).
    Weighted(WeightedClusters),
}

impl TcpProxyCluster {
    /// The cluster for a connection given `random` (any u64; reduced modulo the total weight
    /// exactly as Envoy does).
    pub fn pick(&self, random: u64) -> &ClusterRef {
        match self {
            TcpProxyCluster::Single(c) => c,
            TcpProxyCluster::Weighted(w) => &w.pick(random).name,
        }
    }
}
