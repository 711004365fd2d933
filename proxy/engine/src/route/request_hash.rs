//! A route's `hash_policy` over a request (Envoy's `HashPolicyImpl::generateHash`): the hash a
//! hashing load balancer picks a host by, and, with `weighted_clusters.use_hash_policy`, the
//! value that picks the weighted cluster. Pure: any [`HeaderLookup`], the path, the peer.

use std::net::IpAddr;

use super::{
    headers::HeaderLookup, CookieGen, ForwardAction, HashPolicy, HashPolicyKind, RegexRewrite,
    RequestView,
};
use crate::upstream::{lb::hash_bytes, xxhash::xxh64};

/// The request's hash under `policies`: each policy's hash folded into the previous one
/// (`rotl(1) ^ next`), stopping at a `terminal` policy once there is a hash. A cookie policy
/// whose cookie is absent asks `generate` (a `ttl` policy makes one on the data path; picking
/// a weighted cluster makes none, as Envoy passes no cookie callback there).
pub fn request_hash<H: HeaderLookup + ?Sized>(
    policies: &[HashPolicy],
    headers: &H,
    path: &str,
    peer: Option<IpAddr>,
    generate: &mut dyn FnMut(&str, &CookieGen) -> Option<u64>,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        let h = match &p.kind {
            HashPolicyKind::Header { name, rewrite } => header(headers, name, rewrite.as_ref()),
            HashPolicyKind::QueryParameter(name) => {
                query_parameter(path, name).map(|v| hash_bytes(v.as_bytes()))
            }
            HashPolicyKind::Cookie { name, generate: g } => match (cookie(headers, name), g) {
                (Some(v), _) => Some(hash_bytes(v)),
                (None, Some(g)) => generate(name, g),
                (None, None) => None,
            },
            HashPolicyKind::SourceIp => peer.map(|ip| hash_bytes(ip.to_string().as_bytes())),
        };
        if let Some(h) = h {
            hash = Some(hash.map_or(h, |old| old.rotate_left(1) ^ h));
        }
        // Envoy stops at a terminal policy once the hash so far is set, whether or not this
        // policy added to it.
        if p.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

/// The hash of the route's policies over a routed request, as the weighted cluster pick asks
/// for it (no cookie is made).
pub(super) fn of_view<H: HeaderLookup + ?Sized>(
    action: &ForwardAction,
    req: &RequestView<'_, H>,
) -> Option<u64> {
    request_hash(
        &action.hash_policy,
        req.headers,
        req.path,
        req.peer,
        &mut |_, _| None,
    )
}

/// Envoy's header hash: every value of `name`, each rewritten by `rewrite` when set, sorted
/// (so the order the values came in does not matter) and hashed in turn, each hash seeding the
/// next. None when the header is absent. One value and no rewrite hash without a copy.
pub fn header<H: HeaderLookup + ?Sized>(
    headers: &H,
    name: &str,
    rewrite: Option<&RegexRewrite>,
) -> Option<u64> {
    let rewritten = |v: &[u8]| -> Vec<u8> {
        match (rewrite, std::str::from_utf8(v)) {
            (Some(r), Ok(s)) => r.apply(s).into_owned().into_bytes(),
            // A value that is not text is hashed as sent (the regex reads text).
            _ => v.to_vec(),
        }
    };
    let mut first: Option<&[u8]> = None;
    let mut more: Vec<Vec<u8>> = Vec::new();
    headers.for_each_raw(name, &mut |v| match first {
        None => first = Some(v),
        Some(f) => {
            if more.is_empty() {
                more.push(rewritten(f));
            }
            more.push(rewritten(v));
        }
    });
    let first = first?;
    if more.is_empty() {
        return Some(match rewrite {
            None => hash_bytes(first),
            Some(_) => hash_bytes(&rewritten(first)),
        });
    }
    more.sort();
    // Each value hashed with the previous hash as the seed (Envoy's `HashUtil::xxHash64` of a
    // list).
    Some(more.iter().fold(0, |seed, v| xxh64(v, seed)))
}

/// The value of cookie `name` in the request's `Cookie` headers, as Envoy reads it: the first
/// `name=value` pair with that name (spaces before the name skipped, the value as sent but for
/// the double quotes that may wrap it, RFC 6265 4.1.1); an empty value counts as no cookie.
pub fn cookie<'h, H: HeaderLookup + ?Sized>(headers: &'h H, name: &str) -> Option<&'h [u8]> {
    let mut first: Option<&'h [u8]> = None;
    headers.for_each_raw("cookie", &mut |v| {
        if first.is_some() {
            return;
        }
        first = super::cookies::find(v, name.as_bytes()).map(|r| &v[r]);
    });
    // An empty value counts as no cookie here (Envoy's `parseCookieValue`).
    first.filter(|v| !v.is_empty())
}

/// The first value of query parameter `name` in `path`, as sent (Envoy does not decode it for
/// hashing); a parameter without `=` has the empty value.
pub fn query_parameter<'p>(path: &'p str, name: &str) -> Option<&'p str> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|param| {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        (key == name).then_some(value)
    })
}
