//! TLS secrets: `static_resources.secrets` and what a `CommonTlsContext` takes from them. As in
//! Envoy, an `SdsSecretConfig` with a `name` alone names a static secret (a missing one refuses
//! the config), and a `combined_validation_context` is its `default_validation_context` with the
//! named secret's validation context merged over it (the secret's `trusted_ca` wins, SAN
//! matchers add up). A reference with `sds_config` names a secret from a discovery service:
//! `ads: {}` (the ADS stream) or a GRPC `api_config_source` to a static cluster (Istio's
//! `sds-grpc`); the xDS client places the ones it has among the static secrets (one namespace; a
//! name given twice is a duplicate), and holds back whatever needs one that has not arrived.
//! Any other secret source is refused naming its field, never loaded as plaintext.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    raw_cluster::{RawCommonTlsContext, RawTlsCertificate, RawValidationContext},
    raw_route::RawDataSource,
    ConfigError, FieldPath,
};
use crate::tls_common::SanMatchers;

/// `transport_sockets.tls.v3.Secret`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecret {
    name: Option<String>,
    /// The xDS client's stand-in for a secret that has not arrived over ADS (not a proto
    /// field: no proto JSON key starts with `@` but `@type`).
    #[serde(rename = "@pending")]
    pending: Option<Value>,
    tls_certificate: Option<RawTlsCertificate>,
    validation_context: Option<RawValidationContext>,
    session_ticket_keys: Option<Value>,
    generic_secret: Option<Value>,
}

/// `SdsSecretConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSdsSecretConfig {
    name: Option<String>,
    sds_config: Option<Value>,
}

/// `CommonTlsContext.CombinedCertificateValidationContext`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCombinedValidationContext {
    default_validation_context: Option<RawValidationContext>,
    validation_context_sds_secret_config: Option<RawSdsSecretConfig>,
    custom_validator_config: Option<Value>,
}

pub(crate) use crate::tls_common::params::RawTlsParams;

/// Where a secret named with `sds_config` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `ads: {}`: the ADS stream.
    Ads,
    /// `api_config_source` (GRPC, one `envoy_grpc` service): an SDS stream to this static
    /// cluster (Istio's `sds-grpc`, pilot-agent's SDS server).
    Cluster(String),
}

/// An `sds_config` (at `p`): `ads: {}`, or an `api_config_source` of `api_type: GRPC` with one
/// `envoy_grpc` service (with `resource_api_version` V3 and `initial_fetch_timeout`); any other
/// source is refused naming its field.
pub(crate) fn secret_source(source: &Value, p: &FieldPath) -> Result<SecretSource, ConfigError> {
    let Some(m) = source.as_object() else {
        return Err(p.err("must be a ConfigSource"));
    };
    if let Some(k) = m.keys().find(|k| {
        !matches!(
            k.as_str(),
            "ads" | "api_config_source" | "resource_api_version" | "initial_fetch_timeout"
        )
    }) {
        return Err(p.field(k).unsupported(
            "secrets from this kind of source (ADS, or a GRPC api_config_source to a static cluster)",
        ));
    }
    if let Some(o) = m.get("resource_api_version").and_then(Value::as_str) {
        if o != "V3" {
            return Err(p
                .field("resource_api_version")
                .unsupported(&format!("{o}; only V3")));
        }
    }
    match (m.get("ads"), m.get("api_config_source")) {
        (Some(_), None) => Ok(SecretSource::Ads),
        (None, Some(api)) => {
            let ap = p.field("api_config_source");
            let raw: super::raw_dynamic::RawApiConfigSource =
                serde_path_to_error::deserialize(api.clone())
                    .map_err(|e| ap.join_serde(e.path()).err(e.inner().to_string()))?;
            match raw.api_type.as_deref() {
                Some("GRPC") => {}
                Some(o) => {
                    return Err(ap
                        .field("api_type")
                        .unsupported(&format!("{o} for secrets (GRPC)")))
                }
                None => return Err(ap.field("api_type").err("required")),
            }
            if let Some(v) = raw.transport_api_version.as_deref().filter(|v| *v != "V3") {
                return Err(ap
                    .field("transport_api_version")
                    .unsupported(&format!("{v}; only V3")));
            }
            let gp = ap.field("grpc_services");
            let [svc] = raw.grpc_services.as_slice() else {
                return Err(gp.err("exactly one entry is supported"));
            };
            let gp = gp.index(0);
            if svc.google_grpc.is_some() {
                return Err(gp
                    .field("google_grpc")
                    .unsupported("for secrets (envoy_grpc)"));
            }
            if !svc.initial_metadata.is_empty() {
                return Err(gp
                    .field("initial_metadata")
                    .unsupported("for a secret stream"));
            }
            svc.envoy_grpc
                .as_ref()
                .and_then(|e| e.cluster_name.clone())
                .filter(|n| !n.is_empty())
                .map(SecretSource::Cluster)
                .ok_or_else(|| gp.field("envoy_grpc").field("cluster_name").err("required"))
        }
        (Some(_), Some(_)) => Err(p.err("only one of ads and api_config_source may be set")),
        (None, None) => Err(p.field("ads").err("required (or api_config_source)")),
    }
}

