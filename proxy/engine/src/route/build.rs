//! Compiles a raw `route_config` into a [`RouteTable`]: domain index, matchers (regexes
//! compiled once), actions, header mutations; rejects what Envoy rejects, with field paths.

use std::{collections::HashSet, sync::Arc, time::Duration};

use super::{
    build_hash::hash_policies,
    build_headers::mutations,
    build_match::{compile_regex, header_matcher, route_match},
    build_weighted::route_weighted,
    format::HeaderValueFormat,
    internal_redirect::internal_redirect_policy,
    mirror::{mirror_policies, MirrorPolicy},
    rate_limited::rate_limited_back_off,
    ClusterSpecifier, DirectResponse, DomainIndex, ForwardAction, GrpcTimeout, HostRewrite,
    MaxStreamDuration, PathMatch, RedirectAction, RedirectPath, RegexRewrite, RetryOn, RetryPolicy,
    Route, RouteAction, RouteMatch, RouteTable, VirtualHost, DEFAULT_CLUSTER_NOT_FOUND_STATUS,
    DEFAULT_NUM_RETRIES, DEFAULT_REDIRECT_STATUS, DEFAULT_RETRY_BASE_INTERVAL,
    DEFAULT_RETRY_MAX_INTERVAL_FACTOR, DEFAULT_ROUTE_TIMEOUT,
};
use crate::config::{
    raw_route::{
        RawHeaderMatcher, RawInt64, RawRegexMatchAndSubstitute, RawRetryPolicy, RawRoute,
        RawRouteAction, RawRouteConfiguration, RawVirtualHost,
    },
    ClusterRef, ConfigError, FieldPath, RoutingPriority,
};

pub(crate) use super::build_weighted::{build_weighted, WeightedInput};

/// The cluster names a route configuration may reference.
pub(crate) struct KnownClusters<'a> {
    pub(super) names: &'a HashSet<String>,
    /// `validate_clusters`: when false every name is accepted.
    validate: bool,
    /// `max_direct_response_body_size_bytes` of the route configuration (Envoy's default 4096).
    max_direct_response_body: usize,
}

/// Envoy's default `max_direct_response_body_size_bytes`.
pub(crate) const DEFAULT_MAX_DIRECT_RESPONSE_BODY: usize = 4096;

impl<'a> KnownClusters<'a> {
    /// Every reference must name one of `names`.
    pub(crate) fn strict(names: &'a HashSet<String>) -> Self {
        Self {
            names,
            validate: true,
            max_direct_response_body: DEFAULT_MAX_DIRECT_RESPONSE_BODY,
        }
    }

    /// Every name is accepted (a tcp_proxy looks its cluster up per connection, as Envoy).
    pub(crate) fn lax(names: &'a HashSet<String>) -> Self {
        Self {
            validate: false,
            ..Self::strict(names)
        }
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        !self.validate || self.names.contains(name)
    }
}

