//! [`RouteTable::select`]: virtual host by domain, first matching route, cluster choice,
//! path/host rewrite and header levels.

use std::borrow::Cow;

use super::{
    observe::{DomainMatch, Mismatch, SelectObserver},
    ClusterSpecifier, DirectResponse, ForwardAction, HeaderLevels, HeaderLookup, HeaderMatcher,
    HostRewrite, RedirectAction, RedirectPath, Route, RouteAction, RouteRef, RouteTable,
    VirtualHost, WeightedCluster,
};
use crate::{config::ClusterRef, http::filters::metadata::DynamicMetadata};

/// The parts of a request routing looks at.
#[derive(Clone, Copy)]
pub struct RequestView<'a, H: HeaderLookup + ?Sized> {
    /// `:authority` / `Host` (`None` when the request has none).
    pub authority: Option<&'a str>,
    /// `:path`, with query string.
    pub path: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// The request scheme as `x-forwarded-proto` would say (`http` / `https`).
    pub scheme: &'a str,
    /// The other request headers.
    pub headers: &'a H,
    /// A uniformly random value for `weighted_clusters` (reduced modulo the total weight).
    pub random: u64,
    /// The downstream peer's address (a `connection_properties.source_ip` hash policy, for
    /// `weighted_clusters.use_hash_policy`).
    pub peer: Option<std::net::IpAddr>,
    /// The request's dynamic metadata, for `dynamic_metadata` route matchers (`None`: empty, as
    /// when the route is first chosen, before any filter ran).
    pub metadata: Option<&'a DynamicMetadata>,
}

/// The routing decision for a request.
#[derive(Debug)]
pub enum Selection<'a> {
    /// Forward upstream.
    Forward(Forward<'a>),
    /// Answer with a redirect (`Location: location`).
    Redirect {
        /// Which route matched.
        route_ref: RouteRef,
        /// The matched virtual host.
        vhost: &'a VirtualHost,
        /// The matched route.
        route: &'a Route,
        /// The redirect action.
        redirect: &'a RedirectAction,
        /// The `Location` header value.
        location: String,
        /// Where the path starts in `location` (after `scheme://host[:port]`).
        path_start: usize,
        /// The status code (301, 302, 303, 307 or 308).
        status: u16,
        /// Response header levels, in application order.
        response_headers: HeaderLevels<'a>,
    },
    /// Answer directly.
    DirectResponse {
        /// Which route matched.
        route_ref: RouteRef,
        /// The matched virtual host.
        vhost: &'a VirtualHost,
        /// The matched route.
        route: &'a Route,
        /// Status and body.
        response: &'a DirectResponse,
        /// Response header levels, in application order.
        response_headers: HeaderLevels<'a>,
    },
    /// The virtual host's `require_tls` refused a plain request (Envoy's `SslRedirectRoute`):
    /// 301 with `Location: location`, empty body, no header mutations.
    SslRedirect {
        /// The matched virtual host.
        vhost: &'a VirtualHost,
        /// `https://` + the Host as sent + the path with its query.
        location: String,
    },
    /// No virtual host or no route matched: Envoy answers 404 with response flag `NR`.
    NoRoute,
}

impl<'a> Selection<'a> {
    /// The same answer for the request as the filters left it (`req`): a redirect's location
    /// is made again from its headers and path, as Envoy's router makes it when it answers;
    /// every other selection is kept.
    pub fn answered_for<H: HeaderLookup + ?Sized>(self, req: &RequestView<'_, H>) -> Selection<'a> {
        match self {
            Selection::Redirect {
                route_ref,
                vhost,
                route,
                redirect,
                response_headers,
                ..
            } => Selection::redirect(
                route_ref,
                vhost,
                route,
                redirect,
                response_headers,
                req,
                split_path(req.path).0,
            ),
            other => other,
        }
    }

    /// A redirect answer for `req` (its path without the query: `path`).
    fn redirect<H: HeaderLookup + ?Sized>(
        route_ref: RouteRef,
        vhost: &'a VirtualHost,
        route: &'a Route,
        redirect: &'a RedirectAction,
        response_headers: HeaderLevels<'a>,
        req: &RequestView<'_, H>,
        path: &str,
    ) -> Selection<'a> {
        let (location, path_start) = redirect_location(redirect, route, req, path);
        Selection::Redirect {
            route_ref,
            vhost,
            route,
            redirect,
            location,
            path_start,
            status: redirect.status,
            response_headers,
        }
    }

