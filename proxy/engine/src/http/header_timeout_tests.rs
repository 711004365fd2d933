//! The header timeout runs from accept: a connection that never sends a byte, or only the
//! HTTP/2 preface, is closed when it expires (issue 13 item 11).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{serve, ConnInfo, Hcm};
use crate::config::CodecType;

const TIMEOUT: Duration = Duration::from_millis(200);

/// Serves the server end of a pipe; returns the client end and the time `serve` took.
async fn serve_client(codec: CodecType, send: &[u8]) -> (DuplexStream, Duration) {
    let (mut client, server) = tokio::io::duplex(4096);
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let conn = ConnInfo {
        peer: addr,
        local: addr,
        orig_dst: addr,
        tls: false,
        proxy_direct: None,
    };
    client.write_all(send).await.unwrap();
    let t = Instant::now();
    let served = serve(
        server,
        conn,
        super::ConnOptions {
            codec,
            header_timeout: TIMEOUT,
            head: super::HeadTimeout {
                after: TIMEOUT,
                body: "request header timeout",
                server: None,
            },
            drain: crate::server::drain::DrainWatch::never(),
            tls: None,
            conn_log: None,
        },
        // Asked once at accept for the head limits (none: Envoy's defaults); no request is
        // ever sent.
        || -> Option<Arc<Hcm>> { None },
        None,
    );
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the connection is closed by the header timeout");
    (client, t.elapsed())
}

#[tokio::test]
async fn silent_and_preface_only_connections_are_closed() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for (codec, send) in [
        (CodecType::Auto, &b""[..]),
        (CodecType::Http1, &b""[..]),
        (CodecType::Auto, &preface[..]),
        (CodecType::Http2, &preface[..]),
        (CodecType::Auto, &b"GET / HT"[..]),
    ] {
        let (mut client, took) = serve_client(codec, send).await;
        assert!(
            took >= TIMEOUT / 2 && took < TIMEOUT * 10,
            "{codec:?}: {took:?}"
        );
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
    }
}
