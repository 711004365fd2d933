//! `sluice proxy` on an ADS bootstrap whose gRPC service is `google_grpc` (a target URI instead
//! of a cluster) with TLS `ssl_credentials` (root_certs from a file) and Envoy's file-based call
//! credentials (`envoy.grpc_credentials.file_based_metadata`, the projected token of a legacy
//! Istio bootstrap): the same bootstrap runs under Envoy 1.40 and under sluice against one TLS
//! management server. Both converge and route, both send `authorization: Bearer <token file>`,
//! and after the token file is rotated and the server restarts, both reconnect with the new
//! token.

use std::time::{Duration, Instant};

use sluice_tests::{
    upstream::{
        harness::{free_port, TempDir},
        tls::test_pki,
        TestUpstream,
    },
    xds_run::{get, start_serving_a, Kind},
    xds_script::{bootstrap, listener, rds, routes, static_cluster},
    xds_server::{Snapshot, XdsServer},
};

/// `bootstrap` with `google_grpc` to `server` instead of `envoy_grpc`.
fn google_bootstrap(admin: u16, server: std::net::SocketAddr, ca: &str, token: &str) -> String {
    let plain = bootstrap(admin, server, "GRPC");
    let google = format!(
        r#"    - google_grpc:
        target_uri: 127.0.0.1:{port}
        stat_prefix: xds
        credentials_factory_name: envoy.grpc_credentials.file_based_metadata
        channel_credentials:
          ssl_credentials: {{ root_certs: {{ filename: {ca} }} }}
        call_credentials:
        - from_plugin:
            name: envoy.grpc_credentials.file_based_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig
              secret_data: {{ filename: {token} }}
              header_prefix: "Bearer "
"#,
        port = server.port()
    );
    let out = plain.replacen("    - envoy_grpc: { cluster_name: xds-grpc }\n", &google, 1);
    assert_ne!(out, plain, "the bootstrap template changed");
    out
}

/// Waits (10 s) for a stream whose `authorization` is `want`.
async fn stream_with(server: &XdsServer, want: &str, kind: Kind) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = server.stream_records();
        if records
            .iter()
            .any(|r| r.authorization.as_deref() == Some(want))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: no stream with authorization {want:?}: {:?}",
            records
                .iter()
                .map(|r| (&r.authorization, &r.metadata))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn converge_with_a_rotating_token(kind: Kind) {
    let pki = test_pki();
    let dir = TempDir::new("xds-google");
    let (ca, token) = (dir.path("ca.pem"), dir.path("token"));
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&token, "tok-1").unwrap();
    let up = TestUpstream::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let mut server = XdsServer::start_tls(pki.server_h2.clone()).await;
    server.set(Snapshot::from_json(
        "1",
        &[
            listener("web", port, rds("r")),
            routes("r", &[("/", "backend")]),
            static_cluster("backend", up.port()),
        ],
    ));
    let yaml = google_bootstrap(
        admin,
        server.addr,
        ca.to_str().unwrap(),
        token.to_str().unwrap(),
    );
    let proxy = start_serving_a(kind, yaml, admin, &server, port).await;
    stream_with(&server, "Bearer tok-1", kind).await;

    // The token rotates; the next stream carries the new one.
    std::fs::write(&token, "tok-2").unwrap();
    server.stop().await;
    server.restart().await;
    stream_with(&server, "Bearer tok-2", kind).await;
    assert_eq!(
        get(port, "/").await,
        Some((200, "a".to_string())),
        "{kind:?}: still serving"
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_grpc_with_file_based_call_credentials_works_as_under_envoy() {
    converge_with_a_rotating_token(Kind::Envoy).await;
    converge_with_a_rotating_token(Kind::Sluice).await;
}
