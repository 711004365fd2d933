//! Compiles `config.rbac.v3.RBAC` into an [`Engine`], with Envoy's validation (a policy needs a
//! permission and a principal, a set a member, `any` must be true, a rule exactly one field);
//! refused fields are named with the reason.

use super::{
    raw::{RawPathMatcher, RawPermission, RawPrincipal, RawRbac},
    Action, Engine, Permission, Policy, Principal,
};
use crate::{
    config::{validate_chain::cidr, ConfigError, FieldPath},
    http::filters::metadata,
    route::{
        build_match::{header_matcher, string_matcher},
        StringMatcher,
    },
};

/// A filter's `rules` and `shadow_rules` (each at its field of `p`, checked first by
/// `extra`), with its `matcher` / `shadow_matcher` refused.
pub(crate) fn engines(
    rules: Option<&RawRbac>,
    shadow_rules: Option<&RawRbac>,
    matchers: [Option<&serde_json::Value>; 2],
    p: &FieldPath,
    extra: fn(&RawRbac, &FieldPath) -> Result<(), ConfigError>,
) -> Result<(Option<Engine>, Option<Engine>), ConfigError> {
    for (field, set) in ["matcher", "shadow_matcher"].into_iter().zip(matchers) {
        if set.is_some() {
            return Err(p
                .field(field)
                .unsupported("the matcher API for RBAC (use rules / shadow_rules)"));
        }
    }
    let one = |r: Option<&RawRbac>, f: &str| {
        r.map(|r| {
            extra(r, &p.field(f))?;
            engine(r, &p.field(f))
        })
        .transpose()
    };
    Ok((one(rules, "rules")?, one(shadow_rules, "shadow_rules")?))
}

/// The engine of `raw` at `p`.
pub(crate) fn engine(raw: &RawRbac, p: &FieldPath) -> Result<Engine, ConfigError> {
    if raw.audit_logging_options.is_some() {
        return Err(p
            .field("audit_logging_options")
            .unsupported("RBAC audit loggers (no audit logger extension here)"));
    }
    let action = match raw.action.as_deref() {
        None | Some("ALLOW") => Action::Allow,
        Some("DENY") => Action::Deny,
        Some("LOG") => Action::Log,
        Some(other) => {
            return Err(p.field("action").err(format!(
                "unknown value {other:?} (expected ALLOW, DENY or LOG)"
            )))
        }
    };
    let pp = p.field("policies");
    let mut policies = Vec::with_capacity(raw.policies.len());
    // A BTreeMap: by name, as Envoy's ordered policy map.
    for (name, rp) in &raw.policies {
        let p = pp.field(name);
        for (field, set) in [
            ("condition", &rp.condition),
            ("checked_condition", &rp.checked_condition),
            ("cel_config", &rp.cel_config),
        ] {
            if set.is_some() {
                return Err(p
                    .field(field)
                    .unsupported("CEL conditions (no expression evaluator here)"));
            }
        }
        if rp.permissions.is_empty() {
            return Err(p.field("permissions").err("must have at least 1 item"));
        }
        if rp.principals.is_empty() {
            return Err(p.field("principals").err("must have at least 1 item"));
        }
        let permissions = list(&rp.permissions, &p.field("permissions"), permission)?;
        let principals = list(&rp.principals, &p.field("principals"), principal)?;
        policies.push((
            name.clone(),
            Policy {
                permissions,
                principals,
            },
        ));
    }
    let needs_remote = policies
        .iter()
        .any(|(_, p)| p.principals.iter().any(Principal::reads_remote));
    Ok(Engine {
        action,
        policies,
        needs_remote,
    })
}

fn list<R, T>(
    raw: &[R],
    p: &FieldPath,
    one: fn(&R, &FieldPath) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| one(r, &p.index(i)))
        .collect()
}

