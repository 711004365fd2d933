//! Credentials to the management server: TLS verified against a CA file (chain and server name;
//! istiod's 15012) and a bearer token read from a file on every (re)connect (a projected
//! service-account token rotates), sent as `authorization: Bearer ...` on each stream; or, from
//! a bootstrap, the ADS cluster's own `transport_socket` (Envoy's UpstreamTlsContext semantics,
//! the engine's [`TlsOrigin`]) and the gRPC service's `initial_metadata`.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    crypto::ring,
    pki_types::{pem::PemObject as _, CertificateDer, ServerName},
    ClientConfig, RootCertStore,
};
use sluice_engine::{
    config::CallMetadata,
    upstream::{spec::TlsSpec, tls::TlsOrigin},
};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

/// gRPC metadata sent on every stream.
pub type Metadata = Vec<(AsciiMetadataKey, AsciiMetadataValue)>;

/// What the client presents and checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credentials {
    /// PEM CA bundle: connect with TLS and verify the server against it (None: plaintext).
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: String,
    /// File holding the bearer token, read on every connect.
    pub token: Option<PathBuf>,
    /// A bootstrap's ADS cluster `transport_socket`: `(cluster name, its TLS)`, with Envoy's
    /// semantics (no validation context: no verification; the name is checked only against
    /// SANs). The files are read on every connect.
    pub cluster_tls: Option<(String, TlsSpec)>,
    /// A bootstrap's `grpc_services[0].initial_metadata` (validated by the engine).
    pub initial_metadata: Vec<(String, String)>,
    /// A bootstrap's `google_grpc.call_credentials` (files read on every connect).
    pub call_metadata: Vec<CallMetadata>,
}

impl Credentials {
    /// The TLS client config and server name (None without a CA). The CA file is read on every
    /// connect, so a rotated bundle is picked up by the next one.
    pub fn tls(&self) -> Result<Option<(Arc<ClientConfig>, ServerName<'static>)>, String> {
        let Some(ca) = &self.ca else { return Ok(None) };
        let shown = ca.display();
        let mut roots = RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(ca).map_err(|e| format!("CA file {shown}: {e}"))?;
        for c in certs {
            let c = c.map_err(|e| format!("CA file {shown}: {e}"))?;
            roots.add(c).map_err(|e| format!("CA file {shown}: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("CA file {shown}: no certificate"));
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| format!("server name {:?}: {e}", self.server_name))?;
        Ok(Some((Arc::new(config), name)))
    }

    /// The ADS cluster's TLS (None without one), built now from its files.
    pub fn cluster_tls(&self) -> Result<Option<TlsOrigin>, String> {
        let Some((cluster, spec)) = &self.cluster_tls else {
            return Ok(None);
        };
        TlsOrigin::build(cluster, spec, true)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The metadata of a stream: `initial_metadata`, then `authorization` from the token file
    /// (read now).
    pub fn metadata(&self) -> Result<Metadata, String> {
        let mut out = Metadata::with_capacity(self.initial_metadata.len() + 1);
        for (k, v) in &self.initial_metadata {
            let key = AsciiMetadataKey::from_bytes(k.as_bytes())
                .map_err(|_| format!("initial_metadata key {k:?} is not valid"))?;
            let value = AsciiMetadataValue::try_from(v.as_str())
                .map_err(|_| format!("initial_metadata value of {k:?} is not valid"))?;
            out.push((key, value));
        }
        if let Some(a) = self.authorization()? {
            out.push((AsciiMetadataKey::from_static("authorization"), a));
        }
        for c in &self.call_metadata {
            let (key, value, source) = match c {
                CallMetadata::Static { key, value } => {
                    (key, value.clone(), "call_credentials".to_string())
                }
                // As Envoy's file_based_metadata: the prefix and the file as it is (not
                // trimmed: a trailing newline makes it an invalid header, in Envoy too).
                CallMetadata::File { key, prefix, path } => {
                    let shown = format!("call credentials file {}", path.display());
                    let text =
                        std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
                    let hint = if text.ends_with('\n') {
                        " (it ends with a newline)"
                    } else {
                        ""
                    };
                    (key, format!("{prefix}{text}"), format!("{shown}{hint}"))
                }
            };
            let k = AsciiMetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| format!("{source}: {key:?} is not a valid metadata key"))?;
            let v = AsciiMetadataValue::try_from(value.as_str())
                .map_err(|_| format!("{source}: not a valid {key} header value"))?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// `Bearer <token>` from the token file (None without one); read now.
    fn authorization(&self) -> Result<Option<AsciiMetadataValue>, String> {
        let Some(path) = &self.token else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("token file {}: empty", path.display()));
        }
        AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .map(Some)
            .map_err(|_| format!("token file {}: not a valid header value", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_on_every_call_and_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("sluice-xds-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let c = Credentials {
            token: Some(path.clone()),
            ..Default::default()
        };
        let e = c.authorization().unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, "one\n").unwrap();
        assert_eq!(c.authorization().unwrap().unwrap(), "Bearer one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(c.authorization().unwrap().unwrap(), "Bearer two");
        std::fs::write(&path, "bad\u{1}value").unwrap();
        assert!(c.authorization().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Credentials::default().authorization().unwrap(), None);
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let c = Credentials {
            ca: Some("/nonexistent/ca.pem".into()),
            server_name: "istiod.istio-system.svc".into(),
            ..Default::default()
        };
        let e = c.tls().unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        assert!(Credentials::default().tls().unwrap().is_none());
    }
}
