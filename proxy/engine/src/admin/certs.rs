//! `GET /certs`: the certificates of every TLS context, as Envoy's admin shows them: each
//! context's `ca_cert` and `cert_chain` entries with their file (or `<inline>`), serial number,
//! subject alternative names (`dns`, `uri`, `ip_address`), days until expiration and validity
//! window. Upstream contexts (clusters) first, then the listeners' filter chains. Read-only.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::{pem::PemObject, CertificateDer};
use serde_json::{json, Value};

use super::time::rfc3339_seconds;
use crate::{config::DataSource, server::Runtime};

/// The certificates of a DataSource: (its file or `<inline>`, DER).
fn pems(d: Option<&DataSource>) -> Vec<(String, Vec<u8>)> {
    let Some(d) = d else { return Vec::new() };
    let from = crate::tls_common::source_name(d);
    let Ok(bytes) = d.read() else {
        return Vec::new();
    };
    CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .map(|c| (from.clone(), c.to_vec()))
        .collect()
}

/// The `/certs` document.
pub fn json(rt: &Runtime) -> Value {
    let mut contexts = Vec::new();
    for name in &rt.cluster_order {
        let Some(c) = rt.clusters.get(name) else {
            continue;
        };
        let spec = &c.spec;
        for tls in std::iter::once(&spec.tls)
            .chain(&spec.tls_matches)
            .flatten()
        {
            let chain = tls.client_cert.as_ref().map(|(chain, _)| chain);
            contexts.push(context(&pems(tls.trusted_ca.as_ref()), &pems(chain)));
        }
    }
    for l in &rt.bootstrap.listeners {
        for fc in &l.filter_chains {
            if let Some(tls) = &fc.tls {
                contexts.push(context(&tls.certs.ca, &tls.certs.chain));
            }
        }
    }
    json!({ "certificates": contexts })
}

fn context(ca: &[(String, Vec<u8>)], chain: &[(String, Vec<u8>)]) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let details = |list: &[(String, Vec<u8>)]| -> Vec<Value> {
        list.iter()
            .filter_map(|(path, der)| details(path, der, now))
            .collect()
    };
    json!({ "ca_cert": details(ca), "cert_chain": details(chain) })
}

/// One certificate's entry (None: not a readable certificate).
fn details(path: &str, der: &[u8], now: i64) -> Option<Value> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut sans: Vec<Value> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        // Envoy lists them by type: DNS names, then URIs, then IP addresses.
        for n in names {
            if let GeneralName::DNSName(d) = n {
                sans.push(json!({ "dns": d }));
            }
        }
        for n in names {
            if let GeneralName::URI(u) = n {
                sans.push(json!({ "uri": u }));
            }
        }
        for n in names {
            if let GeneralName::IPAddress(ip) = n {
                let addr = match ip.len() {
                    4 => <[u8; 4]>::try_from(*ip)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*ip)
                        .ok()
                        .map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => None,
                };
                if let Some(a) = addr {
                    sans.push(json!({ "ip_address": a }));
                }
            }
        }
    }
    let serial = cert
        .raw_serial()
        .iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    Some(json!({
        "path": path,
        "serial_number": if serial.is_empty() { "0".to_string() } else { serial },
        "subject_alt_names": sans,
        "days_until_expiration": ((not_after - now).max(0) / 86_400).to_string(),
        "valid_from": rfc3339_seconds(not_before),
        "expiration_time": rfc3339_seconds(not_after),
    }))
}
