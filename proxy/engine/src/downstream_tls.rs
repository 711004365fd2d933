//! Downstream TLS termination: a filter chain's `transport_socket` `envoy.transport_sockets.tls`
//! (`DownstreamTlsContext`) with its certificate and key from files or inline PEM, a client
//! certificate requested when a `validation_context.trusted_ca` is set (and required with
//! `require_client_certificate`), ALPN from `alpn_protocols`, and `require_sni`. The server
//! config is built when the config is loaded (a bad file, PEM or key mismatch rejects the config
//! naming the field). After the handshake the connection's [`TlsFacts`] (SNI, the peer
//! certificate's names and digest, `peer_cert.rs`) feed RBAC's `authenticated` and
//! `requested_server_name`, and `x-forwarded-client-cert`.

mod client_san;
mod peer_cert;

use std::{sync::Arc, time::Duration};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

pub use peer_cert::PeerCert;

use crate::config::{
    raw_cluster::RawCommonTlsContext, raw_route::RawDataSource, secrets::Secrets, ConfigError,
    FieldPath,
};
use crate::tls_common::{params::Side, SanMatchers, TlsParams};

/// `@type` of the context.
pub const TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// How long a TLS handshake may take before the connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `DownstreamTlsContext`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDownstreamTlsContext {
    common_tls_context: Option<RawCommonTlsContext>,
    require_client_certificate: Option<bool>,
    require_sni: Option<bool>,
    session_ticket_keys: Option<serde_json::Value>,
    session_ticket_keys_sds_secret_config: Option<serde_json::Value>,
    disable_stateless_session_resumption: Option<bool>,
    disable_stateful_session_resumption: Option<bool>,
    session_timeout: Option<serde_json::Value>,
    ocsp_staple_policy: Option<String>,
    full_scan_certs_on_sni_mismatch: Option<bool>,
    prefer_client_ciphers: Option<bool>,
}

/// A filter chain's TLS termination, ready to accept.
pub struct DownstreamTls {
    /// `None` while a secret it names has not arrived over ADS: every handshake fails.
    acceptor: Option<TlsAcceptor>,
    /// That secret's name.
    pending: Option<String>,
    /// The certificates it serves and trusts, for the admin's `/certs`.
    pub certs: CertSet,
    /// The URI SANs of the chain's own certificate (`By=` of `x-forwarded-client-cert`).
    local_uri_sans: Arc<[String]>,
    /// `require_sni`: a ClientHello without SNI fails the handshake.
    require_sni: bool,
    /// How long a handshake may take: the chain's `transport_socket_connect_timeout`, else
    /// [`HANDSHAKE_TIMEOUT`].
    handshake_timeout: Duration,
}

impl std::fmt::Debug for DownstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownstreamTls")
            .field("require_sni", &self.require_sni)
            .finish_non_exhaustive()
    }
}

/// A TLS context's certificates as loaded: (where from: a file name or `<inline>`, DER), the
/// served chain leaf first.
#[derive(Debug, Clone, Default)]
pub struct CertSet {
    /// `validation_context.trusted_ca`.
    pub ca: Vec<(String, Vec<u8>)>,
    /// `tls_certificates[0].certificate_chain`.
    pub chain: Vec<(String, Vec<u8>)>,
}

/// What a terminated TLS connection established, for RBAC and the request's scheme.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// The SNI as Envoy's `requestedServerName()`: what the listener's tls_inspector reported
    /// (none without it, even when the handshake carried one; checked against Envoy).
    pub sni: Option<String>,
    /// The client's certificate, when it presented one (it was verified against the CA).
    pub peer: Option<PeerCert>,
    /// The URI SANs of the certificate this side presented.
    pub local_uri_sans: Arc<[String]>,
}

/// A DataSource's PEM bytes (a file's, or the inline text), and where they came from.
fn pem(raw: &RawDataSource, p: &FieldPath) -> Result<(Vec<u8>, String), ConfigError> {
    let d = crate::tls_common::data_source(raw, p)?;
    let from = crate::tls_common::source_name(&d);
    match d.read() {
        Ok(b) => Ok((b, from)),
        Err(e) => Err(p.field("filename").err(format!("{from}: {e}"))),
    }
}

