//! `sluice proxy` on an ADS bootstrap whose `xds-grpc` cluster originates TLS (its
//! `transport_socket`: the CA to verify the server, a client certificate, SNI) and whose gRPC
//! service sends `initial_metadata`: the same bootstrap file runs under Envoy 1.40 and under
//! sluice against one mutual-TLS management server, and both converge, route and send the
//! metadata. A server the CA does not vouch for is refused: nothing is configured, `/ready`
//! stays 503 and `/xds_status` says why.

use std::path::Path;

use sluice_tests::{
    upstream::{
        harness::{free_port, TempDir},
        tls::test_pki,
        TestUpstream,
    },
    xds_run::{admin_get, get, ready_status, spawn_sluice, start_serving_a, Kind},
    xds_script::{bootstrap, listener, rds, routes, static_cluster},
    xds_server::{Snapshot, XdsServer},
};

/// `bootstrap` with the ADS cluster's TLS (files in `dir`) and `initial_metadata`.
fn tls_bootstrap(admin: u16, server: std::net::SocketAddr, dir: &Path) -> String {
    let plain = bootstrap(admin, server, "GRPC");
    let tls = format!(
        r#"    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          alpn_protocols: [h2]
          validation_context: {{ trusted_ca: {{ filename: {ca} }} }}
          tls_certificates:
          - certificate_chain: {{ filename: {cert} }}
            private_key: {{ filename: {key} }}
"#,
        ca = dir.join("ca.pem").display(),
        cert = dir.join("client.pem").display(),
        key = dir.join("client-key.pem").display(),
    );
    let with_tls = plain.replacen("    connect_timeout: 1s\n", &tls, 1);
    let with_md = with_tls.replacen(
        "    - envoy_grpc: { cluster_name: xds-grpc }\n",
        "    - envoy_grpc: { cluster_name: xds-grpc }\n      initial_metadata: [{ key: x-mesh-tenant, value: blue }]\n",
        1,
    );
    assert_ne!(with_md, with_tls, "the bootstrap template changed");
    assert_ne!(with_tls, plain, "the bootstrap template changed");
    with_md
}

/// One proxy (`kind`) on the TLS bootstrap: it ACKs, routes, and its stream carried the metadata.
async fn converge_over_mtls(kind: Kind) {
    let pki = test_pki();
    let dir = TempDir::new("xds-tls");
    std::fs::write(dir.path("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.path("client.pem"), &pki.client_cert_pem).unwrap();
    std::fs::write(dir.path("client-key.pem"), &pki.client_key_pem).unwrap();
    let up = TestUpstream::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start_tls(pki.server_mtls_h2.clone()).await;
    server.set(Snapshot::from_json(
        "1",
        &[
            listener("web", port, rds("r")),
            routes("r", &[("/", "backend")]),
            static_cluster("backend", up.port()),
        ],
    ));
    let yaml = tls_bootstrap(admin, server.addr, &dir.path(""));
    let proxy = start_serving_a(kind, yaml, admin, &server, port).await;
    let records = server.stream_records();
    assert!(!records.is_empty(), "{kind:?}: no stream");
    assert!(
        records.iter().all(|r| r
            .metadata
            .contains(&("x-mesh-tenant".to_string(), "blue".to_string()))),
        "{kind:?}: {:?}",
        records.iter().map(|r| &r.metadata).collect::<Vec<_>>()
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_ads_cluster_with_initial_metadata_works_as_under_envoy() {
    converge_over_mtls(Kind::Envoy).await;
    converge_over_mtls(Kind::Sluice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_ca_does_not_vouch_for_is_refused() {
    let (pki, other) = (test_pki(), test_pki());
    let dir = TempDir::new("xds-tls-bad");
    // The CA of another PKI: the server's chain does not verify.
    std::fs::write(dir.path("ca.pem"), &other.ca_pem).unwrap();
    std::fs::write(dir.path("client.pem"), &pki.client_cert_pem).unwrap();
    std::fs::write(dir.path("client-key.pem"), &pki.client_key_pem).unwrap();
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start_tls(pki.server_mtls_h2.clone()).await;
    server.set(Snapshot::from_json(
        "1",
        &[listener("web", port, rds("r")), routes("r", &[])],
    ));
    let config = dir.path("bootstrap.yaml");
    std::fs::write(&config, tls_bootstrap(admin, server.addr, &dir.path(""))).unwrap();
    let mut child = spawn_sluice(&config, &dir.path("log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let error = loop {
        let body = admin_get(admin, "/xds_status")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(m) = v["control_plane"]["last_error"]["message"].as_str() {
            break m.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connect error in /xds_status: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let r = ready_status(admin).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        error.contains("TLS") && error.contains(&server.addr.to_string()),
        "{error}"
    );
    assert_eq!(r, Some(503), "nothing configured");
    assert!(server.stream_records().is_empty(), "no stream was opened");
    assert_eq!(get(port, "/").await, None, "no listener");
}
