//! Subject alternative name matching of a peer certificate, as Envoy's default certificate
//! validator does it: `match_subject_alt_names` matchers try every DNS, URI, email and IP SAN;
//! `match_typed_subject_alt_names` ones only the SANs of their `san_type`. The certificate is
//! accepted when one SAN matches one matcher (always, without matchers). A DNS SAN with a
//! wildcard in its first label (`*.example.com`, `api*.example.com`) matches an `exact` value
//! one label deep (`a.example.com`, `api-v1.example.com`); an IP SAN is compared in its text
//! form.

use std::net::IpAddr;

use serde::Deserialize;

use crate::config::{ConfigError, FieldPath};
use crate::route::StringMatcher;

/// `type.matcher.v3.SubjectAltNameMatcher`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSanMatcher {
    san_type: Option<String>,
    matcher: Option<crate::config::raw_route::RawStringMatcher>,
    oid: Option<String>,
}

/// The kinds of SAN a typed matcher names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    /// `DNS`.
    Dns,
    /// `URI`.
    Uri,
    /// `EMAIL`.
    Email,
    /// `IP_ADDRESS`.
    IpAddress,
}

/// One matcher: of one SAN type, or (`None`) of any of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SanMatcher {
    /// The SAN type it reads (`None`: DNS, URI, email and IP, `match_subject_alt_names`).
    pub san_type: Option<SanType>,
    /// The value matcher.
    pub matcher: StringMatcher,
}

/// A validation context's SAN matchers (empty: any name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SanMatchers(Vec<SanMatcher>);

impl SanMatchers {
    /// Compiles `match_subject_alt_names` (at `untyped`) and `match_typed_subject_alt_names`
    /// (at `typed`), in that order.
    pub(crate) fn build(
        untyped: &[crate::config::raw_route::RawStringMatcher],
        typed: &[RawSanMatcher],
        p: &FieldPath,
    ) -> Result<Self, ConfigError> {
        use crate::route::build_match::string_matcher;
        let mut out = Vec::with_capacity(untyped.len() + typed.len());
        for (i, m) in untyped.iter().enumerate() {
            let mp = p.field("match_subject_alt_names").index(i);
            out.push(SanMatcher {
                san_type: None,
                matcher: string_matcher(m, &mp)?,
            });
        }
        for (i, m) in typed.iter().enumerate() {
            let mp = p.field("match_typed_subject_alt_names").index(i);
            let san_type = match m.san_type.as_deref() {
                Some("DNS") => SanType::Dns,
                Some("URI") => SanType::Uri,
                Some("EMAIL") => SanType::Email,
                Some("IP_ADDRESS") => SanType::IpAddress,
                Some("OTHER_NAME") => {
                    return Err(mp.field("san_type").unsupported("OTHER_NAME SANs"))
                }
                None | Some("SAN_TYPE_UNSPECIFIED") => {
                    return Err(mp.field("san_type").err("required"))
                }
                Some(o) => return Err(mp.field("san_type").err(format!("unknown value {o:?}"))),
            };
            if m.oid.is_some() {
                return Err(mp.field("oid").unsupported("OTHER_NAME SANs"));
            }
            let raw = m
                .matcher
                .as_ref()
                .ok_or_else(|| mp.field("matcher").err("required"))?;
            out.push(SanMatcher {
                san_type: Some(san_type),
                matcher: string_matcher(raw, &mp.field("matcher"))?,
            });
        }
        Ok(Self(out))
    }

    /// `parts`' matchers one after the other.
    pub fn concat(parts: Vec<SanMatchers>) -> Self {
        Self(parts.into_iter().flat_map(|p| p.0).collect())
    }

