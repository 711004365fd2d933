//! Raw bootstrap -> typed [`Bootstrap`]: listeners, filter chains, network filters (with the
//! `@type` dispatch of `typed_config`), admin; clusters are in `validate_cluster`.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use serde_norway::Value;

use super::{
    istio_filters::{is_telemetry_noop, Place},
    path::FieldPath,
    raw::{
        type_url, typed_config, Empty, RawAccessLog, RawAddress, RawBootstrap, RawFileAccessLog,
        RawFilterChain, RawHcm, RawListener, RawNetworkFilter, RawSocketAddress,
        RawStdoutAccessLog, RawTcpProxy,
    },
    validate_chain, validate_cluster, AccessLog, Admin, Bootstrap, CodecType, ConfigError,
    FilterChain, HttpConnectionManager, Listener, ListenerFilter, ListenerRef, LogSink,
    NetworkFilter, Node, TcpProxy, TcpProxyCluster, DEFAULT_STREAM_IDLE_TIMEOUT,
    DEFAULT_TCP_PROXY_IDLE_TIMEOUT,
};
use crate::rbac::network as network_rbac;
use crate::route::body_format::{BodyFormat, RawBodyFormat};
use crate::route::{build_route_table, build_weighted, WeightedInput};

/// Type URL of the http_connection_manager typed_config.
pub(crate) const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// Type URL of the tcp_proxy typed_config.
pub(crate) const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const STDOUT_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const FILE_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
const ORIGINAL_DST_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
const HTTP_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
const TLS_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// Validates the whole bootstrap.
pub(crate) fn bootstrap(raw: RawBootstrap) -> Result<Bootstrap, ConfigError> {
    let root = FieldPath::root();
    let node = raw.node.map(|n| Node {
        id: n.id.unwrap_or_default(),
        cluster: n.cluster.unwrap_or_default(),
        metadata: n.metadata,
    });
    let admin = match raw.admin {
        None => None,
        Some(a) => {
            let p = root.field("admin");
            let address = match &a.address {
                Some(addr) => ip_socket_address(addr, &p.field("address"))?,
                None => return Err(p.field("address").err("required")),
            };
            Some(Admin {
                address,
                access_log_path: a.access_log_path.map(PathBuf::from),
            })
        }
    };
    let tracer = raw
        .tracing
        .map(|t| super::tracing::bootstrap_tracer(t, &root.field("tracing")))
        .transpose()?
        .flatten();
    let tracer = tracer.as_ref();
    let sr = root.field("static_resources");
    let mut statics = raw.static_resources;
    let dynamic_resources = match raw.dynamic_resources {
        Some(d) => Some(super::dynamic::dynamic_resources(
            d,
            &mut statics,
            &root.field("dynamic_resources"),
        )?),
        None => None,
    };
    let (raw_listeners, raw_clusters, raw_secrets) = match statics {
        Some(s) => (s.listeners, s.clusters, s.secrets),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let secrets = super::secrets::Secrets::build(raw_secrets, &sr.field("secrets"))?;

    let mut clusters = Vec::with_capacity(raw_clusters.len());
    let mut cluster_names = HashSet::new();
    for (i, c) in raw_clusters.into_iter().enumerate() {
        let p = sr.field("clusters").index(i);
        let cluster = validate_cluster::cluster(c, &p, &secrets)?;
        if !cluster_names.insert(cluster.name.as_str().to_string()) {
            return Err(p.field("name").err(format!(
                "duplicate cluster name {:?}",
                cluster.name.as_str()
            )));
        }
        clusters.push(Arc::new(cluster));
    }

    let mut listeners: Vec<Listener> = Vec::with_capacity(raw_listeners.len());
    for (i, l) in raw_listeners.into_iter().enumerate() {
        let p = sr.field("listeners").index(i);
        let listener = listener(l, &p, &cluster_names, &secrets, tracer)?;
        if listeners.iter().any(|o| o.name == listener.name) {
            return Err(p.field("name").err(format!(
                "duplicate listener name {:?}",
                listener.name.as_str()
            )));
        }
        if listener.bind_to_port {
            for (k, addr) in listener.addresses().enumerate() {
                let Some(o) = listeners
                    .iter()
                    .find(|o| o.bind_to_port && o.addresses().any(|a| a == addr))
                else {
                    continue;
                };
                let at = match k {
                    0 => p.field("address"),
                    k => p
                        .field("additional_addresses")
                        .index(k - 1)
                        .field("address"),
                };
                return Err(at.err(format!(
                    "address {addr} is already used by listener {:?}",
                    o.name.as_str()
                )));
            }
        }
        listeners.push(listener);
    }
    super::user_agent::fill(&mut listeners, node.as_ref(), &root)?;
    // Envoy refuses a bootstrap that serves nothing; on reload such a file (empty, or caught
    // half-written) would otherwise remove every listener. Listeners may come over LDS.
    if listeners.is_empty() && !dynamic_resources.as_ref().is_some_and(|d| d.lds) {
        return Err(sr
            .field("listeners")
            .err("at least one listener is required (the config is empty or has no listeners)"));
    }
    Ok(Bootstrap {
        node,
        admin,
        listeners,
        clusters,
        dynamic_resources,
    })
}

/// `address.socket_address` that must be an IP literal and a TCP port.
pub(crate) fn ip_socket_address(
    addr: &RawAddress,
    p: &FieldPath,
) -> Result<SocketAddr, ConfigError> {
    let (host, port) = socket_address(addr, p)?;
    let ip: IpAddr = host.parse().map_err(|_| {
        p.field("socket_address")
            .field("address")
            .err(format!("{host:?} is not an IP address"))
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// `address.socket_address` -> (address, port), checking protocol TCP.
pub(crate) fn socket_address<'a>(
    addr: &'a RawAddress,
    p: &FieldPath,
) -> Result<(&'a str, u16), ConfigError> {
    if addr.pipe.is_some() {
        return Err(p
            .field("pipe")
            .unsupported("unix socket addresses are supported for the ADS cluster only"));
    }
    let sp = p.field("socket_address");
    let sa = addr
        .socket_address
        .as_ref()
        .ok_or_else(|| sp.err("required"))?;
    socket_address_fields(sa, &sp)
}

/// A `SocketAddress`'s TCP protocol, non-empty address and port (at `sp`).
pub(crate) fn socket_address_fields<'a>(
    sa: &'a RawSocketAddress,
    sp: &FieldPath,
) -> Result<(&'a str, u16), ConfigError> {
    if let Some(proto) = &sa.protocol {
        if proto != "TCP" {
            return Err(sp
                .field("protocol")
                .unsupported(&format!("{proto}; only TCP")));
        }
    }
    let host = sa
        .address
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| sp.field("address").err("required"))?;
    let port = sa
        .port_value
        .ok_or_else(|| sp.field("port_value").err("required"))?;
    let port = u16::try_from(port).map_err(|_| {
        sp.field("port_value")
            .err(format!("{port} is not a valid port"))
    })?;
    Ok((host, port))
}

fn listener(
    raw: RawListener,
    p: &FieldPath,
    clusters: &HashSet<String>,
    secrets: &super::secrets::Secrets,
    tracer: Option<&super::tracing::BootstrapTracer>,
) -> Result<Listener, ConfigError> {
    let name = raw
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| p.field("name").err("required"))?;
    let address = match &raw.address {
        Some(a) => ip_socket_address(a, &p.field("address"))?,
        None => return Err(p.field("address").err("required")),
    };
    // Envoy's exact balance spreads a listener's connections evenly over its worker threads,
    // each with its own accept queue. Here no worker owns an accept queue: a connection becomes
    // a task of a work-stealing runtime (the proxy, the sidecar), or goes to the node agent's
    // workers round robin within its pod's placement, so it is balanced without asking.
    if let Some(b) = &raw.connection_balance_config {
        let bp = p.field("connection_balance_config");
        if b.extend_balance.is_some() {
            return Err(bp
                .field("extend_balance")
                .unsupported("balancer extensions are not implemented"));
        }
        if b.exact_balance.is_none() {
            return Err(bp.err("exact_balance is required"));
        }
    }
    let mut additional_addresses = Vec::with_capacity(raw.additional_addresses.len());
    for (i, a) in raw.additional_addresses.iter().enumerate() {
        let ap = p.field("additional_addresses").index(i);
        if a.socket_options.is_some() {
            return Err(ap
                .field("socket_options")
                .unsupported("no socket options are set on listener sockets here"));
        }
        let addr = match &a.address {
            Some(x) => ip_socket_address(x, &ap.field("address"))?,
            None => return Err(ap.field("address").err("required")),
        };
        // Envoy refuses a listener with the same address twice.
        if addr == address || additional_addresses.contains(&addr) {
            return Err(ap
                .field("address")
                .err(format!("{addr} is already an address of this listener")));
        }
        additional_addresses.push(addr);
    }
    if let Some(td) = &raw.traffic_direction {
        if !matches!(td.as_str(), "UNSPECIFIED" | "INBOUND" | "OUTBOUND") {
            return Err(p
                .field("traffic_direction")
                .err(format!("unknown value {td:?}")));
        }
    }
    let (mut listener_filters, mut filter_disabled) = (Vec::new(), Vec::new());
    let mut proxy_protocol = None;
    for (i, f) in raw.listener_filters.iter().enumerate() {
        let fp = p.field("listener_filters").index(i);
        let name = f.name.as_deref().unwrap_or("");
        let (kind, ty) = match name {
            "envoy.filters.listener.original_dst" if proxy_protocol.is_some() => {
                return Err(fp.field("name").unsupported(
                    "envoy.filters.listener.original_dst with envoy.filters.listener.proxy_protocol (which destination wins is not implemented)",
                ));
            }
            "envoy.filters.listener.original_dst" => {
                (ListenerFilter::OriginalDst, ORIGINAL_DST_TYPE)
            }
            "envoy.filters.listener.http_inspector" => {
                (ListenerFilter::HttpInspector, HTTP_INSPECTOR_TYPE)
            }
            "envoy.filters.listener.tls_inspector" => {
                (ListenerFilter::TlsInspector, TLS_INSPECTOR_TYPE)
            }
            "envoy.filters.listener.proxy_protocol" => {
                // It consumes the header the other filters would otherwise read as the
                // client's first bytes: it must come first (Istio's gateways put it there).
                if !listener_filters.is_empty() {
                    return Err(fp.field("name").unsupported(
                        "envoy.filters.listener.proxy_protocol after another listener filter (it must come first)",
                    ));
                }
                if f.filter_disabled.is_some() {
                    return Err(fp
                        .field("filter_disabled")
                        .unsupported("on envoy.filters.listener.proxy_protocol"));
                }
                if raw.use_original_dst == Some(true) {
                    return Err(p.field("use_original_dst").unsupported(
                        "true with envoy.filters.listener.proxy_protocol (the hand-off by the stated destination is not implemented)",
                    ));
                }
                let timeout = match raw.listener_filters_timeout {
                    None => Some(super::DEFAULT_LISTENER_FILTERS_TIMEOUT),
                    Some(t) if t.0.is_zero() => None,
                    Some(t) => Some(t.0),
                };
                proxy_protocol = Some(super::proxy_protocol::listener_filter(
                    f.typed_config.as_ref(),
                    &fp.field("typed_config"),
                    timeout,
                    raw.continue_on_listener_filters_timeout.unwrap_or(false),
                )?);
                listener_filters.push(ListenerFilter::ProxyProtocol);
                continue;
            }
            "" => return Err(fp.field("name").err("required")),
            other => {
                return Err(fp
                    .field("name")
                    .unsupported(&format!("listener filter {other:?}")))
            }
        };
        if let Some(tc) = &f.typed_config {
            let tp = fp.field("typed_config");
            if kind == ListenerFilter::TlsInspector {
                tls_inspector(&typed_config(tc, &tp, ty)?, &tp)?;
            } else {
                let _: Empty = typed_config(tc, &tp, ty)?;
            }
        }
        if let Some(d) = &f.filter_disabled {
            let pred = super::filter_disabled::parse(d, &fp.field("filter_disabled"))?;
            filter_disabled.push((kind, pred));
        }
        listener_filters.push(kind);
    }
    if raw.filter_chains.is_empty() && raw.default_filter_chain.is_none() {
        return Err(p
            .field("filter_chains")
            .err("at least one filter chain is required"));
    }
    // Envoy's tracing operation: egress for OUTBOUND, ingress otherwise.
    let ctx = HcmContext {
        egress: raw.traffic_direction.as_deref() == Some("OUTBOUND"),
        tracer,
        buffer_limit: match raw.per_connection_buffer_limit_bytes {
            None => Some(DEFAULT_BUFFER_LIMIT),
            Some(0) => None,
            Some(n) => Some(u64::from(n)),
        },
    };
    let mut filter_chains: Vec<FilterChain> = Vec::new();
    for (i, fc) in raw.filter_chains.into_iter().enumerate() {
        filter_chains.push(filter_chain(
            fc,
            &p.field("filter_chains").index(i),
            clusters,
            secrets,
            ctx,
        )?);
    }
    let paths: Vec<_> = filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| (&c.matcher, p.field("filter_chains").index(i)))
        .collect();
    validate_chain::check_overlaps(&paths)?;
    if let Some(fc) = raw.default_filter_chain {
        let dp = p.field("default_filter_chain");
        let mut chain = filter_chain(fc, &dp, clusters, secrets, ctx)?;
        chain.is_default = true;
        filter_chains.push(chain);
    }
    let access_log = access_logs(&raw.access_log, p)?;
    if raw.max_connections_to_accept_per_socket_event == Some(0) {
        return Err(p
            .field("max_connections_to_accept_per_socket_event")
            .err("must be greater than 0"));
    }
    Ok(Listener {
        access_log,
        max_accepts_per_event: raw.max_connections_to_accept_per_socket_event,
        name: ListenerRef::new(&name),
        address,
        additional_addresses,
        use_original_dst: raw.use_original_dst.unwrap_or(false),
        bind_to_port: raw.bind_to_port.unwrap_or(true),
        traffic_direction: raw.traffic_direction.filter(|t| t != "UNSPECIFIED"),
        listener_filters,
        filter_disabled,
        proxy_protocol,
        filter_chains,
    })
}

