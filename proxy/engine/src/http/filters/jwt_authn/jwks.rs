//! A provider's JSON Web Key Set (`local_jwks`) and signature verification with it, as Envoy's
//! `verifyJwtWithoutTimeChecking`: a key is tried when its `kid` (if both have one) and `alg`
//! (if it has one) agree with the token's, and of the right type for the token's `alg`.
//! Keys are parsed once at config load; `ring` verifies.

use base64::Engine as _;
use ring::{hmac, signature};
use serde_json::Value;

use super::token::{Jwt, Status, B64URL};

/// One usable key.
#[derive(Debug)]
struct Key {
    kid: Option<String>,
    alg: Option<String>,
    material: Material,
}

#[derive(Debug)]
enum Material {
    /// `kty: RSA`: modulus and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// `kty: EC`, P-256 or P-384: the uncompressed point.
    Ec { curve: &'static str, point: Vec<u8> },
    /// `kty: oct`: an HMAC secret.
    Oct(Vec<u8>),
    /// `kty: OKP`, Ed25519.
    Ed25519(Vec<u8>),
}

/// A key set.
#[derive(Debug)]
pub struct Jwks(Vec<Key>);

impl Jwks {
    /// Parses a JWKS document: keys of a type or curve not verifiable here (P-521) are skipped,
    /// as Envoy skips invalid ones; an error when it is not a JWKS or no key is usable.
    pub fn parse(text: &str) -> Result<Jwks, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWKS (no \"keys\" list); PEM keys are not supported")?;
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match key(k) {
                Ok(key) => out.push(key),
                Err(e) => skipped.push(format!("keys[{i}]: {e}")),
            }
        }
        if out.is_empty() {
            return Err(format!("no usable key ({})", skipped.join("; ")));
        }
        Ok(Jwks(out))
    }

    /// Verifies the token's signature with a matching key.
    pub fn verify(&self, jwt: &Jwt<'_>) -> Status {
        let mut matched = false;
        let kid = jwt.kid.as_deref().filter(|k| !k.is_empty());
        for k in &self.0 {
            if let (Some(t), Some(kk)) = (kid, k.kid.as_deref()) {
                if t != kk {
                    continue;
                }
            }
            if k.alg.as_deref().is_some_and(|a| a != jwt.alg) {
                continue;
            }
            // Envoy's verifyJwtWithoutTimeChecking: a key that passed the kid and alg filter
            // makes a failure a verification failure, whatever its type.
            matched = true;
            let ok = match (&k.material, jwt.alg.as_str()) {
                (Material::Rsa { n, e }, alg) => rsa_params(alg).is_some_and(|params| {
                    signature::RsaPublicKeyComponents { n, e }
                        .verify(params, jwt.signed.as_bytes(), &jwt.signature)
                        .is_ok()
                }),
                (Material::Ec { curve, point }, alg) => {
                    let params: &dyn signature::VerificationAlgorithm = match (alg, *curve) {
                        ("ES256", "P-256") => &signature::ECDSA_P256_SHA256_FIXED,
                        ("ES384", "P-384") => &signature::ECDSA_P384_SHA384_FIXED,
                        _ => continue,
                    };
                    signature::UnparsedPublicKey::new(params, point)
                        .verify(jwt.signed.as_bytes(), &jwt.signature)
                        .is_ok()
                }
                (Material::Oct(secret), alg) => {
                    let a = match alg {
                        "HS256" => hmac::HMAC_SHA256,
                        "HS384" => hmac::HMAC_SHA384,
                        "HS512" => hmac::HMAC_SHA512,
                        _ => continue,
                    };
                    hmac::verify(
                        &hmac::Key::new(a, secret),
                        jwt.signed.as_bytes(),
                        &jwt.signature,
                    )
                    .is_ok()
                }
                (Material::Ed25519(x), "EdDSA") => {
                    signature::UnparsedPublicKey::new(&signature::ED25519, x)
                        .verify(jwt.signed.as_bytes(), &jwt.signature)
                        .is_ok()
                }
                _ => continue,
            };
            if ok {
                return Status::Ok;
            }
        }
        if matched {
            Status::VerificationFail
        } else {
            Status::KidAlgMismatch
        }
    }
}