    /// No matcher: any name is accepted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The matchers, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &SanMatcher> {
        self.0.iter()
    }

    /// Whether the DER certificate `der` has a SAN one of the matchers accepts (true without
    /// matchers; false for a certificate that cannot be read).
    pub fn accepts(&self, der: &[u8]) -> bool {
        if self.0.is_empty() {
            return true;
        }
        any_san(der, |ty, value| {
            self.0
                .iter()
                .filter(|m| m.san_type.is_none_or(|t| t == ty))
                .any(|m| match (&m.matcher, ty) {
                    (StringMatcher::Exact { value: want, .. }, SanType::Dns) => {
                        dns_name_match(want, value)
                    }
                    (other, _) => other.matches(value),
                })
        })
    }
}

/// Whether the DER certificate `der` has a SAN naming `name` (Envoy's `verifySubjectAltName`,
/// the check of `auto_san_validation`): a DNS SAN matching it as [`dns_name_match`] does, or
/// a URI or IP SAN equal to it. False for a certificate that cannot be read.
pub fn has_name(der: &[u8], name: &str) -> bool {
    any_san(der, |ty, value| match ty {
        SanType::Dns => dns_name_match(name, value),
        SanType::Uri | SanType::IpAddress => value == name,
        SanType::Email => false,
    })
}

/// Whether `f` holds for one of the DNS, URI, email or IP SANs (IPs as text) of the DER
/// certificate `der`; false for a certificate that cannot be read or has none.
fn any_san(der: &[u8], mut f: impl FnMut(SanType, &str) -> bool) -> bool {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|n| match n {
        GeneralName::DNSName(d) => f(SanType::Dns, d),
        GeneralName::URI(u) => f(SanType::Uri, u),
        GeneralName::RFC822Name(e) => f(SanType::Email, e),
        GeneralName::IPAddress(b) => ip_text(b).is_some_and(|t| f(SanType::IpAddress, &t)),
        _ => false,
    })
}

/// An IP SAN's 4 or 16 bytes as text.
fn ip_text(b: &[u8]) -> Option<String> {
    Some(match b.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(b).ok()?).to_string(),
        16 => IpAddr::from(<[u8; 16]>::try_from(b).ok()?).to_string(),
        _ => return None,
    })
}

