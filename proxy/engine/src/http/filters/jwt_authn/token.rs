//! One JWT as Envoy's jwt_authn filter reads it (its `jwt_verify_lib`): the three base64url
//! sections, the header's `alg` / `kid`, the payload's registered claims, the time and audience
//! checks, and the status names Envoy answers with.

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use serde_json::{Map, Value};

/// base64url with or without padding, as Envoy's `WebSafeBase64Unescape`.
pub(super) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why a token was refused (`google::jwt_verify::Status`), with Envoy's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Missed,
    NotYetValid,
    Expired,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    HeaderNotImplementedAlg,
    HeaderBadKid,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    IatNotInteger,
    NbfNotInteger,
    ExpNotInteger,
    IatOutOfRange,
    NbfOutOfRange,
    ExpOutOfRange,
    JtiNotString,
    AudNotString,
    SignatureBadBase64,
    UnknownIssuer,
    AudienceNotAllowed,
    VerificationFail,
    KidAlgMismatch,
    JwksFetchFail,
    /// Not Envoy's: a provider's remote key set is not fetched yet (the check runs again once
    /// it is).
    JwksPending,
}

impl Status {
    /// The body of the local reply (`getStatusString`).
    pub fn message(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Missed => "Jwt is missing",
            Status::NotYetValid => "Jwt not yet valid",
            Status::Expired => "Jwt is expired",
            Status::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Status::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            Status::HeaderBadJson => "Jwt header is an invalid JSON",
            Status::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Status::HeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            Status::HeaderBadKid => "Jwt header [kid] field is not a string",
            Status::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Status::PayloadBadJson => "Jwt payload is an invalid JSON",
            Status::IssNotString => "Jwt payload [iss] field is not a string",
            Status::SubNotString => "Jwt payload [sub] field is not a string",
            Status::IatNotInteger => "Jwt payload [iat] field is not an integer",
            Status::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            Status::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            Status::IatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            Status::NbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            Status::ExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            Status::JtiNotString => "Jwt payload [jti] field is not a string",
            Status::AudNotString => "Jwt payload [aud] field is not a string or string list",
            Status::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Status::UnknownIssuer => "Jwt issuer is not configured",
            Status::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Status::VerificationFail => "Jwt verification fails",
            Status::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Status::JwksFetchFail | Status::JwksPending => "Jwks remote fetch is failed",
        }
    }
}

/// The algorithms Envoy's jwt_authn implements.
const ALGS: [&str; 13] = [
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
    "PS384", "PS512", "EdDSA",
];

/// A parsed (not yet verified) token.
#[derive(Debug)]
pub struct Jwt<'t> {
    /// `<header>.<payload>`, the signed bytes.
    pub signed: String,
    /// The payload section as sent (base64url), for `forward_payload_header`.
    pub payload_b64: &'t str,
    pub alg: String,
    pub kid: Option<String>,
    pub header: Map<String, Value>,
    pub payload: Map<String, Value>,
    pub iss: String,
    /// `sub` (empty when absent).
    pub sub: String,
    pub audiences: Vec<String>,
    pub nbf: u64,
    pub exp: u64,
    pub signature: Vec<u8>,
}

impl<'t> Jwt<'t> {
    /// Envoy's `Jwt::parseFromString`.
    pub fn parse(token: &'t str) -> Result<Jwt<'t>, Status> {
        let parts: Vec<&str> = token.split('.').filter(|s| !s.is_empty()).collect();
        let [h, p, s] = parts[..] else {
            return Err(Status::BadFormat);
        };
        let header = object(h, Status::HeaderBadBase64, Status::HeaderBadJson)?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => a.clone(),
            _ => return Err(Status::HeaderBadAlg),
        };
        if !ALGS.contains(&alg.as_str()) {
            return Err(Status::HeaderNotImplementedAlg);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(Status::HeaderBadKid),
        };
        let payload = object(p, Status::PayloadBadBase64, Status::PayloadBadJson)?;
        let iss = string_claim(&payload, "iss", Status::IssNotString)?.unwrap_or_default();
        let sub = string_claim(&payload, "sub", Status::SubNotString)?.unwrap_or_default();
        int_claim(
            &payload,
            "iat",
            Status::IatNotInteger,
            Status::IatOutOfRange,
        )?;
        let nbf = int_claim(
            &payload,
            "nbf",
            Status::NbfNotInteger,
            Status::NbfOutOfRange,
        )?;
        let exp = int_claim(
            &payload,
            "exp",
            Status::ExpNotInteger,
            Status::ExpOutOfRange,
        )?;
        string_claim(&payload, "jti", Status::JtiNotString)?;
        let audiences = match payload.get("aud") {
            None => Vec::new(),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(l)) => l
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(Status::AudNotString)?,
            Some(_) => return Err(Status::AudNotString),
        };
        let signature = B64URL.decode(s).map_err(|_| Status::SignatureBadBase64)?;
        Ok(Jwt {
            signed: format!("{h}.{p}"),
            payload_b64: p,
            alg,
            kid,
            header,
            payload,
            iss,
            sub,
            audiences,
            nbf,
            exp,
            signature,
        })
    }

    /// `verifyTimeConstraint`: not before `nbf`, not after `exp`, both with `skew` seconds.
    pub fn check_time(&self, now: u64, skew: u64) -> Status {
        if now.saturating_add(skew) < self.nbf {
            return Status::NotYetValid;
        }
        if self.exp != 0 && now > self.exp.saturating_add(skew) {
            return Status::Expired;
        }
        Status::Ok
    }
}

