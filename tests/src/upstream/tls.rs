//! Test PKI with rcgen: a CA, a `localhost` / 127.0.0.1 server certificate and a client
//! certificate, and rustls server configs (plain, h2 ALPN, client-certificate required).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};

/// A CA, certificates it signed, and server configs using them.
pub struct TestPki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// Client certificate, PEM (for mTLS origination).
    pub client_cert_pem: String,
    /// Client private key, PEM.
    pub client_key_pem: String,
    /// A client certificate whose only SAN is the URI
    /// `spiffe://cluster.local/ns/default/sa/sleep` (an Istio workload identity), PEM.
    pub spiffe_cert_pem: String,
    /// Its private key, PEM.
    pub spiffe_key_pem: String,
    /// The server certificate (`localhost`, 127.0.0.1, `*.sni.test`), PEM: for a proxy that
    /// terminates TLS.
    pub server_cert_pem: String,
    /// Its private key, PEM.
    pub server_key_pem: String,
    /// Server config presenting the server certificate (ALPN http/1.1).
    pub server: Arc<ServerConfig>,
    /// Same, offering ALPN h2 first.
    pub server_h2: Arc<ServerConfig>,
    /// Same, requiring a client certificate signed by the CA.
    pub server_mtls: Arc<ServerConfig>,
    /// Same as `server_mtls`, offering ALPN h2 (a gRPC server).
    pub server_mtls_h2: Arc<ServerConfig>,
    /// Same as `server`, asking for a client certificate signed by the CA without requiring
    /// one (so a test sees whether the proxy presented one).
    pub server_optional_mtls: Arc<ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TestPki {
    /// Writes the PEM files into `dir`: `ca.pem`, the server's `server.pem` / `server.key`,
    /// the client certificates `client.pem` / `client.key` (`client.test`) and `spiffe.pem` /
    /// `spiffe.key` (`spiffe://cluster.local/ns/default/sa/sleep`).
    pub fn write_files(&self, dir: &std::path::Path) {
        for (name, pem) in [
            ("ca.pem", &self.ca_pem),
            ("server.pem", &self.server_cert_pem),
            ("server.key", &self.server_key_pem),
            ("spiffe.pem", &self.spiffe_cert_pem),
            ("spiffe.key", &self.spiffe_key_pem),
            ("client.pem", &self.client_cert_pem),
            ("client.key", &self.client_key_pem),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, pem)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
    }
}

/// curl's options presenting the client certificate `name` (`spiffe` or `client`) that
/// [`TestPki::write_files`] wrote into `dir`.
pub fn curl_cert(dir: &std::path::Path, name: &str) -> [String; 4] {
    let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    ["--cert".into(), file("pem"), "--key".into(), file("key")]
}

/// Generates a fresh CA, server and client certificates.
pub fn test_pki() -> TestPki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("server key");
    // `*.sni.test`: names a client can send as SNI and still verify (conformance server_names).
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "*.sni.test".to_string(),
    ])
    .expect("server params");
    // A workload identity too: `By=` of an x-forwarded-client-cert a terminating proxy sets.
    params.subject_alt_names.push(rcgen::SanType::URI(
        rcgen::Ia5String::try_from("spiffe://cluster.local/ns/default/sa/server").expect("uri"),
    ));
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let mut client_params =
        CertificateParams::new(vec!["client.test".to_string()]).expect("client params");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params
        .signed_by(&client_key, &ca, &ca_key)
        .expect("client cert");

    let spiffe_key = KeyPair::generate().expect("spiffe key");
    let mut spiffe_params = CertificateParams::new(Vec::<String>::new()).expect("spiffe params");
    spiffe_params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::Ia5String::try_from("spiffe://cluster.local/ns/default/sa/sleep")
            .expect("spiffe uri"),
    )];
    spiffe_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let spiffe = spiffe_params
        .signed_by(&spiffe_key, &ca, &ca_key)
        .expect("spiffe cert");

    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let server_key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let base = || {
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("tls versions")
    };
    let mut server = base()
        .with_no_client_auth()
        .with_single_cert(chain.clone(), server_key())
        .expect("server tls config");
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut server_h2 = base()
        .with_no_client_auth()
        .with_single_cert(chain.clone(), server_key())
        .expect("server h2 tls config");
    server_h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.der().to_vec()))
        .expect("ca root");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider())
        .build()
        .expect("client verifier");
    let optional = WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider())
        .allow_unauthenticated()
        .build()
        .expect("optional client verifier");
    let mut server_optional_mtls = base()
        .with_client_cert_verifier(optional)
        .with_single_cert(chain.clone(), server_key())
        .expect("server optional mtls config");
    server_optional_mtls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_mtls = base()
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain.clone(), server_key())
        .expect("server mtls config");
    let mut server_mtls_h2 = base()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, server_key())
        .expect("server mtls h2 config");
    server_mtls_h2.alpn_protocols = vec![b"h2".to_vec()];
    TestPki {
        ca_pem: ca.pem(),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
        spiffe_cert_pem: spiffe.pem(),
        spiffe_key_pem: spiffe_key.serialize_pem(),
        server_cert_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
        server: Arc::new(server),
        server_h2: Arc::new(server_h2),
        server_mtls: Arc::new(server_mtls),
        server_mtls_h2: Arc::new(server_mtls_h2),
        server_optional_mtls: Arc::new(server_optional_mtls),
    }
}