    /// The matched virtual host, if any.
    pub fn vhost(&self) -> Option<&'a VirtualHost> {
        match self {
            Selection::Forward(f) => Some(f.vhost),
            Selection::Redirect { vhost, .. }
            | Selection::DirectResponse { vhost, .. }
            | Selection::SslRedirect { vhost, .. } => Some(vhost),
            Selection::NoRoute => None,
        }
    }

    /// The matched route, if any.
    pub fn route(&self) -> Option<&'a Route> {
        match self {
            Selection::Forward(f) => Some(f.route),
            Selection::Redirect { route, .. } | Selection::DirectResponse { route, .. } => {
                Some(route)
            }
            Selection::SslRedirect { .. } | Selection::NoRoute => None,
        }
    }
}

/// A request to forward upstream.
#[derive(Debug)]
pub struct Forward<'a> {
    /// Which route matched.
    pub route_ref: RouteRef,
    /// The matched virtual host.
    pub vhost: &'a VirtualHost,
    /// The matched route.
    pub route: &'a Route,
    /// The route action (timeouts, retry policy, hash policy).
    pub action: &'a ForwardAction,
    /// The upstream cluster.
    pub cluster: SelectedCluster<'a>,
    /// The `:path` to send upstream (borrowed when not rewritten).
    pub path: Cow<'a, str>,
    /// The route's host rewrite to apply, if any (after the request header levels).
    pub host_rewrite: Option<HostRewriteResult<'a>>,
    /// The picked weighted cluster's `host_rewrite_literal`: set right after its own request
    /// header level (the first of `request_headers` when `cluster_request_headers`), before the
    /// route-level ones, without `x-envoy-original-host` (Envoy's `WeightedClusterEntry`).
    pub cluster_host_rewrite: Option<&'a str>,
    /// The picked weighted cluster, if any.
    pub weighted: Option<&'a WeightedCluster>,
    /// Whether `request_headers` starts with the picked weighted cluster's level.
    pub cluster_request_headers: bool,
    /// The retry policy's `retriable_request_headers` allow retrying this request (true
    /// when there are none).
    pub retry_allowed: bool,
    /// Request header levels, in application order.
    pub request_headers: HeaderLevels<'a>,
    /// Response header levels, in application order.
    pub response_headers: HeaderLevels<'a>,
}

/// The cluster a forwarded request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectedCluster<'a> {
    /// A configured cluster (validated to exist).
    Named(&'a ClusterRef),
    /// The value of the route's `cluster_header` (may name no cluster: answer
    /// `cluster_not_found_status`).
    FromHeader(&'a str),
    /// `cluster_header` was absent: answer `cluster_not_found_status` (Envoy: 503 NC).
    Missing,
}

impl SelectedCluster<'_> {
    /// The cluster name, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            SelectedCluster::Named(c) => Some(c.as_str()),
            SelectedCluster::FromHeader(h) => Some(h),
            SelectedCluster::Missing => None,
        }
    }
}

