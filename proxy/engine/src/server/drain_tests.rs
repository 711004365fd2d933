//! Listener drain through `Server::apply` (the entry of file reloads and xDS alike): re-binding
//! the listener to a new address drains its connections — the HTTP/1 request in flight finishes
//! with `connection: close` and the connection closes, an idle keep-alive connection closes at
//! once, an HTTP/2 connection gets GOAWAY after its stream finishes — while an in-place update
//! (same address) leaves them open.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpStream, task::JoinHandle};

use crate::testing::{bootstrap, get, serve, upstream};

type Http1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

fn req(path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(path)
        .header(http::header::HOST, "test")
        .body(Empty::new())
        .expect("request")
}

/// An HTTP/1 keep-alive connection and its driver (ends when the connection closes).
async fn http1(front: SocketAddr) -> (Http1, JoinHandle<()>) {
    let io = TokioIo::new(TcpStream::connect(front).await.expect("connect"));
    let (s, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    (s, tokio::spawn(async move { drop(conn.await) }))
}

/// Waits (5 s at most) for a connection's driver to end: the proxy closed it.
async fn closed(driver: JoinHandle<()>, what: &str) {
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open 5 s after the drain"))
        .expect("driver");
}

/// `bootstrap` with listener `front` moved to `port`: not an in-place update.
fn rebound(mut b: crate::config::Bootstrap, port: u16) -> crate::config::Bootstrap {
    b.listeners[0].address.set_port(port);
    b
}

#[tokio::test]
async fn rebinding_a_listener_drains_its_http1_connections() {
    let a = upstream("a", Duration::ZERO).await;
    let slow = upstream("slow", Duration::from_millis(400)).await;
    let routes = [("/slow", "slow"), ("/", "a")];
    let clusters = [("a", a), ("slow", slow)];
    let (server, front) = serve(bootstrap(&routes, &clusters), None).await;
    let (mut busy, busy_driver) = http1(front).await;
    let (mut idle, idle_driver) = http1(front).await;
    for s in [&mut busy, &mut idle] {
        let resp = s.send_request(req("/")).await.expect("response");
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get(http::header::CONNECTION).is_none());
        resp.into_body().collect().await.expect("body");
    }

    // An in-place update keeps the connections: the next request takes the new routes.
    server
        .apply(
            bootstrap(&[("/", "slow")], &clusters),
            serde_json::Value::Null,
        )
        .await
        .expect("applied");
    let resp = idle.send_request(req("/")).await.expect("response");
    assert!(resp.headers().get(http::header::CONNECTION).is_none());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, "slow");

    let in_flight = tokio::spawn(async move {
        let resp = busy.send_request(req("/slow")).await.expect("response");
        let close = resp.headers().get(http::header::CONNECTION).cloned();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        // Kept: a client that drops its sender closes the connection itself.
        (close, body, busy)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .apply(
            rebound(bootstrap(&routes, &clusters), 2),
            serde_json::Value::Null,
        )
        .await
        .expect("applied");
    closed(idle_driver, "the idle keep-alive connection").await;
    let (close, body, _busy) = in_flight.await.expect("joined");
    assert_eq!(body, "slow", "the request in flight finished");
    assert_eq!(close.as_ref().map(|v| v.as_bytes()), Some(&b"close"[..]));
    closed(
        busy_driver,
        "the connection that carried the request in flight",
    )
    .await;
    // New connections are served by the re-bound listener, undrained.
    let (mut fresh, _driver) = http1(front).await;
    let resp = fresh.send_request(req("/")).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(http::header::CONNECTION).is_none());
    assert_eq!(get(front, "/").await, (200, "a".into()));
}

#[tokio::test]
async fn rebinding_a_listener_sends_goaway_after_the_http2_stream_in_flight() {
    let slow = upstream("slow", Duration::from_millis(400)).await;
    let clusters = [("slow", slow)];
    let (server, front) = serve(bootstrap(&[("/", "slow")], &clusters), None).await;
    let io = TokioIo::new(TcpStream::connect(front).await.expect("connect"));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move { drop(conn.await) });
    // Kept: a client that drops every sender closes the connection itself.
    let _kept = h2.clone();
    let in_flight = tokio::spawn(async move {
        let resp = h2.send_request(req("/")).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .apply(
            rebound(bootstrap(&[("/", "slow")], &clusters), 2),
            serde_json::Value::Null,
        )
        .await
        .expect("applied");
    let (status, body) = in_flight.await.expect("joined");
    assert_eq!((status.as_u16(), &body[..]), (200, &b"slow"[..]));
    closed(driver, "the HTTP/2 connection").await;
}
