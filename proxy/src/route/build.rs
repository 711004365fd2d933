//! Compiles a raw `route_config` into a [`RouteTable`]: domain index, matchers (regexes
//! compiled once), actions, header mutations; rejects what Envoy rejects, with field paths.

use std::collections::HashSet;

use super::{
    AppendAction, ClusterSpecifier, DirectResponse, DomainIndex, ForwardAction, HashPolicy,
    HashPolicyKind, HeaderMatchKind, HeaderMatcher, HeaderMutations, HeaderToAdd, HostRewrite,
    PathMatch, QueryParameterMatcher, RedirectAction, RedirectPath, RegexRewrite, RetryOn,
    RetryPolicy, Route, RouteAction, RouteMatch, RouteTable, StringMatcher, VirtualHost,
    WeightedCluster, WeightedClusters, DEFAULT_CLUSTER_NOT_FOUND_STATUS, DEFAULT_NUM_RETRIES,
    DEFAULT_REDIRECT_STATUS, DEFAULT_RETRY_BASE_INTERVAL, DEFAULT_RETRY_MAX_INTERVAL_FACTOR,
    DEFAULT_ROUTE_TIMEOUT,
};
use crate::config::{
    raw_route::{
        RawHeaderMatcher, RawHeaderValueOption, RawRegexMatchAndSubstitute, RawRegexMatcher,
        RawRetryPolicy, RawRoute, RawRouteAction, RawRouteConfiguration, RawRouteMatch,
        RawStringMatcher, RawVirtualHost,
    },
    ClusterRef, ConfigError, FieldPath,
};

/// One weighted cluster before validation (shared by routes and tcp_proxy).
pub(crate) struct WeightedInput {
    pub(crate) name: Option<String>,
    pub(crate) weight: Option<u32>,
    pub(crate) request_headers: HeaderMutations,
    pub(crate) response_headers: HeaderMutations,
}

