//! Downstream TLS termination (a filter chain's `transport_socket` with a
//! `DownstreamTlsContext`) against a real Envoy 1.40 on the same YAML, with curl as the client:
//! the certificate served (verified against the test CA), ALPN h2, `x-forwarded-proto: https`,
//! a client certificate requested and verified when a `trusted_ca` is set, required with
//! `require_client_certificate`, and RBAC on the result: `authenticated` (the peer's URI SAN, an
//! Istio SPIFFE id; `{}`: any TLS connection) and `requested_server_name` (the SNI the listener's
//! tls_inspector reports: without one it is empty, also on a terminated connection). A plaintext
//! client on the TLS port gets no HTTP answer from either. `x-forwarded-client-cert` as the route
//! sees it: APPEND_FORWARD with every detail (By, Hash, Cert and Chain URL-encoded PEM, Subject,
//! URI, DNS) after the client's, SANITIZE_SET with Istio's three, removed without a client
//! certificate. The admin's `/certs` shows the same certificates as Envoy's. A filter chain's
//! `transport_socket_connect_timeout` closes a client that never starts its handshake.

use std::path::Path;

use sluice_tests::{
    admin_run::{get, start_text},
    conformance::proxy::free_ports,
    upstream::{
        harness::{curl_opt, TempDir},
        tls::{curl_cert, test_pki},
    },
};

/// Two TLS listeners (`optional` asks for a client certificate, `required` demands one), each
/// with an RBAC filter and a direct 200 that echoes `x-forwarded-proto` in `x-proto`.
fn config(dir: &Path, optional: u16, required: u16) -> String {
    let file = |n: &str| dir.join(n).display().to_string();
    let listener = |name: &str, port: u16, require: bool| {
        // x-forwarded-client-cert: appended with every detail here, set with Istio's three there.
        let xfcc = match require {
            false => "forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: {subject: true, cert: true, chain: true, uri: true, dns: true}",
            true => "forward_client_cert_details: SANITIZE_SET\n          set_current_client_cert_details: {subject: true, uri: true, dns: true}",
        };
        // The tls_inspector is what gives RBAC the SNI (`requested_server_name`), in Envoy.
        let inspector = match require {
            false => "    listener_filters: [{name: envoy.filters.listener.tls_inspector, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]\n",
            true => "",
        };
        // Istio bounds every handshake of its filter chains (15 s); here 0.5 s.
        let connect_timeout = match require {
            false => "",
            true => "transport_socket_connect_timeout: 0.5s\n      ",
        };
        format!(
            r#"  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
{inspector}    filter_chains:
    - {connect_timeout}transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: {require}
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{{certificate_chain: {{filename: {cert}}}, private_key: {{filename: {key}}}}}]
            validation_context: {{trusted_ca: {{filename: {ca}}}}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          {xfcc}
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                policies:
                  sleep:
                    permissions: [{{url_path: {{path: {{prefix: /sleep}}}}}}]
                    principals: [{{authenticated: {{principal_name: {{exact: "spiffe://cluster.local/ns/default/sa/sleep"}}}}}}]
                  any-tls:
                    permissions: [{{url_path: {{path: {{prefix: /tls}}}}}}]
                    principals: [{{authenticated: {{}}}}]
                  by-sni:
                    permissions: [{{and_rules: {{rules: [{{url_path: {{path: {{prefix: /sni}}}}}}, {{requested_server_name: {{exact: api.sni.test}}}}]}}}}]
                    principals: [{{any: true}}]
          - {{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                direct_response: {{status: 200, body: {{inline_string: ok}}}}
                response_headers_to_add:
                - {{header: {{key: x-proto, value: "%REQ(x-forwarded-proto)%"}}}}
                - {{header: {{key: x-xfcc, value: "%REQ(x-forwarded-client-cert)%"}}}}
"#,
            cert = file("server.pem"),
            key = file("server.key"),
            ca = file("ca.pem"),
        )
    };
    format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: ADMIN_PORT}}}}}}\nstatic_resources:\n  listeners:\n{}{}",
        listener("optional", optional, false),
        listener("required", required, true)
    )
}

