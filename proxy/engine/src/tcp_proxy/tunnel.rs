//! A tcp_proxy's tunnel (`tunneling_config`): over the upstream connection (TCP or TLS), an
//! HTTP CONNECT for the configured host name, HTTP/2 when the cluster speaks it, else HTTP/1.1,
//! as Envoy's `HttpUpstream`; once the upstream answers 200 (any 2xx over HTTP/1.1) the
//! connection's bytes flow inside it.

use bytes::Bytes;
use http::{header, Method, Request, Uri, Version};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Tunneling;

/// Opens the tunnel over `io` for a connection from `remote` to `local`: the upgraded stream,
/// or the status the upstream refused it with (0: no valid answer).
pub(super) async fn open<S>(
    io: S,
    t: &Tunneling,
    http2: bool,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) -> Result<TokioIo<Upgraded>, u16>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let host = t.host(local, remote);
    let uri = Uri::builder()
        .authority(host.as_str())
        .build()
        .map_err(|_| 0u16)?;
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(uri)
        .body(Empty::<Bytes>::new())
        .map_err(|_| 0u16)?;
    let io = TokioIo::new(io);
    let resp = if http2 {
        *req.version_mut() = Version::HTTP_2;
        t.add_headers(req.headers_mut(), local, remote);
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|_| 0u16)?;
        tokio::spawn(conn);
        s.send_request(req).await.map_err(|_| 0u16)?
    } else {
        // HTTP/1.1 writes the authority as the request target and in `host`.
        if let Ok(v) = header::HeaderValue::from_str(&host) {
            req.headers_mut().insert(header::HOST, v);
        }
        t.add_headers(req.headers_mut(), local, remote);
        let (mut s, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|_| 0u16)?;
        tokio::spawn(conn.with_upgrades());
        s.send_request(req).await.map_err(|_| 0u16)?
    };
    let status = resp.status();
    // Envoy's `isValidResponse`: 200 over HTTP/2, any 2xx over HTTP/1.1. (Envoy also refuses
    // an HTTP/2 200 that ends the stream; hyper hands a CONNECT answer over without its
    // stream's end, so here such a tunnel opens and closes at once.)
    let valid = if http2 {
        status == http::StatusCode::OK
    } else {
        status.is_success()
    };
    if !valid {
        return Err(status.as_u16());
    }
    let up = hyper::upgrade::on(resp).await.map_err(|_| 0u16)?;
    Ok(TokioIo::new(up))
}
