//! Issue 10, test 4: what is in flight when the control plane replaces a listener and updates a
//! cluster. A streaming request (a chunked upload still being sent) and an open TCP-proxy
//! connection run to their end on the config they started with; new requests and connections
//! use the new one. Both ADS flavours, the real `sluice proxy` against the scripted server.
//! And a CDS update that removes the cluster a tcp_proxy names is accepted, by Envoy 1.40 and
//! sluice alike: new connections are closed (`NC`) until the cluster comes back.

use std::time::Duration;

use serde_json::json;
use sluice_tests::{
    upstream::{
        banner_server,
        harness::{free_port, ProxyProcess},
        TestUpstream,
    },
    xds_run::{admin_get, start_proxy, Kind, Run},
    xds_script::{
        bootstrap, cla, eds_cluster, listener, rds, routes, static_cluster, tcp_listener,
    },
    xds_server::{Snapshot, XdsServer, CDS, LDS},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Reads until `want` bytes arrived (3 s at most).
async fn read_exact(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut buf = vec![0u8; want];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf))
        .await
        .expect("read within 3 s")
        .expect("read");
    buf
}

/// Reads an HTTP/1.1 response to its end (the request said `connection: close`).
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("response within 5 s")
        .expect("read response");
    String::from_utf8_lossy(&out).into_owned()
}

async fn in_flight(api_type: &str) {
    let (a, b) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
    );
    let (echo, _echo_task) = banner_server(b"hi\n").await;
    let (http_port, tcp_port, admin) = (free_port(), free_port(), free_port());
    let server = XdsServer::start().await;
    let v1 = Snapshot::from_json(
        "1",
        &[
            listener("web", http_port, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[a.port()]),
            static_cluster("other", b.port()),
            tcp_listener("tcp", tcp_port, "echo", "tcp"),
            static_cluster("echo", echo.port()),
        ],
    );
    server.set(v1);
    let proxy = ProxyProcess::start(&bootstrap(admin, server.addr, api_type), admin);
    let mut run = Run::strict();
    for ty in [LDS, CDS] {
        run.ack(&server, ty, "1").await;
    }
    run.expect(http_port, "/", 200, "a").await;

    // In flight on v1: a TCP-proxy connection and a chunked upload with its body half sent.
    let mut tcp = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    assert_eq!(read_exact(&mut tcp, 3).await, b"hi\n");
    let mut upload = TcpStream::connect(("127.0.0.1", http_port)).await.unwrap();
    upload
        .write_all(
            b"POST /upload HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\n\
              connection: close\r\n\r\n5\r\nfirst\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // v2: both listeners replaced (new stat prefixes, the HTTP one on a new route table name),
    // the route now to `other`, and both clusters' configs changed.
    let mut web2 = listener("web", http_port, rds("routes2"));
    web2.1["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] = json!("web2");
    let mut backend2 = eds_cluster("backend");
    backend2.1["connect_timeout"] = json!("2s");
    let mut echo2 = static_cluster("echo", echo.port());
    echo2.1["connect_timeout"] = json!("2s");
    server.set(Snapshot::from_json(
        "2",
        &[
            web2,
            routes("routes2", &[("/", "other"), ("/up", "backend")]),
            backend2,
            cla("backend", &[a.port()]),
            static_cluster("other", b.port()),
            tcp_listener("tcp", tcp_port, "echo", "tcp2"),
            echo2,
        ],
    ));
    for ty in [LDS, CDS] {
        run.ack(&server, ty, "2").await;
    }
    run.expect(http_port, "/", 200, "b").await;

    // New TCP connections work on the replaced listener.
    let mut fresh = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    assert_eq!(read_exact(&mut fresh, 3).await, b"hi\n");

    // The old ones finish on v1.
    tcp.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_exact(&mut tcp, 11).await, b"still here\n");
    upload.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    let response = read_response(&mut upload).await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "the upload finished: {response}"
    );
    assert!(
        response.to_ascii_lowercase().contains("x-upstream: a"),
        "on v1's route (a), not v2's (b): {response}"
    );
    assert_eq!(
        a.state.bodies.lock().unwrap().last().map(|b| b.to_vec()),
        Some(b"firstsecond".to_vec()),
        "the whole body reached a"
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_in_flight_survives_listener_replacement_and_cluster_update() {
    in_flight("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_in_flight_survives_listener_replacement_and_cluster_update() {
    in_flight("DELTA_GRPC").await;
}

/// EOF (the proxy closed the connection) or the banner, within 3 s.
async fn banner_or_eof(port: u16) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = [0u8; 16];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.ends_with(b"\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    out
}

/// One proxy (`kind`): the tcp_proxy's cluster removed (ACKed, new connections closed) and
/// added back (connections proxied again).
async fn tcp_proxy_cluster_removal(kind: Kind) {
    let (echo, _echo_task) = banner_server(b"hi\n").await;
    let (tcp_port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    let with_echo = |v: &str| {
        Snapshot::from_json(
            v,
            &[
                tcp_listener("tcp", tcp_port, "echo", "tcp"),
                static_cluster("echo", echo.port()),
            ],
        )
    };
    server.set(with_echo("1"));
    let yaml = bootstrap(admin, server.addr, "GRPC");
    let proxy = tokio::task::spawn_blocking(move || start_proxy(kind, &yaml, admin))
        .await
        .unwrap();
    assert_eq!(server.wait_for(CDS, "1").await.error, None, "{kind:?}");
    assert_eq!(banner_or_eof(tcp_port).await, b"hi\n", "{kind:?}");
    server.set(Snapshot::from_json(
        "2",
        &[tcp_listener("tcp", tcp_port, "echo", "tcp")],
    ));
    assert_eq!(
        server.wait_for(CDS, "2").await.error,
        None,
        "{kind:?}: the removal is accepted"
    );
    assert_eq!(
        banner_or_eof(tcp_port).await,
        b"",
        "{kind:?}: a connection to the removed cluster is closed"
    );
    let stats = admin_get(admin, "/stats")
        .await
        .map(|r| r.1)
        .unwrap_or_default();
    assert!(
        stats
            .lines()
            .any(|l| l == "tcp.tcp.downstream_cx_no_route: 1"),
        "{kind:?}: {}",
        stats
            .lines()
            .filter(|l| l.starts_with("tcp."))
            .collect::<Vec<_>>()
            .join("\n")
    );
    server.set(with_echo("3"));
    assert_eq!(server.wait_for(CDS, "3").await.error, None, "{kind:?}");
    assert_eq!(banner_or_eof(tcp_port).await, b"hi\n", "{kind:?}: back");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_tcp_proxy_cluster_is_accepted_as_envoy_does() {
    tcp_proxy_cluster_removal(Kind::Envoy).await;
    tcp_proxy_cluster_removal(Kind::Sluice).await;
}