/// The tls_inspector's options: `initial_read_buffer_size` within Envoy's bounds (256 to
/// 65536) and a no-op (the ClientHello is peeked whole, up to [`crate::detect::PEEK_MAX`]);
/// JA3/JA4 fingerprints are not computed.
fn tls_inspector(t: &super::raw::RawTlsInspector, p: &FieldPath) -> Result<(), ConfigError> {
    if let Some(n) = t.initial_read_buffer_size {
        if !(256..=65536).contains(&n) {
            return Err(p
                .field("initial_read_buffer_size")
                .err(format!("{n} is out of range (256 to 65536)")));
        }
    }
    for (field, on) in [
        ("enable_ja3_fingerprinting", t.enable_ja3_fingerprinting),
        ("enable_ja4_fingerprinting", t.enable_ja4_fingerprinting),
    ] {
        if on == Some(true) {
            return Err(p
                .field(field)
                .unsupported("TLS fingerprints (true; false accepted)"));
        }
    }
    if t.close_connection_on_client_hello_parsing_errors == Some(true) {
        return Err(p
            .field("close_connection_on_client_hello_parsing_errors")
            .unsupported("true: a ClientHello that does not parse is served as opaque TCP"));
    }
    Ok(())
}

fn filter_chain(
    raw: RawFilterChain,
    p: &FieldPath,
    clusters: &HashSet<String>,
    secrets: &super::secrets::Secrets,
    ctx: HcmContext<'_>,
) -> Result<FilterChain, ConfigError> {
    let matcher =
        validate_chain::chain_match(raw.filter_chain_match, &p.field("filter_chain_match"))?;
    // `transport_socket_connect_timeout` (Envoy: absent or 0 is no bound; sluice keeps its
    // own 10 s then) bounds the TLS handshake; a plaintext chain has nothing to negotiate.
    let handshake_timeout = raw
        .transport_socket_connect_timeout
        .map(|d| d.0)
        .filter(|d| !d.is_zero());
    let tls = match &raw.transport_socket {
        Some(ts) => validate_chain::transport_socket(
            ts,
            &p.field("transport_socket"),
            secrets,
            handshake_timeout,
        )?,
        None => None,
    };
    let fp = p.field("filters");
    // Istio's telemetry-only filters before the terminal one are no-ops; network RBAC filters
    // before it check the connection.
    let mut rbac = Vec::new();
    let mut ext_authz = Vec::new();
    let mut terminal = None;
    for (i, f) in raw.filters.into_iter().enumerate() {
        if terminal.is_some() {
            return Err(fp.index(i).unsupported(
                "only one terminal network filter per chain (http_connection_manager or \
                 tcp_proxy), after Istio's telemetry filters and network RBAC filters",
            ));
        }
        if is_telemetry_noop(Place::Network, f.name.as_deref(), f.typed_config.as_ref()) {
            continue;
        }
        let tp = fp.index(i).field("typed_config");
        let ty = f.typed_config.as_ref().and_then(type_url);
        if ty == Some(network_rbac::TYPE)
            || (ty.is_none() && f.name.as_deref() == Some("envoy.filters.network.rbac"))
        {
            let tc = f.typed_config.as_ref().ok_or_else(|| tp.err("required"))?;
            let raw = typed_config(tc, &tp, network_rbac::TYPE)?;
            rbac.push(Arc::new(network_rbac::build(raw, &tp)?));
            continue;
        }
        if ty == Some(super::mongo_proxy::TYPE) {
            let tc = f.typed_config.as_ref().ok_or_else(|| tp.err("required"))?;
            super::mongo_proxy::check(tc, &tp)?;
            continue;
        }
        if ty == Some(crate::network_ext_authz::TYPE) {
            let tc = f.typed_config.as_ref().ok_or_else(|| tp.err("required"))?;
            let raw = typed_config(tc, &tp, crate::network_ext_authz::TYPE)?;
            ext_authz.push(Arc::new(crate::network_ext_authz::build(
                raw,
                &tp,
                rbac.len(),
            )?));
            continue;
        }
        terminal = Some((i, network_filter(f, &fp.index(i), clusters, ctx)?));
    }
    let (terminal_index, filter) =
        terminal.ok_or_else(|| fp.err("exactly one terminal network filter is required"))?;
    Ok(FilterChain {
        name: raw.name,
        matcher,
        is_default: false,
        terminal_index,
        filter,
        rbac,
        ext_authz,
        tls,
    })
}

