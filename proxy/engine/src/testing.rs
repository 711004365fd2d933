//! Harness for the engine's unit tests (loopback only): upstream HTTP servers, a [`Server`] fed
//! through `serve_connection` from a loopback listener, a one-request HTTP/1.1 client, and
//! bootstrap YAML for a `front` listener routing path prefixes to STATIC clusters.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::server::{Server, StartOptions};

/// The listener every test config names.
pub(crate) const FRONT: &str = "front";

/// Bootstrap YAML: listener `front` with `routes` (path prefix -> cluster) and a STATIC cluster
/// per `(name, endpoint)`.
pub(crate) fn bootstrap_yaml(routes: &[(&str, &str)], clusters: &[(&str, SocketAddr)]) -> String {
    let mut y = String::from("static_resources:\n  listeners:\n");
    y += &format!("  - name: {FRONT}\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }}\n");
    y += "    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n";
    y += "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n";
    y += "          stat_prefix: front\n          http_filters: [{ name: envoy.filters.http.router }]\n";
    y += "          route_config:\n            virtual_hosts:\n            - name: all\n              domains: [\"*\"]\n              routes:\n";
    for (prefix, cluster) in routes {
        y += &format!("              - {{ match: {{ prefix: \"{prefix}\" }}, route: {{ cluster: {cluster} }} }}\n");
    }
    y += "  clusters:\n";
    for (name, addr) in clusters {
        y += &format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
            addr.ip(),
            addr.port()
        );
    }
    y
}

/// The validated bootstrap of [`bootstrap_yaml`].
pub(crate) fn bootstrap(
    routes: &[(&str, &str)],
    clusters: &[(&str, SocketAddr)],
) -> crate::config::Bootstrap {
    crate::config::from_yaml_str(&bootstrap_yaml(routes, clusters)).expect("valid test config")
}

/// An HTTP/1.1 upstream answering every request with `body`, after `delay`.
pub(crate) async fn upstream(body: &'static str, delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = service_fn(move |_req| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(s), svc));
        }
    });
    addr
}

/// Starts a server on `bootstrap` (no binding, no admin; `config_path` enables reload) and a
/// loopback listener handing its connections to listener [`FRONT`]; returns both.
pub(crate) async fn serve(
    bootstrap: crate::config::Bootstrap,
    config_path: Option<std::path::PathBuf>,
) -> (Arc<Server>, SocketAddr) {
    serve_draining(
        bootstrap,
        config_path,
        crate::server::drain::DEFAULT_DRAIN_TIME,
    )
    .await
}

/// [`serve`] with the drain time of removed listeners (`--drain-time-s`).
pub(crate) async fn serve_draining(
    bootstrap: crate::config::Bootstrap,
    config_path: Option<std::path::PathBuf>,
    drain_time: Duration,
) -> (Arc<Server>, SocketAddr) {
    let opts = StartOptions {
        bind_listeners: false,
        admin: false,
        drain_time,
        ..StartOptions::default()
    };
    let server = Server::start_with(bootstrap, serde_json::Value::Null, config_path, opts)
        .await
        .expect("server starts");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
    let addr = l.local_addr().expect("addr");
    let s = server.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            let s = s.clone();
            let Ok(local) = stream.local_addr() else {
                continue;
            };
            let observer = Arc::new(crate::server::observer::Discard);
            tokio::spawn(async move { s.serve_captured(FRONT, stream, local, observer).await });
        }
    });
    (server, addr)
}

/// `GET path` on a new connection to `addr`: status and body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect front"));
    let (mut s, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(http::header::HOST, "test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = s.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
