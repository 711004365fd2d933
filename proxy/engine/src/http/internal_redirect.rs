//! Internal redirects (`internal_redirect_policy`): an upstream 3xx the route's policy follows
//! is not passed to the client; the request goes again, to the URL of its `Location`, through
//! route selection and the forward path, as Envoy's router (`Filter::setupRedirect`,
//! `convertRequestHeadersForInternalRedirect`) and its stream recreation do. The headers of the
//! second pass are those the first sent upstream (no new sanitation, the first route's header
//! mutations kept). A redirect that cannot be followed passes to the client as it came.

use std::sync::Arc;

use bytes::Bytes;
use http::{
    header, request::Parts, uri::PathAndQuery, HeaderMap, HeaderValue, Method, Request, Uri,
    Version,
};

use super::{forward, route_reply, ConnInfo, Hcm, Outcome};
use crate::route::{
    format::{FormatContext, RequestLine},
    internal_redirect::InternalRedirectPolicy,
    RequestView, Selection,
};

/// An upstream redirect that the route's policy may follow, with the request as it went.
pub(crate) struct Candidate {
    policy: Arc<InternalRedirectPolicy>,
    status: u16,
    location: HeaderValue,
    method: Method,
    version: Version,
    /// The request headers as sent upstream, `response_headers_to_copy` applied.
    headers: HeaderMap,
    /// Host and path as sent upstream (for `x-envoy-original-url`).
    host: String,
    path: String,
    body: Option<Bytes>,
}

/// The candidate for a response (`status`, headers `resp`) with a `Location` to the request
/// `parts` (as sent, to `path`, with `body`); the caller checked the status against `policy`.
pub(crate) fn candidate(
    policy: &Arc<InternalRedirectPolicy>,
    status: u16,
    resp: &HeaderMap,
    parts: &Parts,
    path: &PathAndQuery,
    body: Option<Bytes>,
) -> Option<Box<Candidate>> {
    let location = resp.get(header::LOCATION)?.clone();
    let mut headers = parts.headers.clone();
    for name in &policy.headers_to_copy {
        headers.remove(name);
        for v in resp.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let host = super::header_str(&parts.headers, header::HOST)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    Some(Box::new(Candidate {
        policy: policy.clone(),
        status,
        location,
        method: parts.method.clone(),
        version: parts.version,
        headers,
        host,
        path: path.as_str().to_string(),
        body,
    }))
}

/// Where a `Location` points: an absolute URL's scheme (not `http` counts as https, as
/// Envoy's `schemeIsHttp`), host and port, path and query (a fragment dropped).
struct Target {
    https: bool,
    authority: String,
    path: PathAndQuery,
}

fn target(location: &HeaderValue) -> Option<Target> {
    let s = location.to_str().ok()?;
    let s = s.split('#').next().unwrap_or(s);
    let uri: Uri = s.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let host = uri.host().filter(|h| !h.is_empty())?;
    let authority = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let path = match uri.path_and_query() {
        Some(p) if !p.as_str().is_empty() && p.as_str().starts_with('/') => p.clone(),
        Some(p) => format!("/{}", p.as_str()).parse().ok()?,
        None => PathAndQuery::from_static("/"),
    };
    Some(Target {
        https: !scheme.eq_ignore_ascii_case("http"),
        authority,
        path,
    })
}

fn scheme(https: bool) -> &'static str {
    if https {
        "https"
    } else {
        "http"
    }
}

