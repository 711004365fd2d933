//! TLS origination with rustls (ring provider): SNI, CA validation, SAN matchers, client
//! certificates, ALPN, `tls_params`.
//!
//! Like Envoy, a cluster without a validation context does not verify the server certificate;
//! with one it verifies the chain against the CA and, with SAN matchers, wants one of the
//! certificate's SANs to match (the SNI itself is never checked against the certificate).

use std::sync::Arc;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::{
    transport_options::{KeyedTransport, TransportOptions},
    TlsSpec, UpstreamError,
};
use crate::{config::DataSource, tls_common::SanMatchers};

/// A cluster's ready-to-use TLS client side.
#[derive(Clone)]
pub struct TlsOrigin {
    connector: TlsConnector,
    /// The same offering HTTP/1's `http/1.1` when no `alpn_protocols` are configured: an
    /// HTTP/1 request of a cluster that uses the downstream's protocol.
    h1: TlsConnector,
    /// The same with only the configured `alpn_protocols` (a tcp_proxy's upstream: no HTTP
    /// protocol to offer by default).
    raw: TlsConnector,
    sni: Option<ServerName<'static>>,
    /// The server certificate check (a request's `auto_san_validation` adds its name to it).
    verifier: Arc<dyn ServerCertVerifier>,
    /// The check verifies the chain (a `trusted_ca`).
    chain_checked: bool,
    /// The secret that has not arrived (every handshake fails until a config has it).
    pending: Option<Arc<str>>,
}

impl std::fmt::Debug for TlsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOrigin").field("sni", &self.sni).finish()
    }
}

impl TlsOrigin {
    /// Reads the certificates `spec` names (files or inline PEM) and builds the client config.
    pub fn build(cluster: &str, spec: &TlsSpec, http2: bool) -> Result<Self, UpstreamError> {
        let tls_err = |reason: String| UpstreamError::Tls {
            cluster: cluster.to_string(),
            reason,
        };
        let pem = |what: &'static str, d: &DataSource| -> Result<Vec<u8>, UpstreamError> {
            d.read().map_err(|e| UpstreamError::TlsFile {
                cluster: cluster.to_string(),
                what,
                path: crate::tls_common::source_name(d),
                reason: e.to_string(),
            })
        };
        let bad = |what: &'static str, d: &DataSource, reason: String| UpstreamError::TlsFile {
            cluster: cluster.to_string(),
            what,
            path: crate::tls_common::source_name(d),
            reason,
        };
        let provider = spec.params.provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&spec.params.versions())
            .map_err(|e| tls_err(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &spec.trusted_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                let bytes = pem("trusted_ca", ca)?;
                for c in CertificateDer::pem_slice_iter(&bytes) {
                    let c = c.map_err(|e| bad("trusted_ca", ca, e.to_string()))?;
                    roots
                        .add(c)
                        .map_err(|e| bad("trusted_ca", ca, e.to_string()))?;
                }
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| tls_err(e.to_string()))?;
                Arc::new(ChainVerifier {
                    inner,
                    sans: spec.match_sans.clone(),
                })
            }
            None => Arc::new(NoVerify(provider)),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut config = match &spec.client_cert {
            Some((cert, key)) => {
                let chain_pem = pem("certificate_chain", cert)?;
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&chain_pem)
                        .collect::<Result<_, _>>()
                        .map_err(|e| bad("certificate_chain", cert, e.to_string()))?;
                let key_pem = pem("private_key", key)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| bad("private_key", key, e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_err(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        // Without alpn_protocols Envoy's HTTP pools offer their own protocol (HTTP/1's
        // `http/1.1` too, as its connection pool's ALPN fallback).
        config.alpn_protocols = if spec.alpn_protocols.is_empty() {
            if http2 {
                vec![b"h2".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            }
        } else {
            spec.alpn_protocols
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect()
        };
        config.enable_sni = spec.sni.is_some();
        let mut h1 = config.clone();
        if spec.alpn_protocols.is_empty() {
            h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let mut raw = config.clone();
        raw.alpn_protocols = spec
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let sni = match &spec.sni {
            Some(s) => Some(
                ServerName::try_from(s.clone()).map_err(|e| tls_err(format!("sni {s}: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            h1: TlsConnector::from(Arc::new(h1)),
            raw: TlsConnector::from(Arc::new(raw)),
            sni,
            verifier,
            chain_checked: spec.trusted_ca.is_some(),
            pending: spec.pending_secret.as_deref().map(Arc::from),
        })
    }

    /// Runs the TLS handshake over `tcp` (offering HTTP/1's ALPN when `h1`), with the
    /// request's transport `options` when it has some; returns the stream and whether ALPN
    /// chose h2.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        h1: bool,
        keyed: Option<&KeyedTransport>,
    ) -> std::io::Result<(TlsStream<TcpStream>, bool)> {
        let connector = if h1 { &self.h1 } else { &self.connector };
        let stream = match keyed {
            None => self.handshake(connector, None, tcp).await?,
            Some(k) => {
                let o = &k.options;
                let sni = match o.sni.as_deref() {
                    Some(s) => Some(ServerName::try_from(s.to_string()).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("sni {s}: {e}"),
                        )
                    })?),
                    None => None,
                };
                let c = k.connector(h1, connector, || self.with_options(connector, o));
                self.handshake(&c, sni, tcp).await?
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok((stream, h2))
    }

    /// `base` with a request's options, as Envoy's client context applies them: the ALPN list
    /// replaces the configured one, the SNI is sent, and the certificate must also carry a SAN
    /// matching the `auto_san_validation` name (after the chain and SAN checks configured).
    fn with_options(&self, base: &TlsConnector, o: &TransportOptions) -> TlsConnector {
        let mut config = ClientConfig::clone(base.config());
        if let Some(alpn) = &o.alpn {
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        }
        if o.sni.is_some() {
            config.enable_sni = true;
        }
        if let Some(name) = &o.san {
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(NameVerifier {
                    inner: self.verifier.clone(),
                    name: name.clone(),
                    chain_checked: self.chain_checked,
                }));
        }
        TlsConnector::from(Arc::new(config))
    }

    /// The handshake of a tcp_proxy's upstream: ALPN only as configured.
    pub async fn connect_raw(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.handshake(&self.raw, None, tcp).await
    }

    /// The handshake with `connector`, naming `sni` (else the configured SNI, else the peer's
    /// address, which sends none).
    async fn handshake(
        &self,
        connector: &TlsConnector,
        sni: Option<ServerName<'static>>,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        if let Some(name) = &self.pending {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("secret {name:?} is not supplied by SDS"),
            ));
        }
        let name = match sni.or_else(|| self.sni.clone()) {
            Some(n) => n,
            None => ServerName::IpAddress(tcp.peer_addr()?.ip().into()),
        };
        connector.connect(name, tcp).await
    }
}