fn network_filter(
    raw: RawNetworkFilter,
    p: &FieldPath,
    clusters: &HashSet<String>,
    ctx: HcmContext<'_>,
) -> Result<NetworkFilter, ConfigError> {
    let name = raw.name.as_deref().unwrap_or("");
    let tp = p.field("typed_config");
    let tc = raw.typed_config.as_ref();
    // Envoy picks the factory by the typed_config type URL, or by name without one.
    let kind = match tc.and_then(type_url) {
        Some(HCM_TYPE) => "hcm",
        Some(TCP_PROXY_TYPE) => "tcp",
        Some(other) => {
            return Err(tp
                .field("@type")
                .unsupported(&format!("network filter type {other:?}")))
        }
        None => match name {
            "envoy.filters.network.http_connection_manager" => "hcm",
            "envoy.filters.network.tcp_proxy" => "tcp",
            "" => return Err(p.field("name").err("required")),
            other => {
                return Err(p
                    .field("name")
                    .unsupported(&format!("network filter {other:?}")))
            }
        },
    };
    let tc = tc.ok_or_else(|| tp.err("required"))?;
    match kind {
        "hcm" => {
            let raw: RawHcm = typed_config(tc, &tp, HCM_TYPE)?;
            Ok(NetworkFilter::Http(Arc::new(hcm(raw, &tp, clusters, ctx)?)))
        }
        _ => {
            let raw: RawTcpProxy = typed_config(tc, &tp, TCP_PROXY_TYPE)?;
            Ok(NetworkFilter::Tcp(Arc::new(tcp_proxy(raw, &tp, clusters)?)))
        }
    }
}