fn rsa_params(alg: &str) -> Option<&'static signature::RsaParameters> {
    Some(match alg {
        // BoringSSL takes 1024-bit keys too; ring does for SHA-256 and SHA-512.
        "RS256" => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
        "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
        "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// One key as Envoy's `Jwks::createFrom` takes it: an `alg` that does not fit the key type,
/// an RSA exponent other than 3 or 65537, an EC `alg` and `crv` that disagree, an empty
/// secret are refused (the key is skipped). Empty `kid` / `alg` count as absent.
fn key(k: &Value) -> Result<Key, String> {
    let s = |f: &str| k.get(f).and_then(Value::as_str).filter(|v| !v.is_empty());
    let b = |f: &str| -> Result<Vec<u8>, String> {
        let v = s(f).ok_or_else(|| format!("\"{f}\" is required"))?;
        B64URL
            .decode(v)
            .map_err(|_| format!("\"{f}\" is not base64url"))
    };
    let kty = s("kty").ok_or("\"kty\" is required")?;
    let alg = s("alg");
    let fits = |prefixes: &[&str]| alg.is_none_or(|a| prefixes.iter().any(|p| a.starts_with(p)));
    let material = match kty {
        "RSA" => {
            if !fits(&["RS", "PS"]) {
                return Err(format!("alg {alg:?} does not fit an RSA key"));
            }
            let mut n = b("n")?;
            let e = b("e")?;
            if e != [3] && e != [1, 0, 1] {
                return Err("the RSA exponent is neither 3 nor 65537".into());
            }
            let zeros = n.iter().take_while(|b| **b == 0).count();
            n.drain(..zeros.min(n.len().saturating_sub(1)));
            Material::Rsa { n, e }
        }
        "EC" => {
            if !fits(&["ES"]) {
                return Err(format!("alg {alg:?} does not fit an EC key"));
            }
            let by_alg = match alg {
                Some("ES256") => Some("P-256"),
                Some("ES384") => Some("P-384"),
                Some("ES512") => Some("P-521"),
                _ => None,
            };
            let curve = match (s("crv"), by_alg) {
                (Some(c), Some(a)) if c != a => {
                    return Err(format!("curve {c:?} does not fit alg {alg:?}"))
                }
                (Some(c), _) => c,
                (None, Some(a)) => a,
                (None, None) => "P-256",
            };
            let curve = match curve {
                "P-256" => "P-256",
                "P-384" => "P-384",
                c => return Err(format!("curve {c:?} not supported here (P-256, P-384)")),
            };
            let mut point = vec![4];
            point.extend(b("x")?);
            point.extend(b("y")?);
            Material::Ec { curve, point }
        }
        "oct" => {
            if !fits(&["HS"]) {
                return Err(format!("alg {alg:?} does not fit an oct key"));
            }
            Material::Oct(b("k")?)
        }
        "OKP" => {
            if !fits(&["EdDSA"]) {
                return Err(format!("alg {alg:?} does not fit an OKP key"));
            }
            match s("crv") {
                Some("Ed25519") => Material::Ed25519(b("x")?),
                c => return Err(format!("OKP curve {c:?} not supported (Ed25519)")),
            }
        }
        other => return Err(format!("key type {other:?} not supported")),
    };
    Ok(Key {
        kid: s("kid").map(str::to_string),
        alg: alg.map(str::to_string),
        material,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_keys_verify_and_a_wrong_kid_or_secret_is_named() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let jwks = Jwks::parse(&format!(
            r#"{{"keys":[{{"kty":"oct","kid":"a","k":"{}"}}]}}"#,
            B64URL.encode(secret)
        ))
        .unwrap();
        let h = B64URL.encode(r#"{"alg":"HS256","kid":"a"}"#);
        let p = B64URL.encode(r#"{"iss":"x"}"#);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            format!("{h}.{p}").as_bytes(),
        );
        let good = format!("{h}.{p}.{}", B64URL.encode(tag.as_ref()));
        assert_eq!(jwks.verify(&Jwt::parse(&good).unwrap()), Status::Ok);
        let bad = format!("{h}.{p}.{}", B64URL.encode(b"nope"));
        assert_eq!(
            jwks.verify(&Jwt::parse(&bad).unwrap()),
            Status::VerificationFail
        );
        let other_kid = B64URL.encode(r#"{"alg":"HS256","kid":"b"}"#);
        let t = format!("{other_kid}.{p}.{}", B64URL.encode(tag.as_ref()));
        assert_eq!(
            jwks.verify(&Jwt::parse(&t).unwrap()),
            Status::KidAlgMismatch
        );
        assert!(Jwks::parse("{}").is_err());
        assert!(
            Jwks::parse(r#"{"keys":[{"kty":"oct","k":""}]}"#).is_err(),
            "no empty secret"
        );
        assert!(Jwks::parse(r#"{"keys":[{"kty":"oct","alg":"RS256","k":"AA"}]}"#).is_err());
        assert!(
            Jwks::parse(r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}"#)
                .unwrap_err()
                .contains("P-521")
        );
    }
}
