//! A peer certificate's names, as Envoy reads them for RBAC and `x-forwarded-client-cert`:
//! URI and DNS SANs, the subject in OpenSSL's RFC 2253 form, and the certificate's SHA-256
//! (worked out once per connection, at the handshake).

use std::fmt::Write as _;

/// The names of a peer certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// URI SANs (SPIFFE ids), in certificate order.
    pub uri_sans: Vec<String>,
    /// DNS SANs, in certificate order.
    pub dns_sans: Vec<String>,
    /// The subject in RFC 2253 form (`CN=client,O=example`), as Envoy prints it.
    pub subject: String,
    /// The certificate and the rest of the chain the client sent, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The SHA-256 of the certificate's DER, lower-case hex (`Hash=` of
    /// `x-forwarded-client-cert`).
    pub sha256: String,
}

impl PeerCert {
    /// Reads the names of a DER certificate (an unreadable one has none).
    pub fn parse(der: &[u8]) -> Self {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let mut sha256 = String::with_capacity(64);
        for b in ring::digest::digest(&ring::digest::SHA256, der).as_ref() {
            let _ = write!(sha256, "{b:02x}");
        }
        let mut out = Self {
            chain: vec![der.to_vec()],
            sha256,
            ..Self::default()
        };
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return out;
        };
        out.subject = rfc2253(cert.subject());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::URI(u) => out.uri_sans.push((*u).to_string()),
                    GeneralName::DNSName(d) => out.dns_sans.push((*d).to_string()),
                    _ => {}
                }
            }
        }
        out
    }
}

/// A name as OpenSSL's `XN_FLAG_RFC2253` prints it (Envoy's `subjectPeerCertificate`): the last
/// RDN first, `,` between RDNs and `+` within one, attributes by their short names, values
/// escaped ([`escape_2253`]); an attribute without a short name as its dotted OID and `#` with
/// the hex of its DER value.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut out = String::new();
    for (i, rdn) in name
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        for (j, a) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = a.attr_type().to_id_string();
            let value = a.attr_value();
            // OpenSSL's UTF8_CONVERT: the string types as UTF-8 (then escaped); any other
            // value, and any attribute without a short name, dumped as `#` + its DER in hex.
            let text = match value.tag().0 {
                // UTF8String, NumericString, PrintableString, IA5String, VisibleString.
                12 | 18 | 19 | 22 | 26 => Some(value.as_bytes().to_vec()),
                // TeletexString: Latin-1, as OpenSSL reads it.
                20 => Some(
                    value
                        .as_bytes()
                        .iter()
                        .map(|&b| b as char)
                        .collect::<String>()
                        .into_bytes(),
                ),
                // BMPString: UTF-16BE.
                30 => Some(
                    char::decode_utf16(
                        value
                            .as_bytes()
                            .chunks(2)
                            .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])),
                    )
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect::<String>()
                    .into_bytes(),
                ),
                // UniversalString: UTF-32BE.
                28 => Some(
                    value
                        .as_bytes()
                        .chunks(4)
                        .map(|c| {
                            let mut b = [0u8; 4];
                            b[..c.len()].copy_from_slice(c);
                            char::from_u32(u32::from_be_bytes(b))
                                .unwrap_or(char::REPLACEMENT_CHARACTER)
                        })
                        .collect::<String>()
                        .into_bytes(),
                ),
                _ => None,
            };
            match (short_name(&oid), text) {
                (Some(key), Some(text)) => {
                    out.push_str(key);
                    out.push('=');
                    escape_2253(&text, &mut out);
                }
                (key, _) => {
                    out.push_str(key.unwrap_or(&oid));
                    out.push_str("=#");
                    let data = value.as_bytes();
                    let h = &value.header;
                    let tag = value.tag().0;
                    let mut der = Vec::with_capacity(data.len() + 6);
                    let first = ((h.class() as u8) << 6) | (u8::from(h.constructed()) << 5);
                    if tag < 31 {
                        der.push(first | tag as u8);
                    } else {
                        // High tag numbers: base-128, high bit on all but the last byte.
                        der.push(first | 0x1f);
                        let mut groups = Vec::new();
                        let mut t = tag;
                        loop {
                            groups.push((t & 0x7f) as u8);
                            t >>= 7;
                            if t == 0 {
                                break;
                            }
                        }
                        for (i, g) in groups.iter().rev().enumerate() {
                            der.push(if i + 1 < groups.len() { g | 0x80 } else { *g });
                        }
                    }
                    let n = data.len();
                    if n < 0x80 {
                        der.push(n as u8);
                    } else {
                        let bytes: Vec<u8> = n
                            .to_be_bytes()
                            .into_iter()
                            .skip_while(|b| *b == 0)
                            .collect();
                        der.push(0x80 | bytes.len() as u8);
                        der.extend(bytes);
                    }
                    der.extend_from_slice(data);
                    for b in der {
                        let _ = write!(out, "{b:02X}");
                    }
                }
            }
        }
    }
    out
}

/// OpenSSL's short names of the usual name attributes.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// OpenSSL's `ASN1_STRFLGS_RFC2253` escaping of a value: `,+"\<>;` with a backslash, a
/// leading `#` or space and a trailing space likewise, control characters and bytes with the
/// high bit set as `\XX`.
fn escape_2253(value: &[u8], out: &mut String) {
    let last = value.len().saturating_sub(1);
    for (i, &b) in value.iter().enumerate() {
        let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';')
            || (i == 0 && matches!(b, b'#' | b' '))
            || (i == last && b == b' ');
        if special {
            out.push('\\');
            out.push(b as char);
        } else if !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names_come_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["svc.example".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::Ia5String::try_from("spiffe://cluster.local/ns/a/sa/b").unwrap(),
        ));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        let cert = params.self_signed(&key).unwrap();
        let p = PeerCert::parse(cert.der());
        assert_eq!(p.uri_sans, ["spiffe://cluster.local/ns/a/sa/b"]);
        assert_eq!(p.dns_sans, ["svc.example"]);
        assert_eq!(p.subject, "CN=client,O=acme");
    }

    #[test]
    fn subject_string_types_are_read_as_utf8_before_escaping() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::BmpString(rcgen::BmpString::try_from("evil,O=trusted").unwrap()),
        );
        params.distinguished_name.push(
            rcgen::DnType::OrganizationName,
            rcgen::DnValue::UniversalString(rcgen::UniversalString::try_from("caf\u{e9}").unwrap()),
        );
        let cert = params.self_signed(&key).unwrap();
        let p = PeerCert::parse(cert.der());
        assert_eq!(p.subject, r"O=caf\C3\A9,CN=evil\,O=trusted");
    }

    #[test]
    fn subject_values_are_escaped_as_openssl_rfc2253() {
        let mut out = String::new();
        escape_2253("a,b+c\"d\\e<f>g;h".as_bytes(), &mut out);
        assert_eq!(out, r#"a\,b\+c\"d\\e\<f\>g\;h"#);
        let mut out = String::new();
        escape_2253("#lead trail ".as_bytes(), &mut out);
        assert_eq!(out, r"\#lead trail\ ");
        let mut out = String::new();
        escape_2253("caf\u{e9}\u{1}".as_bytes(), &mut out);
        assert_eq!(out, r"caf\C3\A9\01");
    }
}