/// A timeout where `0s` means disabled.
/// `scheme_header_transformation.scheme_to_overwrite`: `http` or `https` (empty: unset), as
/// Envoy validates it.
fn scheme_to_overwrite(
    raw: Option<&super::raw::RawSchemeHeaderTransformation>,
    p: &FieldPath,
) -> Result<Option<&'static str>, ConfigError> {
    match raw.and_then(|r| r.scheme_to_overwrite.as_deref()) {
        None | Some("") => Ok(None),
        Some("http") => Ok(Some("http")),
        Some("https") => Ok(Some("https")),
        Some(o) => Err(p
            .field("scheme_header_transformation")
            .field("scheme_to_overwrite")
            .err(format!("{o:?} is not http or https"))),
    }
}

fn timeout_or(raw: Option<Duration>, default: Option<Duration>) -> Option<Duration> {
    match raw {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => default,
    }
}

/// Envoy's `per_connection_buffer_limit_bytes` when a listener sets none.
const DEFAULT_BUFFER_LIMIT: u64 = 1024 * 1024;

/// What an HCM takes from its listener and the bootstrap.
#[derive(Clone, Copy)]
struct HcmContext<'a> {
    /// The listener's `traffic_direction` is OUTBOUND (Envoy's egress tracing operation).
    egress: bool,
    /// The bootstrap's `tracing.http`: the provider of an HCM `tracing` without one.
    tracer: Option<&'a super::tracing::BootstrapTracer>,
    /// The listener's `per_connection_buffer_limit_bytes` (`None`: no limit).
    buffer_limit: Option<u64>,
}

