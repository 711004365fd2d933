//! The HCM's `local_reply_config` on a reply made here (Envoy's `LocalReplyImpl::rewrite`):
//! the first mapper whose filter admits the reply (its status, the response flag, the request)
//! sets the status, the body text and headers, and may choose the body format; the chosen
//! format (else the config's `body_format`) renders the body with `%LOCAL_REPLY_BODY%` as the
//! reply's text. Responses from an upstream are never touched.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use super::{
    local_reply::{self, Flag, LocalReply},
    Body,
};
use crate::{
    config::{LocalReplyConfig, Logged},
    route::format::{FormatContext, RequestLine},
};

/// The request a reply answers, as the mappers and formats read it.
pub(super) struct Answered<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path` as received.
    pub path: &'a str,
    /// `:scheme` (the connection's).
    pub scheme: &'a str,
    /// `:authority` / Host.
    pub authority: Option<&'a str>,
    /// The request headers (kept for this only when the config has a local reply mapping).
    pub headers: Option<&'a HeaderMap>,
    /// How long the request has been going.
    pub elapsed: Duration,
    /// A health check filter took the request as a health check.
    pub health_check: bool,
}

/// Rewrites `resp` when it is a local reply.
pub(super) fn rewrite(
    cfg: &LocalReplyConfig,
    resp: &mut Response<Body>,
    flag: Flag,
    req: &Answered<'_>,
    fmt: FormatContext<'_>,
) {
    let Some(mut reply) = resp.extensions_mut().remove::<LocalReply>() else {
        return;
    };
    let mut status = resp.status().as_u16();
    let mut text: Option<Bytes> = None;
    let mut format = cfg.body_format.as_ref();
    let ctx = FormatContext {
        request: req.headers,
        line: Some(RequestLine {
            method: req.method,
            path: req.path,
            scheme: req.scheme,
            authority: req.authority,
        }),
        ..fmt
    };
    let logged = Logged {
        status,
        duration_ms: req.elapsed.as_millis() as u64,
        flags: flag.as_str(),
        method: req.method,
        path: req.path,
        authority: req.authority,
        headers: req.headers,
        health_check: req.health_check,
    };
    for m in cfg.mappers.iter() {
        if !m.filter.admits(&logged) {
            continue;
        }
        if let Some(b) = &m.body {
            text = Some(Bytes::copy_from_slice(b.as_bytes()));
        }
        m.headers.apply_with(resp.headers_mut(), &ctx);
        if let Some(c) = m.status_code {
            status = c;
            *resp.status_mut() =
                StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        }
        if m.body_format.is_some() {
            format = m.body_format.as_ref();
        }
        break;
    }
    let (body, content_type): (Bytes, &str) = match format {
        Some(f) => {
            let local = text.as_ref().unwrap_or(&reply.text);
            let local = String::from_utf8_lossy(local);
            let ctx = FormatContext {
                response_code: Some(status),
                ..ctx
            };
            (
                Bytes::from(f.render(&ctx, Some(&local))),
                f.content_type.as_str(),
            )
        }
        None => match text {
            Some(t) => (t, "text/plain"),
            // Nothing changes the body.
            None => {
                resp.extensions_mut().insert(reply);
                return;
            }
        },
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    if body.is_empty() {
        h.remove(header::CONTENT_TYPE);
        *resp.body_mut() = local_reply::empty();
    } else {
        if let Ok(v) = HeaderValue::from_str(content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        *resp.body_mut() = local_reply::full(body.clone());
    }
    reply.text = body;
    resp.extensions_mut().insert(reply);
}
