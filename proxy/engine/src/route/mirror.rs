//! `request_mirror_policies` (RouteAction and VirtualHost): which clusters get a shadow copy of a
//! request, compiled from the raw config. The sending is `http/forward/mirror.rs`.

use std::sync::Arc;

use super::{
    build::KnownClusters,
    build_headers::{check_header_name, header_to_add},
    build_match::{fractional_percent, string_matcher},
    FractionalPercent, HeaderMutations, StringMatcher,
};
use crate::config::{
    raw_route::{RawHeaderMutation, RawRequestMirrorPolicy},
    ClusterRef, ConfigError, FieldPath,
};

/// One `RequestMirrorPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPolicy {
    /// `cluster` | `cluster_header`.
    pub cluster: MirrorCluster,
    /// `runtime_fraction.default_value` (the runtime key is a no-op): the share of requests
    /// mirrored; `None` = all.
    pub fraction: Option<FractionalPercent>,
    /// Not `disable_shadow_host_suffix_append`: the shadow's Host gets `-shadow` before its
    /// port (Envoy's `shadowAppendedHost`).
    pub host_suffix: bool,
    /// `host_rewrite_literal`: the shadow's Host (no suffix then).
    pub host_rewrite: Option<http::HeaderValue>,
    /// `request_headers_mutations`, one operation per entry, applied in order to the copy.
    pub mutations: Arc<[MirrorMutation]>,
}

/// One `HeaderMutation` of a mirror policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorMutation {
    /// `remove` or `append`.
    Headers(HeaderMutations),
    /// `remove_on_match.key_matcher`: every header whose name matches is removed.
    RemoveOnMatch(StringMatcher),
}

impl MirrorMutation {
    /// Applies the operation to the copy's headers.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        match self {
            MirrorMutation::Headers(m) => m.apply(headers),
            MirrorMutation::RemoveOnMatch(k) => {
                let names: Vec<http::HeaderName> = headers
                    .keys()
                    .filter(|n| k.matches(n.as_str()))
                    .cloned()
                    .collect();
                for n in names {
                    headers.remove(n);
                }
            }
        }
    }
}

/// Where a mirror policy sends its copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorCluster {
    /// `cluster`.
    Named(ClusterRef),
    /// `cluster_header`: the (lower-case) request header naming the cluster; a missing value or
    /// an unknown cluster sends no copy.
    Header(String),
}

/// The `request_mirror_policies` at `p`, or when the list is empty (proto3: unset) the
/// enclosing level's `inherited`: the most specific non-empty list applies (route, virtual host,
/// route configuration), as Envoy's `RouteEntryImplBase`.
pub(crate) fn mirror_policies(
    raw: &[RawRequestMirrorPolicy],
    p: &FieldPath,
    clusters: &KnownClusters<'_>,
    inherited: &Arc<[MirrorPolicy]>,
) -> Result<Arc<[MirrorPolicy]>, ConfigError> {
    if raw.is_empty() {
        return Ok(inherited.clone());
    }
    raw.iter()
        .enumerate()
        .map(|(i, m)| mirror_policy(m, &p.index(i), clusters))
        .collect()
}

fn mirror_policy(
    raw: &RawRequestMirrorPolicy,
    p: &FieldPath,
    clusters: &KnownClusters<'_>,
) -> Result<MirrorPolicy, ConfigError> {
    let name = raw.cluster.as_deref().filter(|c| !c.is_empty());
    let header = raw.cluster_header.as_deref().filter(|c| !c.is_empty());
    let cluster = match (name, header) {
        (Some(c), None) => {
            if !clusters.contains(c) {
                return Err(p.field("cluster").err(format!("unknown cluster {c:?}")));
            }
            MirrorCluster::Named(ClusterRef::new(c))
        }
        (None, Some(h)) => MirrorCluster::Header(h.to_ascii_lowercase()),
        (None, None) => return Err(p.err("one of cluster and cluster_header is required")),
        (Some(_), Some(_)) => {
            return Err(p.err("only one of cluster and cluster_header may be set"))
        }
    };
    let fraction = match &raw.runtime_fraction {
        Some(rf) => Some(fractional_percent(rf, &p.field("runtime_fraction"))?),
        None => None,
    };
    let host_rewrite = match raw
        .host_rewrite_literal
        .as_deref()
        .filter(|h| !h.is_empty())
    {
        Some(h) => Some(http::HeaderValue::from_str(h).map_err(|_| {
            p.field("host_rewrite_literal")
                .err(format!("{h:?} is not a valid header value"))
        })?),
        None => None,
    };
    let mutations = raw
        .request_headers_mutations
        .iter()
        .enumerate()
        .map(|(i, m)| header_mutation(m, &p.field("request_headers_mutations").index(i)))
        .collect::<Result<_, _>>()?;
    Ok(MirrorPolicy {
        cluster,
        fraction,
        host_rewrite,
        mutations,
        host_suffix: !raw.disable_shadow_host_suffix_append.unwrap_or(false),
    })
}

/// One `HeaderMutation` at `p`: a removal, an addition (literal values only: the copy is sent
/// outside the request's formatting context) or a removal by name matcher.
fn header_mutation(raw: &RawHeaderMutation, p: &FieldPath) -> Result<MirrorMutation, ConfigError> {
    let set = [
        raw.remove.is_some(),
        raw.append.is_some(),
        raw.remove_on_match.is_some(),
    ];
    match set.iter().filter(|s| **s).count() {
        0 => return Err(p.err("one of remove, append and remove_on_match is required")),
        1 => {}
        _ => {
            return Err(p.err("only one of remove, append and remove_on_match may be set"));
        }
    }
    if let Some(r) = &raw.remove_on_match {
        let kp = p.field("remove_on_match").field("key_matcher");
        let k = r.key_matcher.as_ref().ok_or_else(|| kp.err("required"))?;
        return Ok(MirrorMutation::RemoveOnMatch(string_matcher(k, &kp)?));
    }
    let mut out = HeaderMutations::default();
    match (&raw.remove, &raw.append) {
        (Some(r), _) => {
            let n = r.to_ascii_lowercase();
            check_header_name(&n, &p.field("remove"))?;
            out.remove.push(n);
        }
        (None, Some(a)) => {
            let h = header_to_add(a, &p.field("append"))?;
            if h.format.is_some() {
                return Err(p
                    .field("append")
                    .field("header")
                    .field("value")
                    .err("not supported: command operators in a mirror's header mutation"));
            }
            out.add.push(h);
        }
        (None, None) => unreachable!("counted above"),
    }
    Ok(MirrorMutation::Headers(out))
}

/// Envoy's `shadowAppendedHost`: `-shadow` after the host name, before a port
/// (`a:8080` -> `a-shadow:8080`, `[::1]:80` -> `[::1]-shadow:80`).
pub fn shadow_host(host: &str) -> String {
    let port_start = match host.rfind(':') {
        // A colon inside an IPv6 literal without a port is no port separator.
        Some(i)
            if !host[i..].contains(']') && (!host.starts_with('[') || host[..i].ends_with(']')) =>
        {
            Some(i)
        }
        _ => None,
    };
    match port_start {
        Some(i) => format!("{}-shadow{}", &host[..i], &host[i..]),
        None => format!("{host}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn shadow_host_goes_before_the_port() {
        for (host, want) in [
            ("example.com", "example.com-shadow"),
            ("example.com:8080", "example.com-shadow:8080"),
            ("[::1]:80", "[::1]-shadow:80"),
            ("[::1]", "[::1]-shadow"),
        ] {
            assert_eq!(shadow_host(host), want, "{host}");
        }
    }
}
