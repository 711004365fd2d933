//! The gRPC health check (`grpc_health_check`) against a real Envoy 1.40 on the same YAML:
//! two HTTP/2 servers answer `grpc.health.v1.Health/Check`, one `SERVING` and one
//! `NOT_SERVING`, on a cluster that speaks HTTP/2 (Envoy refuses a gRPC check otherwise). The
//! call each proxy makes (method, path, authority, gRPC headers, `initial_metadata`, the framed
//! request) must be the same, on one kept connection, and `/clusters` must mark the same host.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::{body::Frame, server::conn::http2, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_tests::{
    admin_run::{host_health_flags, one_cluster_bootstrap, start_text},
    conformance::proxy::free_ports,
};

/// A gRPC health server answering every call with `status`; keeps the first call it got.
struct HealthServer {
    port: u16,
    conns: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    first: Arc<Mutex<Option<String>>>,
}

type Answer = Response<
    StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >,
>;

async fn health_server(status: u8) -> HealthServer {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Mutex::new(None));
    let (c, n, f) = (conns.clone(), calls.clone(), first.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (n, f) = (n.clone(), f.clone());
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (n, f) = (n.clone(), f.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    n.fetch_add(1, Ordering::SeqCst);
                    let mut names: Vec<String> = parts
                        .headers
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                        .collect();
                    names.sort();
                    let seen = format!(
                        "{} {} authority={} scheme={} {names:?} body={body:02x?}",
                        parts.method,
                        parts.uri.path(),
                        parts.uri.authority().map_or("-", |a| a.as_str()),
                        parts.uri.scheme_str().unwrap_or("-"),
                    );
                    f.lock().unwrap().get_or_insert(seen);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let frames = vec![
                        Ok(Frame::data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let answer: Answer = Response::builder()
                        .header("content-type", "application/grpc")
                        .body(StreamBody::new(futures_util::stream::iter(frames)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(answer)
                }
            });
            tokio::spawn(async move {
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    HealthServer {
        port,
        conns,
        calls,
        first,
    }
}

fn config(port: u16, serving: u16, not_serving: u16) -> String {
    let fields = "    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    health_checks:
    - {timeout: 1s, interval: 0.2s, no_traffic_interval: 0.2s, unhealthy_threshold: 1, healthy_threshold: 1,
       grpc_health_check: {service_name: shop.Cart, initial_metadata: [{header: {key: x-check, value: from-proxy}}]}}
";
    one_cluster_bootstrap(port, "pool", fields, &[serving, not_serving])
}

#[test]
fn a_grpc_health_check_calls_and_judges_as_envoys() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut seen = Vec::new();
    for envoy in [true, false] {
        let serving = rt.block_on(health_server(1));
        let not_serving = rt.block_on(health_server(2));
        let [port] = free_ports::<1>();
        let p = start_text(
            "grpc-hc",
            &config(port, serving.port, not_serving.port),
            envoy,
        );
        std::thread::sleep(Duration::from_millis(1_200));
        let flags = |port: u16| host_health_flags(&p.admin, "pool", port);
        let who = if envoy { "envoy" } else { "sluice" };
        let call = serving.first.lock().unwrap().clone().unwrap_or_default();
        let row = (
            flags(serving.port),
            flags(not_serving.port),
            serving.conns.load(Ordering::SeqCst),
            serving.calls.load(Ordering::SeqCst),
            call,
        );
        eprintln!("{who}: {row:?}");
        drop(p);
        seen.push(row);
    }
    for (good, bad, conns, calls, _) in &seen {
        assert_eq!(good, "healthy");
        assert_eq!(bad, "/failed_active_hc");
        assert_eq!(*conns, 1, "one kept connection");
        assert!(
            (4..=10).contains(calls),
            "{calls} checks in about 1.2 s at 0.2 s"
        );
    }
    // The call itself, header for header.
    assert_eq!(seen[0].4, seen[1].4);
}
