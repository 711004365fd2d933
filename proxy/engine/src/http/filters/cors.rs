//! `envoy.filters.http.cors` and its per-route `CorsPolicy` (also the deprecated `cors` field
//! of VirtualHost / RouteAction): preflights answered locally, `access-control-*` response
//! headers for allowed origins, each field taken from the most specific policy that sets it
//! (Envoy 1.40's `CorsFilter`).

use http::{header, HeaderMap, HeaderValue, Method};
use serde::Deserialize;

use crate::{
    config::{
        raw_route::{RawRuntimeFractionalPercent, RawStringMatcher},
        ConfigError, FieldPath,
    },
    route::{fractional_percent, string_matcher, FractionalPercent, StringMatcher},
};

/// `@type` of the filter's own (empty) config.
pub const FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
/// `@type` of a per-route policy.
pub const POLICY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";

/// `extensions.filters.http.cors.v3.CorsPolicy` (and `config.route.v3.CorsPolicy`, its
/// deprecated twin with the same fields).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCorsPolicy {
    #[serde(default)]
    allow_origin_string_match: Vec<RawStringMatcher>,
    allow_methods: Option<String>,
    allow_headers: Option<String>,
    expose_headers: Option<String>,
    max_age: Option<String>,
    allow_credentials: Option<bool>,
    filter_enabled: Option<RawRuntimeFractionalPercent>,
    shadow_enabled: Option<RawRuntimeFractionalPercent>,
    /// Default false.
    allow_private_network_access: Option<bool>,
    /// Default true (a preflight from an origin not allowed goes upstream).
    forward_not_matching_preflights: Option<bool>,
}

/// A compiled policy.
#[derive(Debug)]
pub struct CorsPolicy {
    allow_origins: Vec<StringMatcher>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: Option<bool>,
    allow_private_network_access: Option<bool>,
    forward_not_matching_preflights: Option<bool>,
    /// `filter_enabled.default_value` (None: enabled).
    enabled: Option<FractionalPercent>,
}

fn value(v: Option<String>, p: &FieldPath) -> Result<Option<HeaderValue>, ConfigError> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => HeaderValue::from_str(&s)
            .map(Some)
            .map_err(|_| p.err(format!("invalid header value {s:?}"))),
    }
}

/// Compiles `raw` (at `p`).
pub(crate) fn build(raw: RawCorsPolicy, p: &FieldPath) -> Result<CorsPolicy, ConfigError> {
    let mut allow_origins = Vec::with_capacity(raw.allow_origin_string_match.len());
    for (i, m) in raw.allow_origin_string_match.iter().enumerate() {
        allow_origins.push(string_matcher(
            m,
            &p.field("allow_origin_string_match").index(i),
        )?);
    }
    if let Some(s) = &raw.shadow_enabled {
        // Shadow mode only counts stats; its percentage is still checked.
        fractional_percent(s, &p.field("shadow_enabled"))?;
    }
    Ok(CorsPolicy {
        allow_origins,
        allow_methods: value(raw.allow_methods, &p.field("allow_methods"))?,
        allow_headers: value(raw.allow_headers, &p.field("allow_headers"))?,
        expose_headers: value(raw.expose_headers, &p.field("expose_headers"))?,
        max_age: value(raw.max_age, &p.field("max_age"))?,
        allow_credentials: raw.allow_credentials,
        allow_private_network_access: raw.allow_private_network_access,
        forward_not_matching_preflights: raw.forward_not_matching_preflights,
        enabled: match &raw.filter_enabled {
            Some(f) => Some(fractional_percent(f, &p.field("filter_enabled"))?),
            None => None,
        },
    })
}

/// The policies that apply to a request, most specific first.
pub struct Policies<'a>(pub [Option<&'a CorsPolicy>; 4]);