/// Follows the redirects of `outcome` (the first pass's) as long as the policies allow; the
/// last outcome is the client's.
pub(crate) async fn follow(
    hcm: &Hcm,
    conn: ConnInfo,
    fmt: FormatContext<'_>,
    mut outcome: Outcome,
) -> Outcome {
    if outcome.redirect.is_none() {
        return outcome;
    }
    let mut https = conn.tls;
    let mut done = 0u32;
    // Targets so far, for the previous_routes predicate.
    let mut visited: Vec<String> = Vec::new();
    while let Some(c) = outcome.redirect.take() {
        let c = *c;
        let Some(t) = target(&c.location) else { break };
        if (!c.policy.cross_scheme && t.https != https) || done >= c.policy.max {
            break;
        }
        let Ok(host) = HeaderValue::from_str(&t.authority) else {
            break;
        };
        let mut headers = c.headers;
        headers.insert(header::HOST, host);
        let (cluster, plan) = {
            let table = hcm.cfg.route_table.clone();
            let view = RequestView {
                authority: Some(&t.authority),
                path: t.path.as_str(),
                method: c.method.as_str(),
                scheme: scheme(t.https),
                headers: &headers,
                random: rand::random(),
                peer: Some(conn.peer.ip()),
                metadata: None,
            };
            let selection = table.select(&view);
            let name = selection
                .route()
                .and_then(|r| r.name.as_deref())
                .unwrap_or("");
            // No route: the upstream's redirect passes through (as Envoy).
            if matches!(selection, Selection::NoRoute)
                || !c.policy.accepts(name, https, t.https, &mut visited)
            {
                break;
            }
            // A direct-response or redirect route answers the redirected request itself.
            let fwd = match selection {
                Selection::Forward(fwd) => fwd,
                ref answering => match route_reply::answer(
                    answering,
                    &headers,
                    &t.authority,
                    t.path.as_str(),
                    FormatContext {
                        line: Some(RequestLine::new(
                            &c.method,
                            t.path.as_str(),
                            scheme(t.https),
                        )),
                        ..fmt
                    },
                ) {
                    Some(resp) => return Outcome::answered(resp),
                    None => break,
                },
            };
            let Some(cluster) = hcm.resolve(&fwd) else {
                break;
            };
            let mut plan = forward::Plan::new(&fwd, &conn, &t.path, &headers, &hcm.cfg);
            plan.route_stats = hcm.route_stats(&fwd).cloned();
            if !fwd.action.mirrors.is_empty() {
                plan.shadows = forward::mirror::select(&fwd.action.mirrors, &headers, &hcm.by_name);
            }
            (cluster, plan)
        };
        // RFC 7231 6.4.4: a 303 turns anything but GET and HEAD into a GET without a body.
        let (method, body) =
            if c.status == 303 && c.method != Method::GET && c.method != Method::HEAD {
                headers.remove(header::CONTENT_LENGTH);
                (Method::GET, None)
            } else {
                (c.method, c.body)
            };
        let original = format!("{}://{}{}", scheme(https), c.host, c.path);
        if let Ok(v) = HeaderValue::from_str(&original) {
            headers.insert("x-envoy-original-url", v);
        }
        done += 1;
        https = t.https;
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = method;
        parts.version = c.version;
        parts.uri = forward::origin_form(&t.path);
        parts.headers = headers;
        outcome = forward::run(
            cluster,
            plan,
            conn,
            fmt,
            parts,
            forward::Input::Replay(body),
        )
        .await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_targets() {
        // (Location, Some((https, authority, path)) | None: not followed)
        type Row = (&'static str, Option<(bool, &'static str, &'static str)>);
        let table: &[Row] = &[
            (
                "http://a.example/x?q=1#frag",
                Some((false, "a.example", "/x?q=1")),
            ),
            (
                "https://a.example:8443",
                Some((true, "a.example:8443", "/")),
            ),
            ("HTTP://a.example/p", Some((false, "a.example", "/p"))),
            ("ftp://a.example/p", Some((true, "a.example", "/p"))),
            ("/relative", None),
            ("a.example/x", None),
            ("", None),
        ];
        for (loc, want) in table {
            let got = target(&HeaderValue::from_static(loc))
                .map(|t| (t.https, t.authority, t.path.as_str().to_string()));
            let want = want.map(|(h, a, p)| (h, a.to_string(), p.to_string()));
            assert_eq!(got, want, "{loc}");
        }
    }
}