/// A host rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewriteResult<'a> {
    /// Set `:authority`/`Host` to this value.
    Literal(&'a str),
    /// `auto_host_rewrite`: set it to the chosen endpoint's host name.
    Auto,
    /// `host_rewrite_header`: set it to this request header's first value (read after the
    /// request header mutations) when that is present and not empty.
    Header(&'a str),
    /// `host_rewrite_path_regex`: the rewritten path (without query).
    Computed(String),
    /// `host_rewrite`: rendered from this format after the request header mutations.
    Format(&'a std::sync::Arc<super::format::HeaderValueFormat>),
}

/// Splits `:path` into path and query (without `?`); the fragment is dropped.
pub(crate) fn split_path(full: &str) -> (&str, Option<&str>) {
    let no_frag = full.split_once('#').map_or(full, |(p, _)| p);
    match no_frag.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (no_frag, None),
    }
}

impl RouteTable {
    /// The virtual host for `authority` (Envoy's order: exact, longest suffix wildcard,
    /// longest prefix wildcard, `*`; case-insensitive; the port is part of the host unless
    /// `ignore_port_in_host_matching`).
    pub fn find_virtual_host(&self, authority: Option<&str>) -> Option<(usize, &VirtualHost)> {
        self.find_virtual_host_observed(authority, &mut ())
    }

    /// [`Self::find_virtual_host`], reporting the lookup to `obs`.
    #[inline]
    pub fn find_virtual_host_observed<O: SelectObserver + ?Sized>(
        &self,
        authority: Option<&str>,
        obs: &mut O,
    ) -> Option<(usize, &VirtualHost)> {
        let d = &self.domains;
        if d.exact.is_empty() && d.suffix.is_empty() && d.prefix.is_empty() {
            obs.virtual_host(authority, d.default.map(|i| (i, DomainMatch::OnlyDefault)));
            return d.default.map(|i| (i, &self.virtual_hosts[i]));
        }
        let Some(mut host) = authority else {
            obs.virtual_host(None, None);
            return None;
        };
        if self.ignore_port_in_host_matching {
            host = strip_port(host);
        }
        let lower: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let host = lower.as_ref();
        let found = d
            .exact
            .get(host)
            .map(|&i| (i, DomainMatch::Exact))
            .or_else(|| {
                // `len < host.len()`: the wildcard must match at least one character.
                d.suffix.iter().find_map(|(len, map)| {
                    let tail =
                        host.get(host.len().checked_sub(*len).filter(|_| *len < host.len())?..)?;
                    map.get(tail).map(|&i| (i, DomainMatch::Suffix(*len)))
                })
            })
            .or_else(|| {
                d.prefix.iter().find_map(|(len, map)| {
                    let head = host.get(..*len).filter(|_| *len < host.len())?;
                    map.get(head).map(|&i| (i, DomainMatch::Prefix(*len)))
                })
            })
            .or(d.default.map(|i| (i, DomainMatch::Default)));
        obs.virtual_host(Some(host), found);
        let (idx, _) = found?;
        Some((idx, &self.virtual_hosts[idx]))
    }

    /// Routes a request. Pure and allocation-free except for rewritten paths, redirects
    /// and headers with several values that a matcher joins.
    #[inline]
    pub fn select<'a, H: HeaderLookup + ?Sized>(
        &'a self,
        req: &RequestView<'a, H>,
    ) -> Selection<'a> {
        self.select_observed(req, &mut ())
    }

    /// [`Self::select`], reporting the virtual host lookup and every route tried to `obs`
    /// (`sluice explain`; the data path's `()` compiles away).
    pub fn select_observed<'a, H: HeaderLookup + ?Sized, O: SelectObserver + ?Sized>(
        &'a self,
        req: &RequestView<'a, H>,
        obs: &mut O,
    ) -> Selection<'a> {
        let Some((vi, vhost)) = self.find_virtual_host_observed(req.authority, obs) else {
            return Selection::NoRoute;
        };
        if let Some(location) = vhost.require_tls.redirect(req) {
            return Selection::SslRedirect { vhost, location };
        }
        let (path, query) = split_path(req.path);
        let Some((ri, route)) = vhost.routes.iter().enumerate().find(|(i, r)| {
            let result = route_matches(r, req, path, query);
            obs.route(*i, result);
            result.is_ok()
        }) else {
            return Selection::NoRoute;
        };
        let route_ref = RouteRef {
            vhost: vi as u32,
            route: ri as u32,
        };
        match &route.action {
            RouteAction::DirectResponse(response) => Selection::DirectResponse {
                route_ref,
                vhost,
                route,
                response,
                response_headers: self.levels(None, route, vhost, false),
            },
            RouteAction::Redirect(redirect) => Selection::redirect(
                route_ref,
                vhost,
                route,
                redirect,
                self.levels(None, route, vhost, false),
                req,
                path,
            ),
            RouteAction::Forward(action) => {
                let (cluster, weighted): (SelectedCluster<'a>, Option<&'a WeightedCluster>) =
                    match &action.cluster {
                        ClusterSpecifier::Cluster(c) => (SelectedCluster::Named(c), None),
                        ClusterSpecifier::Weighted(w) => {
                            let hash = || super::request_hash::of_view(action, req);
                            let wc = w.pick(w.random_value(req.headers, req.random, hash));
                            let cluster = match &wc.cluster_header {
                                None => SelectedCluster::Named(&wc.name),
                                Some(h) => match req.headers.first_value(h) {
                                    Some(v) => SelectedCluster::FromHeader(v),
                                    None => SelectedCluster::Missing,
                                },
                            };
                            (cluster, Some(wc))
                        }
                        ClusterSpecifier::Header(h) => match req.headers.first_value(h) {
                            Some(v) => (SelectedCluster::FromHeader(v), None),
                            None => (SelectedCluster::Missing, None),
                        },
                    };
                let new_path = rewrite_path(
                    &route.matcher.path,
                    action.prefix_rewrite.as_deref(),
                    action.regex_rewrite.as_ref(),
                    req.path,
                    path,
                );
                let host_rewrite = match &action.host_rewrite {
                    HostRewrite::None => None,
                    HostRewrite::Literal(h) => Some(HostRewriteResult::Literal(h)),
                    HostRewrite::Auto => Some(HostRewriteResult::Auto),
                    HostRewrite::Header(h) => Some(HostRewriteResult::Header(h)),
                    HostRewrite::PathRegex(r) => {
                        Some(HostRewriteResult::Computed(r.apply(path).into_owned()))
                    }
                    HostRewrite::Format(f) => Some(HostRewriteResult::Format(f)),
                };
                Selection::Forward(Forward {
                    route_ref,
                    vhost,
                    route,
                    action,
                    cluster,
                    path: new_path,
                    host_rewrite,
                    cluster_host_rewrite: weighted.and_then(|w| w.host_rewrite.as_deref()),
                    weighted,
                    retry_allowed: action.retry_policy.as_ref().is_none_or(|p| {
                        p.retriable_request_headers.is_empty()
                            || p.retriable_request_headers
                                .iter()
                                .any(|m| header_matches(m, req))
                    }),
                    cluster_request_headers: weighted
                        .is_some_and(|w| !w.request_headers.is_empty()),
                    request_headers: self.levels(weighted, route, vhost, true),
                    response_headers: self.levels(weighted, route, vhost, false),
                })
            }
        }
    }

    fn levels<'a>(
        &'a self,
        weighted: Option<&'a WeightedCluster>,
        route: &'a Route,
        vhost: &'a VirtualHost,
        request: bool,
    ) -> HeaderLevels<'a> {
        let (w, r, v, g) = if request {
            (
                weighted.map(|w| &w.request_headers),
                &route.request_headers,
                &vhost.request_headers,
                &self.request_headers,
            )
        } else {
            (
                weighted.map(|w| &w.response_headers),
                &route.response_headers,
                &vhost.response_headers,
                &self.response_headers,
            )
        };
        if self.most_specific_header_mutations_wins {
            HeaderLevels::new([w, Some(g), Some(v), Some(r)])
        } else {
            HeaderLevels::new([w, Some(r), Some(v), Some(g)])
        }
    }
}

