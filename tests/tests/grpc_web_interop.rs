//! The gRPC-Web filter (`envoy.filters.http.grpc_web`) against a real Envoy 1.40 on the same
//! YAML: gRPC-Web calls over HTTP/1.1 (binary and base64 text, either way), a gRPC upstream
//! over HTTP/2 answering with data and trailers, trailers only, an HTML error page, an empty
//! error, a gRPC-Web answer; bad base64; local replies from a filter before and after the
//! gRPC-Web filter and from the router; a request that is not gRPC-Web; under a retry policy
//! (a body refused for its base64 is not retried, an upstream 503 is). What the upstream got
//! (the headers the filter changes, the body) and what the client got (status, the headers the
//! filter changes, the body byte for byte) must be the same under both proxies.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, StreamBody};
use hyper::{body::Frame, server::conn::http2, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_tests::{
    admin_run::{hcm_bootstrap, start_text},
    conformance::{
        client::{send, Request as ClientRequest},
        proxy::free_ports,
    },
};

/// The request headers the upstream's record keeps.
const UP_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "te",
    "grpc-accept-encoding",
    "accept",
    "x-case",
];

/// The response headers compared.
const DOWN_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "grpc-status",
    "grpc-message",
    "x-from-upstream",
];

/// The values of the headers `names`, in that order, as `name=value`.
fn kept(h: &http::HeaderMap, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| {
            h.get_all(*n)
                .iter()
                .map(move |v| format!("{n}={}", v.to_str().unwrap_or("?")))
        })
        .collect()
}

type Frames = Vec<Result<Frame<Bytes>, Infallible>>;
type Answer = Response<BoxBody<Bytes, Infallible>>;

fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

/// What the upstream answers on `path`.
fn answer(path: &str) -> Answer {
    let trailers = |status: &'static str, message: &'static str| {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static(status));
        t.insert("grpc-message", http::HeaderValue::from_static(message));
        Ok(Frame::trailers(t))
    };
    let data = |b: Vec<u8>| Ok(Frame::data(Bytes::from(b)));
    let (status, ct, extra, frames): (u16, &str, Option<(&str, &str)>, Frames) = match path {
        "/svc.Shop/Ok" => (
            200,
            "application/grpc",
            None,
            vec![
                data(grpc_frame(b"first")),
                // A frame across two DATA frames.
                data([grpc_frame(b"x"), grpc_frame(b"second")[..4].to_vec()].concat()),
                data(grpc_frame(b"second")[4..].to_vec()),
                trailers("0", "fine ~ 100%"),
            ],
        ),
        // Trailers only: the headers end the stream.
        "/svc.Shop/TrailersOnly" => {
            return Response::builder()
                .header("content-type", "application/grpc")
                .header("x-from-upstream", "yes")
                .header("grpc-status", "5")
                .body(Empty::new().boxed())
                .unwrap()
        }
        // The status in the headers, then an empty DATA frame ends the stream.
        "/svc.Shop/EmptyEnd" => (200, "application/grpc", Some(("grpc-status", "5")), vec![]),
        "/svc.Shop/Html503" => (
            503,
            "text/html",
            None,
            vec![data(b"<h1>down\n</h1>".to_vec())],
        ),
        "/svc.Shop/Empty503" => (503, "text/plain", None, vec![]),
        "/svc.Shop/WebProto" => (
            200,
            "application/grpc-web+proto",
            None,
            vec![data(grpc_frame(b"already web"))],
        ),
        _ => (
            200,
            "application/json",
            None,
            vec![data(b"{\"plain\":true}".to_vec())],
        ),
    };
    let mut b = Response::builder()
        .status(status)
        .header("content-type", ct)
        .header("x-from-upstream", "yes");
    if let Some((n, v)) = extra {
        b = b.header(n, v);
    }
    b.body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap()
}

