//! `sluice explain`: how a config routes one request — listener, filter chain, the checks
//! before routing, virtual host, routes, rewrites, header changes, cluster and endpoints —
//! computed with the data path's own code ([`Listener::choose_chain`],
//! `http::preroute::for_explain`, [`RouteTable::select_observed`],
//! [`WeightedClusters::pick`]),
//! never a second implementation.
//!
//! [`RouteTable::select_observed`]: crate::route::RouteTable::select_observed
//! [`WeightedClusters::pick`]: crate::route::WeightedClusters::pick

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    config::{
        AppProtocols, Bootstrap, Cluster, ConnFacts, DiscoveryType, EndpointAddress,
        HttpConnectionManager, Listener, ListenerFilter, NetworkFilter, SourceType,
        TcpProxyCluster,
    },
    http::{preroute, ConnInfo},
    route::{
        explain::{Decision, RouteTrace},
        RequestView,
    },
};

/// The request to explain.
#[derive(Debug, Clone)]
pub struct Request {
    /// `http` or `https`.
    pub scheme: String,
    /// The URL's host (as written, without brackets for IPv6).
    pub host: String,
    /// The URL's port (default by scheme).
    pub port: u16,
    /// Path with query.
    pub path: String,
    /// Method.
    pub method: String,
    /// Headers (`host` among them overrides the URL's authority).
    pub headers: Vec<(String, String)>,
    /// Use this listener instead of choosing by address.
    pub listener: Option<String>,
    /// The random draw for `weighted_clusters`.
    pub random: u64,
    /// Sent as HTTP/1.0 (refused unless the HCM has `accept_http_10`).
    pub http10: bool,
    /// The client's address (RBAC principals, `x-forwarded-for`); default 127.0.0.1.
    pub source: Option<IpAddr>,
}

/// A request that cannot be built: which parameter (`url`, `header`), its value and why.
#[derive(Debug, thiserror::Error)]
#[error("{param} {value:?}: {why}")]
pub struct RequestError {
    /// `url`, `header` or `method`.
    pub param: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl Request {
    /// The request for `METHOD url` with `headers` (each `name: value`), as `sluice explain`
    /// and the admin's `/explain` take it; `random` is the weighted-cluster draw.
    pub fn from_url(
        url: &str,
        method: &str,
        headers: &[String],
        listener: Option<String>,
        random: u64,
    ) -> Result<Self, RequestError> {
        let bad = |param, value: &str, why: String| RequestError {
            param,
            value: value.to_string(),
            why,
        };
        let uri: http::Uri = url.parse().map_err(|e| bad("url", url, format!("{e}")))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_string();
        let host = uri
            .host()
            .ok_or_else(|| bad("url", url, "no host (want http://host:port/path)".into()))?;
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let headers = headers
            .iter()
            .map(|h| match h.split_once(':') {
                Some((k, v)) => {
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                    http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| bad("header", h, format!("{k:?} is not a header name")))?;
                    http::HeaderValue::from_str(&v)
                        .map_err(|_| bad("header", h, "not a valid header value".into()))?;
                    Ok((k, v))
                }
                None => Err(bad("header", h, "want 'name: value'".into())),
            })
            .collect::<Result<_, _>>()?;
        http::Method::from_bytes(method.as_bytes())
            .map_err(|_| bad("method", method, "not an HTTP method token".into()))?;
        Ok(Request {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            method: method.to_string(),
            headers,
            listener,
            random,
            http10: false,
            source: None,
        })
    }
}

impl Request {
    /// The client's address: `source`, else 127.0.0.1.
    fn source(&self) -> IpAddr {
        self.source.unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }
}

/// Why a request cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// `--listener NAME` names no listener.
    #[error("no listener named {0}")]
    NoListenerNamed(String),
    /// No listener takes the address.
    #[error("no listener takes {0} (no listener on that port, none with use_original_dst or an original_dst filter); pass --listener")]
    NoListener(String),
    /// The method, path or a header is not valid HTTP.
    #[error("{0}")]
    BadRequest(String),
    /// The listener has no chain for the port.
    #[error(
        "listener {0}: no filter chain matches destination port {1} (Envoy closes the connection)"
    )]
    NoChain(String, u16),
}