/// One static secret and where it is (errors in its material name that path).
#[derive(Debug)]
struct Secret {
    /// Not arrived (a stand-in): a context using it is not ready.
    pending: bool,
    tls_certificate: Option<RawTlsCertificate>,
    validation_context: Option<RawValidationContext>,
    path: FieldPath,
}

/// The bootstrap's static secrets by name.
#[derive(Debug, Default)]
pub(crate) struct Secrets(HashMap<String, Secret>);

/// What a TLS context uses, each with the path its fields are reported at.
#[derive(Debug, Default)]
pub(crate) struct Material {
    /// The certificate and key (`tls_certificates[0]` or the named secret's).
    pub certificate: Option<(RawTlsCertificate, FieldPath)>,
    /// The validation context, merged as described above.
    pub validation: Option<Validation>,
    /// A secret it names has not arrived (the xDS client's stand-in): the context is not ready,
    /// as Envoy's before its secrets are supplied; the rest is as far as it is known (to check).
    pub pending: Option<String>,
}

/// A (possibly merged) validation context.
#[derive(Debug, Default)]
pub(crate) struct Validation {
    /// `trusted_ca` and its path.
    pub trusted_ca: Option<(RawDataSource, FieldPath)>,
    /// The contexts whose SAN matchers apply, in order, each at its path.
    pub sans: Vec<(RawValidationContext, FieldPath)>,
}

impl Validation {
    fn of(v: &RawValidationContext, p: FieldPath) -> Self {
        Self {
            trusted_ca: v.trusted_ca.clone().map(|ca| (ca, p.field("trusted_ca"))),
            sans: vec![(v.clone(), p)],
        }
    }

    /// The SAN matchers of every context, compiled at their own paths.
    pub(crate) fn san_matchers(&self) -> Result<SanMatchers, ConfigError> {
        let mut parts = Vec::with_capacity(self.sans.len());
        for (v, p) in &self.sans {
            parts.push(SanMatchers::build(
                &v.match_subject_alt_names,
                &v.match_typed_subject_alt_names,
                p,
            )?);
        }
        Ok(SanMatchers::concat(parts))
    }
}

