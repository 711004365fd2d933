//! Secrets over ADS (`sds_config: {ads: {}}`) and from Istio's `sds-grpc` cluster (a GRPC
//! `api_config_source`: its own SecretDiscoveryService stream on a unix socket), in Istio's
//! upstream mTLS shape: a cluster's `UpstreamTlsContext` names its client certificate
//! (`default`) and its CA (`ROOTCA`, in a `combined_validation_context` with a SAN matcher) as
//! secrets the management server sends with `inline_bytes`, as istiod and pilot-agent do. The
//! same server script runs under Envoy 1.40 and under sluice, and both answer the same: the
//! request reaches the mTLS upstream once the secrets are there; the SecretsConfigDump and
//! istioctl's secret table agree; a CA rotated to one that did not sign the upstream fails the
//! handshake (503); rotating back with another client certificate serves again. Then (sluice
//! alone, see there) a certificate that is not PEM is NACKed naming it and the running one
//! stays. Every request opens its own upstream connection (`max_requests_per_connection: 1`),
//! so each sees the secrets of its moment.

use serde_json::{json, Value};
use sluice_tests::{
    admin_run::secrets_config_dump,
    sluice_cli::sluice_bin,
    upstream::{harness::free_port, tls::test_pki, TestUpstream},
    xds_run::{admin_get, start_proxy, start_serving_a, Kind, Run},
    xds_script::{bootstrap, grpc_cluster, listener, rds, routes},
    xds_server::{Snapshot, XdsServer, CDS, SDS},
};

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Where the secrets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `sds_config: {ads: {}}`: the ADS stream.
    Ads,
    /// Istio's sidecar form: `api_config_source` to the static cluster `sds-grpc`, a unix
    /// socket served by another server (pilot-agent's role).
    SdsGrpc,
}

impl Source {
    fn sds_config(self) -> Value {
        match self {
            Source::Ads => json!({"ads": {}, "resource_api_version": "V3"}),
            Source::SdsGrpc => json!({
                "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
                "initial_fetch_timeout": "0s", "resource_api_version": "V3"}),
        }
    }
}