fn hcm(
    raw: RawHcm,
    p: &FieldPath,
    clusters: &HashSet<String>,
    ctx: HcmContext<'_>,
) -> Result<HttpConnectionManager, ConfigError> {
    let opts = super::hcm_request::parse(&raw, p)?;
    let tracing = match &raw.tracing {
        Some(t) => Some(super::tracing::hcm_tracing(
            t,
            &p.field("tracing"),
            ctx.egress,
            ctx.tracer,
            |c| clusters.contains(c),
        )?),
        None => None,
    };
    let request_id = super::tracing::request_id_extension(
        raw.request_id_extension.as_ref(),
        &p.field("request_id_extension"),
    )?;
    let stat_prefix = raw
        .stat_prefix
        .ok_or_else(|| p.field("stat_prefix").err("required"))?;
    let codec_type = match raw.codec_type.as_deref() {
        None | Some("AUTO") => CodecType::Auto,
        Some("HTTP1") => CodecType::Http1,
        Some("HTTP2") => CodecType::Http2,
        Some("HTTP3") => return Err(p.field("codec_type").unsupported("HTTP3")),
        Some(other) => {
            return Err(p.field("codec_type").err(format!(
                "unknown value {other:?} (expected AUTO, HTTP1 or HTTP2)"
            )))
        }
    };
    let rc = raw.route_config.ok_or_else(|| {
        p.field("route_config")
            .err("required (rds is not supported)")
    })?;
    let route_table = build_route_table(rc, &p.field("route_config"), clusters)?;
    let mut http_filters =
        crate::http::filters::http_filters(&raw.http_filters, &p.field("http_filters"))?;
    // Envoy's router starts a child span per attempt with `start_child_span`; made here only
    // as `spawn_upstream_span`'s (the connection manager's span then a server span).
    let provided = tracing.as_ref().and_then(|t| t.provider.as_ref());
    // A metadata custom tag (the HCM's or a route's) reads what the RBAC filters write.
    let reads = |tags: &[super::CustomTag]| {
        tags.iter()
            .any(|t| matches!(t.value, super::TagValue::Metadata { .. }))
    };
    let route_reads = route_table.virtual_hosts.iter().any(|vh| {
        vh.routes
            .iter()
            .any(|r| r.tracing.as_ref().is_some_and(|t| reads(&t.custom_tags)))
    });
    if provided.is_some_and(|pv| reads(&pv.custom_tags) || route_reads) {
        http_filters.keep_metadata();
    }
    if let (Some(i), Some(pv)) = (http_filters.start_child_span, provided) {
        if !pv.upstream_spans {
            return Err(p
                .field("http_filters")
                .index(i)
                .field("typed_config")
                .field("start_child_span")
                .unsupported(
                    "with a tracing provider unless tracing.spawn_upstream_span is set too",
                ));
        }
    }
    let http_filters = Arc::new(http_filters);
    // Envoy's `via` is a header value (`HTTP_HEADER_VALUE`); empty: none.
    let via = match raw.via.as_deref() {
        None | Some("") => None,
        Some(v) => Some(
            http::HeaderValue::from_str(v)
                .map_err(|_| p.field("via").err("not a valid header value"))?,
        ),
    };
    let mut upgrade_configs = Vec::new();
    for (i, u) in raw.upgrade_configs.iter().enumerate() {
        let up = p.field("upgrade_configs").index(i);
        let t = u
            .upgrade_type
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| up.field("upgrade_type").err("must not be empty"))?;
        upgrade_configs.push(crate::config::UpgradeConfig {
            upgrade_type: t.to_ascii_lowercase(),
            enabled: u.enabled.unwrap_or(true),
        });
    }
    let access_log = access_logs(&raw.access_log, p)?;
    Ok(HttpConnectionManager {
        buffer_limit: ctx.buffer_limit,
        stat_prefix,
        codec_type,
        route_table: Arc::new(route_table),
        http_filters,
        stream_idle_timeout: timeout_or(
            raw.stream_idle_timeout.map(|d| d.0),
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        ),
        request_timeout: timeout_or(raw.request_timeout.map(|d| d.0), None),
        request_headers_timeout: timeout_or(raw.request_headers_timeout.map(|d| d.0), None),
        scheme_to_overwrite: scheme_to_overwrite(raw.scheme_header_transformation.as_ref(), p)?,
        scheme_match_upstream: raw
            .scheme_header_transformation
            .as_ref()
            .and_then(|s| s.match_upstream)
            .unwrap_or(false),
        access_log,
        use_remote_address: raw.use_remote_address.unwrap_or(false),
        proxy_protocol_state: raw.add_proxy_protocol_connection_state.unwrap_or(true),
        internal_addresses: super::internal_address::parse(
            raw.internal_address_config.as_ref(),
            p,
        )?,
        xff_num_trusted_hops: raw.xff_num_trusted_hops.unwrap_or(0),
        skip_xff_append: raw.skip_xff_append.unwrap_or(false),
        via,
        preserve_external_request_id: raw.preserve_external_request_id.unwrap_or(false),
        xfcc: xfcc(
            raw.forward_client_cert_details.as_deref(),
            raw.set_current_client_cert_details.as_ref(),
            p,
        )?,
        // Filled with the node's identity once the bootstrap is read (`user_agent::fill`).
        user_agent: (raw.add_user_agent == Some(true))
            .then(super::user_agent::UserAgent::unresolved),
        local_reply: match &raw.local_reply_config {
            Some(l) => Some(Arc::new(super::local_reply::parse(
                l,
                &p.field("local_reply_config"),
            )?)),
            None => None,
        },
        proxy_100_continue: raw.proxy_100_continue.unwrap_or(false),
        http2: super::http2_options::parse(raw.http2_protocol_options.as_ref(), p)?,
        http10: http10(raw.http_protocol_options.as_ref(), p)?,
        header_key_format: super::header_key_format::parse(
            raw.http_protocol_options
                .as_ref()
                .and_then(|h| h.header_key_format.as_ref()),
            &p.field("http_protocol_options").field("header_key_format"),
        )?,
        strip_trailing_host_dot: raw.strip_trailing_host_dot.unwrap_or(false),
        append_x_forwarded_port: raw.append_x_forwarded_port.unwrap_or(false),
        upgrade_configs,
        strip_port: opts.strip_port,
        path_normalization: opts.path,
        server_header: opts.server_header,
        head_limits: opts.head_limits,
        generate_request_id: opts.generate_request_id,
        always_set_request_id_in_response: opts.always_set_request_id_in_response,
        max_stream_duration: opts.max_stream_duration,
        conn_timeouts: opts.conn_timeouts,
        tracing,
        request_id,
    })
}

