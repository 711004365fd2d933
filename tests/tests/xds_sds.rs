//! Secrets over ADS (`sds_config: {ads: {}}`), Istio's upstream mTLS shape: a cluster's
//! `UpstreamTlsContext` names its client certificate (`default`) and its CA (`ROOTCA`, in a
//! `combined_validation_context` with a SAN matcher) as secrets the management server sends as
//! `Secret` resources with `inline_bytes`, as istiod does. The same server script runs under
//! Envoy 1.40 and under sluice, and both answer the same: the request reaches the mTLS upstream
//! once the secrets are there; a CA rotated to one that did not sign the upstream fails the
//! handshake (503); rotating back with another client certificate serves again; a certificate
//! that is not PEM is NACKed and the running one stays. Every request opens its own upstream connection
//! (`max_requests_per_connection: 1`), so each sees the secrets of its moment.

use serde_json::{json, Value};
use sluice_tests::{
    admin_run::secrets_config_dump,
    sluice_cli::sluice_bin,
    upstream::{harness::free_port, tls::test_pki, TestUpstream},
    xds_run::{admin_get, start_serving_a, Kind, Run},
    xds_script::{bootstrap, listener, rds, routes},
    xds_server::{Snapshot, XdsServer, CDS, SDS},
};

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The cluster `a` to the mTLS upstream on `port`, its secrets from ADS.
fn mtls_cluster(port: u16) -> (&'static str, Value) {
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    (
        CDS,
        json!({"name": "a", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {"max_requests_per_connection": 1},
                    "explicit_http_config": {"http_protocol_options": {}}}},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "localhost",
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": ads}],
                    "combined_validation_context": {
                        "default_validation_context": {"match_subject_alt_names": [
                            {"exact": "spiffe://cluster.local/ns/default/sa/server"}]},
                        "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": ads}}}}},
            "load_assignment": {"cluster_name": "a", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}),
    )
}

/// The two secrets: `default` (certificate `cert`, key `key`) and `ROOTCA` (`ca`); with
/// `bad`, `default` carries a key password, which neither proxy implements.
fn secrets(cert: &str, key: &str, ca: &str, bad: bool) -> [(&'static str, Value); 2] {
    let mut default = json!({"name": "default", "tls_certificate": {
        "certificate_chain": {"inline_bytes": b64(cert)},
        "private_key": {"inline_bytes": b64(key)}}});
    if bad {
        default["tls_certificate"]["certificate_chain"] = json!({"inline_bytes": b64("not PEM")});
    }
    [
        (SDS, default),
        (
            SDS,
            json!({"name": "ROOTCA", "validation_context": {
                "trusted_ca": {"inline_bytes": b64(ca)}}}),
        ),
    ]
}

fn snapshot(
    version: &str,
    port: u16,
    upstream: u16,
    secrets: [(&'static str, Value); 2],
) -> Snapshot {
    let mut items = vec![
        listener("web", port, rds("r")),
        routes("r", &[("/", "a")]),
        mtls_cluster(upstream),
    ];
    items.extend(secrets);
    Snapshot::from_json(version, &items)
}

/// The SecretsConfigDump of `/config_dump` (times left out; the certificates differ per run,
/// so only whether they are there is kept; the key must be redacted): what istioctl's
/// `proxy-config secret` reads.
async fn secrets_dump(admin: u16) -> String {
    let (status, body) = admin_get(admin, "/config_dump")
        .await
        .expect("/config_dump");
    assert_eq!(status, 200, "{body}");
    let mut s = secrets_config_dump(&body);
    // Envoy lists them in the order its secret providers were made, sluice by name.
    if let Some(list) = s["dynamic_active_secrets"].as_array_mut() {
        list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
    for d in s["dynamic_active_secrets"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        d.as_object_mut().expect("entry").remove("last_updated");
        for pem in [
            "/secret/tls_certificate/certificate_chain/inline_bytes",
            "/secret/validation_context/trusted_ca/inline_bytes",
        ] {
            if let Some(v) = d.pointer_mut(pem) {
                *v = json!(v.as_str().is_some_and(|c| c.len() > 100));
            }
        }
    }
    s.to_string()
}

/// `sluice proxy-config secret` against the admin (istioctl's table), each row's serial number
/// and dates replaced by their shape: the certificates differ per run.
async fn secret_view(admin: u16) -> String {
    let target = format!("127.0.0.1:{admin}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(sluice_bin())
            .args(["proxy-config", "secret", &target])
            .output()
            .expect("run sluice proxy-config")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Envoy lists secrets in the order its providers were made, sluice by name.
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].sort_unstable();
    lines
        .into_iter()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let mut masked: Vec<String> = Vec::new();
            for c in cols {
                masked.push(match c {
                    c if c.len() == 20 && c.ends_with('Z') && c.contains('T') => "<time>".into(),
                    c if c.len() > 4 && c.bytes().all(|b| b.is_ascii_digit()) => "<serial>".into(),
                    c => c.into(),
                });
            }
            masked.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn scenario(kind: Kind) -> Vec<String> {
    let pki = test_pki();
    let stranger = test_pki();
    let up = TestUpstream::start_tls("a", pki.server_mtls.clone()).await;
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    let spiffe = |bad| secrets(&pki.spiffe_cert_pem, &pki.spiffe_key_pem, &pki.ca_pem, bad);
    server.set(snapshot("1", port, up.port(), spiffe(false)));
    let proxy = start_serving_a(
        kind,
        bootstrap(admin, server.addr, "GRPC"),
        admin,
        &server,
        port,
    )
    .await;
    let mut run = Run {
        strict: kind == Kind::Sluice,
        ..Run::strict()
    };
    run.ports.push((port, "web"));
    run.ack(&server, SDS, "1").await;
    run.trace.push(secrets_dump(admin).await);
    run.trace.push(secret_view(admin).await);

    let rotated = secrets(
        &pki.spiffe_cert_pem,
        &pki.spiffe_key_pem,
        &stranger.ca_pem,
        false,
    );
    server.set(snapshot("2", port, up.port(), rotated));
    run.ack(&server, SDS, "2").await;
    run.expect(port, "/", 503, "").await;

    let back = secrets(
        &pki.client_cert_pem,
        &pki.client_key_pem,
        &pki.ca_pem,
        false,
    );
    server.set(snapshot("3", port, up.port(), back));
    run.ack(&server, SDS, "3").await;
    run.expect(port, "/", 200, "a").await;

    // Last: Envoy keeps a refused secret and refuses every later update that rebuilds a
    // context with it, which sluice does not copy.
    server.set(snapshot("4", port, up.port(), spiffe(true)));
    let what = ["Secret \"default\": tls_certificate.certificate_chain"];
    run.nack(&server, SDS, "4", &what).await;
    run.expect(port, "/", 200, "a").await;
    drop(proxy);
    run.trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_over_ads_give_envoys_answers() {
    let envoy = scenario(Kind::Envoy).await;
    let sluice = scenario(Kind::Sluice).await;
    assert_eq!(sluice, envoy, "sluice (left) and Envoy (right)");
    assert!(
        envoy[1].contains(r#""private_key":{"inline_bytes":"W3JlZGFjdGVkXQ=="}"#),
        "the key is redacted: {}",
        envoy[1]
    );
    assert_eq!(
        envoy[2],
        "RESOURCE NAME TYPE STATUS VALID CERT SERIAL NUMBER NOT AFTER NOT BEFORE\n\
         ROOTCA CA ACTIVE true <serial> <time> <time>\n\
         default Cert Chain ACTIVE true <serial> <time> <time>",
        "istioctl's secret table over Envoy's dump"
    );
}
