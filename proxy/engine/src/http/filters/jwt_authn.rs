//! HTTP filter `envoy.filters.http.jwt_authn` (istiod's RequestAuthentication): JSON Web Tokens
//! checked against each provider's issuer, audiences, time and key set (`local_jwks`, or
//! `remote_jwks` fetched through a cluster when first needed),
//! by the requirement of the first rule whose `match` the request matches (or the route's
//! `JwtPerRoute`); a failure is answered 401 (403 for audiences) with Envoy's text and
//! `www-authenticate`. A verified token's payload goes upstream as configured and into the
//! request's metadata (`envoy.filters.http.jwt_authn`), where RBAC `metadata` principals read
//! it (istiod's `requestPrincipals` and `request.auth.claims`). A provider's
//! `clear_route_cache` (istiod sets it on gateways and waypoints) has the route chosen again
//! once a claim header was added or the payload put in the metadata, so routes can match the
//! claims (`headers`, and `dynamic_metadata` on the payload).
//!
//! A provider's `subjects` and `require_expiration` / `max_lifetime` constrain the token's
//! `sub` and how long it has left to live (Envoy's `isSubjectAllowed` / `isLifetimeAllowed`).
//!
//! Not here, each refused naming its field: `remote_jwks.async_fetch` and `retry_policy`,
//! `filter_state_rules`, `failed_status_in_metadata`.

mod extract;
mod jwks;
mod remote;
mod token;
mod verify;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use http::{HeaderMap, HeaderName, HeaderValue, Response};
use serde::Deserialize;

use super::{
    ext_authz::RawHttpUri,
    metadata::{DynamicMetadata, JWT_NAMESPACE},
};
use crate::{
    config::{raw_route::RawDataSource, raw_route::RawRouteMatch, ConfigError, FieldPath},
    http::{access_log::ResponseDetails, local_reply, Body},
    route::{build_match::route_match, RequestView, RouteMatch},
    server::stats::Counter,
};
use extract::Extractor;
use token::Audiences;
pub use token::Status;
use verify::{Requirement, Working};

/// The filter's `@type`.
pub const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
/// Its per-route config's `@type`.
pub const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";

/// Some value of a field that is refused whatever it holds.
type Refused = Option<serde_json::Value>;

/// `JwtAuthentication`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwtAuthn {
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    rules: Vec<RawRule>,
    filter_state_rules: Refused,
    bypass_cors_preflight: Option<bool>,
    #[serde(default)]
    requirement_map: BTreeMap<String, RawRequirement>,
    stat_prefix: Option<String>,
    strip_failure_response: Option<bool>,
}

/// `JwtProvider`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    issuer: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    subjects: Option<crate::config::raw_route::RawStringMatcher>,
    require_expiration: Option<bool>,
    max_lifetime: Option<String>,
    remote_jwks: Option<RawRemoteJwks>,
    local_jwks: Option<RawDataSource>,
    forward: Option<bool>,
    #[serde(default)]
    from_headers: Vec<RawJwtHeader>,
    #[serde(default)]
    from_params: Vec<String>,
    #[serde(default)]
    from_cookies: Vec<String>,
    forward_payload_header: Option<String>,
    pad_forward_payload_header: Option<bool>,
    payload_in_metadata: Option<String>,
    header_in_metadata: Option<String>,
    failed_status_in_metadata: Refused,
    normalize_payload_in_metadata: Option<RawNormalize>,
    clock_skew_seconds: Option<u32>,
    /// A cache of verified tokens: no observable effect (every token is verified here).
    #[allow(dead_code)]
    jwt_cache_config: Option<serde_json::Value>,
    #[serde(default)]
    claim_to_headers: Vec<RawClaimToHeader>,
    clear_route_cache: Option<bool>,
}

