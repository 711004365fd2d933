//! Istio's inbound mTLS chain shape against a real Envoy 1.40 on the same YAML, with curl as the
//! client: the server certificate and the CA come from static secrets named without
//! `sds_config` (`tls_certificate_sds_secret_configs`, `combined_validation_context` whose
//! `default_validation_context` holds the SAN matchers), `require_client_certificate`, and
//! Istio's `tls_params` (TLS 1.2 to 1.3, its cipher list). A client certificate whose SANs match
//! no matcher fails the handshake like a missing one; a cipher outside the list, or a version
//! below `tls_minimum_protocol_version`, or only curves outside `ecdh_curves`, fails it too. The admin's `/certs` shows the secrets'
//! certificates as Envoy's does.

use std::path::Path;

use sluice_tests::{
    admin_run::{get, secrets_config_dump, start_text},
    conformance::proxy::free_ports,
    upstream::{
        harness::{curl_opt, TempDir},
        tls::{curl_cert, test_pki},
    },
};

/// Two listeners: `mesh` (Istio's shape: any SPIFFE id of the mesh) and `strict` (one URI SAN by
/// `match_typed_subject_alt_names`, TLS 1.3 only, key exchange on P-256 only).
fn config(dir: &Path, mesh: u16, strict: u16) -> String {
    let file = |n: &str| dir.join(n).display().to_string();
    let listener = |name: &str, port: u16, validation: &str, params: &str| {
        format!(
            r#"  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_params: {params}
            tls_certificate_sds_secret_configs: [{{name: default}}]
            combined_validation_context:
              default_validation_context: {validation}
              validation_context_sds_secret_config: {{name: ROOTCA}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          http_filters:
          - {{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                direct_response: {{status: 200, body: {{inline_string: ok}}}}
"#
        )
    };
    let istio_params = "{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3, cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]}";
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}
static_resources:
  secrets:
  - name: default
    tls_certificate: {{certificate_chain: {{filename: {cert}}}, private_key: {{filename: {key}}}}}
  - name: ROOTCA
    validation_context: {{trusted_ca: {{filename: {ca}}}}}
  listeners:
{}{}"#,
        listener(
            "mesh",
            mesh,
            "{match_subject_alt_names: [{prefix: \"spiffe://cluster.local/\"}]}",
            istio_params
        ),
        listener(
            "strict",
            strict,
            "{match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: \"spiffe://cluster.local/ns/default/sa/sleep\"}}]}",
            "{tls_minimum_protocol_version: TLSv1_3, ecdh_curves: [P-256]}"
        ),
        cert = file("server.pem"),
        key = file("server.key"),
        ca = file("ca.pem"),
    )
}

/// The spiffe client certificate's curl options, then `extra`.
fn with<'a>(spiffe: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [spiffe, extra].concat()
}

/// `<status> <body>`, or `no response`.
fn fetch(dir: &Path, url: &str, extra: &[&str]) -> String {
    let ca = dir.join("ca.pem").display().to_string();
    let mut args = vec!["-s", "-m", "5", "--cacert", ca.as_str()];
    args.extend_from_slice(extra);
    args.push(url);
    match curl_opt(&args) {
        None => "no response".to_string(),
        Some((status, _, body)) => format!("{status} {body}"),
    }
}