/// Chain validation against the configured CA. As in Envoy the SNI is not checked against the
/// certificate; with SAN matchers one of the certificate's SANs must match one of them.
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    sans: SanMatchers,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        if self.sans.accepts(end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
    crate::tls_common::signature_checks_of_inner!();
}

/// A request's `auto_san_validation`: the cluster's own check, then a SAN of the certificate
/// must match `name` (Envoy's `verifySubjectAltName`: DNS SANs with their wildcard, URI and IP
/// SANs exactly). Without a `trusted_ca` every certificate fails, as in Envoy (the override
/// makes BoringSSL verify the peer, against an empty trust store).
#[derive(Debug)]
struct NameVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    name: Box<str>,
    chain_checked: bool,
}

impl ServerCertVerifier for NameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.chain_checked {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if crate::tls_common::san::has_name(end_entity.as_ref(), &self.name) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }
    crate::tls_common::signature_checks_of_inner!();
}

/// No validation context: accept any certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alpn(spec: &TlsSpec, http2: bool) -> Vec<Vec<u8>> {
        let origin = TlsOrigin::build("c", spec, http2).expect("tls origin");
        origin.connector.config().alpn_protocols.clone()
    }

    #[test]
    fn without_alpn_protocols_the_clusters_protocol_is_offered() {
        let mut spec = TlsSpec {
            sni: Some("localhost".into()),
            ..TlsSpec::default()
        };
        assert_eq!(alpn(&spec, false), [b"http/1.1".to_vec()]);
        assert_eq!(alpn(&spec, true), [b"h2".to_vec()]);
        spec.alpn_protocols = vec!["x".into(), "http/1.1".into()];
        assert_eq!(alpn(&spec, false), [b"x".to_vec(), b"http/1.1".to_vec()]);
    }
}
