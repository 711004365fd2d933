//! The Host and path of a forwarded request: a ClusterWeight's `host_rewrite_literal` between
//! the request header levels, the route's `host_rewrite` / `path_rewrite` formats rendered
//! after them, and per attempt the route's host rewrite with `x-envoy-original-host` /
//! `append_x_forwarded_host`.

use std::sync::Arc;

use http::{header, request::Parts, uri::PathAndQuery, HeaderValue};

use super::{FormatContext, HeaderMutations, Host, Plan};
use crate::route::format::HeaderValueFormat;

/// The route's host rewrite, resolved per attempt by [`set_authority`].
pub(super) enum HostPlan {
    /// `host_rewrite_literal` (or `host_rewrite_path_regex`'s result).
    Literal(String),
    /// `auto_host_rewrite`: the endpoint's host name.
    Auto,
    /// `host_rewrite_header`: this request header's first value after the mutations.
    Header(String),
    /// `host_rewrite`: rendered after the mutations ([`render_host`]).
    Format(Arc<HeaderValueFormat>),
}

/// `host_rewrite`'s Host, from the request after its header mutations: a missing value
/// renders `-` (Envoy's text formatter); an empty result keeps the Host.
pub(super) fn render_host(
    f: &HeaderValueFormat,
    fmt: &FormatContext<'_>,
    parts: &Parts,
) -> Option<String> {
    let out = render(f, fmt, parts, "-");
    (!out.is_empty()).then_some(out)
}

/// `path_rewrite`'s path, from the request after its header mutations, with the request's
/// query after it (joined with `?` as it is, as Envoy); a missing value renders empty and an
/// empty result keeps the path (`None`).
pub(super) fn render_path(
    f: &HeaderValueFormat,
    fmt: &FormatContext<'_>,
    parts: &Parts,
    original: &PathAndQuery,
) -> Option<String> {
    let mut out = render(f, fmt, parts, "");
    if out.is_empty() {
        return None;
    }
    if let Some(q) = original.query() {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

/// Renders `f` over the request's headers as they are now, `missing` for an operator without
/// a value.
fn render(f: &HeaderValueFormat, fmt: &FormatContext<'_>, parts: &Parts, missing: &str) -> String {
    let mut out = String::new();
    let ctx = FormatContext {
        request: Some(&parts.headers),
        ..*fmt
    };
    f.render_into(&ctx, None, missing, &mut out);
    out
}

/// Applies the request header levels in order; a weighted cluster's `host_rewrite_literal`
/// sets the Host after that cluster's own level, so later levels' `%REQ(:authority)%` see it
/// (Envoy's `WeightedClusterEntry::finalizeRequestHeaders`).
pub(super) fn apply_request_mutations(plan: &Plan, fmt: &FormatContext<'_>, parts: &mut Parts) {
    let host = plan
        .cluster_host
        .as_ref()
        .and_then(|(at, h)| Some((*at, HeaderValue::from_str(h).ok()?)));
    // Operators read the request as it arrived: a snapshot, only for such configs.
    let mut snapshot = plan
        .req_mutations
        .iter()
        .any(HeaderMutations::has_format)
        .then(|| parts.headers.clone());
    for i in 0..=plan.req_mutations.len() {
        if let Some((_, v)) = host.as_ref().filter(|(at, _)| *at == i) {
            parts.headers.insert(header::HOST, v.clone());
            if let Some(s) = snapshot.as_mut() {
                s.insert(header::HOST, v.clone());
            }
        }
        let Some(m) = plan.req_mutations.get(i) else {
            break;
        };
        match &snapshot {
            Some(s) => m.apply_with(
                &mut parts.headers,
                &FormatContext {
                    request: Some(s),
                    ..*fmt
                },
            ),
            None => m.apply(&mut parts.headers),
        }
    }
}

/// How every attempt sets its Host (computed once per request).
pub(super) struct Hosting {
    /// The request's Host (a ClusterWeight's rewrite included).
    pub(super) authority: String,
    /// `x-forwarded-host` to set with a rewrite (`append_x_forwarded_host`).
    pub(super) xfh: Option<String>,
    /// The route's host rewrite.
    pub(super) rewrite: Option<HostPlan>,
}

impl Hosting {
    /// Sets the Host of an attempt on `host`.
    pub(super) fn apply(&self, parts: &mut Parts, host: &Host) {
        set_authority(
            parts,
            &self.authority,
            self.xfh.as_deref(),
            host,
            self.rewrite.as_ref(),
        );
    }
}

/// Sets the Host for an attempt on `host`: the literal rewrite, the endpoint's host name for
/// `auto_host_rewrite` (an endpoint without one keeps the Host), else the request's. A rewrite
/// adds `x-envoy-original-host` with the request's Host, as Envoy, and with
/// `append_x_forwarded_host` sets `x-forwarded-host` to `xfh`.
fn set_authority(
    parts: &mut Parts,
    authority: &str,
    xfh: Option<&str>,
    host: &Host,
    rewrite: Option<&HostPlan>,
) {
    let value = match rewrite {
        Some(HostPlan::Literal(literal)) => Some(literal.as_str()),
        Some(HostPlan::Auto) => host.hostname.as_deref(),
        Some(HostPlan::Header(_) | HostPlan::Format(_)) | None => None,
    };
    let value = match value {
        Some(v) => {
            if let Ok(orig) = HeaderValue::from_str(authority) {
                parts.headers.insert("x-envoy-original-host", orig);
            }
            if let Some(x) = xfh.and_then(|x| HeaderValue::from_str(x).ok()) {
                parts.headers.insert("x-forwarded-host", x);
            }
            v
        }
        None => authority,
    };
    if let Ok(v) = HeaderValue::from_str(value) {
        parts.headers.insert(header::HOST, v);
    }
}