fn route_matches<H: HeaderLookup + ?Sized>(
    route: &Route,
    req: &RequestView<'_, H>,
    path: &str,
    query: Option<&str>,
) -> Result<(), Mismatch> {
    match_request(&route.matcher, req, path, query)
}

/// Whether a request matches a `RouteMatch` outside a route table (a filter's rules, as the
/// jwt_authn filter's `rules[].match`).
pub(crate) fn request_matches<H: HeaderLookup + ?Sized>(
    m: &super::RouteMatch,
    req: &RequestView<'_, H>,
) -> bool {
    let (path, query) = split_path(req.path);
    match_request(m, req, path, query).is_ok()
}

fn match_request<H: HeaderLookup + ?Sized>(
    m: &super::RouteMatch,
    req: &RequestView<'_, H>,
    path: &str,
    query: Option<&str>,
) -> Result<(), Mismatch> {
    if let Some(f) = &m.runtime_fraction {
        if !f.holds(req.random) {
            return Err(Mismatch::RuntimeFraction);
        }
    }
    if !m.path.matches(path, m.case_sensitive) {
        return Err(Mismatch::Path);
    }
    if m.grpc && !req.headers.first_value("content-type").is_some_and(is_grpc) {
        return Err(Mismatch::Grpc);
    }
    for (i, h) in m.headers.iter().enumerate() {
        if !header_matches(h, req) {
            return Err(Mismatch::Header(i));
        }
    }
    if !m.query_parameters.is_empty() {
        let q = query.unwrap_or("");
        if let Some(i) = m.query_parameters.iter().position(|qp| !qp.matches(q)) {
            return Err(Mismatch::Query(i));
        }
    }
    if let Some(i) = m.cookies.iter().position(|c| !c.matches(req.headers)) {
        return Err(Mismatch::Cookie(i));
    }
    if !m.dynamic_metadata.is_empty() {
        let empty = DynamicMetadata::default();
        let md = req.metadata.unwrap_or(&empty);
        if let Some(i) = m.dynamic_metadata.iter().position(|d| !d.matches(md)) {
            return Err(Mismatch::DynamicMetadata(i));
        }
    }
    Ok(())
}

