//! `CommonTlsContext.tls_params` as a rustls crypto provider and protocol versions, with
//! Envoy's defaults: a client (upstream) speaks TLS 1.2 only unless `tls_maximum_protocol_version`
//! says TLSv1_3, a server (downstream) TLS 1.2 and 1.3. rustls has no TLS 1.0 or 1.1, so a
//! lower minimum means TLS 1.2, and a maximum below it is refused. `cipher_suites` picks the
//! TLS 1.2 suites in BoringSSL's names (an `[a|b]` group counts as its members); the TLS 1.3
//! suites are not configurable, as in Envoy. Names BoringSSL knows but rustls does not implement
//! (the non-ECDHE and CBC suites, P-521) are left out; a list that leaves nothing, or an unknown
//! name, is refused.

use std::sync::Arc;

use rustls::{
    crypto::{ring, CryptoProvider, SupportedKxGroup},
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;

use crate::config::{ConfigError, FieldPath};

/// `TlsParameters`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTlsParams {
    tls_minimum_protocol_version: Option<String>,
    tls_maximum_protocol_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    ecdh_curves: Vec<String>,
    #[serde(default)]
    signature_algorithms: Vec<String>,
    compliance_policies: Option<serde_json::Value>,
}

/// Which side of a connection a context is for (their default maximum differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Upstream: Envoy's client default maximum is TLS 1.2.
    Client,
    /// Downstream: TLS 1.3.
    Server,
}

/// A context's protocol versions, TLS 1.2 cipher suites and key exchange groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    /// TLS 1.2 is allowed.
    pub tls12: bool,
    /// TLS 1.3 is allowed.
    pub tls13: bool,
    /// The TLS 1.2 suites, by rustls name (`None`: rustls' defaults).
    pub suites: Option<Vec<&'static str>>,
    /// The key exchange groups, by Envoy name (`None`: rustls' defaults).
    pub curves: Option<Vec<&'static str>>,
}

/// The client (upstream) defaults.
impl Default for TlsParams {
    fn default() -> Self {
        Self::defaults(Side::Client)
    }
}

impl TlsParams {
    /// Envoy's defaults of `side`.
    pub fn defaults(side: Side) -> Self {
        Self {
            tls12: true,
            tls13: side == Side::Server,
            suites: None,
            curves: None,
        }
    }