/// The whole explanation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    /// `METHOD URL`.
    pub request: String,
    /// The `:authority` routing sees.
    pub authority: String,
    /// The listener.
    pub listener: ListenerStep,
    /// The filter chain.
    pub filter_chain: ChainStep,
    /// Why the request is refused before routing (status and reason), as the data path's
    /// checks decide (missing Host, request target, upgrade policy).
    #[serde(default)]
    pub refused: Option<String>,
    /// What the chain's network RBAC filters, then the HCM's RBAC filters, say of the request,
    /// in order, up to the first that denies.
    #[serde(default)]
    pub authorization: Vec<AuthzStep>,
    /// The route table trace (HTTP chains).
    pub route: Option<RouteTrace>,
    /// The tcp_proxy cluster (TCP chains).
    pub tcp_cluster: Option<String>,
    /// The cluster the request goes to, with its endpoints.
    pub cluster: Option<ClusterStep>,
}

/// The listener choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStep {
    /// `name`.
    pub name: String,
    /// `address`.
    pub address: String,
    /// Why this one.
    pub why: String,
}

/// The filter chain choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainStep {
    /// Index in `filter_chains[]`.
    pub index: usize,
    /// `name`, if set.
    pub name: Option<String>,
    /// `filter_chain_match.destination_port`.
    pub destination_port: Option<u16>,
    /// `http_connection_manager <stat_prefix>` or `tcp_proxy <stat_prefix>`.
    pub filter: String,
    /// Why this one.
    pub why: String,
}

/// One RBAC filter's verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthzStep {
    /// `network rbac <stat_prefix>` or `http rbac <filter name>`.
    pub filter: String,
    /// Where the rules come from: `filter`, or a route's `RBACPerRoute`.
    pub rules: String,
    /// The enforced rules' verdict (None: none configured, the filter allows).
    pub enforced: Option<String>,
    /// The shadow rules' verdict (counted only).
    pub shadow: Option<String>,
    /// Whether this filter denies (a network one closes the connection, an HTTP one answers
    /// 403 `RBAC: access denied`).
    pub denied: bool,
}

impl AuthzStep {
    fn of(filter: String, rules: &str, e: crate::rbac::rules::Explained) -> Self {
        Self {
            filter,
            rules: rules.to_string(),
            enforced: e.enforced,
            shadow: e.shadow,
            denied: e.denied,
        }
    }
}

/// The chosen cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStep {
    /// `name`.
    pub name: String,
    /// `type` and `lb_policy`, or why the cluster is unknown.
    pub kind: String,
    /// The endpoints it could go to (`host:port`; STRICT_DNS names as written).
    pub endpoints: Vec<String>,
}