fn certs(
    raw: &RawDataSource,
    p: &FieldPath,
) -> Result<(Vec<CertificateDer<'static>>, String), ConfigError> {
    let (bytes, from) = pem(raw, p)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| p.err(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(p.err("no PEM certificate in it"));
    }
    Ok((certs, from))
}

/// Compiles a chain's `DownstreamTlsContext` at `p` (its `typed_config`).
pub(crate) fn build(
    raw: RawDownstreamTlsContext,
    p: &FieldPath,
    secrets: &Secrets,
) -> Result<DownstreamTls, ConfigError> {
    for (field, set) in [
        ("session_ticket_keys", raw.session_ticket_keys.is_some()),
        (
            "session_ticket_keys_sds_secret_config",
            raw.session_ticket_keys_sds_secret_config.is_some(),
        ),
        ("session_timeout", raw.session_timeout.is_some()),
        (
            "disable_stateless_session_resumption",
            raw.disable_stateless_session_resumption == Some(true),
        ),
        (
            "disable_stateful_session_resumption",
            raw.disable_stateful_session_resumption == Some(true),
        ),
        (
            "ocsp_staple_policy",
            raw.ocsp_staple_policy
                .as_deref()
                .is_some_and(|o| o != "LENIENT_STAPLING"),
        ),
        (
            "full_scan_certs_on_sni_mismatch",
            raw.full_scan_certs_on_sni_mismatch == Some(true),
        ),
        (
            "prefer_client_ciphers",
            raw.prefer_client_ciphers == Some(true),
        ),
    ] {
        if set {
            return Err(p
                .field(field)
                .unsupported("this TLS session option (rustls' defaults apply)"));
        }
    }
    let cp = p.field("common_tls_context");
    let ctx = raw
        .common_tls_context
        .ok_or_else(|| cp.err("required (a server certificate)"))?;
    let material = secrets.resolve(&ctx, &cp)?;
    if material.pending.is_some() {
        // What does not depend on the secret is checked now, as Envoy checks a listener when
        // it arrives; the context is not ready until the secret is there.
        TlsParams::build(
            ctx.tls_params.as_ref(),
            Side::Server,
            &cp.field("tls_params"),
        )?;
        if let Some(v) = &material.validation {
            v.san_matchers()?;
            if let Some((ca, vp)) = &v.trusted_ca {
                certs(ca, vp)?;
            }
        }
        if let Some((c, tp)) = &material.certificate {
            c.pair(tp)?;
        }
        return Ok(DownstreamTls {
            acceptor: None,
            pending: material.pending,
            certs: CertSet::default(),
            local_uri_sans: Arc::from([]),
            require_sni: raw.require_sni == Some(true),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        });
    }
    let mut cert_set = CertSet::default();
    let (chain, key) = match &material.certificate {
        Some((c, tp)) => {
            let (chain, key) = c.pair(tp)?;
            let kp = tp.field("private_key");
            let key = PrivateKeyDer::from_pem_slice(&pem(key, &kp)?.0)
                .map_err(|e| kp.err(format!("not a PEM private key: {e}")))?;
            let (ders, from) = certs(chain, &tp.field("certificate_chain"))?;
            cert_set.chain = ders.iter().map(|d| (from.clone(), d.to_vec())).collect();
            (ders, key)
        }
        None => {
            return Err(cp
                .field("tls_certificates")
                .err("one server certificate is required"))
        }
    };
    let params = TlsParams::build(
        ctx.tls_params.as_ref(),
        Side::Server,
        &cp.field("tls_params"),
    )?;
    let provider = params.provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&params.versions())
        .map_err(|e| p.err(e.to_string()))?;
    let require = raw.require_client_certificate == Some(true);
    let sans = match &material.validation {
        Some(v) => v.san_matchers()?,
        None => SanMatchers::default(),
    };
    let ca = material
        .validation
        .as_ref()
        .and_then(|v| v.trusted_ca.as_ref());
    let builder = match ca {
        Some((ca, vp)) => {
            let mut roots = RootCertStore::empty();
            let (ca_certs, from) = certs(ca, vp)?;
            for c in ca_certs {
                cert_set.ca.push((from.clone(), c.to_vec()));
                roots
                    .add(c)
                    .map_err(|e| vp.err(format!("not a CA certificate: {e}")))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if require {
                v
            } else {
                v.allow_unauthenticated()
            };
            let inner = v.build().map_err(|e| vp.err(e.to_string()))?;
            builder.with_client_cert_verifier(client_san::verifier(inner, sans))
        }
        None if require => {
            return Err(p
                .field("require_client_certificate")
                .err("needs common_tls_context.validation_context.trusted_ca to verify it"))
        }
        None if !sans.is_empty() => {
            let vp = material.validation.as_ref().and_then(|v| v.sans.first());
            let vp = vp.map_or(cp.clone(), |(_, p)| p.clone());
            return Err(vp
                .field("trusted_ca")
                .err("required to verify the client certificate's subject alt names"));
        }
        None => builder.with_no_client_auth(),
    };
    let local_uri_sans: Arc<[String]> = chain
        .first()
        .map(|c| PeerCert::parse(c).uri_sans)
        .unwrap_or_default()
        .into();
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        let tp = material
            .certificate
            .as_ref()
            .map_or(cp.clone(), |(_, tp)| tp.clone());
        tp.err(format!("certificate and key: {e}"))
    })?;
    config.alpn_protocols = ctx
        .alpn_protocols
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    Ok(DownstreamTls {
        acceptor: Some(TlsAcceptor::from(Arc::new(config))),
        pending: None,
        certs: cert_set,
        local_uri_sans,
        require_sni: raw.require_sni == Some(true),
        handshake_timeout: HANDSHAKE_TIMEOUT,
    })
}