/// Compiles `route_config` at path `p`; every cluster reference must be in `clusters`.
pub(crate) fn build_route_table(
    raw: RawRouteConfiguration,
    p: &FieldPath,
    known: &HashSet<String>,
) -> Result<RouteTable, ConfigError> {
    // `validate_clusters` defaults to true for an inline route configuration (Envoy); with false
    // a dangling cluster name is accepted here and answers 503 (NC) at run time.
    let clusters = &KnownClusters {
        names: known,
        validate: raw.validate_clusters.unwrap_or(true),
        max_direct_response_body: raw
            .max_direct_response_body_size_bytes
            .map_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY, |n| n as usize),
    };
    let request_headers = mutations(
        &raw.request_headers_to_add,
        &raw.request_headers_to_remove,
        p,
        "request",
    )?;
    let response_headers = mutations(
        &raw.response_headers_to_add,
        &raw.response_headers_to_remove,
        p,
        "response",
    )?;
    let per_filter = crate::http::filters::per_filter_configs(
        raw.typed_per_filter_config.as_ref(),
        &p.field("typed_per_filter_config"),
        None,
    )?;
    let mirrors = mirror_policies(
        &raw.request_mirror_policies,
        &p.field("request_mirror_policies"),
        clusters,
        &Arc::from([]),
    )?;
    let mut internal_only_headers = Vec::with_capacity(raw.internal_only_headers.len());
    for (i, n) in raw.internal_only_headers.iter().enumerate() {
        let name =
            http::HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).map_err(|_| {
                p.field("internal_only_headers")
                    .index(i)
                    .err(format!("{n:?} is not a valid header name"))
            })?;
        internal_only_headers.push(name);
    }
    let mut domains = DomainIndex::default();
    let mut virtual_hosts = Vec::with_capacity(raw.virtual_hosts.len());
    for (i, vh) in raw.virtual_hosts.into_iter().enumerate() {
        let vp = p.field("virtual_hosts").index(i);
        for (j, d) in vh.domains.iter().enumerate() {
            add_domain(&mut domains, d, i, &vp.field("domains").index(j))?;
        }
        virtual_hosts.push(virtual_host(vh, &vp, clusters, &mirrors)?);
    }
    domains.suffix.sort_by_key(|e| std::cmp::Reverse(e.0));
    domains.prefix.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(RouteTable {
        name: raw.name.unwrap_or_default(),
        virtual_hosts,
        validate_clusters: clusters.validate,
        ignore_port_in_host_matching: raw.ignore_port_in_host_matching.unwrap_or(false),
        most_specific_header_mutations_wins: raw
            .most_specific_header_mutations_wins
            .unwrap_or(false),
        request_headers,
        response_headers,
        domains,
        per_filter,
        internal_only_headers,
    })
}

fn add_domain(
    idx: &mut DomainIndex,
    domain: &str,
    vhost: usize,
    p: &FieldPath,
) -> Result<(), ConfigError> {
    if domain.is_empty() {
        return Err(p.err("domain must not be empty"));
    }
    if domain.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(p.err(format!("invalid domain {domain:?}")));
    }
    let d = domain.to_ascii_lowercase();
    let dup = if d == "*" {
        idx.default.replace(vhost).is_some()
    } else if let Some(suffix) = d.strip_prefix('*') {
        insert_wildcard(&mut idx.suffix, suffix, vhost)
    } else if let Some(prefix) = d.strip_suffix('*') {
        insert_wildcard(&mut idx.prefix, prefix, vhost)
    } else {
        idx.exact.insert(d.clone(), vhost).is_some()
    };
    if dup {
        if d == "*" {
            return Err(p.err("only a single wildcard domain `*` is permitted in a route config"));
        }
        return Err(p.err(format!(
            "duplicate domain {d:?}: domains must be unique across virtual hosts"
        )));
    }
    Ok(())
}

/// Adds a wildcard's fixed part to its length group; true if it was already there.
fn insert_wildcard(
    groups: &mut Vec<(usize, std::collections::HashMap<String, usize>)>,
    fixed: &str,
    vhost: usize,
) -> bool {
    let pos = match groups.iter().position(|(len, _)| *len == fixed.len()) {
        Some(p) => p,
        None => {
            groups.push((fixed.len(), Default::default()));
            groups.len() - 1
        }
    };
    groups[pos].1.insert(fixed.to_string(), vhost).is_some()
}