/// Exactly one field of a oneof is set: its name, else an error naming the choices.
fn one_of(set: &[(&'static str, bool)], p: &FieldPath) -> Result<&'static str, ConfigError> {
    let names = || set.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let mut chosen = set.iter().filter(|(_, on)| *on).map(|(n, _)| *n);
    match (chosen.next(), chosen.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(p.err(format!("one of {} is required", names()))),
        (Some(a), Some(b)) => Err(p.err(format!(
            "only one of {} may be set ({a} and {b} are)",
            names()
        ))),
    }
}

fn any(v: Option<bool>, p: &FieldPath) -> Result<(), ConfigError> {
    match v {
        Some(true) => Ok(()),
        _ => Err(p.field("any").err("must be true")),
    }
}

fn url_path(raw: &RawPathMatcher, p: &FieldPath) -> Result<StringMatcher, ConfigError> {
    let sm = raw
        .path
        .as_ref()
        .ok_or_else(|| p.field("path").err("required"))?;
    string_matcher(sm, &p.field("path"))
}

/// The type of `Permission.uri_template`'s config.
const URI_TEMPLATE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig";

/// `uri_template` at `p`: the compiled template (Envoy's limits: 1 to 256 characters).
fn uri_template(
    raw: &super::raw::RawUriTemplate,
    p: &FieldPath,
) -> Result<regex::Regex, ConfigError> {
    let tp = p.field("typed_config");
    let tc = raw
        .typed_config
        .as_ref()
        .ok_or_else(|| tp.err("required"))?;
    let c: super::raw::RawUriTemplateMatchConfig =
        crate::config::raw::typed_config(tc, &tp, URI_TEMPLATE_TYPE)?;
    let pp = tp.field("path_template");
    let t = c.path_template.ok_or_else(|| pp.err("required"))?;
    if t.is_empty() || t.len() > 256 {
        return Err(pp.err("must be 1 to 256 characters"));
    }
    crate::route::uri_template::compile(&t).map_err(|e| pp.err(format!("{t:?}: {e}")))
}

fn permission(r: &RawPermission, p: &FieldPath) -> Result<Permission, ConfigError> {
    for (field, set) in [
        ("matcher", &r.matcher),
        ("sourced_metadata", &r.sourced_metadata),
    ] {
        if set.is_some() {
            return Err(p
                .field(field)
                .unsupported("this permission (no matcher extensions or sourced metadata here)"));
        }
    }
    let which = one_of(
        &[
            ("and_rules", r.and_rules.is_some()),
            ("or_rules", r.or_rules.is_some()),
            ("any", r.any.is_some()),
            ("header", r.header.is_some()),
            ("url_path", r.url_path.is_some()),
            ("uri_template", r.uri_template.is_some()),
            ("destination_ip", r.destination_ip.is_some()),
            ("destination_port", r.destination_port.is_some()),
            ("destination_port_range", r.destination_port_range.is_some()),
            ("not_rule", r.not_rule.is_some()),
            ("requested_server_name", r.requested_server_name.is_some()),
            ("metadata", r.metadata.is_some()),
        ],
        p,
    )?;
    let f = p.field(which);
    Ok(match which {
        "and_rules" | "or_rules" => {
            let set = r
                .and_rules
                .as_ref()
                .or(r.or_rules.as_ref())
                .expect("chosen");
            if set.rules.is_empty() {
                return Err(f.field("rules").err("must have at least 1 item"));
            }
            let rules = list(&set.rules, &f.field("rules"), permission)?;
            if which == "and_rules" {
                Permission::And(rules)
            } else {
                Permission::Or(rules)
            }
        }
        "any" => {
            any(r.any, p)?;
            Permission::Any
        }
        "header" => Permission::Header(header_matcher(r.header.as_ref().expect("chosen"), &f)?),
        "url_path" => Permission::UrlPath(url_path(r.url_path.as_ref().expect("chosen"), &f)?),
        "uri_template" => {
            Permission::UriTemplate(uri_template(r.uri_template.as_ref().expect("chosen"), &f)?)
        }
        "destination_ip" => {
            Permission::DestinationIp(cidr(r.destination_ip.as_ref().expect("chosen"), &f)?)
        }
        "destination_port" => {
            let port = r.destination_port.expect("chosen");
            Permission::DestinationPort(
                u16::try_from(port).map_err(|_| f.err(format!("{port} is above 65535")))?,
            )
        }
        "destination_port_range" => {
            let range = r.destination_port_range.as_ref().expect("chosen");
            let (start, end) = (range.start.unwrap_or(0), range.end.unwrap_or(0));
            // Envoy's PortRangeMatcher bounds.
            if !(0..=65536).contains(&start) {
                return Err(f
                    .field("start")
                    .err(format!("{start} is out of bounds (0..=65536)")));
            }
            if !(0..=65536).contains(&end) {
                return Err(f
                    .field("end")
                    .err(format!("{end} is out of bounds (0..=65536)")));
            }
            if start >= end {
                return Err(f.err(format!("start {start} must be below end {end}")));
            }
            Permission::DestinationPortRange(i64::from(start), i64::from(end))
        }
        "metadata" => {
            Permission::Metadata(metadata::build(r.metadata.as_ref().expect("chosen"), &f)?)
        }
        "not_rule" => Permission::Not(Box::new(permission(
            r.not_rule.as_ref().expect("chosen"),
            &f,
        )?)),
        _ => Permission::RequestedServerName(string_matcher(
            r.requested_server_name.as_ref().expect("chosen"),
            &f,
        )?),
    })
}

fn principal(r: &RawPrincipal, p: &FieldPath) -> Result<Principal, ConfigError> {
    for (field, set) in [
        ("sourced_metadata", &r.sourced_metadata),
        ("custom", &r.custom),
    ] {
        if set.is_some() {
            return Err(p
                .field(field)
                .unsupported("this principal (no principal extensions or sourced metadata here)"));
        }
    }
    let which = one_of(
        &[
            ("and_ids", r.and_ids.is_some()),
            ("or_ids", r.or_ids.is_some()),
            ("any", r.any.is_some()),
            ("authenticated", r.authenticated.is_some()),
            ("source_ip", r.source_ip.is_some()),
            ("direct_remote_ip", r.direct_remote_ip.is_some()),
            ("remote_ip", r.remote_ip.is_some()),
            ("header", r.header.is_some()),
            ("url_path", r.url_path.is_some()),
            ("filter_state", r.filter_state.is_some()),
            ("not_id", r.not_id.is_some()),
            ("metadata", r.metadata.is_some()),
        ],
        p,
    )?;
    let f = p.field(which);
    Ok(match which {
        "and_ids" | "or_ids" => {
            let set = r.and_ids.as_ref().or(r.or_ids.as_ref()).expect("chosen");
            if set.ids.is_empty() {
                return Err(f.field("ids").err("must have at least 1 item"));
            }
            let ids = list(&set.ids, &f.field("ids"), principal)?;
            if which == "and_ids" {
                Principal::And(ids)
            } else {
                Principal::Or(ids)
            }
        }
        "any" => {
            any(r.any, p)?;
            Principal::Any
        }
        "authenticated" => {
            let name = r
                .authenticated
                .as_ref()
                .and_then(|a| a.principal_name.as_ref())
                .map(|sm| string_matcher(sm, &f.field("principal_name")))
                .transpose()?;
            Principal::Authenticated(name)
        }
        "source_ip" => Principal::SourceIp(cidr(r.source_ip.as_ref().expect("chosen"), &f)?),
        "direct_remote_ip" => {
            Principal::DirectRemoteIp(cidr(r.direct_remote_ip.as_ref().expect("chosen"), &f)?)
        }
        "remote_ip" => Principal::RemoteIp(cidr(r.remote_ip.as_ref().expect("chosen"), &f)?),
        "header" => Principal::Header(header_matcher(r.header.as_ref().expect("chosen"), &f)?),
        "url_path" => Principal::UrlPath(url_path(r.url_path.as_ref().expect("chosen"), &f)?),
        "filter_state" => {
            let fs = r.filter_state.as_ref().expect("chosen");
            if fs.key.as_deref().is_none_or(str::is_empty) {
                return Err(f.field("key").err("required"));
            }
            if fs.address_match.is_some() {
                return Err(f
                    .field("address_match")
                    .unsupported("address matchers on filter state"));
            }
            let sm = fs
                .string_match
                .as_ref()
                .ok_or_else(|| f.err("one of string_match and address_match is required"))?;
            string_matcher(sm, &f.field("string_match"))?;
            Principal::FilterState
        }
        "metadata" => {
            Principal::Metadata(metadata::build(r.metadata.as_ref().expect("chosen"), &f)?)
        }
        _ => Principal::Not(Box::new(principal(r.not_id.as_ref().expect("chosen"), &f)?)),
    })
}