impl Secrets {
    /// Compiles `static_resources.secrets` (at `p`).
    pub(crate) fn build(raw: Vec<RawSecret>, p: &FieldPath) -> Result<Self, ConfigError> {
        let mut out = HashMap::with_capacity(raw.len());
        for (i, s) in raw.into_iter().enumerate() {
            let sp = p.index(i);
            let name = s
                .name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| sp.field("name").err("required"))?;
            for (field, set) in [
                ("session_ticket_keys", s.session_ticket_keys.is_some()),
                ("generic_secret", s.generic_secret.is_some()),
            ] {
                if set {
                    return Err(sp.field(field).unsupported("this kind of secret"));
                }
            }
            let kinds = [s.tls_certificate.is_some(), s.validation_context.is_some()];
            match kinds.iter().filter(|k| **k).count() {
                0 if s.pending.is_some() => {}
                0 => {
                    return Err(sp.err("one of tls_certificate and validation_context is required"))
                }
                1 => {}
                _ => {
                    return Err(sp
                        .field("validation_context")
                        .err("only one of tls_certificate and validation_context may be set"))
                }
            }
            let secret = Secret {
                pending: s.pending.is_some(),
                tls_certificate: s.tls_certificate,
                validation_context: s.validation_context,
                path: sp.clone(),
            };
            if out.insert(name.clone(), secret).is_some() {
                return Err(sp
                    .field("name")
                    .err(format!("duplicate secret name {name:?}")));
            }
        }
        Ok(Self(out))
    }

    /// The secret `r` (at `p`) names: a static one, or (`sds_config: {ads: {}}`) one that came
    /// over ADS, which the xDS client places among the static ones once it has arrived.
    fn get(&self, r: &RawSdsSecretConfig, p: &FieldPath) -> Result<&Secret, ConfigError> {
        let source = match &r.sds_config {
            None => None,
            Some(s) => Some(secret_source(s, &p.field("sds_config"))?),
        };
        let name = r
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| p.field("name").err("required"))?;
        self.0.get(name).ok_or_else(|| {
            p.field("name").err(match &source {
                None => format!("no secret {name:?} in static_resources.secrets"),
                Some(SecretSource::Ads) => format!("secret {name:?} has not arrived over ADS"),
                Some(SecretSource::Cluster(c)) => {
                    format!("secret {name:?} has not arrived from cluster {c:?}")
                }
            })
        })
    }

    /// The certificate and validation context `ctx` (at `p`) uses.
    pub(crate) fn resolve(
        &self,
        ctx: &RawCommonTlsContext,
        p: &FieldPath,
    ) -> Result<Material, ConfigError> {
        let mut out = Material::default();
        let (tp, sp) = (
            p.field("tls_certificates"),
            p.field("tls_certificate_sds_secret_configs"),
        );
        match (
            ctx.tls_certificates.as_slice(),
            ctx.tls_certificate_sds_secret_configs.as_slice(),
        ) {
            ([], []) => {}
            ([c], []) => out.certificate = Some((c.clone(), tp.index(0))),
            ([], [r]) => {
                let rp = sp.index(0);
                let s = self.get(r, &rp)?;
                if s.pending {
                    // The rest is still checked: what does not depend on the secret is refused
                    // now, not when the secret arrives.
                    out.pending = r.name.clone();
                } else {
                    let c = s.tls_certificate.as_ref().ok_or_else(|| {
                        rp.field("name")
                            .err("the secret it names has no tls_certificate")
                    })?;
                    out.certificate = Some((c.clone(), s.path.field("tls_certificate")));
                }
            }
            ([_, ..], [_, ..]) => return Err(sp.err(
                "only one of tls_certificates and tls_certificate_sds_secret_configs may be set",
            )),
            ([_, _, ..], []) => return Err(tp.index(1).unsupported("more than one certificate")),
            ([], [_, _, ..]) => return Err(sp.index(1).unsupported("more than one certificate")),
        }
        let set = [
            ctx.validation_context.is_some(),
            ctx.validation_context_sds_secret_config.is_some(),
            ctx.combined_validation_context.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(p.err(
                "only one of validation_context, validation_context_sds_secret_config and \
                 combined_validation_context may be set",
            ));
        }
        if let Some(v) = &ctx.validation_context {
            out.validation = Some(Validation::of(v, p.field("validation_context")));
        }
        if let Some(r) = &ctx.validation_context_sds_secret_config {
            let rp = p.field("validation_context_sds_secret_config");
            match self.validation_secret(r, &rp)? {
                Some((v, vp)) => out.validation = Some(Validation::of(v, vp)),
                None => out.pending = r.name.clone(),
            }
        }
        if let Some(c) = &ctx.combined_validation_context {
            let cp = p.field("combined_validation_context");
            if c.custom_validator_config.is_some() {
                return Err(cp
                    .field("custom_validator_config")
                    .unsupported("custom certificate validators"));
            }
            let rp = cp.field("validation_context_sds_secret_config");
            let r = c
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| rp.err("required"))?;
            let mut merged = match &c.default_validation_context {
                Some(d) => Validation::of(d, cp.field("default_validation_context")),
                None => Validation::default(),
            };
            match self.validation_secret(r, &rp)? {
                Some((dynamic, path)) => {
                    let dynamic = Validation::of(dynamic, path);
                    if dynamic.trusted_ca.is_some() {
                        merged.trusted_ca = dynamic.trusted_ca;
                    }
                    merged.sans.extend(dynamic.sans);
                }
                // The default context alone, so it is checked now.
                None => out.pending = r.name.clone(),
            }
            out.validation = Some(merged);
        }
        Ok(out)
    }

    /// The validation context of the secret `r` (at `p`) names.
    fn validation_secret(
        &self,
        r: &RawSdsSecretConfig,
        p: &FieldPath,
    ) -> Result<Option<(&RawValidationContext, FieldPath)>, ConfigError> {
        let s = self.get(r, p)?;
        if s.pending {
            return Ok(None);
        }
        let v = s.validation_context.as_ref().ok_or_else(|| {
            p.field("name")
                .err("the secret it names has no validation_context")
        })?;
        Ok(Some((v, s.path.field("validation_context"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(yaml: &str) -> Secrets {
        let raw: Vec<RawSecret> = serde_norway::from_str(yaml).expect("yaml");
        Secrets::build(raw, &FieldPath::root().field("secrets")).expect("secrets")
    }

    fn ctx(yaml: &str) -> RawCommonTlsContext {
        serde_norway::from_str(yaml).expect("yaml")
    }

    const SECRETS: &str = "[{name: cert, tls_certificate: {certificate_chain: {inline_string: C}, private_key: {inline_string: K}}}, {name: ca, validation_context: {trusted_ca: {inline_string: CA}, match_subject_alt_names: [{exact: b}]}}]";

    #[test]
    fn names_resolve_to_static_secrets_and_combined_contexts_merge() {
        let s = secrets(SECRETS);
        let p = FieldPath::root().field("ctx");
        let m = s
            .resolve(&ctx("{tls_certificate_sds_secret_configs: [{name: cert}], validation_context_sds_secret_config: {name: ca}}"), &p)
            .unwrap();
        let (cert, cp) = m.certificate.unwrap();
        assert_eq!(
            cert.certificate_chain.unwrap().inline_string.as_deref(),
            Some("C")
        );
        assert_eq!(cp.to_string(), "secrets[0].tls_certificate");
        let v = m.validation.unwrap();
        let (ca, cap) = v.trusted_ca.unwrap();
        assert_eq!(ca.inline_string.as_deref(), Some("CA"));
        assert_eq!(cap.to_string(), "secrets[1].validation_context.trusted_ca");
        // Istio's shape: SAN matchers in the default, the CA from the secret.
        let m = s
            .resolve(&ctx("combined_validation_context: {default_validation_context: {match_subject_alt_names: [{prefix: a}], trusted_ca: {inline_string: OLD}}, validation_context_sds_secret_config: {name: ca}}"), &p)
            .unwrap();
        let v = m.validation.unwrap();
        assert_eq!(
            v.trusted_ca.as_ref().unwrap().0.inline_string.as_deref(),
            Some("CA")
        );
        let paths: Vec<_> = v.sans.iter().map(|(_, p)| p.to_string()).collect();
        assert_eq!(
            paths,
            [
                "ctx.combined_validation_context.default_validation_context",
                "secrets[1].validation_context"
            ]
        );
        assert_eq!(v.san_matchers().unwrap().iter().count(), 2);
        // A bad matcher in the default context is reported there.
        let e = s
            .resolve(&ctx("combined_validation_context: {default_validation_context: {match_typed_subject_alt_names: [{matcher: {exact: a}}]}, validation_context_sds_secret_config: {name: ca}}"), &p)
            .unwrap()
            .validation
            .unwrap()
            .san_matchers()
            .unwrap_err();
        assert_eq!(
            e.path(),
            "ctx.combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].san_type"
        );
    }

    #[test]
    fn a_pending_secret_makes_the_context_not_ready() {
        let s = secrets("[{name: default, \"@pending\": {}}, {name: ROOTCA, \"@pending\": {}}]");
        let p = FieldPath::root().field("ctx");
        for yaml in [
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}}}]",
            "validation_context_sds_secret_config: {name: ROOTCA, sds_config: {ads: {}}}",
            "combined_validation_context: {validation_context_sds_secret_config: {name: ROOTCA, sds_config: {ads: {}}}}",
        ] {
            let m = s.resolve(&ctx(yaml), &p).expect(yaml);
            assert!(m.pending.is_some() && m.certificate.is_none(), "{yaml}");
            assert!(m.validation.is_none_or(|v| v.trusted_ca.is_none()), "{yaml}");
        }
    }

    #[test]
    fn bad_references_name_the_field() {
        let s = secrets(SECRETS);
        let p = FieldPath::root().field("ctx");
        for (yaml, want) in [
            ("tls_certificate_sds_secret_configs: [{name: nope}]", "ctx.tls_certificate_sds_secret_configs[0].name: no secret \"nope\""),
            ("tls_certificate_sds_secret_configs: [{name: ca}]", "ctx.tls_certificate_sds_secret_configs[0].name: the secret it names has no tls_certificate"),
            ("tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}}}]", "ctx.tls_certificate_sds_secret_configs[0].name: secret \"default\" has not arrived over ADS"),
            ("tls_certificate_sds_secret_configs: [{name: default, sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}}]", "ctx.tls_certificate_sds_secret_configs[0].name: secret \"default\" has not arrived from cluster \"sds-grpc\""),
            ("tls_certificate_sds_secret_configs: [{name: default, sds_config: {api_config_source: {api_type: DELTA_GRPC, grpc_services: [{envoy_grpc: {cluster_name: s}}]}}}]", "ctx.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.api_type: not supported"),
            ("tls_certificate_sds_secret_configs: [{name: default, sds_config: {api_config_source: {api_type: GRPC}}}]", "ctx.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.grpc_services: exactly one"),
            ("tls_certificate_sds_secret_configs: [{name: default, sds_config: {path_config_source: {path: /x}}}]", "ctx.tls_certificate_sds_secret_configs[0].sds_config.path_config_source: not supported"),
            ("tls_certificate_sds_secret_configs: [{name: default, sds_config: {resource_api_version: V3}}]", "ctx.tls_certificate_sds_secret_configs[0].sds_config.ads: required"),
            ("validation_context_sds_secret_config: {name: cert}", "ctx.validation_context_sds_secret_config.name: the secret it names has no validation_context"),
            ("combined_validation_context: {default_validation_context: {}}", "ctx.combined_validation_context.validation_context_sds_secret_config: required"),
            ("{validation_context: {}, validation_context_sds_secret_config: {name: ca}}", "ctx: only one of validation_context"),
            ("{tls_certificates: [{}], tls_certificate_sds_secret_configs: [{name: cert}]}", "ctx.tls_certificate_sds_secret_configs: only one of"),
            ("tls_certificate_sds_secret_configs: [{}]", "ctx.tls_certificate_sds_secret_configs[0].name: required"),
        ] {
            let e = s.resolve(&ctx(yaml), &p).expect_err(yaml);
            let got = format!("{}: {}", e.path(), e.message());
            assert!(got.starts_with(want), "{yaml}\n  got:  {got}\n  want: {want}");
        }
        for (yaml, want) in [
            (
                "[{name: a, tls_certificate: {}}, {name: a, tls_certificate: {}}]",
                "secrets[1].name: duplicate secret name",
            ),
            ("[{tls_certificate: {}}]", "secrets[0].name: required"),
            (
                "[{name: a}]",
                "secrets[0]: one of tls_certificate and validation_context is required",
            ),
            (
                "[{name: a, generic_secret: {}}]",
                "secrets[0].generic_secret: not supported",
            ),
        ] {
            let raw: Vec<RawSecret> = serde_norway::from_str(yaml).expect("yaml");
            let e = Secrets::build(raw, &FieldPath::root().field("secrets")).expect_err(yaml);
            let got = format!("{}: {}", e.path(), e.message());
            assert!(
                got.starts_with(want),
                "{yaml}\n  got:  {got}\n  want: {want}"
            );
        }
    }
}
