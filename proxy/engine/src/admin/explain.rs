//! `GET /explain?url=...`: `sluice explain` on the live config (the [`Runtime`] the data path
//! runs, file or xDS): `url=` (required), `method=` (default GET), `header=name:value`
//! (repeatable), `listener=`, `seed=` (the weighted-cluster draw), `version=HTTP/1.0` (default
//! HTTP/1.1), `source=` (the client's IP, default 127.0.0.1: RBAC principals, `x-forwarded-for`).
//! The answer is the
//! [`Explanation`](crate::explain::Explanation) as JSON; a bad parameter is a 400 naming it, a
//! request no listener or filter chain takes is a 404 saying why. Read-only.

use std::fmt::Write as _;

use super::query::{escape, params, QueryError};
use crate::{
    explain::{explain, ExplainError, Request},
    server::Runtime,
};

/// The explanation of the request `query` describes, as pretty JSON.
pub fn json(rt: &Runtime, query: &str) -> Result<String, QueryError> {
    let bad = |status, message: String| QueryError {
        status,
        message: format!("explain: {message}\n"),
    };
    let (mut url, mut method, mut headers) = (None, "GET".to_string(), Vec::new());
    let (mut listener, mut seed, mut http10, mut source) = (None, 0u64, false, None);
    for (k, v) in params(query) {
        match k.as_str() {
            "url" => url = Some(v),
            "method" if !v.is_empty() => method = v,
            "header" => headers.push(v),
            "listener" if !v.is_empty() => listener = Some(v),
            "version" => {
                http10 = match v.as_str() {
                    "HTTP/1.0" => true,
                    "HTTP/1.1" | "" => false,
                    _ => {
                        return Err(bad(
                            400,
                            format!("version {v:?}: want HTTP/1.0 or HTTP/1.1"),
                        ))
                    }
                }
            }
            "source" if !v.is_empty() => {
                source = Some(
                    v.parse::<std::net::IpAddr>()
                        .map_err(|_| bad(400, format!("source {v:?}: want an IP address")))?,
                );
            }
            "seed" => {
                seed = v
                    .parse()
                    .map_err(|_| bad(400, format!("seed {v:?}: want an unsigned integer")))?;
            }
            other => {
                return Err(bad(
                    400,
                    format!(
                        "unknown parameter {other:?} (url, method, header, listener, seed, version, source)"
                    ),
                ))
            }
        }
    }
    let url = url.ok_or_else(|| bad(400, "url= is required".into()))?;
    let mut req = Request::from_url(&url, &method, &headers, listener, seed)
        .map_err(|e| bad(400, e.to_string()))?;
    req.http10 = http10;
    req.source = source;
    let ex = explain(&rt.bootstrap, &req).map_err(|e| match e {
        ExplainError::NoListenerNamed(_) => bad(400, format!("listener: {e}")),
        ExplainError::BadRequest(_) => bad(400, e.to_string()),
        ExplainError::NoListener(_) | ExplainError::NoChain(..) => bad(404, e.to_string()),
    })?;
    Ok(serde_json::to_string_pretty(&ex).unwrap_or_default() + "\n")
}

/// The `/explain?...` path (query escaped) for a request: what `sluice explain TARGET` sends.
pub fn path(
    url: &str,
    method: &str,
    headers: &[String],
    listener: Option<&str>,
    seed: u64,
) -> String {
    let mut q = format!("/explain?url={}&method={}", escape(url), escape(method));
    for h in headers {
        let _ = write!(q, "&header={}", escape(h));
    }
    if let Some(l) = listener {
        let _ = write!(q, "&listener={}", escape(l));
    }
    let _ = write!(q, "&seed={seed}");
    q
}