/// Explains how `boot` routes `req`.
pub fn explain(boot: &Bootstrap, req: &Request) -> Result<Explanation, ExplainError> {
    let (listener, listener_why) = choose_listener(boot, req)?;
    let http = listener.detects_protocol().then_some(true);
    let facts = conn_facts(listener, req);
    let (idx, fits) = listener
        .choose_chain(&facts, http)
        .ok_or_else(|| ExplainError::NoChain(listener.name.to_string(), req.port))?;
    let chain = &listener.filter_chains[idx];
    let chain_why = chain_why(listener, idx, &facts, http.is_some() && fits);
    let authority = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| default_authority(req));
    let mut out = Explanation {
        request: match authority.is_empty() {
            true => format!("{} {} (no Host)", req.method, req.path),
            false => format!("{} {}://{}{}", req.method, req.scheme, authority, req.path),
        },
        authority: authority.clone(),
        listener: ListenerStep {
            name: listener.name.to_string(),
            address: listener.address.to_string(),
            why: listener_why,
        },
        filter_chain: ChainStep {
            index: idx,
            name: chain.name.clone(),
            destination_port: chain.matcher.destination_port,
            filter: String::new(),
            why: chain_why,
        },
        refused: None,
        authorization: Vec::new(),
        route: None,
        tcp_cluster: None,
        cluster: None,
    };
    // A chain that terminates TLS: the SNI the tls_inspector reports (the URL's host, for an
    // https URL on a listener that runs it), no client certificate.
    let explained_tls = chain.tls.as_ref().map(|_| crate::downstream_tls::TlsFacts {
        sni: facts.server_name.map(str::to_string),
        ..Default::default()
    });
    // The chain's network RBAC filters decide on the connection's first bytes.
    let net = crate::rbac::Facts::<[(&str, &str)]> {
        request: None,
        peer: facts.src,
        direct: facts.src.ip(),
        remote: facts.src.ip(),
        local: facts.dst,
        sni: facts.server_name.unwrap_or(""),
        tls: explained_tls.as_ref(),
        metadata: None,
    };
    for f in &chain.rbac {
        let e = f.rules.explain(&net);
        let denied = e.denied;
        out.authorization.push(AuthzStep::of(
            format!("network rbac {}", f.stat_prefix),
            "filter",
            e,
        ));
        if denied {
            out.filter_chain.filter = chain_filter_name(&chain.filter);
            out.refused = Some(format!(
                "connection closed on its first bytes: network RBAC {} denies it",
                f.stat_prefix
            ));
            return Ok(out);
        }
    }
    let cluster_name = match &chain.filter {
        NetworkFilter::Http(hcm) => {
            out.filter_chain.filter = chain_filter_name(&chain.filter);
            match route(hcm, listener, req, &authority, explained_tls.as_ref())? {
                Err(refused) => {
                    out.refused = Some(refused);
                    None
                }
                Ok(Routed { seen, trace, authz }) => {
                    out.authority = seen.unwrap_or_default();
                    let denied = authz.iter().any(|a| a.denied);
                    out.authorization.extend(authz);
                    let name = match &trace.decision {
                        Decision::Forward(f) if !denied => f.cluster.clone(),
                        _ => None,
                    };
                    out.route = Some(trace);
                    name
                }
            }
        }
        NetworkFilter::Tcp(tcp) => {
            out.filter_chain.filter = chain_filter_name(&chain.filter);
            let name = match &tcp.cluster {
                TcpProxyCluster::Single(c) => c.to_string(),
                TcpProxyCluster::Weighted(w) => w.pick(req.random).name.to_string(),
            };
            out.tcp_cluster = Some(name.clone());
            Some(name)
        }
    };
    out.cluster = cluster_name.map(|name| cluster_step(boot, &name, req));
    Ok(out)
}

/// `http_connection_manager <stat_prefix>` or `tcp_proxy <stat_prefix>`.
fn chain_filter_name(f: &NetworkFilter) -> String {
    match f {
        NetworkFilter::Http(h) => format!("http_connection_manager {}", h.stat_prefix),
        NetworkFilter::Tcp(t) => format!("tcp_proxy {}", t.stat_prefix),
    }
}

/// What routing saw of a request.
struct Routed {
    /// The authority routing saw.
    seen: Option<String>,
    /// The route table trace.
    trace: RouteTrace,
    /// The HCM's RBAC filters' verdicts.
    authz: Vec<AuthzStep>,
}

