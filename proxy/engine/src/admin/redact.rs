//! Secrets never leave through the admin interface: every `DataSource` under a sensitive
//! field (`private_key`, `password`, ...) keeps its `filename` but has its inline contents
//! replaced by `[redacted]`, as Envoy's config dump does; SDS secrets are not dumped at all.

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

/// The redacted form of a sensitive field's value.
fn redact_value(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if k == "filename" || k == "environment_variable" {
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
                if SENSITIVE.contains(&k.as_str()) {
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
        assert!(text.contains("/c.pem") && text.contains("/k.pem"), "{text}");
        assert_eq!(
            v["a"][0]["tls_certificates"][0]["private_key"]["inline_string"],
            "[redacted]"
        );
    }
}
