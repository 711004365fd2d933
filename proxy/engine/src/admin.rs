//! Admin interface (Envoy's paths): /ready, /config_dump, /clusters, /listeners, /stats.

use std::{convert::Infallible, fmt::Write as _, sync::Arc};

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{
    http::{local_reply, Body},
    server::Server,
};

/// Accepts admin connections until the process ends.
pub async fn serve(listener: TcpListener, server: Arc<Server>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Back off like the main listener: at EMFILE `continue` would spin a core.
            Err(e) => {
                crate::accept::failed(&e).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(route(&server, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: u16, body: String, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(local_reply::full(body));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn route(server: &Server, req: &Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/ready" if server.is_ready() => text(200, "LIVE\n".into(), "text/plain"),
        "/ready" => text(503, "INITIALIZING\n".into(), "text/plain"),
        "/config_dump" => text(200, config_dump(server), "application/json"),
        "/clusters" => text(200, clusters(server), "text/plain"),
        "/listeners" => text(200, listeners(server), "text/plain"),
        "/stats" => text(200, server.stats.render(), "text/plain"),
        "/stats/prometheus" => text(
            200,
            server.stats.render_prometheus(),
            "text/plain; version=0.0.4",
        ),
        _ => text(
            404,
            "invalid path. admin commands are: /ready /config_dump /clusters /listeners /stats /stats/prometheus\n"
                .into(),
            "text/plain",
        ),
    }
}

/// Replaces every `private_key` value with `[redacted]` (as Envoy's config dump does for secrets).
fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if k == "private_key" {
                    *val = serde_json::Value::String("[redacted]".into());
                } else {
                    redact(val);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

fn config_dump(server: &Server) -> String {
    let rt = server.runtime();
    let mut source = rt.source.clone();
    redact(&mut source);
    let dump = serde_json::json!({
        "configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "bootstrap": source,
            "version_info": rt.version.to_string(),
        }]
    });
    serde_json::to_string_pretty(&dump).unwrap_or_default()
}

/// Envoy's `/clusters` text format.
fn clusters(server: &Server) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let rt = server.runtime();
    let mut out = String::new();
    for name in &rt.cluster_order {
        let Some(c) = rt.clusters.get(name) else {
            continue;
        };
        let b = &c.spec.breakers;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        let _ = writeln!(
            out,
            "{name}::default_priority::max_connections::{}",
            b.max_connections
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_pending_requests::{}",
            b.max_pending_requests
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_requests::{}",
            b.max_requests
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_retries::{}",
            b.max_retries
        );
        for h in c.all_hosts() {
            let a = h.addr;
            let _ = writeln!(out, "{name}::{a}::cx_active::{}", c.cx_active.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::rq_active::{}", h.active_rq.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::rq_error::{}", h.rq_error.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::rq_total::{}", h.rq_total.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::health_flags::{}", h.health_flags());
            let _ = writeln!(out, "{name}::{a}::weight::{}", h.weight);
        }
    }
    out
}

fn listeners(server: &Server) -> String {
    let rt = server.runtime();
    let mut out = String::new();
    for l in &rt.bootstrap.listeners {
        let _ = writeln!(out, "{}::{}", l.name, l.address);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn private_keys_are_redacted() {
        let mut v = serde_json::json!({"a": [{"tls_certificates": [{
            "certificate_chain": {"filename": "/c.pem"},
            "private_key": {"inline_string": "-----BEGIN PRIVATE KEY-----"}
        }]}]});
        super::redact(&mut v);
        let text = v.to_string();
        assert!(!text.contains("BEGIN PRIVATE KEY"), "{text}");
        assert!(
            text.contains("/c.pem") && text.contains("[redacted]"),
            "{text}"
        );
    }
}