/// The data path's steps before routing (`preroute::for_explain`: Host checks, request
/// target, upgrade policy, header sanitation, repeated Hosts joined), then the route table
/// and the HTTP RBAC filters: the authority routing saw, the trace and the verdicts, or why
/// the request is refused first.
fn route(
    hcm: &HttpConnectionManager,
    listener: &Listener,
    req: &Request,
    authority: &str,
    tls: Option<&crate::downstream_tls::TlsFacts>,
) -> Result<Result<Routed, String>, ExplainError> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| ExplainError::BadRequest(format!("{what}: {e}"));
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(req.method.as_bytes()).map_err(|e| bad("method", &e))?)
        .uri(req.path.as_str())
        .version(if req.http10 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        });
    let hosts: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_str())
        .collect();
    // No `host` header: curl's Host (the URL's authority); an empty one (curl's `-H 'Host:'`)
    // sends none.
    let hosts = match hosts.is_empty() {
        true => vec![authority],
        false => hosts.into_iter().filter(|h| !h.is_empty()).collect(),
    };
    for h in hosts {
        b = b.header(http::header::HOST, h);
    }
    for (k, v) in req
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
    {
        b = b.header(k.as_str(), v.as_str());
    }
    let mut r = b.body(()).map_err(|e| bad("request", &e))?;
    let ip = req.host.parse().unwrap_or(listener.address.ip());
    let local = SocketAddr::new(ip, req.port);
    let conn = ConnInfo {
        peer: SocketAddr::new(req.source(), 0),
        local,
        orig_dst: local,
        tls: req.scheme == "https",
        proxy_direct: None,
    };
    let seen = match preroute::for_explain(hcm, &conn, &mut r) {
        Ok(a) => a,
        Err((status, why)) => return Ok(Err(format!("{status}: {why}"))),
    };
    let headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(k, _)| *k != http::header::HOST)
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let view = RequestView {
        authority: seen.as_deref(),
        path: r.uri().path_and_query().map_or("/", |p| p.as_str()),
        method: r.method().as_str(),
        // `scheme_header_transformation.scheme_to_overwrite` replaces the connection's.
        scheme: hcm.scheme_to_overwrite.unwrap_or(&req.scheme),
        headers: &headers,
        random: req.random,
        peer: Some(conn.peer.ip()),
        metadata: None,
    };
    // A route's own `upgrade_configs` may refuse the upgrade once the route is known.
    let selection = hcm.route_table.select(&view);
    if preroute::upgrade_refused(hcm, &selection, r.version(), r.headers()) {
        let why = "an upgrade the route's (or else the HCM's) upgrade_configs does not enable";
        return Ok(Err(format!("403: {why}")));
    }
    let trace = hcm.route_table.explain(&view, &headers);
    let facts = crate::rbac::Facts {
        request: Some(&view),
        peer: conn.peer,
        direct: conn.peer.ip(),
        remote: crate::http::sanitize::RemoteAddress::of(hcm, &conn).resolve(r.headers()),
        local: conn.orig_dst,
        sni: tls.and_then(|t| t.sni.as_deref()).unwrap_or(""),
        tls,
        metadata: None,
    };
    let authz = hcm
        .http_filters
        .explain_rbac(&selection, &hcm.route_table.per_filter, &facts)
        .into_iter()
        .map(|(name, from, e)| AuthzStep::of(format!("http rbac {name}"), from, e))
        .collect();
    Ok(Ok(Routed { seen, trace, authz }))
}

/// What curl sends as Host: the port only when it is not the scheme's default.
fn default_authority(req: &Request) -> String {
    let host = if req.host.contains(':') {
        format!("[{}]", req.host)
    } else {
        req.host.clone()
    };
    let default_port = if req.scheme == "https" { 443 } else { 80 };
    if req.port == default_port {
        host
    } else {
        format!("{host}:{}", req.port)
    }
}

/// The connection the data path would see for `req` on `l`: the URL's address (the listener's
/// when the host is a name), a loopback client, and what the listener's inspectors report of
/// an HTTP/1.1 request (or of a TLS ClientHello with the host as SNI, for `https`).
fn conn_facts<'r>(l: &Listener, req: &'r Request) -> ConnFacts<'r> {
    let ip = req.host.parse().unwrap_or(l.address.ip());
    let tls = req.scheme == "https" && l.runs_filter(ListenerFilter::TlsInspector, req.port);
    let http = !tls && l.runs_filter(ListenerFilter::HttpInspector, req.port);
    ConnFacts {
        dst: SocketAddr::new(ip, req.port),
        src: SocketAddr::new(req.source(), 0),
        direct_src: None,
        server_name: tls.then_some(req.host.as_str()),
        transport_protocol: if tls { "tls" } else { "raw_buffer" },
        application_protocols: match http {
            true => AppProtocols::One("http/1.1"),
            false => AppProtocols::None,
        },
    }
}