    /// Compiles `raw` (at `p`; `None`: the defaults) for `side`.
    pub(crate) fn build(
        raw: Option<&RawTlsParams>,
        side: Side,
        p: &FieldPath,
    ) -> Result<Self, ConfigError> {
        let mut out = Self::defaults(side);
        let Some(raw) = raw else { return Ok(out) };
        if !raw.signature_algorithms.is_empty() {
            return Err(p
                .field("signature_algorithms")
                .unsupported("rustls' signature algorithms apply"));
        }
        if raw.compliance_policies.is_some() {
            return Err(p
                .field("compliance_policies")
                .unsupported("compliance policies"));
        }
        let version = |f: &str, v: &Option<String>| -> Result<Option<u8>, ConfigError> {
            Ok(match v.as_deref() {
                None | Some("TLS_AUTO") => None,
                Some("TLSv1_0") => Some(10),
                Some("TLSv1_1") => Some(11),
                Some("TLSv1_2") => Some(12),
                Some("TLSv1_3") => Some(13),
                Some(o) => return Err(p.field(f).err(format!("unknown value {o:?}"))),
            })
        };
        let min = version(
            "tls_minimum_protocol_version",
            &raw.tls_minimum_protocol_version,
        )?;
        let max = version(
            "tls_maximum_protocol_version",
            &raw.tls_maximum_protocol_version,
        )?;
        if max.is_some_and(|m| m < 12) {
            return Err(p
                .field("tls_maximum_protocol_version")
                .unsupported("TLS below 1.2 (rustls speaks TLS 1.2 and 1.3)"));
        }
        if let Some(m) = max {
            out.tls13 = m >= 13;
        }
        if min == Some(13) {
            out.tls12 = false;
            out.tls13 = true;
        }
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                return Err(p
                    .field("tls_minimum_protocol_version")
                    .err("greater than tls_maximum_protocol_version"));
            }
        }
        if !raw.cipher_suites.is_empty() {
            let cp = p.field("cipher_suites");
            let mut suites = Vec::new();
            for (i, entry) in raw.cipher_suites.iter().enumerate() {
                let group = entry.trim_start_matches('[').trim_end_matches(']');
                for name in group.split('|') {
                    match suite(name) {
                        Known::Supported(s) if !suites.contains(&s) => suites.push(s),
                        Known::Supported(_) | Known::Unimplemented => {}
                        Known::Unknown => {
                            return Err(cp.index(i).err(format!("unknown cipher suite {name:?}")))
                        }
                    }
                }
            }
            if suites.is_empty() && !out.tls13 {
                return Err(cp.err(
                    "none of these TLS 1.2 cipher suites is implemented (rustls has the ECDHE AEAD suites)",
                ));
            }
            out.suites = Some(suites);
        }
        if !raw.ecdh_curves.is_empty() {
            let cp = p.field("ecdh_curves");
            let mut curves = Vec::new();
            for (i, name) in raw.ecdh_curves.iter().enumerate() {
                match curve(name) {
                    Known::Supported(c) if !curves.contains(&c) => curves.push(c),
                    Known::Supported(_) | Known::Unimplemented => {}
                    Known::Unknown => {
                        return Err(cp.index(i).err(format!("unknown curve {name:?}")))
                    }
                }
            }
            if curves.is_empty() {
                return Err(cp.err("none of these curves is implemented (X25519, P-256, P-384)"));
            }
            out.curves = Some(curves);
        }
        Ok(out)
    }

    /// The protocol versions to offer or accept.
    pub fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let mut v = Vec::with_capacity(2);
        if self.tls13 {
            v.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }

    /// ring's provider restricted to the configured suites and groups.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let base = ring::default_provider();
        let cipher_suites = match &self.suites {
            None => base.cipher_suites.clone(),
            Some(names) => base
                .cipher_suites
                .iter()
                .filter(|s| match s {
                    SupportedCipherSuite::Tls13(_) => true,
                    SupportedCipherSuite::Tls12(_) => names.contains(&suite_name(s)),
                })
                .copied()
                .collect(),
        };
        let kx_groups: Vec<&'static dyn SupportedKxGroup> = match &self.curves {
            None => base.kx_groups.clone(),
            Some(names) => names
                .iter()
                .filter_map(|n| {
                    let g = group_of(n)?;
                    base.kx_groups.iter().find(|k| k.name() == g).copied()
                })
                .collect(),
        };
        Arc::new(CryptoProvider {
            cipher_suites,
            kx_groups,
            ..base
        })
    }
}

enum Known<T> {
    Supported(T),
    Unimplemented,
    Unknown,
}

/// A TLS 1.2 suite's rustls name (`TLS_ECDHE_...`).
fn suite_name(s: &SupportedCipherSuite) -> &'static str {
    s.suite().as_str().unwrap_or("")
}

/// BoringSSL's name of a TLS 1.2 suite -> rustls' name.
fn suite(name: &str) -> Known<&'static str> {
    Known::Supported(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "AES128-GCM-SHA256"
        | "AES256-GCM-SHA384"
        | "AES128-SHA"
        | "AES256-SHA"
        | "DES-CBC3-SHA"
        | "ECDHE-ECDSA-AES128-SHA"
        | "ECDHE-RSA-AES128-SHA"
        | "ECDHE-ECDSA-AES256-SHA"
        | "ECDHE-RSA-AES256-SHA"
        | "ECDHE-PSK-AES128-CBC-SHA"
        | "ECDHE-PSK-AES256-CBC-SHA"
        | "ECDHE-PSK-CHACHA20-POLY1305"
        | "PSK-AES128-CBC-SHA"
        | "PSK-AES256-CBC-SHA" => return Known::Unimplemented,
        _ => return Known::Unknown,
    })
}

/// Envoy's curve name -> itself, when rustls' ring provider has it.
fn curve(name: &str) -> Known<&'static str> {
    Known::Supported(match name {
        "X25519" => "X25519",
        "P-256" => "P-256",
        "P-384" => "P-384",
        "P-521" | "X25519Kyber768Draft00" | "X25519MLKEM768" => return Known::Unimplemented,
        _ => return Known::Unknown,
    })
}