/// `http_protocol_options`: HTTP/1.0 accepted, and the Host given to one without.
fn http10(
    raw: Option<&super::raw::RawHttp1Options>,
    p: &FieldPath,
) -> Result<Option<super::Http10>, ConfigError> {
    let Some(raw) = raw.filter(|r| r.accept_http_10 == Some(true)) else {
        return Ok(None);
    };
    let default_host = match raw.default_host_for_http_10.as_deref() {
        None | Some("") => None,
        Some(h) => Some(http::HeaderValue::from_str(h).map_err(|_| {
            p.field("http_protocol_options")
                .field("default_host_for_http_10")
                .err(format!("{h:?} is not a valid Host value"))
        })?),
    };
    Ok(Some(super::Http10 { default_host }))
}

/// `forward_client_cert_details` and `set_current_client_cert_details`.
fn xfcc(
    mode: Option<&str>,
    details: Option<&super::raw::RawSetCurrentClientCertDetails>,
    p: &FieldPath,
) -> Result<super::Xfcc, ConfigError> {
    use super::ForwardClientCert as F;
    let mode = match mode {
        None | Some("SANITIZE") => F::Sanitize,
        Some("FORWARD_ONLY") => F::ForwardOnly,
        Some("APPEND_FORWARD") => F::AppendForward,
        Some("SANITIZE_SET") => F::SanitizeSet,
        Some("ALWAYS_FORWARD_ONLY") => F::AlwaysForwardOnly,
        Some(other) => {
            return Err(p
                .field("forward_client_cert_details")
                .err(format!("unknown value {other:?}")))
        }
    };
    let on = |v: Option<bool>| v == Some(true);
    Ok(super::Xfcc {
        mode,
        cert: details.is_some_and(|d| on(d.cert)),
        chain: details.is_some_and(|d| on(d.chain)),
        subject: details.is_some_and(|d| on(d.subject)),
        uri: details.is_some_and(|d| on(d.uri)),
        dns: details.is_some_and(|d| on(d.dns)),
    })
}