/// The cluster `a` to the mTLS upstream on `port`, its secrets from `source`.
fn mtls_cluster(port: u16, source: Source) -> (&'static str, Value) {
    let ads = source.sds_config();
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

/// The `default` and `ROOTCA` secrets of one version.
type Secrets = [(&'static str, Value); 2];

/// The two secrets: `default` (certificate `cert`, key `key`) and `ROOTCA` (`ca`); with
/// `bad`, `default` carries a key password, which neither proxy implements.
fn secrets(cert: &str, key: &str, ca: &str, bad: bool) -> Secrets {
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

/// The configuration, with the secrets over ADS.
fn snapshot(version: &str, port: u16, upstream: u16, secrets: Secrets) -> Snapshot {
    let mut items = config(port, upstream, Source::Ads);
    items.extend(secrets);
    Snapshot::from_json(version, &items)
}

fn config(port: u16, upstream: u16, source: Source) -> Vec<(&'static str, Value)> {
    vec![
        listener("web", port, rds("r")),
        routes("r", &[("/", "a")]),
        mtls_cluster(upstream, source),
    ]
}

/// The ADS bootstrap, with Istio's `sds-grpc` cluster on the unix socket `sds`.
fn bootstrap_with_sds(admin: u16, ads: std::net::SocketAddr, sds: &std::path::Path) -> String {
    let pipe = format!("pipe: {{ path: {} }}", sds.display());
    bootstrap(admin, ads, "GRPC") + &grpc_cluster("sds-grpc", &pipe)
}

/// Istio's sidecar shape: the listener and cluster over ADS, the secrets on their own stream
/// to `sds-grpc` (a unix socket), which `/ready` waits for (`initial_fetch_timeout: 0s`); then
/// the same rotation, refusal and views as over ADS.
async fn sds_grpc_scenario(kind: Kind) -> Vec<String> {
    let pki = test_pki();
    let up = TestUpstream::start_tls("a", pki.server_mtls.clone()).await;
    let (port, admin) = (free_port(), free_port());
    let dir = sluice_tests::upstream::harness::TempDir::new("xds-sds-grpc");
    let sock = dir.path("sds.sock");
    let ads = XdsServer::start().await;
    let sds = XdsServer::start_unix(sock.clone()).await;
    ads.set(Snapshot::from_json(
        "1",
        &config(port, up.port(), Source::SdsGrpc),
    ));
    let first = secrets(
        &pki.spiffe_cert_pem,
        &pki.spiffe_key_pem,
        &pki.ca_pem,
        false,
    );
    sds.set(Snapshot::from_json("1", &first));
    let yaml = bootstrap_with_sds(admin, ads.addr, &sock);
    let proxy = tokio::task::spawn_blocking(move || start_proxy(kind, &yaml, admin))
        .await
        .unwrap();
    let publish = |v: &str, s: Secrets| sds.set(Snapshot::from_json(v, &s));
    let trace = steps(kind, (port, admin), &pki, &sds, &publish).await;
    drop(proxy);
    trace
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
    let up = TestUpstream::start_tls("a", pki.server_mtls.clone()).await;
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    let first = secrets(
        &pki.spiffe_cert_pem,
        &pki.spiffe_key_pem,
        &pki.ca_pem,
        false,
    );
    server.set(snapshot("1", port, up.port(), first));
    let yaml = bootstrap(admin, server.addr, "GRPC");
    let proxy = start_serving_a(kind, yaml, admin, &server, port).await;
    let publish = |v: &str, s| server.set(snapshot(v, port, up.port(), s));
    let trace = steps(kind, (port, admin), &pki, &server, &publish).await;
    drop(proxy);
    trace
}

/// From version 1 (served): the views, a CA rotation (503), another client certificate (200),
/// then, for sluice alone, a certificate that is not PEM (NACK, the running one stays). The
/// secrets of each version go out with `publish`; their ACKs come to `acks`.
async fn steps(
    kind: Kind,
    (port, admin): (u16, u16),
    pki: &sluice_tests::upstream::tls::TestPki,
    acks: &XdsServer,
    publish: &dyn Fn(&str, Secrets),
) -> Vec<String> {
    let stranger = test_pki();
    let mut run = Run {
        strict: kind == Kind::Sluice,
        ..Run::strict()
    };
    run.ports.push((port, "web"));
    run.ack(acks, SDS, "1").await;
    run.expect(port, "/", 200, "a").await;
    run.trace.push(secrets_dump(admin).await);
    run.trace.push(secret_view(admin).await);

    publish(
        "2",
        secrets(
            &pki.spiffe_cert_pem,
            &pki.spiffe_key_pem,
            &stranger.ca_pem,
            false,
        ),
    );
    run.ack(acks, SDS, "2").await;
    run.expect(port, "/", 503, "").await;

    publish(
        "3",
        secrets(
            &pki.client_cert_pem,
            &pki.client_key_pem,
            &pki.ca_pem,
            false,
        ),
    );
    run.ack(acks, SDS, "3").await;
    run.expect(port, "/", 200, "a").await;

    // Envoy's answer to a certificate that is not PEM varies (seen ACK and NACK of the same
    // update), and once it refused a secret it refuses every later update that rebuilds a
    // context with it: this step is sluice's alone.
    if kind == Kind::Sluice {
        publish(
            "4",
            secrets(&pki.spiffe_cert_pem, &pki.spiffe_key_pem, &pki.ca_pem, true),
        );
        let mut own = Run::strict();
        own.ports.push((port, "web"));
        let what = ["Secret \"default\": tls_certificate.certificate_chain"];
        own.nack(acks, SDS, "4", &what).await;
        own.expect(port, "/", 200, "a").await;
    }
    run.trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_over_ads_give_envoys_answers() {
    let envoy = scenario(Kind::Envoy).await;
    let sluice = scenario(Kind::Sluice).await;
    assert_eq!(sluice, envoy, "sluice (left) and Envoy (right)");
    assert!(
        envoy[2].contains(r#""private_key":{"inline_bytes":"W3JlZGFjdGVkXQ=="}"#),
        "the key is redacted: {}",
        envoy[2]
    );
    assert_eq!(
        envoy[3],
        "RESOURCE NAME TYPE STATUS VALID CERT SERIAL NUMBER NOT AFTER NOT BEFORE\n\
         ROOTCA CA ACTIVE true <serial> <time> <time>\n\
         default Cert Chain ACTIVE true <serial> <time> <time>",
        "istioctl's secret table over Envoy's dump"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_sds_grpc_give_envoys_answers() {
    let envoy = sds_grpc_scenario(Kind::Envoy).await;
    let sluice = sds_grpc_scenario(Kind::Sluice).await;
    assert_eq!(sluice, envoy, "sluice (left) and Envoy (right)");
    assert!(
        envoy[3].contains("default Cert Chain ACTIVE true"),
        "{}",
        envoy[3]
    );
}