/// Compiles `route_config` at path `p`; every cluster reference must be in `clusters`.
pub(crate) fn build_route_table(
    raw: RawRouteConfiguration,
    p: &FieldPath,
    clusters: &HashSet<String>,
) -> Result<RouteTable, ConfigError> {
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
    let mut domains = DomainIndex::default();
    let mut virtual_hosts = Vec::with_capacity(raw.virtual_hosts.len());
    for (i, vh) in raw.virtual_hosts.into_iter().enumerate() {
        let vp = p.field("virtual_hosts").index(i);
        for (j, d) in vh.domains.iter().enumerate() {
            add_domain(&mut domains, d, i, &vp.field("domains").index(j))?;
        }
        virtual_hosts.push(virtual_host(vh, &vp, clusters)?);
    }
    domains.suffix.sort_by_key(|e| std::cmp::Reverse(e.0));
    domains.prefix.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(RouteTable {
        name: raw.name.unwrap_or_default(),
        virtual_hosts,
        ignore_port_in_host_matching: raw.ignore_port_in_host_matching.unwrap_or(false),
        most_specific_header_mutations_wins: raw
            .most_specific_header_mutations_wins
            .unwrap_or(false),
        request_headers,
        response_headers,
        domains,
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
    clusters: &HashSet<String>,
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
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        routes.push(route(
            r,
            &p.field("routes").index(i),
            clusters,
            retry_policy.as_ref(),
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
    })
}

fn route(
    raw: RawRoute,
    p: &FieldPath,
    clusters: &HashSet<String>,
    vhost_retry: Option<&RetryPolicy>,
) -> Result<Route, ConfigError> {
    let mp = p.field("match");
    let matcher = route_match(raw.matcher.as_ref().ok_or_else(|| mp.err("required"))?, &mp)?;
    let action = match (raw.route, raw.redirect, raw.direct_response) {
        (Some(a), None, None) => RouteAction::Forward(Box::new(forward(
            a,
            &matcher,
            &p.field("route"),
            clusters,
            vhost_retry,
        )?)),
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
            let path = match (r.path_redirect, r.prefix_rewrite, r.regex_rewrite) {
                (None, None, None) => RedirectPath::Keep,
                (Some(pr), None, None) => RedirectPath::Path(pr),
                (None, Some(pr), None) => {
                    check_prefix_rewrite(&pr, &matcher, &rp.field("prefix_rewrite"))?;
                    RedirectPath::PrefixRewrite(pr)
                }
                (None, None, Some(rr)) => {
                    RedirectPath::RegexRewrite(regex_rewrite(&rr, &rp.field("regex_rewrite"))?)
                }
                _ => {
                    return Err(
                        rp.err("only one of path_redirect, prefix_rewrite and regex_rewrite")
                    )
                }
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
            let body =
                match d.body {
                    None => None,
                    Some(b) => {
                        if b.filename.is_some() {
                            return Err(dp
                                .field("body")
                                .field("filename")
                                .unsupported("use inline_string"));
                        }
                        Some(b.inline_string.ok_or_else(|| {
                            dp.field("body").field("inline_string").err("required")
                        })?)
                    }
                };
            RouteAction::DirectResponse(DirectResponse {
                status: status as u16,
                body,
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
    })
}

fn route_match(raw: &RawRouteMatch, p: &FieldPath) -> Result<RouteMatch, ConfigError> {
    let mut specs = Vec::new();
    if let Some(x) = &raw.prefix {
        specs.push(PathMatch::Prefix(x.clone()));
    }
    if let Some(x) = &raw.path {
        specs.push(PathMatch::Path(x.clone()));
    }
    if let Some(x) = &raw.safe_regex {
        specs.push(PathMatch::SafeRegex(full_regex(x, &p.field("safe_regex"))?));
    }
    if let Some(x) = &raw.path_separated_prefix {
        let pp = p.field("path_separated_prefix");
        if !x.starts_with('/') || x.ends_with('/') || x.contains(['?', '#']) {
            return Err(pp.err(format!(
                "{x:?} must start with '/', not end with '/' and contain no '?' or '#'"
            )));
        }
        specs.push(PathMatch::PathSeparatedPrefix(x.clone()));
    }
    let path = match specs.len() {
        1 => specs.pop().expect("one"),
        0 => {
            return Err(
                p.err("one of prefix, path, safe_regex and path_separated_prefix is required")
            )
        }
        _ => {
            return Err(
                p.err("only one of prefix, path, safe_regex and path_separated_prefix may be set")
            )
        }
    };
    let mut headers = Vec::new();
    for (i, h) in raw.headers.iter().enumerate() {
        headers.push(header_matcher(h, &p.field("headers").index(i))?);
    }
    let mut query_parameters = Vec::new();
    for (i, q) in raw.query_parameters.iter().enumerate() {
        let qp = p.field("query_parameters").index(i);
        let name = q
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| qp.field("name").err("required"))?;
        let string_match = match (&q.string_match, q.present_match) {
            (Some(_), Some(_)) => return Err(qp.err("only one of string_match and present_match")),
            (Some(sm), None) => Some(string_matcher(sm, &qp.field("string_match"))?),
            (None, _) => None,
        };
        query_parameters.push(QueryParameterMatcher { name, string_match });
    }
    Ok(RouteMatch {
        path,
        case_sensitive: raw.case_sensitive.unwrap_or(true),
        headers,
        query_parameters,
    })
}

fn header_matcher(raw: &RawHeaderMatcher, p: &FieldPath) -> Result<HeaderMatcher, ConfigError> {
    let name = raw
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| p.field("name").err("required"))?;
    let lit = |v: &String,
               f: &str,
               kind: fn(String) -> StringMatcher|
     -> Result<HeaderMatchKind, ConfigError> {
        if v.is_empty() && f != "exact_match" {
            return Err(p.field(f).err("must not be empty"));
        }
        Ok(HeaderMatchKind::String(kind(v.clone())))
    };
    let mut kinds = Vec::new();
    if let Some(sm) = &raw.string_match {
        kinds.push(HeaderMatchKind::String(string_matcher(
            sm,
            &p.field("string_match"),
        )?));
    }
    if let Some(b) = raw.present_match {
        kinds.push(HeaderMatchKind::Present(b));
    }
    if let Some(v) = &raw.exact_match {
        kinds.push(if v.is_empty() {
            HeaderMatchKind::Any
        } else {
            lit(v, "exact_match", |value| StringMatcher::Exact {
                value,
                ignore_case: false,
            })?
        });
    }
    if let Some(v) = &raw.prefix_match {
        kinds.push(lit(v, "prefix_match", |value| StringMatcher::Prefix {
            value,
            ignore_case: false,
        })?);
    }
    if let Some(v) = &raw.suffix_match {
        kinds.push(lit(v, "suffix_match", |value| StringMatcher::Suffix {
            value,
            ignore_case: false,
        })?);
    }
    if let Some(v) = &raw.contains_match {
        kinds.push(lit(v, "contains_match", |value| StringMatcher::Contains {
            value,
            ignore_case: false,
        })?);
    }
    if let Some(r) = &raw.safe_regex_match {
        kinds.push(HeaderMatchKind::String(StringMatcher::Regex(full_regex(
            r,
            &p.field("safe_regex_match"),
        )?)));
    }
    let kind = match kinds.len() {
        0 => HeaderMatchKind::Present(true),
        1 => kinds.pop().expect("one"),
        _ => return Err(p.err("only one header match specifier may be set")),
    };
    Ok(HeaderMatcher {
        name: name.to_ascii_lowercase(),
        kind,
        invert_match: raw.invert_match.unwrap_or(false),
        treat_missing_header_as_empty: raw.treat_missing_header_as_empty.unwrap_or(false),
    })
}

fn string_matcher(raw: &RawStringMatcher, p: &FieldPath) -> Result<StringMatcher, ConfigError> {
    let ignore_case = raw.ignore_case.unwrap_or(false);
    let mut out = Vec::new();
    if let Some(v) = &raw.exact {
        out.push(StringMatcher::Exact {
            value: v.clone(),
            ignore_case,
        });
    }
    for (f, v, k) in [
        ("prefix", &raw.prefix, 0),
        ("suffix", &raw.suffix, 1),
        ("contains", &raw.contains, 2),
    ] {
        if let Some(v) = v {
            if v.is_empty() {
                return Err(p.field(f).err("must not be empty"));
            }
            out.push(match k {
                0 => StringMatcher::Prefix {
                    value: v.clone(),
                    ignore_case,
                },
                1 => StringMatcher::Suffix {
                    value: v.clone(),
                    ignore_case,
                },
                _ => StringMatcher::Contains {
                    value: if ignore_case {
                        v.to_ascii_lowercase()
                    } else {
                        v.clone()
                    },
                    ignore_case,
                },
            });
        }
    }
    if let Some(r) = &raw.safe_regex {
        if ignore_case {
            return Err(p
                .field("ignore_case")
                .err("has no effect on safe_regex: use (?i) in the regex"));
        }
        out.push(StringMatcher::Regex(full_regex(r, &p.field("safe_regex"))?));
    }
    match out.len() {
        1 => Ok(out.pop().expect("one")),
        0 => Err(p.err("one of exact, prefix, suffix, contains and safe_regex is required")),
        _ => Err(p.err("only one of exact, prefix, suffix, contains and safe_regex may be set")),
    }
}

/// Compiles a RegexMatcher anchored for a full match (RE2 FullMatch).
fn full_regex(raw: &RawRegexMatcher, p: &FieldPath) -> Result<regex::Regex, ConfigError> {
    let re = raw
        .regex
        .as_deref()
        .ok_or_else(|| p.field("regex").err("required"))?;
    regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
        p.field("regex")
            .err(format!("invalid regex {re:?}: {}", one_line(&e)))
    })
}