/// The first value of header `name`, pseudo-headers read from the request line.
pub(crate) fn header_value<'a, H: HeaderLookup + ?Sized>(
    req: &RequestView<'a, H>,
    name: &str,
) -> Option<&'a str> {
    match name {
        ":method" => Some(req.method),
        ":authority" | "host" => req.authority,
        ":path" => Some(req.path),
        ":scheme" => Some(req.scheme),
        name => req.headers.first_value(name),
    }
}

/// Whether the request matches `h` (pseudo-headers read the request line).
pub(crate) fn header_matches<H: HeaderLookup + ?Sized>(
    h: &HeaderMatcher,
    req: &RequestView<'_, H>,
) -> bool {
    let single = |v: Option<&str>| h.matches(v.map(Cow::Borrowed));
    match h.name.as_str() {
        ":method" => single(Some(req.method)),
        ":authority" | "host" => single(req.authority),
        ":path" => single(Some(req.path)),
        ":scheme" => single(Some(req.scheme)),
        name => h.matches_any(name, req.headers),
    }
}

/// Envoy's `Grpc::Common::hasGrpcContentType`: `application/grpc`, or `application/grpc+`
/// followed by anything (`application/grpc-web` is not gRPC).
pub(crate) fn is_grpc(content_type: &str) -> bool {
    content_type
        .strip_prefix("application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+'))
}

/// Envoy's path rewrite: `prefix_rewrite` replaces the configured prefix/path (the whole
/// path for safe_regex), `regex_rewrite` rewrites the path; the query string is kept.
fn rewrite_path<'a>(
    matcher: &super::PathMatch,
    prefix_rewrite: Option<&str>,
    regex_rewrite: Option<&super::RegexRewrite>,
    full: &'a str,
    path: &str,
) -> Cow<'a, str> {
    use super::PathMatch;
    if let Some(rw) = prefix_rewrite {
        let matched_len = match matcher {
            PathMatch::Prefix(p) | PathMatch::Path(p) | PathMatch::PathSeparatedPrefix(p) => {
                p.len()
            }
            PathMatch::SafeRegex(_) => path.len(),
        };
        let mut s = String::with_capacity(full.len() + rw.len());
        s.push_str(rw);
        s.push_str(&full[matched_len..]);
        return Cow::Owned(s);
    }
    if let Some(rr) = regex_rewrite {
        let mut s = rr.apply(path).into_owned();
        s.push_str(&full[path.len()..]);
        return Cow::Owned(s);
    }
    Cow::Borrowed(full)
}