/// `RemoteJwks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    http_uri: Option<RawHttpUri>,
    cache_duration: Option<String>,
    async_fetch: Refused,
    retry_policy: Refused,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtHeader {
    name: Option<String>,
    value_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNormalize {
    #[serde(default)]
    space_delimited_claims: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimToHeader {
    header_name: Option<String>,
    claim_name: Option<String>,
}

/// `RequirementRule`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    matcher: Option<RawRouteMatch>,
    requires: Option<RawRequirement>,
    requirement_name: Option<String>,
}

/// `JwtRequirement` (a oneof).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    provider_name: Option<String>,
    provider_and_audiences: Option<RawProviderAndAudiences>,
    requires_any: Option<RawRequirementList>,
    requires_all: Option<RawRequirementList>,
    allow_missing_or_failed: Option<serde_json::Value>,
    allow_missing: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviderAndAudiences {
    provider_name: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirementList {
    #[serde(default)]
    requirements: Vec<RawRequirement>,
}

/// `PerRouteConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPerRoute {
    disabled: Option<bool>,
    requirement_name: Option<String>,
}

/// Where a provider's keys come from.
#[derive(Debug)]
pub enum Keys {
    /// `local_jwks`, parsed at load.
    Local(jwks::Jwks),
    /// `remote_jwks`, fetched when first needed.
    Remote(remote::RemoteJwks),
}

/// One provider, compiled.
#[derive(Debug)]
pub struct Provider {
    issuer: String,
    audiences: Audiences,
    keys: Keys,
    forward: bool,
    /// (header, value prefix); `Authorization: Bearer ` when no location is configured.
    from_headers: Vec<(HeaderName, String)>,
    /// `access_token` when no location is configured.
    from_params: Vec<String>,
    from_cookies: Vec<String>,
    forward_payload_header: Option<HeaderName>,
    pad_forward_payload_header: bool,
    payload_in_metadata: Option<String>,
    header_in_metadata: Option<String>,
    space_delimited_claims: Vec<String>,
    /// Seconds (default 60).
    clock_skew: u64,
    /// `subjects`: the token's `sub` must match (an absent `sub` is the empty string).
    subjects: Option<crate::route::StringMatcher>,
    /// `require_expiration` / `max_lifetime`.
    lifetime: Lifetime,
    /// (header, claim).
    claim_to_headers: Vec<(HeaderName, String)>,
    /// `clear_route_cache`: the route is chosen again once a claim header was added or the
    /// payload put in the metadata.
    clear_route_cache: bool,
}

/// How long a token may have left to live (Envoy's `isLifetimeAllowed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Neither field: any `exp`, or none.
    Any,
    /// `require_expiration`: an `exp` is required.
    ExpRequired,
    /// `max_lifetime` (it takes precedence): an `exp` is required, and less than this many
    /// seconds (nanoseconds kept) away.
    Max(std::time::Duration),
}

impl Lifetime {
    /// Whether a token whose `exp` is `exp` (0: none) may be taken at `now` (Unix seconds):
    /// its remaining lifetime `exp - now` must be under the maximum.
    pub(crate) fn allows(self, now: u64, exp: u64) -> bool {
        match self {
            Lifetime::Any => true,
            Lifetime::ExpRequired => exp != 0,
            Lifetime::Max(max) => {
                exp != 0 && (exp.saturating_sub(now) as u128) * 1_000_000_000 < max.as_nanos()
            }
        }
    }
}

/// The filter.
#[derive(Debug)]
pub struct JwtAuthn {
    /// By name (sorted).
    providers: Vec<Provider>,
    /// A rule naming a `requirement_map` entry shares its compiled requirement.
    rules: Vec<(RouteMatch, Arc<Requirement>)>,
    requirement_map: Vec<(String, Arc<Requirement>)>,
    bypass_cors_preflight: bool,
    strip_failure_response: bool,
    stat_prefix: String,
}

