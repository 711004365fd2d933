//! `RouteAction.hash_policy[]`: what a ring hash or maglev cluster hashes for a request.

use super::{build::regex_rewrite, CookieGen, HashPolicy, HashPolicyKind};
use crate::config::{
    raw_route::{RawHashCookie, RawHashPolicy},
    ConfigError, FieldPath,
};

/// The route's hash policies, in order; `p` is the `hash_policy` field.
pub(super) fn hash_policies(
    raw: &[RawHashPolicy],
    p: &FieldPath,
) -> Result<Vec<HashPolicy>, ConfigError> {
    let mut hash_policy = Vec::new();
    for (i, h) in raw.iter().enumerate() {
        let hp = p.index(i);
        let set = [
            h.header.is_some(),
            h.cookie.is_some(),
            h.connection_properties.is_some(),
            h.query_parameter.is_some(),
        ];
        const ONE_OF: &str = "header, cookie, connection_properties and query_parameter";
        match set.iter().filter(|s| **s).count() {
            0 => return Err(hp.err(format!("one of {ONE_OF} is required"))),
            1 => {}
            _ => return Err(hp.err(format!("only one of {ONE_OF} may be set"))),
        }
        // Exactly one is set (checked above).
        let kind = if let Some(hh) = &h.header {
            let hhp = hp.field("header");
            let n = hh.header_name.as_deref().unwrap_or("").to_ascii_lowercase();
            if n.is_empty() {
                return Err(hhp.field("header_name").err("required"));
            }
            let rewrite = match &hh.regex_rewrite {
                Some(r) => Some(regex_rewrite(r, &hhp.field("regex_rewrite"))?),
                None => None,
            };
            Some(HashPolicyKind::Header { name: n, rewrite })
        } else if let Some(c) = &h.cookie {
            let cp = hp.field("cookie");
            Some(HashPolicyKind::Cookie {
                name: required_name(&c.name, &cp)?,
                generate: cookie_gen(c, &cp)?,
            })
        } else if let Some(q) = &h.query_parameter {
            let name = required_name(&q.name, &hp.field("query_parameter"))?;
            Some(HashPolicyKind::QueryParameter(name))
        } else {
            // `connection_properties`; Envoy adds no hash method for `source_ip: false`.
            h.connection_properties
                .as_ref()
                .and_then(|cp| cp.source_ip)
                .unwrap_or(false)
                .then_some(HashPolicyKind::SourceIp)
        };
        if let Some(kind) = kind {
            hash_policy.push(HashPolicy {
                kind,
                terminal: h.terminal.unwrap_or(false),
            });
        }
    }
    Ok(hash_policy)
}

/// A cookie hash policy's generated cookie: only with `ttl` (Envoy makes none without).
fn cookie_gen(c: &RawHashCookie, p: &FieldPath) -> Result<Option<CookieGen>, ConfigError> {
    let Some(ttl) = c.ttl else {
        return Ok(None);
    };
    let mut suffix = String::new();
    if ttl.0.as_secs() > 0 {
        suffix.push_str(&format!("; Max-Age={}", ttl.0.as_secs()));
    }
    // Each piece goes into the Set-Cookie header as written (Envoy only refuses NUL, CR and LF;
    // a header value here may not hold the other control characters either).
    let check = |s: &str, field: &FieldPath| match http::HeaderValue::from_str(s) {
        Ok(_) => Ok(()),
        Err(_) => Err(field.err("control characters cannot go into a Set-Cookie header")),
    };
    // `name` itself was checked non-empty by the caller.
    check(c.name.as_deref().unwrap_or(""), &p.field("name"))?;
    if let Some(path) = c.path.as_deref().filter(|s| !s.is_empty()) {
        check(path, &p.field("path"))?;
        suffix.push_str(&format!("; Path={path}"));
    }
    for (i, a) in c.attributes.iter().enumerate() {
        let ap = p.field("attributes").index(i);
        let name = a.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(ap.field("name").err("required"));
        }
        check(name, &ap.field("name"))?;
        suffix.push_str("; ");
        suffix.push_str(name);
        if let Some(v) = a.value.as_deref().filter(|v| !v.is_empty()) {
            check(v, &ap.field("value"))?;
            suffix.push_str(&format!("={v}"));
        }
    }
    suffix.push_str("; HttpOnly");
    Ok(Some(CookieGen { suffix }))
}

/// A hash policy's non-empty `name` under `p`.
fn required_name(name: &Option<String>, p: &FieldPath) -> Result<String, ConfigError> {
    name.clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| p.field("name").err("required"))
}