fn virtual_host(
    raw: RawVirtualHost,
    p: &FieldPath,
    clusters: &KnownClusters<'_>,
    config_mirrors: &Arc<[MirrorPolicy]>,
) -> Result<VirtualHost, ConfigError> {
    let name = raw
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| p.field("name").err("required"))?;
    if raw.domains.is_empty() {
        return Err(p.field("domains").err("at least one domain is required"));
    }
    let retry_policy = match &raw.retry_policy {
        Some(r) => Some(retry_policy(r, &p.field("retry_policy"))?),
        None => None,
    };
    let hedge = match &raw.hedge_policy {
        Some(h) => hedge_policy(h, &p.field("hedge_policy"))?,
        None => false,
    };
    let per_filter = crate::http::filters::per_filter_configs(
        raw.typed_per_filter_config.as_ref(),
        &p.field("typed_per_filter_config"),
        crate::http::filters::legacy_cors(raw.cors.as_ref(), &p.field("cors"))?,
    )?;
    let mirrors = mirror_policies(
        &raw.request_mirror_policies,
        &p.field("request_mirror_policies"),
        clusters,
        config_mirrors,
    )?;
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        routes.push(route(
            r,
            &p.field("routes").index(i),
            clusters,
            VhostDefaults {
                retry: retry_policy.as_ref(),
                mirrors: &mirrors,
                hedge,
                buffer_limit: (
                    raw.request_body_buffer_limit,
                    raw.per_request_buffer_limit_bytes,
                ),
            },
        )?);
    }
    Ok(VirtualHost {
        request_headers: mutations(
            &raw.request_headers_to_add,
            &raw.request_headers_to_remove,
            p,
            "request",
        )?,
        response_headers: mutations(
            &raw.response_headers_to_add,
            &raw.response_headers_to_remove,
            p,
            "response",
        )?,
        name,
        domains: raw.domains,
        routes,
        retry_policy,
        per_filter,
        rate_limits: super::rate_limits::build(&raw.rate_limits, &p.field("rate_limits"))?.into(),
        include_request_attempt_count: raw.include_request_attempt_count.unwrap_or(false),
        include_attempt_count_in_response: raw.include_attempt_count_in_response.unwrap_or(false),
        include_is_timeout_retry_header: raw.include_is_timeout_retry_header.unwrap_or(false),
        require_tls: super::require_tls::RequireTls::parse(
            raw.require_tls.as_deref(),
            &p.field("require_tls"),
        )?,
    })
}

/// What a virtual host gives the routes that do not set their own.
#[derive(Clone, Copy)]
struct VhostDefaults<'a> {
    retry: Option<&'a RetryPolicy>,
    mirrors: &'a Arc<[MirrorPolicy]>,
    /// `hedge_policy.hedge_on_per_try_timeout`.
    hedge: bool,
    /// `request_body_buffer_limit`, `per_request_buffer_limit_bytes`.
    buffer_limit: (Option<u64>, Option<u32>),
}