/// `JwtPerRoute`, compiled against the filters it may apply to at request time.
#[derive(Debug)]
pub enum JwtPerRoute {
    /// `disabled: true`.
    Disabled,
    /// `requirement_name`.
    Requirement(String),
}

/// The filter's counters.
#[derive(Debug)]
pub struct JwtAuthnStats {
    pub(crate) allowed: Arc<Counter>,
    pub(crate) denied: Arc<Counter>,
    pub(crate) cors_preflight_bypassed: Arc<Counter>,
}

/// What the filter decided.
pub(super) enum Outcome {
    /// Go on (the header changes, the new path if a token left the query, whether the route
    /// is to be chosen again).
    Pass {
        changes: Vec<super::AuthzChange>,
        path: Option<String>,
        clear_route: bool,
    },
    /// The local reply.
    Deny(Response<Body>),
}

impl JwtAuthn {
    /// The counters, each made by `counter(name)` below the HCM's scope.
    pub(crate) fn stats(&self, counter: &dyn Fn(&str) -> Arc<Counter>) -> JwtAuthnStats {
        let c = |n: &str| counter(&format!("jwt_authn.{}{n}", self.stat_prefix));
        JwtAuthnStats {
            allowed: c("allowed"),
            denied: c("denied"),
            cors_preflight_bypassed: c("cors_preflight_bypassed"),
        }
    }