/// Envoy's `dnsNameMatch`: `name` (configured) equals the certificate's `pattern` ignoring
/// case, or `pattern`'s first label holds one `*` (the whole label, or a partial `api*` /
/// `*-v1`, which never matches an IDN `xn--` label) matching exactly one label of `name` in
/// front of the same rest.
fn dns_name_match(name: &str, pattern: &str) -> bool {
    if name.eq_ignore_ascii_case(pattern) {
        return true;
    }
    let (Some((p_first, p_rest)), Some((n_first, n_rest))) =
        (pattern.split_once('.'), name.split_once('.'))
    else {
        return false;
    };
    let Some((pre, suf)) = p_first.split_once('*') else {
        return false;
    };
    if suf.contains('*') || n_first.is_empty() || !n_rest.eq_ignore_ascii_case(p_rest) {
        return false;
    }
    if p_first == "*" {
        return true;
    }
    let idn = n_first.len() >= 4 && n_first[..4].eq_ignore_ascii_case("xn--");
    !idn && n_first.len() >= pre.len() + suf.len()
        && n_first[..pre.len()].eq_ignore_ascii_case(pre)
        && n_first[n_first.len() - suf.len()..].eq_ignore_ascii_case(suf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn matchers(yaml: &str) -> SanMatchers {
        #[derive(Deserialize)]
        struct Vc {
            #[serde(default)]
            match_subject_alt_names: Vec<crate::config::raw_route::RawStringMatcher>,
            #[serde(default)]
            match_typed_subject_alt_names: Vec<RawSanMatcher>,
        }
        let vc: Vc = serde_norway::from_str(yaml).expect("yaml");
        SanMatchers::build(
            &vc.match_subject_alt_names,
            &vc.match_typed_subject_alt_names,
            &FieldPath::root(),
        )
        .expect("build")
    }

    #[test]
    fn untyped_matchers_try_every_kind_and_typed_ones_their_own() {
        use rcgen::{Ia5String, SanType as S};
        let der = cert(vec![
            S::DnsName(Ia5String::try_from("*.svc.example").unwrap()),
            S::URI(Ia5String::try_from("spiffe://cluster.local/ns/a/sa/b").unwrap()),
            S::IpAddress("10.0.0.7".parse().unwrap()),
            S::Rfc822Name(Ia5String::try_from("ops@example.com").unwrap()),
        ]);
        for (yaml, want) in [
            ("{}", true),
            ("match_subject_alt_names: [{exact: spiffe://cluster.local/ns/a/sa/b}]", true),
            ("match_subject_alt_names: [{prefix: spiffe://cluster.local/}]", true),
            ("match_subject_alt_names: [{exact: spiffe://cluster.local/ns/a/sa/c}]", false),
            ("match_subject_alt_names: [{exact: web.svc.example}]", true),
            ("match_subject_alt_names: [{exact: a.web.svc.example}]", false),
            ("match_subject_alt_names: [{exact: svc.example}]", false),
            ("match_subject_alt_names: [{exact: 10.0.0.7}]", true),
            ("match_subject_alt_names: [{exact: ops@example.com}]", true),
            ("match_subject_alt_names: [{suffix: .svc.example}]", true),
            ("match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: x.svc.example}}]", true),
            ("match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: x.svc.example}}]", false),
            ("match_typed_subject_alt_names: [{san_type: IP_ADDRESS, matcher: {exact: 10.0.0.7}}]", true),
            ("match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: 10.0.0.7}}]", false),
            ("match_typed_subject_alt_names: [{san_type: EMAIL, matcher: {contains: \"@\"}}]", true),
            ("{match_subject_alt_names: [{exact: nope}], match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: \"spiffe://\"}}]}", true),
        ] {
            assert_eq!(matchers(yaml).accepts(&der), want, "{yaml}");
        }
        assert!(!matchers("match_subject_alt_names: [{exact: x}]").accepts(b"not a certificate"));
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(dns_name_match("api-v1.example.com", "api*.example.com"));
        assert!(dns_name_match("a-v1.example.com", "*-v1.example.com"));
        assert!(!dns_name_match("xn--api.example.com", "xn*.example.com"));
        assert!(!dns_name_match("web.example.com", "api*.example.com"));
        assert!(!dns_name_match("api.b.example.com", "api*.example.com"));
        assert!(dns_name_match("a.example.com", "*.example.com"));
        assert!(dns_name_match("A.Example.com", "*.example.COM"));
        assert!(!dns_name_match("example.com", "*.example.com"));
        assert!(!dns_name_match("a.b.example.com", "*.example.com"));
        assert!(!dns_name_match(".example.com", "*.example.com"));
        assert!(dns_name_match("example.com", "example.com"));
    }

    #[test]
    fn bad_typed_matchers_name_the_field() {
        #[derive(Deserialize)]
        struct Vc {
            match_typed_subject_alt_names: Vec<RawSanMatcher>,
        }
        for (yaml, want) in [
            (
                "match_typed_subject_alt_names: [{matcher: {exact: x}}]",
                "match_typed_subject_alt_names[0].san_type: required",
            ),
            (
                "match_typed_subject_alt_names: [{san_type: DNS}]",
                "match_typed_subject_alt_names[0].matcher: required",
            ),
            (
                "match_typed_subject_alt_names: [{san_type: OTHER_NAME, matcher: {exact: x}}]",
                "match_typed_subject_alt_names[0].san_type: not supported",
            ),
            (
                "match_typed_subject_alt_names: [{san_type: XYZ, matcher: {exact: x}}]",
                "match_typed_subject_alt_names[0].san_type: unknown value",
            ),
        ] {
            let vc: Vc = serde_norway::from_str(yaml).expect("yaml");
            let e = SanMatchers::build(&[], &vc.match_typed_subject_alt_names, &FieldPath::root())
                .expect_err(yaml);
            let got = format!("{}: {}", e.path(), e.message());
            assert!(got.starts_with(want), "{yaml}\n  got: {got}");
        }
    }
}
