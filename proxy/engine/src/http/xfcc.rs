//! `x-forwarded-client-cert` as Envoy's `mutateXfccRequestHeader`: `ALWAYS_FORWARD_ONLY` keeps
//! the client's; `SANITIZE`, and every mode on a connection without a client certificate,
//! removes it; `FORWARD_ONLY` keeps it; `APPEND_FORWARD` appends and `SANITIZE_SET` sets this
//! hop's element: `By=` (this side's certificate's URI SANs), `Hash=` (the SHA-256 of the
//! client's certificate), then per `set_current_client_cert_details` `Cert=`, `Chain=` (URL
//! encoded PEM), `Subject=` (RFC 2253), `URI=` (every URI SAN, or empty), `DNS=` (every DNS SAN),
//! `;`-separated.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    config::{ForwardClientCert, Xfcc},
    downstream_tls::{PeerCert, TlsFacts},
};

const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Applies the HCM's mode to the request headers `h` of a connection with `tls` facts.
pub(super) fn apply(cfg: &Xfcc, tls: Option<&TlsFacts>, h: &mut HeaderMap) {
    if cfg.mode == ForwardClientCert::AlwaysForwardOnly {
        return;
    }
    let peer = tls.and_then(|t| t.peer.as_ref().map(|p| (t, p)));
    let Some((tls, peer)) = peer.filter(|_| cfg.mode != ForwardClientCert::Sanitize) else {
        h.remove(XFCC);
        return;
    };
    let value = match cfg.mode {
        ForwardClientCert::AppendForward => {
            let element = element(cfg, tls, peer);
            let mut all: Vec<&str> = h
                .get_all(&XFCC)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            all.push(&element);
            all.join(",")
        }
        ForwardClientCert::SanitizeSet => element(cfg, tls, peer),
        // FORWARD_ONLY: the client's header stays as it is.
        _ => return,
    };
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            h.insert(XFCC, v);
        }
        Err(_) => {
            h.remove(XFCC);
        }
    }
}

/// This hop's element.
fn element(cfg: &Xfcc, tls: &TlsFacts, peer: &PeerCert) -> String {
    let mut parts: Vec<String> = tls
        .local_uri_sans
        .iter()
        .map(|u| format!("By={u}"))
        .collect();
    if !peer.chain.is_empty() {
        parts.push(format!("Hash={}", peer.sha256));
    }
    if cfg.cert {
        if let Some(leaf) = peer.chain.first() {
            parts.push(format!(
                "Cert=\"{}\"",
                url_encoded_pem(std::slice::from_ref(leaf))
            ));
        }
    }
    if cfg.chain && !peer.chain.is_empty() {
        parts.push(format!("Chain=\"{}\"", url_encoded_pem(&peer.chain)));
    }
    if cfg.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject));
    }
    if cfg.uri {
        if peer.uri_sans.is_empty() {
            parts.push("URI=".to_string());
        }
        parts.extend(peer.uri_sans.iter().map(|u| format!("URI={u}")));
    }
    if cfg.dns {
        parts.extend(peer.dns_sans.iter().map(|d| format!("DNS={d}")));
    }
    parts.join(";")
}

/// The certificates as OpenSSL writes PEM (64-column base64), percent-encoded as Envoy's
/// `PercentEncoding::urlEncode` (everything but unreserved characters).
fn url_encoded_pem(ders: &[Vec<u8>]) -> String {
    use base64::Engine as _;
    let mut pem = String::new();
    for der in ders {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let mut out = String::with_capacity(pem.len() * 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