    /// Runs the filter on a request (`per_route`: the most specific `JwtPerRoute`; `clusters`:
    /// where remote key sets are fetched from).
    pub(super) async fn decide(
        &self,
        view: &RequestView<'_, HeaderMap>,
        per_route: Option<&JwtPerRoute>,
        stats: Option<&JwtAuthnStats>,
        metadata: &mut DynamicMetadata,
        clusters: &HashMap<String, Arc<crate::upstream::Cluster>>,
    ) -> Outcome {
        let pass = |stats: Option<&JwtAuthnStats>| {
            if let Some(s) = stats {
                s.allowed.inc();
            }
            Outcome::Pass {
                changes: Vec::new(),
                path: None,
                clear_route: false,
            }
        };
        if self.bypass_cors_preflight && is_preflight(view) {
            if let Some(s) = stats {
                s.cors_preflight_bypassed.inc();
            }
            return pass(stats);
        }
        let requirement = match per_route {
            Some(JwtPerRoute::Disabled) => None,
            Some(JwtPerRoute::Requirement(name)) => {
                match self.requirement_map.iter().find(|(n, _)| n == name) {
                    Some((_, r)) => Some(&**r),
                    None => {
                        if let Some(s) = stats {
                            s.denied.inc();
                        }
                        return Outcome::Deny(self.wrong_requirement(name));
                    }
                }
            }
            None => self
                .rules
                .iter()
                .find(|(m, _)| crate::route::request_matches(m, view))
                .map(|(_, r)| &**r),
        };
        let Some(requirement) = requirement else {
            return pass(stats);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A token that needs a remote key set not fetched yet stops the check; it runs again
        // once the fetch is done (or failed: then that provider's tokens fail). Each round
        // fetches one key set, so the rounds are bounded.
        let mut failed = Vec::new();
        let mut fetched = Vec::new();
        let mut rounds = 0;
        let (status, w) = loop {
            let mut w = Working::new(view.headers, view.path, now);
            w.failed.clone_from(&failed);
            w.fetched.clone_from(&fetched);
            let status = self.check(requirement, &mut w);
            let pending = w.pending.filter(|_| status == Status::JwksPending);
            let Some(pi) = pending else {
                break (status, w);
            };
            rounds += 1;
            let got = match &self.providers[pi].keys {
                Keys::Remote(r) if rounds <= 2 * self.providers.len() + 2 => {
                    r.fetch(clusters).await
                }
                _ => None,
            };
            match got {
                Some(j) => fetched.push((pi, j)),
                None => failed.push(pi),
            }
        };
        if status != Status::Ok {
            if let Some(s) = stats {
                s.denied.inc();
            }
            return Outcome::Deny(self.deny(status, view));
        }
        if let Some(s) = stats {
            s.allowed.inc();
        }
        for (name, v) in w.payloads {
            metadata.set_value(JWT_NAMESPACE, name, v);
        }
        let path = match w.path {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        };
        Outcome::Pass {
            changes: w.changes,
            path,
            clear_route: w.clear_route,
        }
    }

    /// Envoy's 403 for a route whose `requirement_name` the map lacks.
    fn wrong_requirement(&self, name: &str) -> Response<Body> {
        let names: Vec<&str> = self
            .requirement_map
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let why = format!(
            "Wrong requirement_name: {name}. It should be one of [{}]",
            names.join(",")
        );
        let mut r = if self.strip_failure_response {
            local_reply::reply(403, "")
        } else {
            local_reply::reply(403, &format!("Failed JWT authentication: {why}"))
        };
        r.extensions_mut()
            .insert(ResponseDetails::JwtDenied(why.into()));
        r
    }

    /// Envoy's local reply for a failed check.
    fn deny(&self, status: Status, view: &RequestView<'_, HeaderMap>) -> Response<Body> {
        let code = if status == Status::AudienceNotAllowed {
            403
        } else {
            401
        };
        let mut r = if self.strip_failure_response {
            local_reply::reply(code, "")
        } else {
            let mut r = local_reply::reply(code, status.message());
            // Envoy's `buildOriginalUri`: x-forwarded-proto, host, path cut to 256 bytes.
            let mut path = view.path;
            if path.len() > 256 {
                let mut end = 256;
                while !path.is_char_boundary(end) {
                    end -= 1;
                }
                path = &path[..end];
            }
            let mut v = format!(
                "Bearer realm=\"{}://{}{}\"",
                view.scheme,
                view.authority.unwrap_or(""),
                path
            );
            if status != Status::Missed {
                v.push_str(", error=\"invalid_token\"");
            }
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            r
        };
        r.extensions_mut()
            .insert(ResponseDetails::JwtDenied(status.message().into()));
        r
    }
}

/// Envoy's `isCorsPreflightRequest`.
fn is_preflight(view: &RequestView<'_, HeaderMap>) -> bool {
    let non_empty = |n: &str| view.headers.get(n).is_some_and(|v| !v.is_empty());
    view.method == "OPTIONS" && non_empty("origin") && non_empty("access-control-request-method")
}

/// Compiles the filter's config at `p`.
pub(crate) fn build(raw: RawJwtAuthn, p: &FieldPath) -> Result<JwtAuthn, ConfigError> {
    if raw.filter_state_rules.is_some() {
        return Err(p
            .field("filter_state_rules")
            .unsupported("(no filter state here)"));
    }
    let pp = p.field("providers");
    let names: Vec<&String> = raw.providers.keys().collect();
    let providers = raw
        .providers
        .iter()
        .map(|(name, rp)| provider(rp, &pp.field(name)))
        .collect::<Result<Vec<_>, _>>()?;
    let cx = Compile {
        names: &names,
        providers: &providers,
    };
    let mut requirement_map = Vec::new();
    let mp = p.field("requirement_map");
    for (name, r) in &raw.requirement_map {
        requirement_map.push((name.clone(), Arc::new(cx.requirement(r, &mp.field(name))?)));
    }
    let mut rules = Vec::new();
    let rp = p.field("rules");
    for (i, r) in raw.rules.iter().enumerate() {
        let p = rp.index(i);
        let m = r
            .matcher
            .as_ref()
            .ok_or_else(|| p.field("match").err("required"))?;
        let mut m = route_match(m, &p.field("match"))?;
        // Envoy's jwt_authn matcher reads the path, headers and query parameters, not the
        // dynamic metadata (which no filter has written yet when the rule is picked).
        m.dynamic_metadata.clear();
        let req = match (&r.requires, &r.requirement_name) {
            (Some(req), None) => Arc::new(cx.requirement(req, &p.field("requires"))?),
            (None, Some(name)) => match requirement_map.iter().find(|(n, _)| n == name) {
                Some((_, r)) => r.clone(),
                None => {
                    return Err(p
                        .field("requirement_name")
                        .err(format!("{name:?} is not in requirement_map")))
                }
            },
            (None, None) => Arc::new(Requirement::AllowAll),
            (Some(_), Some(_)) => {
                return Err(p.err("only one of requires and requirement_name may be set"))
            }
        };
        rules.push((m, req));
    }
    Ok(JwtAuthn {
        providers,
        rules,
        requirement_map,
        bypass_cors_preflight: raw.bypass_cors_preflight == Some(true),
        strip_failure_response: raw.strip_failure_response == Some(true),
        stat_prefix: raw.stat_prefix.unwrap_or_default(),
    })
}

/// Compiles a `PerRouteConfig` at `p`.
pub(crate) fn build_per_route(raw: RawPerRoute, p: &FieldPath) -> Result<JwtPerRoute, ConfigError> {
    match (raw.disabled, raw.requirement_name) {
        (Some(true), None) => Ok(JwtPerRoute::Disabled),
        (None | Some(false), Some(n)) if !n.is_empty() => Ok(JwtPerRoute::Requirement(n)),
        _ => Err(p.err("exactly one of disabled: true and requirement_name is required")),
    }
}

fn header_name(s: &str, p: &FieldPath) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| p.err(format!("{s:?} is not a header name")))
}