/// An HTTP/2 upstream recording each request as a line.
async fn upstream(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen.clone();
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = match body.collect().await {
                        Ok(b) => format!("{:02x?}", b.to_bytes()),
                        Err(_) => "reset".to_string(),
                    };
                    let headers = kept(&parts.headers, UP_HEADERS);
                    seen.lock().unwrap().push(format!(
                        "{} {} {headers:?} body={body}",
                        parts.method,
                        parts.uri.path()
                    ));
                    Ok::<_, Infallible>(answer(parts.uri.path()))
                }
            });
            tokio::spawn(async move {
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

fn config(port: u16, upstream: u16) -> String {
    let filters = r#"{name: deny-before, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules: {action: DENY, policies: {p: {permissions: [{header: {name: x-deny-before, present_match: true}}], principals: [{any: true}]}}}}}, {name: envoy.filters.http.grpc_web, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb}}, {name: deny-after, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules: {action: DENY, policies: {p: {permissions: [{header: {name: x-deny-after, present_match: true}}], principals: [{any: true}]}}}}}, "#;
    let routes = r#"route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /svc.Shop/}, route: {cluster: grpc, retry_policy: {retry_on: "reset,5xx", num_retries: 2}}}]}]}"#;
    let cluster = format!(
        "  - name: grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"
    );
    hcm_bootstrap(port, routes, filters, &cluster)
}

/// One call: path, request headers, body.
struct Call {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
}

fn b64(b: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(b)
        .into_bytes()
}

fn calls() -> Vec<Call> {
    let msg = grpc_frame(b"hello");
    let web = |name, path, ct: &'static str, accept: Option<&'static str>, body: Vec<u8>| {
        let mut headers = vec![("content-type", ct)];
        if let Some(a) = accept {
            headers.push(("accept", a));
        }
        Call {
            name,
            path,
            headers,
            body,
        }
    };
    let with = |mut c: Call, h: (&'static str, &'static str)| {
        c.headers.push(h);
        c
    };
    vec![
        web(
            "binary",
            "/svc.Shop/Ok",
            "application/grpc-web+proto",
            None,
            msg.clone(),
        ),
        web(
            "binary-plain-type",
            "/svc.Shop/Ok",
            "application/grpc-web",
            Some("application/grpc-web"),
            msg.clone(),
        ),
        web(
            "text",
            "/svc.Shop/Ok",
            "application/grpc-web-text",
            Some("application/grpc-web-text"),
            b64(&msg),
        ),
        web(
            "text-proto",
            "/svc.Shop/Ok",
            "application/grpc-web-text+proto",
            Some("application/grpc-web-text+proto"),
            b64(&msg),
        ),
        web(
            "text-in-binary-out",
            "/svc.Shop/Ok",
            "application/grpc-web-text",
            None,
            b64(&msg),
        ),
        web(
            "binary-in-text-out",
            "/svc.Shop/Ok",
            "application/grpc-web",
            Some("application/grpc-web-text"),
            msg.clone(),
        ),
        with(
            web(
                "own-accept-encoding",
                "/svc.Shop/Ok",
                "application/grpc-web",
                None,
                msg.clone(),
            ),
            ("grpc-accept-encoding", "gzip"),
        ),
        web(
            "trailers-only",
            "/svc.Shop/TrailersOnly",
            "application/grpc-web",
            None,
            msg.clone(),
        ),
        web(
            "trailers-only-text",
            "/svc.Shop/TrailersOnly",
            "application/grpc-web-text",
            Some("application/grpc-web-text"),
            b64(&msg),
        ),
        // Not in text: Envoy never ends a text answer whose last DATA frame completes no gRPC
        // frame (its encodeData stops iteration at the end of the stream), see below.
        web(
            "empty-end",
            "/svc.Shop/EmptyEnd",
            "application/grpc-web",
            None,
            msg.clone(),
        ),
        web(
            "html-503",
            "/svc.Shop/Html503",
            "application/grpc-web",
            None,
            msg.clone(),
        ),
        web(
            "empty-503",
            "/svc.Shop/Empty503",
            "application/grpc-web",
            None,
            msg.clone(),
        ),
        web(
            "upstream-web-proto",
            "/svc.Shop/WebProto",
            "application/grpc-web",
            None,
            msg.clone(),
        ),
        web(
            "no-route",
            "/other/Call",
            "application/grpc-web",
            None,
            msg.clone(),
        ),
        web(
            "bad-base64-size",
            "/svc.Shop/Ok",
            "application/grpc-web-text",
            None,
            b"AAAAAAA".to_vec(),
        ),
        web(
            "bad-base64-data",
            "/svc.Shop/Ok",
            "application/grpc-web-text",
            None,
            b"AA!AAAAA".to_vec(),
        ),
        web(
            "empty-body",
            "/svc.Shop/Ok",
            "application/grpc-web-text",
            None,
            Vec::new(),
        ),
        with(
            web(
                "denied-before",
                "/svc.Shop/Ok",
                "application/grpc-web",
                None,
                msg.clone(),
            ),
            ("x-deny-before", "1"),
        ),
        with(
            web(
                "denied-after",
                "/svc.Shop/Ok",
                "application/grpc-web",
                None,
                msg.clone(),
            ),
            ("x-deny-after", "1"),
        ),
        web(
            "not-grpc-web",
            "/svc.Shop/Json",
            "application/json",
            None,
            b"{}".to_vec(),
        ),
        web(
            "grpc-web-with-params",
            "/svc.Shop/Json",
            "application/grpc-web; charset=utf-8",
            None,
            msg.clone(),
        ),
    ]
}

/// What one call looked like: the client's answer and the upstream's record.
fn run_calls(proxy: u16, seen: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    let mut out = Vec::new();
    for c in calls() {
        seen.lock().unwrap().clear();
        let mut headers: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        headers.push(("x-case".into(), c.name.into()));
        let req = ClientRequest {
            method: "POST",
            path: c.path,
            host: Some("shop.example"),
            headers: &headers,
            body: Some(&c.body),
            http10: false,
            preamble: None,
        };
        let addr = format!("127.0.0.1:{proxy}").parse().unwrap();
        let r = match send(addr, &req, Duration::from_secs(2)) {
            Ok(r) => r,
            Err(e) => {
                out.push(format!("{}: {e}", c.name));
                continue;
            }
        };
        let kept = r.kept(DOWN_HEADERS);
        // A request the proxy reset (bad base64) is recorded after the answer came.
        std::thread::sleep(Duration::from_millis(100));
        let up = seen.lock().unwrap().clone();
        out.push(format!(
            "{}: {} {kept:?} body={:?}\n  upstream: {up:?}",
            c.name,
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    out
}

#[test]
fn grpc_web_calls_are_translated_as_envoy_translates_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = rt.block_on(upstream(seen.clone()));
    let mut results = Vec::new();
    for envoy in [true, false] {
        let [port] = free_ports::<1>();
        let _p = start_text("grpc-web", &config(port, up), envoy);
        results.push(run_calls(port, &seen));
    }
    let mut differ = Vec::new();
    for (e, s) in results[0].iter().zip(&results[1]) {
        eprintln!("envoy  {e}");
        if e != s {
            eprintln!("sluice {s}");
            differ.push(e.split(':').next().unwrap_or_default().to_string());
        }
    }
    assert!(differ.is_empty(), "differ from Envoy: {differ:?}");
    // What the translation must have done, beyond agreeing.
    let envoy = &results[0];
    let line = |name: &str| {
        envoy
            .iter()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap()
            .clone()
    };
    assert!(
        line("binary").contains("grpc-status:0\\r\\ngrpc-message:fine ~ 100%\\r\\n"),
        "{}",
        line("binary")
    );
    assert!(line("text").contains("content-type=application/grpc-web-text+proto"));
    assert!(line("html-503").contains("grpc-status=14"));
    assert!(line("bad-base64-size").starts_with("bad-base64-size: 400"));
}

/// Envoy 1.40 never ends a text-mode answer (`accept: application/grpc-web-text`) whose stream
/// ends on an empty DATA frame: its `encodeData` finds no whole gRPC frame and stops iteration,
/// end of stream included, so the client waits until a timeout. sluice ends the answer there
/// (declared in docs/config.md). Envoy's hang is checked too, so a fixed Envoy shows here.
#[test]
fn a_text_answer_ending_on_an_empty_frame_is_ended() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = rt.block_on(upstream(seen.clone()));
    let body = b64(&grpc_frame(b"hello"));
    let headers = vec![
        (
            "content-type".to_string(),
            "application/grpc-web-text".to_string(),
        ),
        (
            "accept".to_string(),
            "application/grpc-web-text".to_string(),
        ),
    ];
    let req = ClientRequest {
        method: "POST",
        path: "/svc.Shop/EmptyEnd",
        host: Some("shop.example"),
        headers: &headers,
        body: Some(&body),
        http10: false,
        preamble: None,
    };
    for envoy in [true, false] {
        let [port] = free_ports::<1>();
        let _p = start_text("grpc-web", &config(port, up), envoy);
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let r = send(addr, &req, Duration::from_secs(2));
        if envoy {
            let e = r.expect_err("Envoy 1.40 hangs this answer");
            assert!(e.contains("timed out"), "{e}");
        } else {
            let r = r.expect("sluice ends the answer");
            assert_eq!(r.status, 200);
            assert!(r.body.is_empty(), "{:?}", r.body);
            let get = |n: &str| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(get("grpc-status"), Some("5"));
            assert_eq!(get("content-type"), Some("application/grpc-web-text+proto"));
        }
    }
}

/// The calls over HTTP/2 (as a browser makes them): the same answers under both proxies, the
/// trailers in the body and none as HTTP/2 trailers.
#[test]
fn grpc_web_over_http2_is_envoys() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = rt.block_on(upstream(seen.clone()));
    let wanted = [
        "binary",
        "text",
        "trailers-only-text",
        "html-503",
        "no-route",
        "bad-base64-size",
    ];
    let mut results = Vec::new();
    for envoy in [true, false] {
        let [port] = free_ports::<1>();
        let _p = start_text("grpc-web", &config(port, up), envoy);
        let mut out = Vec::new();
        for c in calls().into_iter().filter(|c| wanted.contains(&c.name)) {
            let line = rt.block_on(async {
                let mut send = sluice_tests::admin_run::h2_client(port).await;
                let mut b = Request::builder()
                    .method("POST")
                    .uri(format!("http://shop.example{}", c.path));
                for (n, v) in &c.headers {
                    b = b.header(*n, *v);
                }
                let req = b
                    .body(http_body_util::Full::new(Bytes::from(c.body.clone())))
                    .unwrap();
                let r = tokio::time::timeout(Duration::from_secs(2), send.send_request(req))
                    .await
                    .expect("an answer in time")
                    .unwrap();
                let (parts, body) = r.into_parts();
                let collected = tokio::time::timeout(Duration::from_secs(2), body.collect())
                    .await
                    .expect("the body in time")
                    .unwrap();
                let trailers = collected.trailers().cloned();
                let body = collected.to_bytes();
                let kept = kept(&parts.headers, DOWN_HEADERS);
                format!(
                    "{}: {} {kept:?} body={:?} trailers={trailers:?}",
                    c.name,
                    parts.status.as_u16(),
                    String::from_utf8_lossy(&body)
                )
            });
            out.push(line);
        }
        results.push(out);
    }
    for (e, s) in results[0].iter().zip(&results[1]) {
        eprintln!("envoy  {e}");
        assert_eq!(e, s, "sluice differs from Envoy over HTTP/2");
    }
    assert!(results[0][0].contains("trailers=None"), "{}", results[0][0]);
}