/// Why chain `idx` was chosen (`detected`: picked as the first HTTP chain admitting the
/// connection, on a listener whose chains do not match on the protocol).
fn chain_why(l: &Listener, idx: usize, facts: &ConnFacts<'_>, detected: bool) -> String {
    let c = &l.filter_chains[idx];
    if c.is_default {
        return "default_filter_chain (no filter chain matches)".to_string();
    }
    if l.select_chain(facts) != Some(idx) && detected {
        return format!(
            "the first HTTP chain admitting port {} (protocol detected: HTTP)",
            facts.dst.port()
        );
    }
    let m = &c.matcher;
    let mut why = Vec::new();
    if let Some(p) = m.destination_port {
        why.push(format!("destination_port {p}"));
    }
    if !m.prefix_ranges.is_empty() {
        why.push(format!("prefix_ranges admit {}", facts.dst.ip()));
    }
    if !m.server_names.is_empty() {
        why.push("server_names".to_string());
    }
    if let Some(t) = &m.transport_protocol {
        why.push(format!("transport_protocol {t}"));
    }
    if !m.application_protocols.is_empty() {
        why.push("application_protocols".to_string());
    }
    if m.source_type != SourceType::Any
        || !m.source_prefix_ranges.is_empty()
        || !m.direct_source_prefix_ranges.is_empty()
        || !m.source_ports.is_empty()
    {
        why.push("source criteria".to_string());
    }
    match why.is_empty() {
        true => "the chain without filter_chain_match criteria".to_string(),
        false => format!("filter_chain_match: {}", why.join(", ")),
    }
}

fn choose_listener<'b>(
    boot: &'b Bootstrap,
    req: &Request,
) -> Result<(&'b Listener, String), ExplainError> {
    if let Some(name) = &req.listener {
        let l = boot
            .listener(name)
            .ok_or_else(|| ExplainError::NoListenerNamed(name.clone()))?;
        return Ok((l, "--listener".to_string()));
    }
    let ip: Option<IpAddr> = req.host.parse().ok();
    let takes = |a: &SocketAddr| {
        a.port() == req.port && (a.ip().is_unspecified() || ip.is_none_or(|ip| ip == a.ip()))
    };
    let taken = boot
        .listeners
        .iter()
        .find_map(|l| l.addresses().find(|a| takes(a)).map(|a| (l, a)));
    if let Some((l, address)) = taken {
        let why = if l.bind_to_port {
            format!("its address {address} takes port {}", req.port)
        } else {
            match boot.listeners.iter().find(|o| o.use_original_dst) {
                Some(o) => format!(
                    "bind_to_port false: {} (use_original_dst) hands it the captured connection whose original destination is {address}",
                    o.name
                ),
                None => format!(
                    "bind_to_port false and no use_original_dst listener: nothing hands it connections in this config (explained as if one did); address {address}"
                ),
            }
        };
        return Ok((l, why));
    }
    if let Some(l) = boot
        .listeners
        .iter()
        .find(|l| l.use_original_dst || l.has_original_dst_filter())
    {
        return Ok((
            l,
            format!(
                "captured: no listener owns port {}, the capture listener keeps the connection (original destination = the URL's)",
                req.port
            ),
        ));
    }
    Err(ExplainError::NoListener(format!(
        "{}:{}",
        req.host, req.port
    )))
}

fn cluster_step(boot: &Bootstrap, name: &str, req: &Request) -> ClusterStep {
    let Some(c) = boot.cluster(name) else {
        return ClusterStep {
            name: name.to_string(),
            kind: "no such cluster (503 NC)".to_string(),
            endpoints: Vec::new(),
        };
    };
    ClusterStep {
        name: name.to_string(),
        kind: format!("{:?} {:?}", c.discovery, c.lb_policy),
        endpoints: endpoints(c, req),
    }
}

fn endpoints(c: &Cluster, req: &Request) -> Vec<String> {
    if c.discovery == DiscoveryType::OriginalDst {
        return vec![format!(
            "the connection's original destination ({})",
            default_authority(req)
        )];
    }
    c.endpoints
        .iter()
        .map(|e| {
            let addr = match &e.address {
                EndpointAddress::Ip(a) => a.to_string(),
                EndpointAddress::Dns { host, port } => format!("{host}:{port} (DNS)"),
            };
            if e.weight == 1 {
                addr
            } else {
                format!("{addr} weight {}", e.weight)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