fn provider(r: &RawProvider, p: &FieldPath) -> Result<Provider, ConfigError> {
    if r.failed_status_in_metadata.is_some() {
        return Err(p
            .field("failed_status_in_metadata")
            .unsupported("(not implemented)"));
    }
    let subjects = r
        .subjects
        .as_ref()
        .map(|m| crate::route::string_matcher(m, &p.field("subjects")))
        .transpose()?;
    let lifetime = match (&r.max_lifetime, r.require_expiration == Some(true)) {
        (Some(d), _) => Lifetime::Max(
            crate::config::duration::parse_duration(d)
                .map_err(|e| p.field("max_lifetime").err(e))?,
        ),
        (None, true) => Lifetime::ExpRequired,
        (None, false) => Lifetime::Any,
    };
    let keys = match (&r.local_jwks, &r.remote_jwks) {
        (Some(src), None) => {
            let jp = p.field("local_jwks");
            let text = match crate::tls_common::data_source(src, &jp)? {
                crate::config::DataSource::Inline(s) => s,
                crate::config::DataSource::File(f) => std::fs::read_to_string(&f)
                    .map_err(|e| jp.field("filename").err(format!("{}: {e}", f.display())))?,
            };
            Keys::Local(jwks::Jwks::parse(&text).map_err(|e| jp.err(e))?)
        }
        (None, Some(rj)) => Keys::Remote(remote_jwks(rj, &p.field("remote_jwks"))?),
        (None, None) => return Err(p.err("one of local_jwks and remote_jwks is required")),
        (Some(_), Some(_)) => {
            return Err(p.err("only one of local_jwks and remote_jwks may be set"))
        }
    };
    let mut from_headers = Vec::new();
    for (i, h) in r.from_headers.iter().enumerate() {
        let hp = p.field("from_headers").index(i).field("name");
        let name = h
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| hp.err("required"))?;
        from_headers.push((
            header_name(&name.to_ascii_lowercase(), &hp)?,
            h.value_prefix.clone().unwrap_or_default(),
        ));
    }
    let mut from_params = r.from_params.clone();
    if from_headers.is_empty() && from_params.is_empty() && r.from_cookies.is_empty() {
        from_headers.push((http::header::AUTHORIZATION, "Bearer ".to_string()));
        from_params.push("access_token".to_string());
    }
    let forward_payload_header = r
        .forward_payload_header
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(|h| header_name(&h.to_ascii_lowercase(), &p.field("forward_payload_header")))
        .transpose()?;
    let mut claim_to_headers = Vec::new();
    for (i, c) in r.claim_to_headers.iter().enumerate() {
        let cp = p.field("claim_to_headers").index(i);
        let h = c
            .header_name
            .as_deref()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| cp.field("header_name").err("required"))?;
        let claim = c
            .claim_name
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| cp.field("claim_name").err("required"))?;
        claim_to_headers.push((
            header_name(&h.to_ascii_lowercase(), &cp.field("header_name"))?,
            claim,
        ));
    }
    Ok(Provider {
        issuer: r.issuer.clone().unwrap_or_default(),
        audiences: Audiences::new(&r.audiences),
        keys,
        forward: r.forward == Some(true),
        from_headers,
        from_params,
        from_cookies: r.from_cookies.clone(),
        forward_payload_header,
        pad_forward_payload_header: r.pad_forward_payload_header == Some(true),
        payload_in_metadata: r.payload_in_metadata.clone().filter(|s| !s.is_empty()),
        header_in_metadata: r.header_in_metadata.clone().filter(|s| !s.is_empty()),
        space_delimited_claims: r
            .normalize_payload_in_metadata
            .as_ref()
            .map(|n| n.space_delimited_claims.clone())
            .unwrap_or_default(),
        clock_skew: match r.clock_skew_seconds {
            Some(s) if s > 0 => u64::from(s),
            _ => 60,
        },
        subjects,
        lifetime,
        claim_to_headers,
        clear_route_cache: r.clear_route_cache == Some(true),
    })
}