impl DownstreamTls {
    /// Bounds the handshake by `t` (the chain's `transport_socket_connect_timeout`).
    pub(crate) fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Runs the server handshake on `io` (bounded); the stream and what it established (the
    /// peer certificate; `sni` is left to the caller, see [`TlsFacts::sni`]).
    pub async fn accept<S>(&self, io: S) -> std::io::Result<(TlsStream<S>, TlsFacts)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(acceptor) = &self.acceptor else {
            let name = self.pending.as_deref().unwrap_or_default();
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("secret {name:?} is not supplied by SDS"),
            ));
        };
        let handshake = tokio::time::timeout(self.handshake_timeout, acceptor.accept(io));
        let stream = handshake.await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
        let conn = stream.get_ref().1;
        let facts = TlsFacts {
            sni: None,
            peer: conn.peer_certificates().and_then(|certs| {
                let mut p = PeerCert::parse(certs.first()?);
                p.chain = certs.iter().map(|c| c.to_vec()).collect();
                Some(p)
            }),
            local_uri_sans: self.local_uri_sans.clone(),
        };
        if self.require_sni && conn.server_name().is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "require_sni: the ClientHello has no SNI",
            ));
        }
        Ok((stream, facts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(yaml: &str) -> String {
        let raw: RawDownstreamTlsContext = serde_norway::from_str(yaml).expect("yaml");
        let e =
            build(raw, &FieldPath::root().field("tc"), &Secrets::default()).expect_err("refused");
        format!("{}: {}", e.path(), e.message())
    }

    #[test]
    fn bad_contexts_are_refused_naming_the_field() {
        for (yaml, want) in [
            ("{}", "tc.common_tls_context: required"),
            ("common_tls_context: {}", "tc.common_tls_context.tls_certificates: one server certificate"),
            (
                "common_tls_context: {tls_certificates: [{certificate_chain: {filename: /nonexistent/c.pem}, private_key: {inline_string: x}}]}",
                "tc.common_tls_context.tls_certificates[0].private_key: not a PEM private key",
            ),
            (
                "common_tls_context: {tls_certificates: [{certificate_chain: {filename: /nonexistent/c.pem}, private_key: {inline_string: \"-----BEGIN PRIVATE KEY-----\\nMC4CAQAwBQYDK2VwBCIEIOnk\\n-----END PRIVATE KEY-----\\n\"}}]}",
                "tc.common_tls_context.tls_certificates[0].certificate_chain.filename: /nonexistent/c.pem:",
            ),
            ("session_timeout: 10s", "tc.session_timeout: not supported"),
            ("prefer_client_ciphers: true", "tc.prefer_client_ciphers: not supported"),
        ] {
            let got = refused(yaml);
            assert!(got.starts_with(want), "{yaml}\n  got:  {got}\n  want: {want}");
        }
    }
}
