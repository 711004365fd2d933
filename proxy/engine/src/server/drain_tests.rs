//! Listener drain through `Server::apply` (the entry of file reloads and xDS alike), as Envoy
//! 1.40 does it with `--drain-strategy immediate`: re-binding the listener to a new address drains
//! its connections — every HTTP/1 response from then on (the request in flight's too) carries
//! `connection: close` and the connection closes after it, HTTP/2 gets GOAWAY with its next
//! response, and a connection that stays silent is closed when the drain time ends — while an
//! in-place update (same address) leaves them open.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpStream, task::JoinHandle, time::Instant};

use crate::testing::{bootstrap, get, serve_draining, upstream};

const DRAIN_TIME: Duration = Duration::from_secs(1);

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

/// GET `path`: its `connection` header and body.
async fn fetch(s: &mut Http1, path: &str) -> (Option<http::HeaderValue>, Bytes) {
    let resp = s.send_request(req(path)).await.expect("response");
    assert_eq!(resp.status(), 200);
    let close = resp.headers().get(http::header::CONNECTION).cloned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (close, body)
}

/// Waits (5 s at most) for a connection's driver to end: the proxy closed it. Returns when.
async fn closed(driver: JoinHandle<()>, what: &str) -> Instant {
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open 5 s after the drain started"))
        .expect("driver");
    Instant::now()
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
    let (server, front) = serve_draining(bootstrap(&routes, &clusters), None, DRAIN_TIME).await;
    let (mut busy, busy_driver) = http1(front).await;
    let (mut idle, idle_driver) = http1(front).await;
    let (mut silent, silent_driver) = http1(front).await;
    for s in [&mut busy, &mut idle, &mut silent] {
        assert_eq!(fetch(s, "/").await, (None, Bytes::from("a")));
    }

    // An in-place update keeps the connections: the next request takes the new routes.
    server
        .apply(
            bootstrap(&[("/", "slow")], &clusters),
            serde_json::Value::Null,
        )
        .await
        .expect("applied");
    assert_eq!(fetch(&mut idle, "/").await, (None, Bytes::from("slow")));

    let in_flight = tokio::spawn(async move {
        let got = fetch(&mut busy, "/slow").await;
        // Kept: a client that drops its sender closes the connection itself.
        (got, busy)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .apply(
            rebound(bootstrap(&routes, &clusters), 2),
            serde_json::Value::Null,
        )
        .await
        .expect("applied");
    let started = Instant::now();
    let close = Some(http::HeaderValue::from_static("close"));
    // The idle connection still carries a request, on the drained listener's config (its `/`
    // goes to `slow`), answered with `connection: close`.
    assert_eq!(
        fetch(&mut idle, "/").await,
        (close.clone(), Bytes::from("slow"))
    );
    closed(idle_driver, "the drained idle connection").await;
    let (got, _busy) = in_flight.await.expect("joined");
    assert_eq!(got, (close, Bytes::from("slow")), "the request in flight");
    closed(
        busy_driver,
        "the connection that carried the request in flight",
    )
    .await;
    // The silent one is closed when the drain time ends.
    let at = closed(silent_driver, "the silent connection").await;
    assert!(at - started >= DRAIN_TIME - Duration::from_millis(100));
    drop(silent);
    // New connections are served by the re-bound listener, undrained.
    let (mut fresh, _driver) = http1(front).await;
    assert_eq!(fetch(&mut fresh, "/").await, (None, Bytes::from("a")));
    assert_eq!(get(front, "/").await, (200, "a".into()));
}

#[tokio::test]
async fn rebinding_a_listener_sends_goaway_after_the_http2_stream_in_flight() {
    let slow = upstream("slow", Duration::from_millis(400)).await;
    let clusters = [("slow", slow)];
    let (server, front) =
        serve_draining(bootstrap(&[("/", "slow")], &clusters), None, DRAIN_TIME).await;
    let h2 = || async {
        let io = TokioIo::new(TcpStream::connect(front).await.expect("connect"));
        let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        (s, tokio::spawn(async move { drop(conn.await) }))
    };
    let (mut busy, busy_driver) = h2().await;
    let (_silent, silent_driver) = h2().await;
    // Kept: a client that drops every sender closes the connection itself.
    let _kept = busy.clone();
    let in_flight = tokio::spawn(async move {
        let resp = busy.send_request(req("/")).await.expect("response");
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
    let started = Instant::now();
    let (status, body) = in_flight.await.expect("joined");
    assert_eq!((status.as_u16(), &body[..]), (200, &b"slow"[..]));
    let at = closed(busy_driver, "the HTTP/2 connection after its GOAWAY").await;
    assert!(at - started < DRAIN_TIME, "GOAWAY, not the drain time");
    let at = closed(silent_driver, "the silent HTTP/2 connection").await;
    assert!(at - started >= DRAIN_TIME - Duration::from_millis(100));
}
