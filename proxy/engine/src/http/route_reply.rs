//! The answer of a route that answers by itself: a `direct_response` (its status and body) or a
//! `redirect` (its status and `location`), each with the route's response header mutations
//! rendered against the request, or a virtual host's `require_tls` redirect (none). Used for a request's own route and for the route an internal
//! redirect lands on (Envoy's router answers both the same way).

use std::borrow::Cow;

use http::{header, HeaderMap, HeaderValue, Response};

use super::{local_reply, Body};
use crate::route::{format::FormatContext, RedirectPath, Selection};

/// The response of `selection` when it answers by itself (`None` for forwarding or no route);
/// `authority` and `path` are the request's (a `201` direct response points `location` at them).
pub(crate) fn answer(
    selection: &Selection<'_>,
    request: &HeaderMap,
    authority: &str,
    path: &str,
    fmt: FormatContext<'_>,
) -> Option<Response<Body>> {
    let ctx = FormatContext {
        request: Some(request),
        ..fmt
    };
    match selection {
        Selection::DirectResponse {
            response,
            response_headers,
            ..
        } => {
            let mut r = match &response.body_format {
                None => local_reply::reply_bytes(
                    response.status,
                    response.body.clone().unwrap_or_default(),
                ),
                Some(f) => {
                    // Envoy renders the body before the stream has a response code:
                    // `%RESPONSE_CODE%` is 0 here (a local_reply_config format sees the status).
                    let ctx = FormatContext {
                        response_code: Some(0),
                        ..ctx
                    };
                    let text = response.body.as_deref().map(String::from_utf8_lossy);
                    let body = f.render(&ctx, text.as_deref());
                    let mut r = local_reply::reply(response.status, &body);
                    if !body.is_empty() {
                        if let Ok(v) = HeaderValue::from_str(&f.content_type) {
                            r.headers_mut().insert(header::CONTENT_TYPE, v);
                        }
                    }
                    r
                }
            };
            // Envoy's router: a direct `201 Created` is located at the request's own URL.
            if response.status == 201 {
                let scheme = request
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("http");
                if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{authority}{path}")) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
            }
            response_headers.apply_with(r.headers_mut(), &ctx);
            Some(r)
        }
        Selection::Redirect {
            redirect,
            location,
            path_start,
            status,
            response_headers,
            ..
        } => {
            let mut r = local_reply::reply(*status, "");
            let location = match &redirect.path {
                RedirectPath::Format(f) => crate::route::rendered_location(
                    f,
                    redirect.strip_query,
                    location,
                    *path_start,
                    path,
                    &ctx,
                ),
                _ => Cow::Borrowed(location.as_str()),
            };
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            response_headers.apply_with(r.headers_mut(), &ctx);
            Some(r)
        }
        Selection::SslRedirect { location, .. } => {
            let mut r = local_reply::reply(crate::route::require_tls::SSL_REDIRECT_STATUS, "");
            if let Ok(v) = HeaderValue::from_str(location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Some(r)
        }
        Selection::Forward(_) | Selection::NoRoute => None,
    }
}