fn remote_jwks(r: &RawRemoteJwks, p: &FieldPath) -> Result<remote::RemoteJwks, ConfigError> {
    use crate::config::duration::parse_duration;
    for (f, set) in [
        ("async_fetch", r.async_fetch.is_some()),
        ("retry_policy", r.retry_policy.is_some()),
    ] {
        if set {
            return Err(p
                .field(f)
                .unsupported("(the key set is fetched when a token first needs it)"));
        }
    }
    let up = p.field("http_uri");
    let u = r.http_uri.as_ref().ok_or_else(|| up.err("required"))?;
    let uri_p = up.field("uri");
    let text = u
        .uri
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| uri_p.err("required"))?;
    let uri: http::Uri = text
        .parse()
        .map_err(|e| uri_p.err(format!("{text:?}: {e}")))?;
    if uri.authority().is_none() {
        return Err(uri_p.err(format!("{text:?} has no host")));
    }
    let cluster = u
        .cluster
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| up.field("cluster").err("required"))?;
    let tp = up.field("timeout");
    let timeout = parse_duration(u.timeout.as_deref().ok_or_else(|| tp.err("required"))?)
        .map_err(|e| tp.err(e))?;
    let cache = match &r.cache_duration {
        Some(d) => parse_duration(d).map_err(|e| p.field("cache_duration").err(e))?,
        None => remote::DEFAULT_CACHE,
    };
    Ok(remote::RemoteJwks::new(
        uri,
        cluster,
        (!timeout.is_zero()).then_some(timeout),
        cache,
    ))
}

/// Requirement compilation against the providers.
struct Compile<'a> {
    names: &'a [&'a String],
    providers: &'a [Provider],
}

