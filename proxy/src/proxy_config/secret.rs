//! `proxy-config secret`: istioctl's RESOURCE NAME / TYPE / STATUS / VALID CERT / SERIAL NUMBER /
//! NOT AFTER / NOT BEFORE table over the SecretsConfigDump's dynamic secrets (warming, then
//! active), as istioctl reads them: the first certificate of a secret's `inline_bytes` chain
//! (else its CA), `CA` when that certificate is a CA, the serial number in decimal, the
//! validity bounds in RFC 3339; VALID CERT says whether it parsed.

use serde_json::Value;

use super::dump::message;

/// The table rows (header first), or `None` without dynamic secrets (istioctl's "No active
/// or warming secrets found.").
pub fn rows(dump: &Value) -> Option<Vec<Vec<String>>> {
    let m = message(dump, "SecretsConfigDump")?;
    let list = |k: &str| {
        m.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (warming, active) = (
        list("dynamic_warming_secrets"),
        list("dynamic_active_secrets"),
    );
    if warming.is_empty() && active.is_empty() {
        return None;
    }
    let mut rows = vec![[
        "RESOURCE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
    ]
    .map(String::from)
    .to_vec()];
    for (state, s) in warming
        .iter()
        .map(|s| ("WARMING", s))
        .chain(active.iter().map(|s| ("ACTIVE", s)))
    {
        let name = s["name"].as_str().unwrap_or("").to_string();
        let meta = pem_of(&s["secret"]).and_then(|pem| meta(&pem));
        let row = match meta {
            Some(m) => vec![
                name,
                m.kind.into(),
                state.into(),
                "true".into(),
                m.serial,
                m.not_after,
                m.not_before,
            ],
            None => vec![
                name,
                String::new(),
                state.into(),
                "false".into(),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        rows.push(row);
    }
    Some(rows)
}

/// The PEM istioctl reads: the certificate chain's `inline_bytes`, else the trusted CA's.
fn pem_of(secret: &Value) -> Option<Vec<u8>> {
    use base64::Engine as _;
    [
        "/tls_certificate/certificate_chain/inline_bytes",
        "/validation_context/trusted_ca/inline_bytes",
    ]
    .iter()
    .filter_map(|p| secret.pointer(p)?.as_str())
    .find(|b| !b.is_empty())
    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
}

/// What the table shows of a certificate.
struct Meta {
    kind: &'static str,
    serial: String,
    not_after: String,
    not_before: String,
}

/// The first PEM certificate of `pem`, if it parses.
fn meta(pem: &[u8]) -> Option<Meta> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let (_, cert) = X509Certificate::from_der(&block.contents).ok()?;
    let rfc3339 = |t: x509_parser::time::ASN1Time| {
        let d = t.to_datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )
    };
    Some(Meta {
        kind: if cert.is_ca() { "CA" } else { "Cert Chain" },
        serial: decimal(cert.raw_serial()),
        not_after: rfc3339(cert.validity().not_after),
        not_before: rfc3339(cert.validity().not_before),
    })
}

/// A big-endian unsigned integer in decimal (a certificate serial has up to 20 bytes).
fn decimal(bytes: &[u8]) -> String {
    let mut n: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut digits = Vec::new();
    while !n.is_empty() {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = rem * 256 + u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
        let zeros = n.iter().take_while(|b| **b == 0).count();
        n.drain(..zeros);
    }
    if digits.is_empty() {
        return "0".into();
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_in_decimal() {
        assert_eq!(decimal(&[]), "0");
        assert_eq!(decimal(&[0, 0]), "0");
        assert_eq!(decimal(&[0x01, 0x00]), "256");
        assert_eq!(decimal(&[0xff; 8]), u64::MAX.to_string());
        assert_eq!(
            decimal(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
            "18446744073709551616"
        );
    }
}