fn one_line(e: &regex::Error) -> String {
    e.to_string()
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn regex_rewrite(
    raw: &RawRegexMatchAndSubstitute,
    p: &FieldPath,
) -> Result<RegexRewrite, ConfigError> {
    let pp = p.field("pattern");
    let pat = raw.pattern.as_ref().ok_or_else(|| pp.err("required"))?;
    let re_src = pat
        .regex
        .as_deref()
        .ok_or_else(|| pp.field("regex").err("required"))?;
    let pattern = regex::Regex::new(re_src).map_err(|e| {
        pp.field("regex")
            .err(format!("invalid regex {re_src:?}: {}", one_line(&e)))
    })?;
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
    clusters: &HashSet<String>,
    vhost_retry: Option<&RetryPolicy>,
) -> Result<ForwardAction, ConfigError> {
    let cluster = match (raw.cluster, raw.weighted_clusters, raw.cluster_header) {
        (Some(c), None, None) => {
            if !clusters.contains(&c) {
                return Err(p.field("cluster").err(format!("unknown cluster {c:?}")));
            }
            ClusterSpecifier::Cluster(ClusterRef::new(&c))
        }
        (None, Some(w), None) => {
            let wp = p.field("weighted_clusters");
            let mut inputs = Vec::with_capacity(w.clusters.len());
            for (i, c) in w.clusters.into_iter().enumerate() {
                let cp = wp.field("clusters").index(i);
                inputs.push(WeightedInput {
                    name: c.name,
                    weight: c.weight,
                    request_headers: mutations(
                        &c.request_headers_to_add,
                        &c.request_headers_to_remove,
                        &cp,
                        "request",
                    )?,
                    response_headers: mutations(
                        &c.response_headers_to_add,
                        &c.response_headers_to_remove,
                        &cp,
                        "response",
                    )?,
                });
            }
            ClusterSpecifier::Weighted(build_weighted(inputs, &wp, clusters)?)
        }
        (None, None, Some(h)) => {
            let n = h.to_ascii_lowercase();
            if n.is_empty() || http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                return Err(p
                    .field("cluster_header")
                    .err(format!("invalid header name {h:?}")));
            }
            ClusterSpecifier::Header(n)
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
    if raw.prefix_rewrite.is_some() && raw.regex_rewrite.is_some() {
        return Err(p.err("only one of prefix_rewrite and regex_rewrite may be set"));
    }
    let prefix_rewrite = raw.prefix_rewrite.filter(|s| !s.is_empty());
    if let Some(pr) = &prefix_rewrite {
        check_prefix_rewrite(pr, m, &p.field("prefix_rewrite"))?;
    }
    let regex_rewrite = match &raw.regex_rewrite {
        Some(r) => Some(regex_rewrite(r, &p.field("regex_rewrite"))?),
        None => None,
    };
    let host_rewrite = match (raw.host_rewrite_literal, raw.auto_host_rewrite) {
        (Some(_), Some(true)) => {
            return Err(p.err("only one of host_rewrite_literal and auto_host_rewrite may be set"))
        }
        (Some(h), _) if !h.is_empty() => {
            if http::HeaderValue::from_str(&h).is_err() {
                return Err(p
                    .field("host_rewrite_literal")
                    .err(format!("invalid host {h:?}")));
            }
            HostRewrite::Literal(h)
        }
        (_, Some(true)) => HostRewrite::Auto,
        _ => HostRewrite::None,
    };
    let retry_policy = match &raw.retry_policy {
        Some(r) => Some(retry_policy(r, &p.field("retry_policy"))?),
        None => vhost_retry.cloned(),
    };
    let mut hash_policy = Vec::new();
    for (i, h) in raw.hash_policy.iter().enumerate() {
        let hp = p.field("hash_policy").index(i);
        let kind = match (&h.header, &h.cookie, &h.connection_properties) {
            (Some(hh), None, None) => {
                let n = hh.header_name.as_deref().unwrap_or("").to_ascii_lowercase();
                if n.is_empty() {
                    return Err(hp.field("header").field("header_name").err("required"));
                }
                Some(HashPolicyKind::Header(n))
            }
            (None, Some(c), None) => {
                let n = c
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| hp.field("cookie").field("name").err("required"))?;
                Some(HashPolicyKind::Cookie(n))
            }
            // Envoy adds no hash method for `source_ip: false`.
            (None, None, Some(cp)) => cp
                .source_ip
                .unwrap_or(false)
                .then_some(HashPolicyKind::SourceIp),
            (None, None, None) => {
                return Err(hp.err("one of header, cookie and connection_properties is required"))
            }
            _ => {
                return Err(
                    hp.err("only one of header, cookie and connection_properties may be set")
                )
            }
        };
        if let Some(kind) = kind {
            hash_policy.push(HashPolicy {
                kind,
                terminal: h.terminal.unwrap_or(false),
            });
        }
    }
    let timeout = match raw.timeout {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
    };
    Ok(ForwardAction {
        cluster,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        timeout,
        idle_timeout: raw.idle_timeout.map(|d| d.0),
        retry_policy,
        hash_policy,
        cluster_not_found_status,
    })
}

/// Validates weighted clusters: names known, total weight > 0.
pub(crate) fn build_weighted(
    inputs: Vec<WeightedInput>,
    p: &FieldPath,
    clusters: &HashSet<String>,
) -> Result<WeightedClusters, ConfigError> {
    if inputs.is_empty() {
        return Err(p.field("clusters").err("at least one cluster is required"));
    }
    let mut out = Vec::with_capacity(inputs.len());
    let mut total: u64 = 0;
    for (i, c) in inputs.into_iter().enumerate() {
        let cp = p.field("clusters").index(i);
        let name = c
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| cp.field("name").err("required"))?;
        if !clusters.contains(&name) {
            return Err(cp.field("name").err(format!("unknown cluster {name:?}")));
        }
        let weight = c.weight.unwrap_or(0);
        total += u64::from(weight);
        out.push(WeightedCluster {
            name: ClusterRef::new(&name),
            weight,
            request_headers: c.request_headers,
            response_headers: c.response_headers,
        });
    }
    if total == 0 {
        return Err(p
            .field("clusters")
            .err("the sum of the weights must be greater than 0"));
    }
    if total > u64::from(u32::MAX) {
        return Err(p
            .field("clusters")
            .err("the sum of the weights must fit in 32 bits"));
    }
    Ok(WeightedClusters {
        clusters: out,
        total_weight: total,
    })
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
            "5xx" => on.server_error = true,
            "gateway-error" => on.gateway_error = true,
            "reset" => on.reset = true,
            "connect-failure" => on.connect_failure = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            "refused-stream"
            | "envoy-ratelimited"
            | "retriable-headers"
            | "http3-post-connect-failure"
            | "reset-before-request"
            | "cancelled"
            | "deadline-exceeded"
            | "internal"
            | "resource-exhausted"
            | "unavailable" => {
                return Err(p
                    .field("retry_on")
                    .unsupported(&format!("retry condition {token:?}")))
            }
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
    Ok(RetryPolicy {
        retry_on: on,
        num_retries: raw.num_retries.unwrap_or(DEFAULT_NUM_RETRIES),
        per_try_timeout: raw.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        base_interval,
        max_interval,
        retriable_status_codes: codes,
    })
}