impl<'a> Policies<'a> {
    fn first<T>(&self, f: impl Fn(&'a CorsPolicy) -> Option<T>) -> Option<T> {
        self.0.iter().flatten().find_map(|p| f(p))
    }

    /// Envoy's `enabled()`: the most specific policy's `filter_enabled`.
    fn enabled(&self, random: u64) -> bool {
        match self.0.iter().flatten().next() {
            None => false,
            Some(p) => p.enabled.is_none_or(|e| e.holds(random)),
        }
    }

    /// Envoy's `isOriginAllowed`: the first policy listing origins decides; a matcher that
    /// matches `*` allows every origin.
    fn origin_allowed(&self, origin: &str) -> bool {
        self.0
            .iter()
            .flatten()
            .find(|p| !p.allow_origins.is_empty())
            .is_some_and(|p| {
                p.allow_origins
                    .iter()
                    .any(|m| m.matches("*") || m.matches(origin))
            })
    }

    fn credentials(&self) -> bool {
        self.first(|p| p.allow_credentials).unwrap_or(false)
    }

    fn expose(&self) -> Option<&'a HeaderValue> {
        self.first(|p| p.expose_headers.as_ref())
    }

    fn allowed(&self, origin: &HeaderValue) -> Allowed {
        Allowed {
            origin: origin.clone(),
            credentials: self.credentials(),
            expose: self.expose().cloned(),
        }
    }
}

/// What the filter decided for one request.
pub enum Decision {
    /// Not a CORS request (or not allowed): nothing to do.
    None,
    /// A CORS request from an allowed origin: add its headers to the response.
    Allowed(Allowed),
    /// A preflight: answer it with these headers.
    Preflight(HeaderMap),
}

/// The response headers of an allowed simple request.
pub struct Allowed {
    origin: HeaderValue,
    credentials: bool,
    expose: Option<HeaderValue>,
}

const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
const EXPOSE: &str = "access-control-expose-headers";

impl Allowed {
    /// Envoy's `CorsFilter::encodeHeaders`.
    pub fn apply(&self, h: &mut HeaderMap) {
        h.insert(ALLOW_ORIGIN, self.origin.clone());
        if self.credentials {
            h.insert(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(e) = &self.expose {
            h.insert(EXPOSE, e.clone());
        }
    }
}

/// Envoy's `CorsFilter::decodeHeaders` for a request with a forwarding route.
pub fn decide(pol: &Policies<'_>, method: &Method, h: &HeaderMap, random: u64) -> Decision {
    if !pol.enabled(random) {
        return Decision::None;
    }
    let Some(origin) = h.get(header::ORIGIN).filter(|o| !o.is_empty()) else {
        return Decision::None;
    };
    let allowed = origin.to_str().is_ok_and(|o| pol.origin_allowed(o));
    let preflight = method == Method::OPTIONS
        && h.get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|m| !m.is_empty());
    let forward = pol.first(|p| p.forward_not_matching_preflights) != Some(false);
    if !preflight || (!allowed && forward) {
        return match allowed {
            true => Decision::Allowed(pol.allowed(origin)),
            false => Decision::None,
        };
    }
    // The preflight reply; the filter's response side then adds the allowed origin's headers.
    let mut out = HeaderMap::new();
    if pol.credentials() {
        out.insert(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    // `*` echoes the request's access-control-request-method / -headers (possibly empty).
    let echo = |v: &HeaderValue, asked: header::HeaderName| match v.as_bytes() {
        b"*" => h
            .get(asked)
            .cloned()
            .unwrap_or(HeaderValue::from_static("")),
        _ => v.clone(),
    };
    if let Some(v) = pol.first(|p| p.allow_methods.as_ref()) {
        out.insert(
            "access-control-allow-methods",
            echo(v, header::ACCESS_CONTROL_REQUEST_METHOD),
        );
    }
    if let Some(v) = pol.first(|p| p.allow_headers.as_ref()) {
        out.insert(
            "access-control-allow-headers",
            echo(v, header::ACCESS_CONTROL_REQUEST_HEADERS),
        );
    }
    if let Some(v) = pol.first(|p| p.max_age.as_ref()) {
        out.insert("access-control-max-age", v.clone());
    }
    if pol.first(|p| p.allow_private_network_access) == Some(true)
        && h.get("access-control-request-private-network")
            .is_some_and(|v| v == "true")
    {
        out.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    if allowed {
        pol.allowed(origin).apply(&mut out);
    }
    Decision::Preflight(out)
}