impl Compile<'_> {
    fn index(&self, name: Option<&str>, p: &FieldPath) -> Result<usize, ConfigError> {
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| p.err("required"))?;
        self.names
            .iter()
            .position(|n| n.as_str() == name)
            .ok_or_else(|| p.err(format!("provider {name:?} is not configured")))
    }

    fn requirement(&self, r: &RawRequirement, p: &FieldPath) -> Result<Requirement, ConfigError> {
        let set = [
            ("provider_name", r.provider_name.is_some()),
            ("provider_and_audiences", r.provider_and_audiences.is_some()),
            ("requires_any", r.requires_any.is_some()),
            ("requires_all", r.requires_all.is_some()),
            (
                "allow_missing_or_failed",
                r.allow_missing_or_failed.is_some(),
            ),
            ("allow_missing", r.allow_missing.is_some()),
        ];
        let chosen: Vec<&str> = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
        let which = match chosen[..] {
            [] => return Ok(Requirement::AllowAll),
            [one] => one,
            _ => return Err(p.err(format!("only one of {} may be set", chosen.join(", ")))),
        };
        let f = p.field(which);
        let provider = |i: usize, audiences: Option<Audiences>| Requirement::Provider {
            provider: i,
            audiences,
            extractor: Extractor::new([&self.providers[i]]),
        };
        Ok(match which {
            "provider_name" => provider(self.index(r.provider_name.as_deref(), &f)?, None),
            "provider_and_audiences" => {
                let pa = r.provider_and_audiences.as_ref().expect("chosen");
                let i = self.index(pa.provider_name.as_deref(), &f.field("provider_name"))?;
                // No audiences: the provider's own (Envoy's plain provider verifier).
                let audiences = (!pa.audiences.is_empty()).then(|| Audiences::new(&pa.audiences));
                provider(i, audiences)
            }
            "requires_all" => {
                let list = &r.requires_all.as_ref().expect("chosen").requirements;
                let lp = f.field("requirements");
                if list.len() < 2 {
                    return Err(lp.err("at least two requirements are required"));
                }
                Requirement::All(
                    list.iter()
                        .enumerate()
                        .map(|(i, c)| self.requirement(c, &lp.index(i)))
                        .collect::<Result<_, _>>()?,
                )
            }
            "requires_any" => {
                let list = &r.requires_any.as_ref().expect("chosen").requirements;
                let lp = f.field("requirements");
                if list.len() < 2 {
                    return Err(lp.err("at least two requirements are required"));
                }
                // Envoy's AnyVerifier: allow_missing / allow_missing_or_failed are flags on the
                // list; with no other child, one bypass over every provider is its child.
                let allow_failed = list.iter().any(|c| c.allow_missing_or_failed.is_some());
                let allow_missing = list.iter().any(|c| c.allow_missing.is_some());
                let mut children = Vec::new();
                for (i, c) in list.iter().enumerate() {
                    if c.allow_missing.is_none() && c.allow_missing_or_failed.is_none() {
                        children.push(self.requirement(c, &lp.index(i))?);
                    }
                }
                if children.is_empty() {
                    children.push(self.bypass(allow_failed));
                }
                Requirement::Any {
                    children,
                    allow_missing,
                    allow_failed,
                }
            }
            failed => self.bypass(failed == "allow_missing_or_failed"),
        })
    }

    fn bypass(&self, failed: bool) -> Requirement {
        Requirement::Bypass {
            failed,
            extractor: Extractor::new(self.providers),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Lifetime;

    #[test]
    fn a_lifetime_bound_needs_an_exp_closer_than_the_bound() {
        let now = 1_000;
        assert!(Lifetime::Any.allows(now, 0));
        assert!(!Lifetime::ExpRequired.allows(now, 0));
        assert!(Lifetime::ExpRequired.allows(now, u64::MAX));
        let max = Lifetime::Max(Duration::from_secs(60));
        assert!(!max.allows(now, 0), "no exp");
        assert!(max.allows(now, now + 59));
        assert!(
            !max.allows(now, now + 60),
            "the remaining lifetime must be under the bound"
        );
        assert!(
            max.allows(now, now - 5),
            "already past: the time check's to refuse"
        );
        let max = Lifetime::Max(Duration::new(60, 1));
        assert!(max.allows(now, now + 60), "nanoseconds count");
    }
}