/// The host without its port, as Envoy's `HeaderUtility::getPortStart`: everything from
/// the last `:` unless that `:` is inside `[...]` (an IPv6 literal).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if host.rfind(']').is_none_or(|v6_end| v6_end < i) => &host[..i],
        _ => host,
    }
}

/// Envoy's redirect URI: scheme, host (port handling), path (rewrite / path_redirect /
/// strip_query), and where its path starts.
fn redirect_location<H: HeaderLookup + ?Sized>(
    r: &RedirectAction,
    route: &Route,
    req: &RequestView<'_, H>,
    path: &str,
) -> (String, usize) {
    // Envoy's `newUri` takes the request's scheme from `x-forwarded-proto` (the client's, kept on
    // a plain-text listener without `use_remote_address`; set to the connection's otherwise).
    let request_scheme = req
        .headers
        .first_value("x-forwarded-proto")
        .unwrap_or(req.scheme);
    let scheme = r.scheme.as_deref().unwrap_or(request_scheme);
    let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
    let host: &str = match &r.host {
        Some(h) => h,
        None => {
            let request_host = req.authority.unwrap_or("");
            let port_start = if request_host.starts_with('[') {
                request_host.rfind("]:").map(|i| i + 1)
            } else {
                request_host.rfind(':')
            };
            match port_start {
                Some(i) => {
                    let request_port = &request_host[i..];
                    let mut remove = !port.is_empty();
                    if scheme != request_scheme {
                        remove |= request_scheme == "https" && request_port == ":443";
                        remove |= request_scheme == "http" && request_port == ":80";
                    }
                    if remove {
                        &request_host[..i]
                    } else {
                        request_host
                    }
                }
                None => request_host,
            }
        }
    };
    let mut path_has_own_query = false;
    let mut final_path: String = match &r.path {
        // `path_rewrite` renders when the redirect is answered (`http::route_reply`).
        RedirectPath::Keep | RedirectPath::Format(_) => req.path.to_string(),
        RedirectPath::Path(p) => {
            if p.contains('?') {
                path_has_own_query = true;
                p.clone()
            } else {
                // Envoy keeps the request's `?query` (and what follows it).
                let mut s = p.clone();
                if let Some(q) = req.path.find('?') {
                    s.push_str(&req.path[q..]);
                }
                s
            }
        }
        RedirectPath::PrefixRewrite(rw) => {
            rewrite_path(&route.matcher.path, Some(rw), None, req.path, path).into_owned()
        }
        RedirectPath::RegexRewrite(rr) => {
            rewrite_path(&route.matcher.path, None, Some(rr), req.path, path).into_owned()
        }
    };
    if r.strip_query && !path_has_own_query {
        if let Some(i) = final_path.find('?') {
            final_path.truncate(i);
        }
    }
    let location = format!("{scheme}://{host}{port}{final_path}");
    let path_start = location.len() - final_path.len();
    (location, path_start)
}

/// A `path_rewrite` redirect's Location: `location` with its path (from `path_start`) set to
/// the rendered format (a missing value renders empty), followed by the request's query unless
/// it has its own or `strip_query`; an empty result keeps `location` (the request's path), as
/// Envoy.
pub(crate) fn rendered_location<'a>(
    f: &super::format::HeaderValueFormat,
    strip_query: bool,
    location: &'a str,
    path_start: usize,
    request_path: &str,
    ctx: &super::format::FormatContext<'_>,
) -> Cow<'a, str> {
    let mut out = location[..path_start].to_string();
    f.render_into(ctx, None, "", &mut out);
    if out.len() == path_start {
        return Cow::Borrowed(location);
    }
    if !strip_query && !out[path_start..].contains('?') {
        if let Some(q) = request_path.find('?') {
            out.push_str(&request_path[q..]);
        }
    }
    Cow::Owned(out)
}