fn route(
    raw: RawRoute,
    p: &FieldPath,
    clusters: &KnownClusters<'_>,
    vhost: VhostDefaults<'_>,
) -> Result<Route, ConfigError> {
    let mp = p.field("match");
    let matcher = route_match(raw.matcher.as_ref().ok_or_else(|| mp.err("required"))?, &mp)?;
    let decorator = match &raw.decorator {
        None => None,
        Some(d) => {
            let op = p.field("decorator").field("operation");
            if d.operation.is_empty() {
                return Err(op.err("must not be empty"));
            }
            Some(crate::route::Decorator {
                operation: http::HeaderValue::from_str(&d.operation).map_err(|_| {
                    op.err(format!("{:?} is not a valid header value", d.operation))
                })?,
                propagate: d.propagate.unwrap_or(true),
            })
        }
    };
    let tracing = match &raw.tracing {
        Some(t) => Some(crate::config::tracing::route_tracing(
            t,
            &p.field("tracing"),
        )?),
        None => None,
    };
    let legacy = match &raw.route {
        Some(a) => {
            crate::http::filters::legacy_cors(a.cors.as_ref(), &p.field("route").field("cors"))?
        }
        None => None,
    };
    let per_filter = crate::http::filters::per_filter_configs(
        raw.typed_per_filter_config.as_ref(),
        &p.field("typed_per_filter_config"),
        legacy,
    )?;
    // Envoy's `getRequestBodyBufferLimit`: the route's `request_body_buffer_limit`, the
    // virtual host's, then the deprecated `per_request_buffer_limit_bytes` of each.
    let buffer_limit = raw
        .request_body_buffer_limit
        .or(vhost.buffer_limit.0)
        .or(raw.per_request_buffer_limit_bytes.map(u64::from))
        .or(vhost.buffer_limit.1.map(u64::from));
    let action = match (raw.route, raw.redirect, raw.direct_response) {
        (Some(a), None, None) => {
            let mut f = forward(a, &matcher, &p.field("route"), clusters, vhost)?;
            f.buffer_limit = buffer_limit;
            RouteAction::Forward(Box::new(f))
        }
        (None, Some(r), None) => {
            let rp = p.field("redirect");
            let scheme = match (r.scheme_redirect, r.https_redirect) {
                (Some(_), Some(true)) => {
                    return Err(rp.err("only one of scheme_redirect and https_redirect"))
                }
                (Some(s), _) => Some(s.to_ascii_lowercase()),
                (None, Some(true)) => Some("https".to_string()),
                (None, _) => None,
            };
            let path =
                match (
                    r.path_redirect,
                    r.prefix_rewrite,
                    r.regex_rewrite,
                    r.path_rewrite,
                ) {
                    (None, None, None, None) => RedirectPath::Keep,
                    (Some(pr), None, None, None) => RedirectPath::Path(pr),
                    (None, Some(pr), None, None) => {
                        check_prefix_rewrite(&pr, &matcher, &rp.field("prefix_rewrite"))?;
                        RedirectPath::PrefixRewrite(pr)
                    }
                    (None, None, Some(rr), None) => {
                        RedirectPath::RegexRewrite(regex_rewrite(&rr, &rp.field("regex_rewrite"))?)
                    }
                    (None, None, None, Some(f)) => RedirectPath::Format(Arc::new(
                        HeaderValueFormat::parse_template(&f)
                            .map_err(|e| rp.field("path_rewrite").err(e))?,
                    )),
                    _ => return Err(rp.err(
                        "only one of path_redirect, prefix_rewrite, regex_rewrite and path_rewrite",
                    )),
                };
            let status = match r.response_code.as_deref() {
                None | Some("MOVED_PERMANENTLY") => DEFAULT_REDIRECT_STATUS,
                Some("FOUND") => 302,
                Some("SEE_OTHER") => 303,
                Some("TEMPORARY_REDIRECT") => 307,
                Some("PERMANENT_REDIRECT") => 308,
                Some(o) => {
                    return Err(rp
                        .field("response_code")
                        .err(format!("unknown value {o:?}")))
                }
            };
            let port = match r.port_redirect {
                None | Some(0) => None,
                Some(x) => Some(u16::try_from(x).map_err(|_| {
                    rp.field("port_redirect")
                        .err(format!("{x} is not a valid port"))
                })?),
            };
            RouteAction::Redirect(Box::new(RedirectAction {
                scheme,
                host: r.host_redirect.filter(|h| !h.is_empty()),
                port,
                path,
                status,
                strip_query: r.strip_query.unwrap_or(false),
            }))
        }
        (None, None, Some(d)) => {
            let dp = p.field("direct_response");
            let status = d.status.ok_or_else(|| dp.field("status").err("required"))?;
            if !(200..600).contains(&status) {
                return Err(dp
                    .field("status")
                    .err(format!("{status} is not in [200, 600)")));
            }
            let body = match d.body {
                None => None,
                Some(b) => {
                    if b.filename.is_some() {
                        return Err(dp
                            .field("body")
                            .field("filename")
                            .unsupported("use inline_string"));
                    }
                    let bp = dp.field("body");
                    let (ip, body) = match (b.inline_string, b.inline_bytes) {
                        (Some(s), None) => (bp.field("inline_string"), bytes::Bytes::from(s)),
                        (None, Some(b64)) => {
                            let ip = bp.field("inline_bytes");
                            let raw = base64::Engine::decode(
                                &base64::engine::general_purpose::STANDARD,
                                b64.as_bytes(),
                            )
                            .map_err(|e| ip.err(format!("not base64: {e}")))?;
                            (ip, bytes::Bytes::from(raw))
                        }
                        (Some(_), Some(_)) => {
                            return Err(bp.err("only one of inline_string and inline_bytes"))
                        }
                        (None, None) => return Err(bp.field("inline_string").err("required")),
                    };
                    if body.len() > clusters.max_direct_response_body {
                        return Err(ip.err(format!(
                            "{} bytes exceed max_direct_response_body_size_bytes ({})",
                            body.len(),
                            clusters.max_direct_response_body
                        )));
                    }
                    Some(body)
                }
            };
            let body_format = match &d.body_format {
                Some(f) => Some(super::body_format::BodyFormat::build(
                    f,
                    &dp.field("body_format"),
                )?),
                None => None,
            };
            RouteAction::DirectResponse(DirectResponse {
                status: status as u16,
                body,
                body_format,
            })
        }
        (None, None, None) => {
            return Err(p.err("one of route, redirect and direct_response is required"))
        }
        _ => return Err(p.err("only one of route, redirect and direct_response may be set")),
    };
    Ok(Route {
        name: raw.name,
        matcher,
        action,
        request_headers: mutations(
            &raw.request_headers_to_add,
            &raw.request_headers_to_remove,
            p,
            "request",
        )?,
        response_headers: mutations(
            &raw.response_headers_to_add,
            &raw.response_headers_to_remove,
            p,
            "response",
        )?,
        per_filter,
        decorator,
        tracing,
        stat_prefix: raw.stat_prefix.filter(|s| !s.is_empty()),
    })
}

