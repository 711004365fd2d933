//! A client certificate verifier that, once the chain is verified against the CA, also wants
//! one of the validation context's SAN matchers to accept the certificate (Envoy's
//! `match_subject_alt_names` / `match_typed_subject_alt_names` on a downstream context: a
//! client certificate that matches none fails the handshake).

use std::sync::Arc;

use rustls::{
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    CertificateError, DistinguishedName, Error,
};

use crate::tls_common::SanMatchers;

/// `inner`, with the SAN check when there are matchers.
pub(super) fn verifier(
    inner: Arc<dyn ClientCertVerifier>,
    sans: SanMatchers,
) -> Arc<dyn ClientCertVerifier> {
    if sans.is_empty() {
        return inner;
    }
    Arc::new(SanChecked { inner, sans })
}

#[derive(Debug)]
struct SanChecked {
    inner: Arc<dyn ClientCertVerifier>,
    sans: SanMatchers,
}

impl ClientCertVerifier for SanChecked {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.sans.accepts(end_entity.as_ref()) {
            Ok(verified)
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    crate::tls_common::signature_checks_of_inner!();
}