#[test]
fn istio_inbound_mtls_from_static_secrets_matches_envoy() {
    let pki = test_pki();
    let dir = TempDir::new("downstream-tls-secrets");
    pki.write_files(&dir.0);
    let (spiffe_args, client_args) = (curl_cert(&dir.0, "spiffe"), curl_cert(&dir.0, "client"));
    let spiffe = spiffe_args.each_ref().map(String::as_str);
    let client = client_args.each_ref().map(String::as_str);
    let mut results = Vec::new();
    let mut cert_views = Vec::new();
    let mut secret_dumps = Vec::new();
    for envoy in [true, false] {
        let [mesh, strict] = free_ports::<2>();
        let proxy = start_text(
            "downstream-tls-secrets",
            &config(&dir.0, mesh, strict),
            envoy,
        );
        let url = |port: u16| format!("https://localhost:{port}/");
        let mut got = Vec::new();
        for (what, url, extra) in [
            ("mesh: spiffe peer", url(mesh), with(&spiffe, &[])),
            ("mesh: peer outside the mesh", url(mesh), client.to_vec()),
            ("mesh: no certificate", url(mesh), Vec::new()),
            (
                "mesh: TLS 1.2",
                url(mesh),
                with(&spiffe, &["--tls-max", "1.2"]),
            ),
            ("mesh: TLS 1.3", url(mesh), with(&spiffe, &["--tlsv1.3"])),
            (
                "mesh: TLS 1.2 with a cipher outside the list",
                url(mesh),
                with(
                    &spiffe,
                    &[
                        "--tls-max",
                        "1.2",
                        "--ciphers",
                        "ECDHE-ECDSA-CHACHA20-POLY1305",
                    ],
                ),
            ),
            (
                "mesh: TLS 1.2 with a listed cipher",
                url(mesh),
                with(
                    &spiffe,
                    &[
                        "--tls-max",
                        "1.2",
                        "--ciphers",
                        "ECDHE-ECDSA-AES128-GCM-SHA256",
                    ],
                ),
            ),
            ("strict: the one URI SAN", url(strict), with(&spiffe, &[])),
            ("strict: another peer", url(strict), client.to_vec()),
            (
                "strict: TLS 1.2",
                url(strict),
                with(&spiffe, &["--tls-max", "1.2"]),
            ),
            (
                "strict: only X25519 offered",
                url(strict),
                with(&spiffe, &["--curves", "X25519"]),
            ),
            (
                "strict: P-256 offered",
                url(strict),
                with(&spiffe, &["--curves", "P-256"]),
            ),
        ] {
            got.push((what, fetch(&dir.0, &url, &extra)));
        }
        let (status, certs) = get(&proxy.admin, "GET", "/certs");
        assert_eq!(status, 200, "{certs}");
        let (status, dump) = get(&proxy.admin, "GET", "/config_dump");
        assert_eq!(status, 200, "{dump}");
        secret_dumps.push(secrets_config_dump(&dump));
        drop(proxy);
        results.push(got);
        cert_views.push(serde_json::from_str::<serde_json::Value>(&certs).expect("/certs JSON"));
    }
    assert_eq!(
        cert_views[1], cert_views[0],
        "/certs: sluice (left) and Envoy (right)"
    );
    // The static secrets in /config_dump, as istioctl's `proxy-config secret` reads them.
    assert_eq!(
        secret_dumps[1], secret_dumps[0],
        "SecretsConfigDump: sluice (left) and Envoy (right)"
    );
    assert_eq!(secret_dumps[0]["static_secrets"][0]["name"], "default");
    let (envoy, sluice) = (&results[0], &results[1]);
    for ((what, e), (_, s)) in envoy.iter().zip(sluice) {
        assert_eq!(s, e, "{what}: sluice (left) and Envoy (right) differ");
    }
    let want = |what: &str| {
        envoy
            .iter()
            .find(|(w, _)| *w == what)
            .expect(what)
            .1
            .clone()
    };
    for ok in [
        "mesh: spiffe peer",
        "mesh: TLS 1.2",
        "mesh: TLS 1.3",
        "mesh: TLS 1.2 with a listed cipher",
        "strict: the one URI SAN",
        "strict: P-256 offered",
    ] {
        assert_eq!(want(ok), "200 ok", "{ok}");
    }
    for refused in [
        "mesh: peer outside the mesh",
        "mesh: no certificate",
        "mesh: TLS 1.2 with a cipher outside the list",
        "strict: another peer",
        "strict: TLS 1.2",
        "strict: only X25519 offered",
    ] {
        assert_eq!(want(refused), "no response", "{refused}");
    }
}
