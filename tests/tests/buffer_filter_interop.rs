//! The buffer filter (`envoy.filters.http.buffer`) against a real Envoy 1.40 on the same YAML:
//! bodies within `max_request_bytes` go upstream whole and with a `content-length` (a chunked
//! one too), larger ones get the 413, a route's `BufferPerRoute` disables the filter or raises
//! its limit. The client's status and what the upstream got (its length headers and the body)
//! must be Envoy's.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use sluice_tests::{
    admin_run::{one_cluster_bootstrap, start_text},
    conformance::proxy::free_ports,
    upstream::TestUpstream,
};

fn config(port: u16, up: u16) -> String {
    let filter = r#"{name: envoy.filters.http.buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 16}}, "#;
    let per_route = |cfg: &str| {
        format!(
            r#"typed_per_filter_config: {{envoy.filters.http.buffer: {{"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, {cfg}}}}}"#
        )
    };
    let routes = format!(
        r#"route_config: {{virtual_hosts: [{{name: v, domains: ["*"], routes: [{{match: {{prefix: /off}}, route: {{cluster: pool}}, {}}}, {{match: {{prefix: /more}}, route: {{cluster: pool}}, {}}}, {{match: {{prefix: /}}, route: {{cluster: pool}}}}]}}]}}"#,
        per_route("disabled: true"),
        per_route("buffer: {max_request_bytes: 64}")
    );
    // one_cluster_bootstrap's HCM with the buffer filter and these routes.
    let base = one_cluster_bootstrap(port, "pool", "", &[up]);
    let start = base.find("route_config:").expect("route_config");
    let end = base[start..].find('\n').map_or(base.len(), |e| start + e);
    let with_routes = format!("{}{routes}{}", &base[..start], &base[end..]);
    with_routes.replacen("http_filters: [", &format!("http_filters: [{filter}"), 1)
}

/// Sends `head` and `body` (raw) and reads the response's status.
fn raw(port: u16, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1).unwrap_or("none").to_string()
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

#[test]
fn the_buffer_filter_buffers_as_envoys() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let twenty = b"twenty bytes of body".to_vec();
    let mut rows = Vec::new();
    for envoy in [true, false] {
        let up = rt.block_on(TestUpstream::start("up"));
        let [port] = free_ports::<1>();
        let p = start_text("buffer", &config(port, up.port()), envoy);
        let sized = |path: &str, body: &[u8]| {
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            raw(port, &head, body)
        };
        let chunked_to = |path: &str, body: &[u8]| {
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            );
            raw(port, &head, &chunked(body))
        };
        let cases: Vec<(&str, String)> = vec![
            ("sized small", sized("/x", b"hello")),
            ("chunked small", chunked_to("/x", b"hello")),
            ("sized large", sized("/x", &twenty)),
            ("chunked large", chunked_to("/x", &twenty)),
            ("off chunked large", chunked_to("/off", &twenty)),
            ("more chunked large", chunked_to("/more", &twenty)),
            (
                "get",
                raw(
                    port,
                    "GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
                    b"",
                ),
            ),
        ];
        std::thread::sleep(Duration::from_millis(200));
        let requests = up.state.requests.lock().unwrap().clone();
        let bodies = up.state.bodies.lock().unwrap().clone();
        let seen: Vec<String> = requests
            .iter()
            .zip(&bodies)
            .map(|(r, b)| {
                let h = |n: &str| {
                    r.headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                format!(
                    "{} {} cl={} te={} body={:?}",
                    r.method,
                    r.path,
                    h("content-length"),
                    h("transfer-encoding"),
                    String::from_utf8_lossy(b)
                )
            })
            .collect();
        let row = format!("{cases:?} upstream {seen:?}");
        eprintln!("{}: {row}", if envoy { "envoy" } else { "sluice" });
        rows.push(row);
        drop(p);
    }
    assert_eq!(rows[0], rows[1], "sluice differs from Envoy");
    assert!(
        rows[0].contains("(\"sized large\", \"413\")"),
        "{}",
        rows[0]
    );
}

/// Over HTTP/2 the limit is Envoy's decoder buffer's: a body over it that comes whole in one
/// final DATA frame was never buffered and goes on (with its full length), one over it in
/// several frames gets the 413.
#[test]
fn http2_bodies_meet_the_limit_as_envoys() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    for envoy in [true, false] {
        let up = rt.block_on(TestUpstream::start("up"));
        let [port] = free_ports::<1>();
        let p = start_text("buffer-h2", &config(port, up.port()), envoy);
        let send = |frames: Vec<&'static [u8]>| {
            rt.block_on(async {
                let mut send = sluice_tests::admin_run::h2_client(port).await;
                let body = if frames.len() == 1 {
                    Full::new(Bytes::from_static(frames[0]))
                        .map_err(|n| match n {})
                        .boxed()
                } else {
                    let f: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = frames
                        .into_iter()
                        .map(|b| Ok(Frame::data(Bytes::from_static(b))))
                        .collect();
                    StreamBody::new(futures_util::stream::iter(f)).boxed()
                };
                let req = hyper::Request::builder()
                    .method("POST")
                    .uri("http://a/x")
                    .body(body)
                    .unwrap();
                let r = send.send_request(req).await.unwrap();
                r.status().as_u16()
            })
        };
        let one = send(vec![b"twenty bytes of body"]);
        let two = send(vec![b"ten bytes ", b"and ten.."]);
        std::thread::sleep(Duration::from_millis(200));
        let seen: Vec<String> = up
            .state
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} cl={}",
                    r.path,
                    r.headers
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                )
            })
            .collect();
        let row = format!("one frame {one}, two frames {two}; upstream {seen:?}");
        eprintln!("{}: {row}", if envoy { "envoy" } else { "sluice" });
        rows.push(row);
        drop(p);
    }
    assert_eq!(rows[0], rows[1], "sluice differs from Envoy");
}
