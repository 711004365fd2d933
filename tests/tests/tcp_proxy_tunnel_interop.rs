//! tcp_proxy `tunneling_config` against a real Envoy 1.40 on the same YAML: a connection's
//! bytes go inside an HTTP CONNECT to an HTTP/1.1 proxy and to an HTTP/2 one (Istio's
//! DestinationRule `tunnel`), with `headers_to_add` and a host name made from the connection's
//! local port; a proxy that refuses the tunnel (403). The CONNECT each proxy got, the bytes
//! echoed back through the tunnel, and the access log's flags and byte counts must be Envoy's.

use std::{
    convert::Infallible,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{server::conn::http2, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_tests::{
    admin_run::{start_text, tcp_proxy_listener, TempLog},
    conformance::proxy::free_ports,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTP/1.1 CONNECT proxy: records each request head (header lines sorted), refuses a
/// `refuse.example` target with 403, else answers 200 and echoes the tunnel's bytes with `h1:`
/// before them.
fn h1_proxy(seen: Seen) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let end = loop {
                    if let Some(e) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break e;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let mut lines: Vec<String> = head.lines().map(|l| l.to_ascii_lowercase()).collect();
                lines[1..].sort_unstable();
                seen.lock().unwrap().push(lines.join(" | "));
                if head.contains("refuse.example") {
                    let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
                    return;
                }
                let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let mut rest = buf[end + 4..].to_vec();
                loop {
                    if !rest.is_empty() {
                        let mut out = b"h1:".to_vec();
                        out.extend_from_slice(&rest);
                        if s.write_all(&out).is_err() {
                            return;
                        }
                        rest.clear();
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => rest.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    port
}

/// An HTTP/2 CONNECT proxy: records each request (method, authority, headers sorted), answers
/// 200 and echoes the tunnel's bytes with `h2:` before them.
async fn h2_proxy(seen: Seen) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen.clone();
            let svc = service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let mut headers: Vec<String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                        .collect();
                    headers.sort();
                    seen.lock().unwrap().push(format!(
                        "{} {} {headers:?}",
                        req.method(),
                        req.uri()
                    ));
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(up) = on.await else { return };
                        let mut up = TokioIo::new(up);
                        let mut chunk = [0u8; 1024];
                        while let Ok(n) = up.read(&mut chunk).await {
                            if n == 0 {
                                break;
                            }
                            let mut out = b"h2:".to_vec();
                            out.extend_from_slice(&chunk[..n]);
                            if up.write_all(&out).await.is_err() {
                                break;
                            }
                        }
                        let _ = up.shutdown().await;
                    });
                    Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
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

fn listener(name: &str, port: u16, cluster: &str, tunnel: &str, log: &str) -> String {
    let fields = format!(
        r#"          tunneling_config: {tunnel}
          access_log: [{{name: log, typed_config: {{"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {log}, log_format: {{text_format_source: {{inline_string: "{name} %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n"}}}}}}}}]
"#
    );
    tcp_proxy_listener(name, port, cluster, &fields)
}

fn cluster(name: &str, port: u16, h2: bool) -> String {
    let proto = if h2 {
        "    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"
    } else {
        ""
    };
    format!(
        "  - name: {name}
    type: STATIC
    connect_timeout: 1s
{proto}    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
"
    )
}

fn config(ports: [u16; 3], h1: u16, h2: u16, log: &str) -> String {
    let headers = r#"[{header: {key: x-tunnel, value: from-proxy}}]"#;
    let listeners = [
        listener(
            "tun_h1",
            ports[0],
            "h1",
            &format!(
                "{{hostname: \"svc.example:%DOWNSTREAM_LOCAL_PORT%\", headers_to_add: {headers}}}"
            ),
            log,
        ),
        listener(
            "tun_h2",
            ports[1],
            "h2",
            &format!("{{hostname: \"h2.example:443\", headers_to_add: {headers}}}"),
            log,
        ),
        listener(
            "tun_refused",
            ports[2],
            "h1",
            "{hostname: \"refuse.example:1\"}",
            log,
        ),
    ]
    .concat();
    format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  listeners:
{listeners}  clusters:
{}{}",
        cluster("h1", h1, false),
        cluster("h2", h2, true)
    )
}

/// Writes `ping` through the listener at `port` and reads what comes back (or how it ended).
fn through(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    while got.len() < 7 {
        match s.read(&mut chunk) {
            Ok(0) => return format!("{:?} then closed", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return format!("{:?} then reset", String::from_utf8_lossy(&got))
            }
            Err(e) => return format!("{:?} then {e}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

#[test]
fn tcp_proxy_tunnels_as_envoy_tunnels() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen: Seen = Arc::default();
    let h1 = h1_proxy(seen.clone());
    let h2 = rt.block_on(h2_proxy(seen.clone()));
    let mut rows = Vec::new();
    for envoy in [true, false] {
        let who = if envoy { "envoy" } else { "sluice" };
        let log = TempLog::new("tunnel", envoy);
        let ports = free_ports::<3>();
        let p = start_text("tunnel", &config(ports, h1, h2, log.path()), envoy);
        let mut row = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            seen.lock().unwrap().clear();
            let echoed = through(*port);
            std::thread::sleep(Duration::from_millis(100));
            let got = seen.lock().unwrap().clone();
            // The local port in a host name differs run to run.
            let got: Vec<String> = got
                .iter()
                .map(|g| g.replace(&port.to_string(), "<port>"))
                .collect();
            row.push(format!("{i}: echoed {echoed:?}; proxy got {got:?}"));
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(p);
        row.push(format!("log: {:?}", log.sorted_lines()));
        for r in &row {
            eprintln!("{who}: {r}");
        }
        rows.push(row);
    }
    assert_eq!(rows[0], rows[1], "sluice differs from Envoy");
    assert!(rows[0][0].contains("h1:ping"), "{}", rows[0][0]);
    assert!(rows[0][1].contains("h2:ping"), "{}", rows[0][1]);
}