pub(super) fn regex_rewrite(
    raw: &RawRegexMatchAndSubstitute,
    p: &FieldPath,
) -> Result<RegexRewrite, ConfigError> {
    let pp = p.field("pattern");
    let pat = raw.pattern.as_ref().ok_or_else(|| pp.err("required"))?;
    let re_src = pat
        .regex
        .as_deref()
        .ok_or_else(|| pp.field("regex").err("required"))?;
    let pattern = compile_regex(re_src, re_src, &pp.field("regex"))?;
    let sub = raw
        .substitution
        .as_deref()
        .ok_or_else(|| p.field("substitution").err("required"))?;
    let substitution = re2_substitution(sub, pattern.captures_len() - 1)
        .map_err(|m| p.field("substitution").err(m))?;
    Ok(RegexRewrite {
        pattern,
        substitution,
    })
}

/// RE2 rewrite string (`\1`, `\\`) -> regex crate replacement (`${1}`, `$$` for `$`).
fn re2_substitution(sub: &str, groups: usize) -> Result<String, String> {
    let mut out = String::with_capacity(sub.len() + 8);
    let mut chars = sub.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some(d @ '0'..='9') => {
                    let n = d as usize - '0' as usize;
                    if n > groups {
                        return Err(format!("{sub:?} refers to group \\{n} but the pattern has {groups} capture groups"));
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                _ => {
                    return Err(format!(
                        "invalid rewrite {sub:?}: '\\' must be followed by a digit or '\\'"
                    ))
                }
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn check_prefix_rewrite(rw: &str, m: &RouteMatch, p: &FieldPath) -> Result<(), ConfigError> {
    if rw.contains(['?', '#']) && !matches!(m.path, PathMatch::SafeRegex(_)) {
        return Err(p.err("must not contain '?' or '#'"));
    }
    Ok(())
}

fn forward(
    raw: RawRouteAction,
    m: &RouteMatch,
    p: &FieldPath,
    clusters: &KnownClusters<'_>,
    vhost: VhostDefaults<'_>,
) -> Result<ForwardAction, ConfigError> {
    let cluster = match (raw.cluster, raw.weighted_clusters, raw.cluster_header) {
        (Some(c), None, None) => {
            if !clusters.contains(&c) {
                return Err(p.field("cluster").err(format!("unknown cluster {c:?}")));
            }
            ClusterSpecifier::Cluster(ClusterRef::new(&c))
        }
        (None, Some(w), None) => {
            ClusterSpecifier::Weighted(route_weighted(w, &p.field("weighted_clusters"), clusters)?)
        }
        (None, None, Some(h)) => {
            ClusterSpecifier::Header(header_name(&h, &p.field("cluster_header"))?)
        }
        (None, None, None) => {
            return Err(p.err("one of cluster, weighted_clusters and cluster_header is required"))
        }
        _ => {
            return Err(
                p.err("only one of cluster, weighted_clusters and cluster_header may be set")
            )
        }
    };
    let cluster_not_found_status = match raw.cluster_not_found_response_code.as_deref() {
        None | Some("SERVICE_UNAVAILABLE") => DEFAULT_CLUSTER_NOT_FOUND_STATUS,
        Some("NOT_FOUND") => 404,
        Some("INTERNAL_SERVER_ERROR") => 500,
        Some(o) => {
            return Err(p
                .field("cluster_not_found_response_code")
                .err(format!("unknown value {o:?}")))
        }
    };
    let path_rewrite = raw.path_rewrite.filter(|s| !s.is_empty());
    let rewrites = [
        raw.prefix_rewrite.is_some(),
        raw.regex_rewrite.is_some(),
        path_rewrite.is_some(),
    ];
    if rewrites.iter().filter(|b| **b).count() > 1 {
        return Err(p.err("only one of prefix_rewrite, regex_rewrite and path_rewrite may be set"));
    }
    let path_format = match &path_rewrite {
        Some(f) => Some(Arc::new(
            HeaderValueFormat::parse_template(f).map_err(|e| p.field("path_rewrite").err(e))?,
        )),
        None => None,
    };
    let prefix_rewrite = raw.prefix_rewrite.filter(|s| !s.is_empty());
    if let Some(pr) = &prefix_rewrite {
        check_prefix_rewrite(pr, m, &p.field("prefix_rewrite"))?;
    }
    let regex_rewrite = match &raw.regex_rewrite {
        Some(r) => Some(regex_rewrite(r, &p.field("regex_rewrite"))?),
        None => None,
    };
    let host_rewrite = host_rewrite(
        raw.host_rewrite_literal,
        raw.auto_host_rewrite,
        raw.host_rewrite_header,
        raw.host_rewrite_path_regex.as_ref(),
        raw.host_rewrite,
        p,
    )?;
    let retry_policy = match &raw.retry_policy {
        Some(r) => Some(retry_policy(r, &p.field("retry_policy"))?),
        None => vhost.retry.cloned(),
    };
    let hash_policy = hash_policies(&raw.hash_policy, &p.field("hash_policy"))?;
    let max_stream_duration = raw.max_stream_duration.as_ref().map(|m| MaxStreamDuration {
        max: m.max_stream_duration.map(|d| d.0),
        grpc_header_max: m.grpc_timeout_header_max.map(|d| d.0),
        grpc_header_offset: m.grpc_timeout_header_offset.map_or(Duration::ZERO, |d| d.0),
    });
    // Envoy ignores the route `timeout`, `max_grpc_timeout` and `grpc_timeout_offset` once
    // `max_stream_duration` is set ("new timeouts"); the offset alone does nothing.
    let grpc_timeout = raw
        .max_grpc_timeout
        .filter(|_| max_stream_duration.is_none())
        .map(|max| GrpcTimeout {
            max_ms: duration_ms(max.0),
            offset_ms: raw.grpc_timeout_offset.map_or(0, |d| duration_ms(d.0)),
        });
    let timeout = match raw.timeout {
        _ if max_stream_duration.is_some() => None,
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
    };
    let mirrors = mirror_policies(
        &raw.request_mirror_policies,
        &p.field("request_mirror_policies"),
        clusters,
        vhost.mirrors,
    )?;
    let internal_redirect = match &raw.internal_redirect_policy {
        Some(r) => Some(Arc::new(internal_redirect_policy(
            r,
            &p.field("internal_redirect_policy"),
        )?)),
        None => None,
    };
    let rate_limits = super::rate_limits::build(&raw.rate_limits, &p.field("rate_limits"))?;
    // Envoy's `buildHedgePolicy`: the route's policy when it has one, else the virtual host's.
    let hedge_on_per_try_timeout = match &raw.hedge_policy {
        Some(h) => hedge_policy(h, &p.field("hedge_policy"))?,
        None => vhost.hedge,
    };
    let priority = match raw.priority.as_deref() {
        None => RoutingPriority::Default,
        Some(name) => RoutingPriority::parse(name)
            .ok_or_else(|| p.field("priority").err(format!("unknown value {name:?}")))?,
    };
    Ok(ForwardAction {
        buffer_limit: None,
        priority,
        hedge_on_per_try_timeout,
        mirrors,
        internal_redirect,
        rate_limits: rate_limits.into(),
        include_vh_rate_limits: raw.include_vh_rate_limits.unwrap_or(false),
        cluster,
        prefix_rewrite,
        regex_rewrite,
        path_format,
        host_rewrite,
        timeout,
        idle_timeout: raw.idle_timeout.map(|d| d.0),
        retry_policy,
        hash_policy,
        cluster_not_found_status,
        max_stream_duration,
        grpc_timeout,
        upgrades: route_upgrades(&raw.upgrade_configs, &p.field("upgrade_configs"))?,
        append_x_forwarded_host: raw.append_x_forwarded_host.unwrap_or(false),
    })
}

/// `RouteAction.upgrade_configs[]` as Envoy's `RouteEntryImplBase` reads them: `upgrade_type`
/// lower-cased, a repeated type refused ("Duplicate upgrade"), `enabled` default true. CONNECT
/// is refused: no route here takes a CONNECT request.
fn route_upgrades(
    raw: &[crate::config::raw_route::RawRouteUpgradeConfig],
    p: &FieldPath,
) -> Result<Box<[(String, bool)]>, ConfigError> {
    let mut out: Vec<(String, bool)> = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        let at = p.index(i).field("upgrade_type");
        let t = u
            .upgrade_type
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| at.err("must not be empty"))?
            .to_ascii_lowercase();
        if t == "connect" || t == "connect-udp" {
            return Err(at.err("CONNECT is not supported (never routed here)"));
        }
        if out.iter().any(|(seen, _)| *seen == t) {
            return Err(at.err(format!("duplicate upgrade {t:?}")));
        }
        out.push((t, u.enabled.unwrap_or(true)));
    }
    Ok(out.into_boxed_slice())
}

/// A duration in whole milliseconds (Envoy's `PROTOBUF_GET_MS`).
fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `host_rewrite_literal` | `auto_host_rewrite` | `host_rewrite_header` |
/// `host_rewrite_path_regex` | `host_rewrite` (Envoy's `host_rewrite_specifier` oneof).
fn host_rewrite(
    literal: Option<String>,
    auto: Option<bool>,
    header: Option<String>,
    path_regex: Option<&RawRegexMatchAndSubstitute>,
    format: Option<String>,
    p: &FieldPath,
) -> Result<HostRewrite, ConfigError> {
    let set = [
        literal.is_some(),
        auto == Some(true),
        header.is_some(),
        path_regex.is_some(),
        format.is_some(),
    ];
    if set.iter().filter(|b| **b).count() > 1 {
        return Err(p.err(
            "only one of host_rewrite_literal, auto_host_rewrite, host_rewrite_header, \
             host_rewrite_path_regex and host_rewrite may be set",
        ));
    }
    Ok(if let Some(h) = literal.filter(|h| !h.is_empty()) {
        HostRewrite::Literal(host_value(h, &p.field("host_rewrite_literal"))?)
    } else if auto == Some(true) {
        HostRewrite::Auto
    } else if let Some(h) = header.filter(|h| !h.is_empty()) {
        HostRewrite::Header(header_name(&h, &p.field("host_rewrite_header"))?)
    } else if let Some(r) = path_regex {
        HostRewrite::PathRegex(regex_rewrite(r, &p.field("host_rewrite_path_regex"))?)
    } else if let Some(f) = format.filter(|f| !f.is_empty()) {
        HostRewrite::Format(Arc::new(
            HeaderValueFormat::parse_template(&f).map_err(|e| p.field("host_rewrite").err(e))?,
        ))
    } else {
        HostRewrite::None
    })
}

/// A Host value (`host_rewrite_literal`): must be a valid header value.
pub(super) fn host_value(h: String, p: &FieldPath) -> Result<String, ConfigError> {
    if http::HeaderValue::from_str(&h).is_err() {
        return Err(p.err(format!("invalid host {h:?}")));
    }
    Ok(h)
}

/// A request header name (`cluster_header`, `host_rewrite_header`, ...), lower-cased.
pub(super) fn header_name(h: &str, p: &FieldPath) -> Result<String, ConfigError> {
    let n = h.to_ascii_lowercase();
    if n.is_empty() || http::HeaderName::from_bytes(n.as_bytes()).is_err() {
        return Err(p.err(format!("invalid header name {h:?}")));
    }
    Ok(n)
}

/// `retry_host_predicate[].name` of Envoy's previous-hosts predicate.
const PREVIOUS_HOSTS_NAME: &str = "envoy.retry_host_predicates.previous_hosts";
/// Its `typed_config.@type`.
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// `host_selection_retry_max_attempts` (int64): negative counts as 0; bounded so a huge value
/// cannot spin (each re-pick is one load balancer call).
fn clamp_attempts(n: i64) -> u32 {
    n.clamp(0, 1024) as u32
}

fn retry_policy(raw: &RawRetryPolicy, p: &FieldPath) -> Result<RetryPolicy, ConfigError> {
    let mut on = RetryOn::default();
    for token in raw
        .retry_on
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        match token {
            t if on.add_http(t) || on.add_grpc(t) => {}
            other => {
                return Err(p
                    .field("retry_on")
                    .err(format!("unknown retry condition {other:?}")))
            }
        }
    }
    let mut codes = Vec::new();
    for (i, c) in raw.retriable_status_codes.iter().enumerate() {
        if !(100..600).contains(c) {
            return Err(p
                .field("retriable_status_codes")
                .index(i)
                .err(format!("{c} is not an HTTP status")));
        }
        codes.push(*c as u16);
    }
    let (base_interval, max_interval) = match &raw.retry_back_off {
        None => (
            DEFAULT_RETRY_BASE_INTERVAL,
            DEFAULT_RETRY_BASE_INTERVAL * DEFAULT_RETRY_MAX_INTERVAL_FACTOR,
        ),
        Some(b) => {
            let bp = p.field("retry_back_off");
            let base = b
                .base_interval
                .ok_or_else(|| bp.field("base_interval").err("required"))?
                .0;
            if base.is_zero() {
                return Err(bp.field("base_interval").err("must be greater than 0s"));
            }
            let max = b
                .max_interval
                .map_or(base * DEFAULT_RETRY_MAX_INTERVAL_FACTOR, |d| d.0);
            if max < base {
                return Err(bp
                    .field("max_interval")
                    .err("must be greater than or equal to base_interval"));
            }
            (base, max)
        }
    };
    let matchers = |list: &[RawHeaderMatcher], f: &str| -> Result<Arc<[_]>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, m)| header_matcher(m, &p.field(f).index(i)))
            .collect()
    };
    let mut previous_hosts = false;
    for (i, pred) in raw.retry_host_predicate.iter().enumerate() {
        let pp = p.field("retry_host_predicate").index(i);
        let ty = pred
            .typed_config
            .as_ref()
            .and_then(|t| t.get("@type"))
            .and_then(|t| t.as_str());
        match (pred.name.as_deref(), ty) {
            (_, Some(PREVIOUS_HOSTS_TYPE)) | (Some(PREVIOUS_HOSTS_NAME), None) => {
                previous_hosts = true
            }
            (_, Some(t)) => {
                return Err(pp
                    .field("typed_config")
                    .field("@type")
                    .unsupported(&format!("retry host predicate {t:?}")))
            }
            (n, None) => {
                return Err(pp
                    .field("name")
                    .unsupported(&format!("retry host predicate {:?}", n.unwrap_or(""))))
            }
        }
    }
    let host_selection_max_attempts = match &raw.host_selection_retry_max_attempts {
        None => 1,
        Some(RawInt64::Number(n)) => clamp_attempts(*n),
        Some(RawInt64::Text(t)) => clamp_attempts(t.parse().map_err(|_| {
            p.field("host_selection_retry_max_attempts")
                .err(format!("invalid int64 {t:?}"))
        })?),
    };
    let rate_limited = match &raw.rate_limited_retry_back_off {
        Some(r) => Some(rate_limited_back_off(
            r,
            &p.field("rate_limited_retry_back_off"),
        )?),
        None => None,
    };
    Ok(RetryPolicy {
        rate_limited,
        retriable_headers: matchers(&raw.retriable_headers, "retriable_headers")?,
        retriable_request_headers: matchers(
            &raw.retriable_request_headers,
            "retriable_request_headers",
        )?,
        previous_hosts,
        host_selection_max_attempts,
        retry_on: on,
        num_retries: raw.num_retries.unwrap_or(DEFAULT_NUM_RETRIES),
        per_try_timeout: raw.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        per_try_idle_timeout: raw
            .per_try_idle_timeout
            .map(|d| d.0)
            .filter(|d| !d.is_zero()),
        base_interval,
        max_interval,
        retriable_status_codes: codes,
    })
}

/// `hedge_policy`: `initial_requests` (>= 1) and `additional_request_chance` are accepted
/// and have no effect, as in Envoy 1.40, which marks them not implemented; returns
/// `hedge_on_per_try_timeout`.
fn hedge_policy(
    h: &crate::config::raw_route::RawHedgePolicy,
    p: &FieldPath,
) -> Result<bool, ConfigError> {
    if h.initial_requests == Some(0) {
        return Err(p.field("initial_requests").err("must be at least 1"));
    }
    Ok(h.hedge_on_per_try_timeout.unwrap_or(false))
}
