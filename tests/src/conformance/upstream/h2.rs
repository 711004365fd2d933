//! The recording upstream's HTTP/2 side (prior knowledge, `http2_protocol_options`): the same
//! record and reply script as HTTP/1.1, `:authority` recorded as `host`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http2, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::Conn;

/// Serves one HTTP/2 connection until the proxy closes it.
pub(super) async fn serve(sock: TcpStream, conn: Conn) {
    let conn = std::sync::Arc::new(conn);
    let service = service_fn(move |req| {
        let conn = conn.clone();
        async move { answer(&conn, req).await }
    });
    let _ = http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(sock), service)
        .await;
}

/// The RST_STREAM code a script names (an unknown name: INTERNAL_ERROR).
fn reason(name: &str) -> h2::Reason {
    match name {
        "REFUSED_STREAM" => h2::Reason::REFUSED_STREAM,
        "CANCEL" => h2::Reason::CANCEL,
        _ => h2::Reason::INTERNAL_ERROR,
    }
}

/// A scripted `close` resets the stream with INTERNAL_ERROR (HTTP/2's way of ending a request
/// without an answer), `rst_stream` with that code: hyper resets the stream with the
/// `h2::Reason` of the service's error.
async fn answer(conn: &Conn, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, h2::Error> {
    let internal = || h2::Error::from(h2::Reason::INTERNAL_ERROR);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(internal()),
    };
    let mut headers = Vec::new();
    if let Some(a) = parts.uri.authority() {
        headers.push(("host".to_string(), a.to_string()));
    }
    headers.extend(parts.headers.iter().map(|(k, v)| {
        (
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    }));
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let reply = conn.record(
        parts.method.to_string(),
        path,
        headers,
        Vec::new(),
        body.to_vec(),
    );
    if reply.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(reply.delay_ms)).await;
    }
    if reply.close {
        return Err(internal());
    }
    if let Some(code) = &reply.rst_stream {
        return Err(h2::Error::from(reason(code)));
    }
    let mut resp = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    let body = if parts.method == hyper::Method::HEAD {
        String::new()
    } else {
        conn.body(&reply)
    };
    resp.body(Full::new(Bytes::from(body)))
        .map_err(|_| internal())
}
