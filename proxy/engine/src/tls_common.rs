//! What the upstream (`upstream/tls.rs`) and downstream (`downstream_tls.rs`) TLS contexts
//! share: matching the peer certificate's subject alternative names (`san.rs`) and the
//! `tls_params` of a `CommonTlsContext` (`params.rs`: protocol versions, cipher suites and
//! curves, as a rustls crypto provider).

pub mod params;
pub mod san;

pub use params::TlsParams;
pub use san::SanMatchers;

use crate::config::{raw_route::RawDataSource, ConfigError, DataSource, FieldPath};

/// A TLS context's `DataSource` (at `p`): exactly one of `filename`, `inline_string` and
/// `inline_bytes` (base64 of PEM text, as a control plane encodes it).
pub(crate) fn data_source(raw: &RawDataSource, p: &FieldPath) -> Result<DataSource, ConfigError> {
    use base64::Engine as _;
    match (&raw.filename, &raw.inline_string, &raw.inline_bytes) {
        (Some(f), None, None) if !f.is_empty() => Ok(DataSource::File(f.into())),
        (None, Some(s), None) => Ok(DataSource::Inline(s.clone())),
        (None, None, Some(b)) => {
            let bp = p.field("inline_bytes");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| bp.err(format!("not base64: {e}")))?;
            String::from_utf8(bytes)
                .map(DataSource::Inline)
                .map_err(|_| bp.err("not PEM text"))
        }
        _ => Err(p.err("exactly one of filename, inline_string and inline_bytes is required")),
    }
}

/// What PEM a DataSource must hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pem {
    /// One or more certificates.
    Certificates,
    /// A private key.
    Key,
}

/// Checks that inline PEM (`d`, at `p`) holds what `want` says, so a bad certificate from a
/// control plane is refused with the config, naming its field; a file is read when the context
/// is built.
pub(crate) fn check_inline(d: &DataSource, want: Pem, p: &FieldPath) -> Result<(), ConfigError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let DataSource::Inline(text) = d else {
        return Ok(());
    };
    match want {
        Pem::Certificates => {
            let certs = CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| p.err(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(p.err("no PEM certificate in it"));
            }
        }
        Pem::Key => {
            PrivateKeyDer::from_pem_slice(text.as_bytes())
                .map_err(|e| p.err(format!("not a PEM private key: {e}")))?;
        }
    }
    Ok(())
}

/// Where a DataSource comes from, as Envoy's `/certs` names it: its file, or `<inline>`.
pub(crate) fn source_name(d: &DataSource) -> String {
    match d {
        DataSource::File(f) => f.display().to_string(),
        DataSource::Inline(_) => "<inline>".to_string(),
    }
}

/// The signature checks of a certificate verifier that adds checks to the verifier in its
/// `inner` field: delegated as they are (rustls' `ServerCertVerifier` and `ClientCertVerifier`
/// have the same three).
macro_rules! signature_checks_of_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}
pub(crate) use signature_checks_of_inner;