/// `<dir>_headers_to_add` / `<dir>_headers_to_remove` of one level at `p`.
pub(crate) fn mutations(
    add: &[RawHeaderValueOption],
    remove: &[String],
    p: &FieldPath,
    dir: &str,
) -> Result<HeaderMutations, ConfigError> {
    let ap = p.field(&format!("{dir}_headers_to_add"));
    let rp = p.field(&format!("{dir}_headers_to_remove"));
    let mut out = HeaderMutations::default();
    for (i, name) in remove.iter().enumerate() {
        let n = name.to_ascii_lowercase();
        check_header_name(&n, &rp.index(i))?;
        out.remove.push(n);
    }
    for (i, h) in add.iter().enumerate() {
        let hp = ap.index(i);
        let hv = h
            .header
            .as_ref()
            .ok_or_else(|| hp.field("header").err("required"))?;
        let key = hv.key.as_deref().unwrap_or("").to_ascii_lowercase();
        check_header_name(&key, &hp.field("header").field("key"))?;
        let raw_value = hv.value.as_deref().unwrap_or("");
        let value = unescape_header_value(raw_value)
            .map_err(|m| hp.field("header").field("value").err(m))?;
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(hp
                .field("header")
                .field("value")
                .err(format!("invalid header value {raw_value:?}")));
        }
        let action = match (h.append, h.append_action.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(hp.err("only one of append and append_action may be set"))
            }
            (Some(true), None) | (None, None) | (None, Some("APPEND_IF_EXISTS_OR_ADD")) => {
                AppendAction::AppendIfExistsOrAdd
            }
            (Some(false), None) | (None, Some("OVERWRITE_IF_EXISTS_OR_ADD")) => {
                AppendAction::OverwriteIfExistsOrAdd
            }
            (None, Some("ADD_IF_ABSENT")) => AppendAction::AddIfAbsent,
            (None, Some("OVERWRITE_IF_EXISTS")) => AppendAction::OverwriteIfExists,
            (None, Some(o)) => {
                return Err(hp
                    .field("append_action")
                    .err(format!("unknown value {o:?}")))
            }
        };
        out.add.push(HeaderToAdd {
            name: key,
            value,
            action,
            keep_empty_value: h.keep_empty_value.unwrap_or(false),
        });
    }
    Ok(out)
}

fn check_header_name(n: &str, p: &FieldPath) -> Result<(), ConfigError> {
    if n.starts_with(':') || n == "host" {
        return Err(p.err(format!(
            "{n:?}: :-prefixed or host headers may not be modified"
        )));
    }
    if n.is_empty() || http::HeaderName::from_bytes(n.as_bytes()).is_err() {
        return Err(p.err(format!("invalid header name {n:?}")));
    }
    Ok(())
}

/// Envoy header values: `%%` is a literal `%`; `%VAR%` formatters are not supported.
fn unescape_header_value(v: &str) -> Result<String, String> {
    if !v.contains('%') {
        return Ok(v.to_string());
    }
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        if rest[i + 1..].starts_with('%') {
            out.push('%');
            rest = &rest[i + 2..];
        } else {
            let var = rest[i + 1..].split('%').next().unwrap_or("");
            return Err(format!(
                "not supported (header value formatter %{var}%; write %% for a literal %)"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}
