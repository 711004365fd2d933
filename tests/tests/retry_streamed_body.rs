//! A request body of unknown length (HTTP/2 without `content-length`, as every gRPC call) is
//! streamed to the first attempt and kept for a retry up to the buffer limit, as Envoy's
//! router does: the real `sluice proxy` binary, a hyper HTTP/2 client sending the body in two
//! frames with a pause between them, and an HTTP/2 upstream that fails the first attempt.

use std::{convert::Infallible, sync::atomic::Ordering, time::Duration};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_tests::upstream::{
    harness::{free_port, http_bootstrap, static_cluster, ProxyProcess},
    TestUpstream,
};

const H2_UPSTREAM: &str = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n";

/// POSTs `parts` over HTTP/2 as separate DATA frames, 100 ms apart, without a length.
async fn h2_post(port: u16, path: &str, parts: [&'static str; 2]) -> u16 {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let frames = futures_util::stream::unfold(0usize, move |i| async move {
        if i == parts.len() {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let f: Result<Frame<Bytes>, Infallible> =
            Ok(Frame::data(Bytes::from_static(parts[i].as_bytes())));
        Some((f, i + 1))
    });
    let req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .body(StreamBody::new(Box::pin(frames)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("answered in time")
        .expect("response");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_without_a_length_is_retried_whole_within_the_buffer_limit() {
    let flaky = TestUpstream::start("flaky").await;
    let (admin, port) = (free_port(), free_port());
    let routes = concat!(
        "              - match: { prefix: \"/limited\" }\n",
        "                request_body_buffer_limit: 8\n",
        "                route: { cluster: flaky, retry_policy: { retry_on: \"5xx\", num_retries: 1 } }\n",
        "              - match: { prefix: \"/\" }\n",
        "                route: { cluster: flaky, retry_policy: { retry_on: \"5xx\", num_retries: 1 } }\n",
    );
    let clusters = static_cluster("flaky", &[flaky.port()], H2_UPSTREAM);
    let proxy = ProxyProcess::start(&http_bootstrap(admin, port, routes, &clusters, ""), admin);

    // The first attempt gets a 503; the retry sends the whole body again.
    flaky.state.fail_next.store(1, Ordering::SeqCst);
    assert_eq!(h2_post(port, "/call", ["part-one|", "part-two"]).await, 200);
    assert_eq!(flaky.state.request_count(), 2);
    let bodies = flaky.state.bodies.lock().unwrap().clone();
    assert_eq!(
        bodies.last().map(|b| &b[..]),
        Some(&b"part-one|part-two"[..]),
        "the retry's body: {bodies:?}"
    );
    assert_eq!(proxy.stat("cluster.flaky.upstream_rq_retry"), 1);
    assert_eq!(proxy.stat("cluster.flaky.retry_or_shadow_abandoned"), 0);
    let reqs = flaky.state.requests.lock().unwrap().clone();
    assert!(
        reqs.iter()
            .all(|r| !r.headers.contains_key("content-length")),
        "sent as it came, without a length: {reqs:?}"
    );

    // Past the route's 8-byte limit the copy is dropped: the 503 reaches the client.
    flaky.state.fail_next.store(1, Ordering::SeqCst);
    assert_eq!(
        h2_post(port, "/limited", ["part-one|", "part-two"]).await,
        503
    );
    assert_eq!(flaky.state.request_count(), 3);
    assert_eq!(proxy.stat("cluster.flaky.upstream_rq_retry"), 1);
    assert_eq!(proxy.stat("cluster.flaky.retry_or_shadow_abandoned"), 1);
}