/// What curl got: `HTTP/<version> <status> x-proto=<value> <body>` and, when the request
/// reached the route, `xfcc=<x-forwarded-client-cert as the route saw it>`; or `no response`.
fn fetch(dir: &Path, url: &str, extra: &[&str]) -> String {
    let ca = dir.join("ca.pem").display().to_string();
    let mut args = vec!["-s", "-m", "5", "--cacert", ca.as_str()];
    args.extend_from_slice(extra);
    args.push(url);
    let out = std::process::Command::new("curl")
        .arg("-i")
        .args(&args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = text.split_whitespace().next().unwrap_or("").to_string();
    match curl_opt(&args) {
        None => "no response".to_string(),
        Some((status, headers, body)) => {
            let proto = headers
                .iter()
                .find(|(k, _)| k == "x-proto")
                .map_or("-", |(_, v)| v.as_str())
                .to_string();
            let xfcc = headers
                .iter()
                .find(|(k, _)| k == "x-xfcc")
                .map_or(String::new(), |(_, v)| format!(" xfcc={v}"));
            format!("{version} {status} x-proto={proto} {body}{xfcc}")
        }
    }
}

/// What happens to a client that connects to `port` and sends nothing: closed within the chain's
/// 0.5 s `transport_socket_connect_timeout` (Envoy closes at the timeout; its default has none,
/// sluice's 10 s), or not.
fn silent_client(port: u16) -> String {
    use std::io::Read;
    let t = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("read timeout");
    let closed = match s.read(&mut [0u8; 1]) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    let waited = t.elapsed();
    match (closed, waited.as_millis()) {
        (true, 400..=2500) => "closed at the handshake timeout".into(),
        (true, ms) => format!("closed after {ms} ms"),
        (false, ms) => format!("still open after {ms} ms"),
    }
}

#[test]
fn tls_termination_and_peer_identity_match_envoy() {
    let pki = test_pki();
    let dir = TempDir::new("downstream-tls");
    pki.write_files(&dir.0);
    let (spiffe_args, client_args) = (curl_cert(&dir.0, "spiffe"), curl_cert(&dir.0, "client"));
    let spiffe = spiffe_args.each_ref().map(String::as_str);
    let client = client_args.each_ref().map(String::as_str);
    let mut results = Vec::new();
    let mut cert_views = Vec::new();
    for envoy in [true, false] {
        let [optional, required] = free_ports::<2>();
        let proxy = start_text("downstream-tls", &config(&dir.0, optional, required), envoy);
        let url = |port: u16, path: &str| -> String { format!("https://localhost:{port}{path}") };
        let resolve = format!("api.sni.test:{optional}:127.0.0.1");
        let resolve_required = format!("api.sni.test:{required}:127.0.0.1");
        let mut got = Vec::new();
        for (what, url, extra) in [
            (
                "spiffe peer on /sleep",
                url(optional, "/sleep"),
                &spiffe[..],
            ),
            ("other peer on /sleep", url(optional, "/sleep"), &client[..]),
            ("no certificate on /sleep", url(optional, "/sleep"), &[][..]),
            ("no certificate on /tls", url(optional, "/tls"), &[][..]),
            ("h2 over ALPN", url(optional, "/tls"), &["--http2"][..]),
            (
                "xfcc appended",
                url(optional, "/sleep"),
                &[
                    &spiffe[..],
                    &[
                        "-H",
                        "x-forwarded-client-cert: By=spiffe://prev;URI=spiffe://orig",
                    ][..],
                ]
                .concat()[..],
            ),
            ("xfcc dns peer", url(optional, "/tls"), &client[..]),
            (
                "xfcc set",
                url(required, "/sleep"),
                &[
                    &spiffe[..],
                    &["-H", "x-forwarded-client-cert: By=spiffe://forged"][..],
                ]
                .concat()[..],
            ),
            (
                "xfcc from a peer without a certificate",
                url(optional, "/tls"),
                &["-H", "x-forwarded-client-cert: By=spiffe://forged"][..],
            ),
            ("http/1.1 only", url(optional, "/tls"), &["--http1.1"][..]),
            (
                "SNI api.sni.test",
                format!("https://api.sni.test:{optional}/sni"),
                &["--resolve", resolve.as_str()][..],
            ),
            ("SNI localhost on /sni", url(optional, "/sni"), &[][..]),
            (
                "SNI without the tls_inspector",
                format!("https://api.sni.test:{required}/sni"),
                &[
                    "--resolve",
                    resolve_required.as_str(),
                    "--cert",
                    spiffe[1],
                    "--key",
                    spiffe[3],
                ][..],
            ),
            (
                "required, with a certificate",
                url(required, "/sleep"),
                &spiffe[..],
            ),
            ("required, without one", url(required, "/tls"), &[][..]),
            (
                "plaintext on the TLS port",
                format!("http://127.0.0.1:{optional}/tls"),
                &[][..],
            ),
        ] {
            got.push((what, fetch(&dir.0, &url, extra)));
        }
        got.push((
            "a client that never starts the handshake",
            silent_client(required),
        ));
        let (status, certs) = get(&proxy.admin, "GET", "/certs");
        assert_eq!(status, 200, "{certs}");
        drop(proxy);
        results.push(got);
        cert_views.push(serde_json::from_str::<serde_json::Value>(&certs).expect("/certs JSON"));
    }
    // The admin's /certs: the same contexts, files, serials, SANs and validity as Envoy's.
    assert_eq!(
        cert_views[1], cert_views[0],
        "/certs: sluice (left) and Envoy (right)"
    );
    let sans = cert_views[0]["certificates"][0]["cert_chain"][0]["subject_alt_names"].to_string();
    assert!(
        sans.contains(r#"{"uri":"spiffe://cluster.local/ns/default/sa/server"}"#),
        "{sans}"
    );
    let (envoy, sluice) = (&results[0], &results[1]);
    for ((what, e), (_, s)) in envoy.iter().zip(sluice) {
        assert_eq!(s, e, "{what}: sluice (left) and Envoy (right) differ");
    }
    let want = |what: &str| &envoy.iter().find(|(w, _)| *w == what).expect(what).1;
    assert!(want("spiffe peer on /sleep").starts_with(
        "HTTP/2 200 x-proto=https ok xfcc=By=spiffe://cluster.local/ns/default/sa/server;Hash="
    ));
    assert!(want("xfcc appended").starts_with("HTTP/2 200 x-proto=https ok xfcc=By=spiffe://prev;URI=spiffe://orig,By=spiffe://cluster.local/ns/default/sa/server;Hash="));
    assert!(
        want("xfcc set").ends_with(
            ";Subject=\"CN=rcgen self signed cert\";URI=spiffe://cluster.local/ns/default/sa/sleep"
        ),
        "{}",
        want("xfcc set")
    );
    assert_eq!(
        want("xfcc from a peer without a certificate"),
        "HTTP/2 200 x-proto=https ok"
    );
    assert_eq!(
        want("other peer on /sleep"),
        "HTTP/2 403 x-proto=- RBAC: access denied"
    );
    assert_eq!(
        want("no certificate on /tls"),
        "HTTP/2 200 x-proto=https ok"
    );
    assert_eq!(want("http/1.1 only"), "HTTP/1.1 200 x-proto=https ok");
    assert_eq!(
        want("a client that never starts the handshake"),
        "closed at the handshake timeout"
    );
    assert_eq!(want("SNI api.sni.test"), "HTTP/2 200 x-proto=https ok");
    assert_eq!(
        want("SNI localhost on /sni"),
        "HTTP/2 403 x-proto=- RBAC: access denied"
    );
    assert_eq!(
        want("SNI without the tls_inspector"),
        "HTTP/2 403 x-proto=- RBAC: access denied"
    );
    assert_eq!(want("required, without one"), "no response");
    assert_eq!(want("plaintext on the TLS port"), "no response");
}