/// `access_log[]` of a listener, an HCM or a tcp_proxy at `p`.
fn access_logs(raw: &[RawAccessLog], p: &FieldPath) -> Result<Vec<AccessLog>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, al)| access_log_entry(al, &p.field("access_log").index(i)))
        .collect()
}

fn access_log_entry(raw: &RawAccessLog, p: &FieldPath) -> Result<AccessLog, ConfigError> {
    let filter = match &raw.filter {
        Some(f) => Some(super::access_log_filter::parse(f, &p.field("filter"))?),
        None => None,
    };
    let (sink, format) = log_sink(raw, p)?;
    Ok(AccessLog {
        sink,
        filter,
        format,
    })
}

/// `typed_config`: stdout or a file, with its `log_format` (none: Envoy's default format).
fn log_sink(
    raw: &RawAccessLog,
    p: &FieldPath,
) -> Result<(LogSink, Option<Arc<BodyFormat>>), ConfigError> {
    let format = |f: Option<&RawBodyFormat>, tp: &FieldPath| {
        f.map(|f| BodyFormat::build_log(f, &tp.field("log_format")).map(Arc::new))
            .transpose()
    };
    let tp = p.field("typed_config");
    let tc: &Value = raw
        .typed_config
        .as_ref()
        .ok_or_else(|| tp.err("required"))?;
    match type_url(tc) {
        Some(STDOUT_LOG_TYPE) => {
            let s: RawStdoutAccessLog = typed_config(tc, &tp, STDOUT_LOG_TYPE)?;
            Ok((LogSink::Stdout, format(s.log_format.as_ref(), &tp)?))
        }
        Some(FILE_LOG_TYPE) => {
            let f: RawFileAccessLog = typed_config(tc, &tp, FILE_LOG_TYPE)?;
            let path = f
                .path
                .filter(|p| !p.is_empty())
                .ok_or_else(|| tp.field("path").err("required"))?;
            let log_format = format(f.log_format.as_ref(), &tp)?;
            let sink = LogSink::File {
                path: PathBuf::from(path),
            };
            Ok((sink, log_format))
        }
        Some(other) => Err(tp
            .field("@type")
            .unsupported(&format!("access logger type {other:?}"))),
        None => Err(tp.field("@type").err("missing")),
    }
}

