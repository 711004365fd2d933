//! Transport sockets that need SDS (secrets from a discovery service, as istiod configures
//! every `tlsMode-istio` socket) are refused with an error naming the field that needs it,
//! never loaded as plaintext.

use serde_norway::Value;

use super::{path::FieldPath, ConfigError};

/// Fields of a TLS context (Common/Upstream/DownstreamTlsContext) whose secrets come from SDS.
const SDS_FIELDS: &[&str] = &[
    "tls_certificate_sds_secret_configs",
    "validation_context_sds_secret_config",
    "tls_session_ticket_keys_sds_secret_config",
    "sds_config",
];

/// The path of the first field under `v` (at `p`) that needs SDS, if any.
pub(crate) fn find(v: &Value, p: &FieldPath) -> Option<FieldPath> {
    match v {
        Value::Mapping(m) => m.iter().find_map(|(k, v)| {
            let k = k.as_str()?;
            let fp = p.field(k);
            match SDS_FIELDS.contains(&k) {
                true => Some(fp),
                false => find(v, &fp),
            }
        }),
        Value::Sequence(s) => s.iter().enumerate().find_map(|(i, v)| find(v, &p.index(i))),
        Value::Tagged(t) => find(&t.value, p),
        _ => None,
    }
}

/// The refusal of a field that needs SDS.
pub(crate) fn unsupported(p: &FieldPath) -> ConfigError {
    p.unsupported("SDS is not supported yet: give certificates inline or as files")
}

/// `Err` naming the SDS field when `v` (at `p`) needs SDS.
pub(crate) fn refuse(v: &Value, p: &FieldPath) -> Result<(), ConfigError> {
    match find(v, p) {
        Some(fp) => Err(unsupported(&fp)),
        None => Ok(()),
    }
}