fn group_of(name: &str) -> Option<rustls::NamedGroup> {
    Some(match name {
        "X25519" => rustls::NamedGroup::X25519,
        "P-256" => rustls::NamedGroup::secp256r1,
        "P-384" => rustls::NamedGroup::secp384r1,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str, side: Side) -> Result<TlsParams, String> {
        let raw: RawTlsParams = serde_norway::from_str(yaml).expect("yaml");
        TlsParams::build(Some(&raw), side, &FieldPath::root().field("tls_params"))
            .map_err(|e| format!("{}: {}", e.path(), e.message()))
    }

    #[test]
    fn defaults_follow_envoy_per_side() {
        let c = TlsParams::defaults(Side::Client);
        assert_eq!(c.versions(), [&rustls::version::TLS12]);
        let s = TlsParams::defaults(Side::Server);
        assert_eq!(
            s.versions(),
            [&rustls::version::TLS13, &rustls::version::TLS12]
        );
        let up13 = build("tls_maximum_protocol_version: TLSv1_3", Side::Client).unwrap();
        assert!(up13.tls12 && up13.tls13);
        let only13 = build("tls_minimum_protocol_version: TLSv1_3", Side::Server).unwrap();
        assert_eq!(only13.versions(), [&rustls::version::TLS13]);
        let low = build(
            "{tls_minimum_protocol_version: TLSv1_0, tls_maximum_protocol_version: TLSv1_2}",
            Side::Server,
        )
        .unwrap();
        assert_eq!(low.versions(), [&rustls::version::TLS12]);
    }

    #[test]
    fn istio_cipher_list_keeps_what_rustls_implements() {
        // Istio's inbound sidecar list.
        let p = build(
            "cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]",
            Side::Server,
        )
        .unwrap();
        assert_eq!(p.suites.as_ref().map(Vec::len), Some(4));
        let provider = p.provider();
        let tls12: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(suite_name)
            .collect();
        assert_eq!(tls12.len(), 4, "{tls12:?}");
        assert!(!tls12.iter().any(|n| n.contains("CHACHA")));
        let grouped = build(
            "cipher_suites: [\"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]\"]",
            Side::Client,
        )
        .unwrap();
        assert_eq!(grouped.suites.as_ref().map(Vec::len), Some(2));
        let curves = build("ecdh_curves: [P-256, P-521]", Side::Client).unwrap();
        assert_eq!(curves.provider().kx_groups.len(), 1);
    }

    #[test]
    fn bad_params_name_the_field() {
        for (yaml, want) in [
            (
                "cipher_suites: [NOPE]",
                "tls_params.cipher_suites[0]: unknown cipher suite",
            ),
            (
                "cipher_suites: [AES128-GCM-SHA256]",
                "tls_params.cipher_suites: none of these",
            ),
            (
                "tls_maximum_protocol_version: TLSv1_1",
                "tls_params.tls_maximum_protocol_version: not supported",
            ),
            (
                "tls_maximum_protocol_version: TLSv9",
                "tls_params.tls_maximum_protocol_version: unknown value",
            ),
            (
                "{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_2}",
                "tls_params.tls_minimum_protocol_version: greater than",
            ),
            (
                "ecdh_curves: [P-521]",
                "tls_params.ecdh_curves: none of these",
            ),
            (
                "ecdh_curves: [Q]",
                "tls_params.ecdh_curves[0]: unknown curve",
            ),
            (
                "signature_algorithms: [ecdsa_secp256r1_sha256]",
                "tls_params.signature_algorithms: not supported",
            ),
        ] {
            let got = build(yaml, Side::Client).expect_err(yaml);
            assert!(got.starts_with(want), "{yaml}\n  got: {got}");
        }
        // TLS 1.3 allowed: a 1.2 list with nothing implemented still leaves 1.3.
        assert!(build(
            "{tls_maximum_protocol_version: TLSv1_3, cipher_suites: [AES128-GCM-SHA256]}",
            Side::Client
        )
        .is_ok());
    }
}
