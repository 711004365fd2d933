//! Secrets never leave through the admin interface: every value under a sensitive field
//! (`private_key`, `password`, ...) is replaced by `[redacted]` (a bytes field by its base64),
//! its file name too, as Envoy 1.40's config dump does (checked against it by test
//! `downstream_tls_secrets`).

use serde_json::Value;

/// Field names whose values are secrets (Envoy's `sensitive` annotations in the v3 API).
const SENSITIVE: &[&str] = &[
    "private_key",
    "password",
    "session_ticket_keys",
    "ocsp_staple",
    "generic_secret",
    "secret",
    "pkcs12",
];

/// `[redacted]` in base64, the redacted form of a bytes field.
const REDACTED_BYTES: &str = "W3JlZGFjdGVkXQ==";

/// The redacted form of a sensitive field's value.
fn redact_value(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                // A bytes field stays valid proto JSON: base64 of `[redacted]`, as Envoy's.
                if k == "inline_bytes" {
                    *val = Value::String(REDACTED_BYTES.into());
                    continue;
                }
                *val = match val {
                    Value::Object(_) | Value::Array(_) => {
                        redact_value(val);
                        continue;
                    }
                    _ => Value::String("[redacted]".into()),
                };
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        _ => *v = Value::String("[redacted]".into()),
    }
}

/// Redacts every sensitive field in `v`.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                // A Secret in a SecretsConfigDump is a message (`@type`), not GenericSecret's
                // `secret` DataSource: its own sensitive fields are found inside.
                let message = k == "secret"
                    && val.get("@type").and_then(Value::as_str)
                        == Some(
                            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                        );
                if SENSITIVE.contains(&k.as_str()) && !message {
                    redact_value(val);
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn inline_secrets_are_redacted_and_file_names_kept() {
        let mut v = serde_json::json!({"a": [{"tls_certificates": [{
            "certificate_chain": {"filename": "/c.pem"},
            "private_key": {"inline_string": "-----BEGIN PRIVATE KEY-----"}
        }, {"private_key": {"filename": "/k.pem"}, "password": {"inline_bytes": "c2VjcmV0"}}]}]});
        super::redact(&mut v);
        let text = v.to_string();
        assert!(!text.contains("BEGIN PRIVATE KEY"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(
            text.contains("/c.pem") && !text.contains("/k.pem"),
            "{text}"
        );
        assert_eq!(
            v["a"][0]["tls_certificates"][1]["password"]["inline_bytes"],
            "W3JlZGFjdGVkXQ=="
        );
        assert_eq!(
            v["a"][0]["tls_certificates"][0]["private_key"]["inline_string"],
            "[redacted]"
        );
    }
}