fn tcp_proxy(
    raw: RawTcpProxy,
    p: &FieldPath,
    clusters: &HashSet<String>,
) -> Result<TcpProxy, ConfigError> {
    let stat_prefix = raw
        .stat_prefix
        .ok_or_else(|| p.field("stat_prefix").err("required"))?;
    let cluster = match (raw.cluster, raw.weighted_clusters) {
        (Some(_), Some(_)) => {
            return Err(p.err("exactly one of cluster and weighted_clusters must be set"))
        }
        (None, None) => return Err(p.field("cluster").err("required")),
        // Envoy looks the cluster up per connection: a name with no cluster is accepted and
        // its connections are closed (NC); CDS may remove a cluster a tcp_proxy names.
        (Some(c), None) => TcpProxyCluster::Single(c.as_str().into()),
        (None, Some(w)) => {
            let wp = p.field("weighted_clusters");
            let inputs = w
                .clusters
                .into_iter()
                .map(|c| WeightedInput::plain(c.name, c.weight))
                .collect();
            TcpProxyCluster::Weighted(build_weighted(
                inputs,
                &wp,
                &crate::route::KnownClusters::lax(clusters),
            )?)
        }
    };
    let access_log = access_logs(&raw.access_log, p)?;
    // Envoy's tcp_proxy hashes a connection only under a `hash_policy`: `source_ip` is the one
    // policy (more than one is refused, as Envoy's config validation does).
    let hp = p.field("hash_policy");
    if raw.hash_policy.len() > 1 {
        return Err(hp.err("at most one entry"));
    }
    for (i, h) in raw.hash_policy.iter().enumerate() {
        if h.filter_state.is_some() {
            return Err(hp
                .index(i)
                .field("filter_state")
                .unsupported("no filter sets state here"));
        }
        if h.source_ip.is_none() {
            return Err(hp.index(i).err("source_ip is required"));
        }
    }
    let max_downstream_connection_duration = match raw.max_downstream_connection_duration {
        None => None,
        Some(d) if d.0 < Duration::from_millis(1) => {
            return Err(p
                .field("max_downstream_connection_duration")
                .err("must be at least 1ms (Envoy's validation)"))
        }
        Some(d) => Some(d.0),
    };
    // Envoy's validation: at least 1.
    let max_connect_attempts = match raw.max_connect_attempts {
        None => 1,
        Some(0) => {
            return Err(p
                .field("max_connect_attempts")
                .err("must be at least 1 (Envoy's validation)"))
        }
        Some(n) => n,
    };
    let tunneling = match &raw.tunneling_config {
        Some(t) => Some(super::tunneling::tunneling(
            t,
            &p.field("tunneling_config"),
        )?),
        None => None,
    };
    Ok(TcpProxy {
        tunneling,
        max_connect_attempts,
        max_downstream_connection_duration,
        hash_source_ip: !raw.hash_policy.is_empty(),
        stat_prefix,
        cluster,
        access_log,
        idle_timeout: timeout_or(
            raw.idle_timeout.map(|d| d.0),
            Some(DEFAULT_TCP_PROXY_IDLE_TIMEOUT),
        ),
    })
}