fn object(s: &str, bad_b64: Status, bad_json: Status) -> Result<Map<String, Value>, Status> {
    let bytes = B64URL.decode(s).map_err(|_| bad_b64)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad_json),
    }
}

fn string_claim(m: &Map<String, Value>, k: &str, bad: Status) -> Result<Option<String>, Status> {
    match m.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad),
    }
}

/// An integer claim (0 when absent), as Envoy's `GetUInt64` reads it: a JSON number taken as
/// a double, negative or 2^64 and above out of range, a fraction cut off.
fn int_claim(
    m: &Map<String, Value>,
    k: &str,
    not_number: Status,
    out_of_range: Status,
) -> Result<u64, Status> {
    match m.get(k) {
        None => Ok(0),
        Some(v) => {
            let f = v.as_f64().ok_or(not_number)?;
            if !(0.0..18_446_744_073_709_551_616.0).contains(&f) {
                return Err(out_of_range);
            }
            Ok(f as u64)
        }
    }
}

/// The provider's (or requirement's) `audiences`, as Envoy's `CheckAudience` compares them:
/// without an `http://` / `https://` scheme and a trailing `/`.
#[derive(Debug, Clone, Default)]
pub struct Audiences(Vec<String>);

impl Audiences {
    pub fn new(list: &[String]) -> Audiences {
        Audiences(list.iter().map(|a| sanitize(a).to_string()).collect())
    }

    /// Whether a token with `aud` may pass: any audience when none is configured.
    pub fn allows(&self, aud: &[String]) -> bool {
        self.0.is_empty() || aud.iter().any(|a| self.0.iter().any(|c| c == sanitize(a)))
    }
}

fn sanitize(a: &str) -> &str {
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        B64URL.encode(v)
    }

    #[test]
    fn a_token_is_parsed_and_its_faults_named_as_envoy_names_them() {
        let h = enc(r#"{"alg":"RS256","kid":"k1"}"#);
        let p = enc(r#"{"iss":"i","aud":["a","b"],"exp":100,"nbf":10}"#);
        let t = format!("{h}.{p}.{}", enc("sig"));
        let j = Jwt::parse(&t).unwrap();
        assert_eq!((j.alg.as_str(), j.kid.as_deref()), ("RS256", Some("k1")));
        assert_eq!(j.audiences, ["a", "b"]);
        assert_eq!(j.signed, format!("{h}.{p}"));
        assert_eq!(j.check_time(50, 0), Status::Ok);
        assert_eq!(j.check_time(161, 60), Status::Expired);
        assert_eq!(j.check_time(160, 60), Status::Ok);
        assert_eq!(j.check_time(0, 5), Status::NotYetValid);
        assert_eq!(Jwt::parse("a.b").unwrap_err(), Status::BadFormat);
        assert_eq!(Jwt::parse("a..b").unwrap_err(), Status::BadFormat);
        assert_eq!(
            Jwt::parse(&format!("{}.{p}.x", enc(r#"{"alg":"none"}"#))).unwrap_err(),
            Status::HeaderNotImplementedAlg
        );
        assert_eq!(
            Jwt::parse(&format!("{h}.{}.x", enc(r#"{"exp":"soon"}"#))).unwrap_err(),
            Status::ExpNotInteger
        );
        assert_eq!(
            Jwt::parse(&format!("{h}.{}.x", enc(r#"{"exp":-1}"#))).unwrap_err(),
            Status::ExpOutOfRange
        );
        assert_eq!(
            Jwt::parse(&format!("{h}.{}.x", enc(r#"{"exp":1e30}"#))).unwrap_err(),
            Status::ExpOutOfRange
        );
        let huge = format!(
            "{h}.{}.{}",
            enc(r#"{"exp":18446744073709551615,"nbf":18446744073709551615.0}"#),
            enc("s")
        );
        let huge = Jwt::parse(&huge);
        assert!(huge.is_err() || huge.unwrap().check_time(u64::MAX, 60) != Status::Ok);
        let cut = format!("{h}.{}.{}", enc(r#"{"exp":100.9}"#), enc("s"));
        assert_eq!(Jwt::parse(&cut).unwrap().exp, 100);
        assert_eq!(Jwt::parse("!.b.c").unwrap_err(), Status::HeaderBadBase64);
        for s in [Status::Missed, Status::KidAlgMismatch, Status::BadFormat] {
            let mut out = String::new();
            crate::http::access_log::ResponseDetails::JwtDenied(s.message().into()).push(&mut out);
            assert_eq!(
                out,
                format!(
                    "jwt_authn_access_denied{{{}}}",
                    s.message().replace(' ', "_")
                )
            );
        }
    }

    #[test]
    fn audiences_compare_without_scheme_and_trailing_slash() {
        let a = Audiences::new(&["https://svc.example/".to_string()]);
        assert!(a.allows(&["svc.example".to_string()]));
        assert!(a.allows(&["http://svc.example".to_string()]));
        assert!(!a.allows(&["other".to_string()]));
        assert!(Audiences::default().allows(&[]));
    }
}
