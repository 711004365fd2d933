//! `RouteAction.internal_redirect_policy`: which upstream redirects the proxy follows itself,
//! compiled from the raw config, and the checks Envoy's router makes before following one
//! (`InternalRedirectPolicyImpl`, the three internal redirect predicates). Following is
//! `http/internal_redirect.rs`.

use http::HeaderName;

use crate::config::{
    raw_route::{RawInternalRedirectPolicy, RawRetryHostPredicate},
    ConfigError, FieldPath,
};

const PREVIOUS_ROUTES: &str =
    "type.googleapis.com/envoy.extensions.internal_redirect.previous_routes.v3.PreviousRoutesConfig";
const ALLOW_LISTED: &str = "type.googleapis.com/envoy.extensions.internal_redirect.allow_listed_routes.v3.AllowListedRoutesConfig";
const SAFE_CROSS_SCHEME: &str =
    "type.googleapis.com/envoy.extensions.internal_redirect.safe_cross_scheme.v3.SafeCrossSchemeConfig";

/// One `InternalRedirectPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalRedirectPolicy {
    /// `max_internal_redirects` (default 1): redirects one request may follow in all.
    pub max: u32,
    /// `redirect_response_codes`, the valid ones (301, 302, 303, 307, 308); unset: 302.
    pub codes: Vec<u16>,
    /// `allow_cross_scheme_redirect`.
    pub cross_scheme: bool,
    /// `predicates`, in order.
    pub predicates: Vec<Predicate>,
    /// `response_headers_to_copy`: from the redirect response onto the redirected request.
    pub headers_to_copy: Vec<HeaderName>,
}

/// An internal redirect predicate (`envoy.internal_redirect_predicates.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    /// `previous_routes`: no route twice as a redirect target of one request.
    PreviousRoutes,
    /// `allow_listed_routes`: only the named routes.
    AllowListed(Vec<String>),
    /// `safe_cross_scheme`: never from http to https.
    SafeCrossScheme,
}

impl InternalRedirectPolicy {
    /// Whether the response status asks for a redirect under this policy.
    pub fn follows(&self, status: u16) -> bool {
        self.codes.contains(&status)
    }

    /// Whether every predicate accepts `target` (the route name, empty without one) from a
    /// request on `from_https` to `to_https`; `visited`: the earlier targets of this request,
    /// to which an accepted `target` is added (Envoy's `PreviousRoutesPredicate` state).
    pub fn accepts(
        &self,
        target: &str,
        from_https: bool,
        to_https: bool,
        visited: &mut Vec<String>,
    ) -> bool {
        for p in &self.predicates {
            let ok = match p {
                Predicate::PreviousRoutes => {
                    if visited.iter().any(|v| v == target) {
                        false
                    } else {
                        visited.push(target.to_string());
                        true
                    }
                }
                Predicate::AllowListed(names) => names.iter().any(|n| n == target),
                Predicate::SafeCrossScheme => from_https || !to_https,
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

/// Compiles `internal_redirect_policy` at `p`.
pub(crate) fn internal_redirect_policy(
    raw: &RawInternalRedirectPolicy,
    p: &FieldPath,
) -> Result<InternalRedirectPolicy, ConfigError> {
    let codes = if raw.redirect_response_codes.is_empty() {
        vec![302]
    } else {
        raw.redirect_response_codes
            .iter()
            .filter(|c| matches!(c, 301 | 302 | 303 | 307 | 308))
            .map(|c| *c as u16)
            .collect()
    };
    let predicates = raw
        .predicates
        .iter()
        .enumerate()
        .map(|(i, pr)| predicate(pr, &p.field("predicates").index(i)))
        .collect::<Result<_, _>>()?;
    let mut headers_to_copy = Vec::with_capacity(raw.response_headers_to_copy.len());
    for (i, h) in raw.response_headers_to_copy.iter().enumerate() {
        let hp = p.field("response_headers_to_copy").index(i);
        let name = HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| hp.err(format!("{h:?} is not a header name")))?;
        if name == http::header::HOST {
            return Err(hp.err("the Host header cannot be copied"));
        }
        headers_to_copy.push(name);
    }
    Ok(InternalRedirectPolicy {
        max: raw.max_internal_redirects.unwrap_or(1),
        codes,
        cross_scheme: raw.allow_cross_scheme_redirect.unwrap_or(false),
        predicates,
        headers_to_copy,
    })
}

fn predicate(raw: &RawRetryHostPredicate, p: &FieldPath) -> Result<Predicate, ConfigError> {
    let tc = raw
        .typed_config
        .as_ref()
        .ok_or_else(|| p.field("typed_config").err("required"))?;
    let ty = tc.get("@type").and_then(|t| t.as_str()).unwrap_or("");
    let extra = |allowed: &[&str]| {
        tc.as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .find(|k| *k != "@type" && !allowed.contains(&k.as_str()))
            .map(|k| p.field("typed_config").field(k).err("unknown field"))
    };
    match ty {
        PREVIOUS_ROUTES | SAFE_CROSS_SCHEME => {
            if let Some(e) = extra(&[]) {
                return Err(e);
            }
            Ok(if ty == PREVIOUS_ROUTES {
                Predicate::PreviousRoutes
            } else {
                Predicate::SafeCrossScheme
            })
        }
        ALLOW_LISTED => {
            if let Some(e) = extra(&["allowed_route_names"]) {
                return Err(e);
            }
            let ap = p.field("typed_config").field("allowed_route_names");
            let names: Vec<String> = tc
                .get("allowed_route_names")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if names.is_empty() || names.iter().any(String::is_empty) {
                return Err(ap.err("at least one non-empty route name is required"));
            }
            Ok(Predicate::AllowListed(names))
        }
        "" => Err(p.field("typed_config").field("@type").err("required")),
        other => Err(p.field("typed_config").err(format!(
            "not supported: internal redirect predicate {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_in_order() {
        let policy = |predicates| InternalRedirectPolicy {
            max: 3,
            codes: vec![302],
            cross_scheme: true,
            predicates,
            headers_to_copy: Vec::new(),
        };
        let mut visited = Vec::new();
        let prev = policy(vec![Predicate::PreviousRoutes]);
        assert!(prev.accepts("a", false, false, &mut visited));
        assert!(prev.accepts("b", false, false, &mut visited));
        assert!(!prev.accepts("a", false, false, &mut visited));
        let allow = policy(vec![Predicate::AllowListed(vec!["good".into()])]);
        assert!(allow.accepts("good", false, false, &mut visited));
        assert!(!allow.accepts("bad", false, false, &mut visited));
        let safe = policy(vec![Predicate::SafeCrossScheme]);
        assert!(!safe.accepts("x", false, true, &mut visited));
        assert!(safe.accepts("x", true, false, &mut visited));
        assert!(safe.accepts("x", false, false, &mut visited));
    }
}
