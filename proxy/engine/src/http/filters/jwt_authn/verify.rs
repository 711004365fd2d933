//! Checking a request against a requirement, as Envoy's jwt_authn verifiers and authenticator
//! do it: a provider's tokens must all verify (issuer, time, audiences, signature, in that
//! order); `requires_any` passes with its first passing child and otherwise fails with the last
//! child error that is not a missing token or unknown issuer (an unknown issuer over a missing
//! token), unless its `allow_missing` (the error is a missing token) or
//! `allow_missing_or_failed` lets it pass; `requires_all` fails with its first failing child. A verified token's payload
//! header, claim headers and token removal happen at once, as in Envoy; its payload reaches the
//! metadata only when the whole requirement passes.

use std::{borrow::Cow, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::{
    extract::{without_param, Extractor, Found, Place},
    token::{Audiences, Jwt, Status},
    JwtAuthn, Keys, Provider,
};
use crate::http::filters::AuthzChange;

/// A compiled `JwtRequirement`.
#[derive(Debug)]
pub enum Requirement {
    /// `provider_name` / `provider_and_audiences`.
    Provider {
        provider: usize,
        audiences: Option<Audiences>,
        extractor: Extractor,
    },
    /// `requires_any`: its regular children (or, with none, one bypass over every provider),
    /// and whether it lists `allow_missing` / `allow_missing_or_failed`.
    Any {
        children: Vec<Requirement>,
        allow_missing: bool,
        allow_failed: bool,
    },
    /// `requires_all`.
    All(Vec<Requirement>),
    /// `allow_missing` (`failed: false`) / `allow_missing_or_failed`: any token found where any
    /// provider looks must verify (unless `failed`) with the provider of its issuer.
    Bypass { failed: bool, extractor: Extractor },
    /// No requirement: passes.
    AllowAll,
}

/// The request as the filter changes it: its headers (copied on the first change), its path
/// (when a token left the query) and the changes to replay upstream.
pub struct Working<'a> {
    headers: Cow<'a, HeaderMap>,
    pub(super) path: Cow<'a, str>,
    pub(super) changes: Vec<AuthzChange>,
    /// Verified payloads (`payload_in_metadata` / `header_in_metadata` name, value).
    pub(super) payloads: Vec<(String, Value)>,
    pub(super) now: u64,
    /// The provider whose remote key set a token waits for.
    pub(super) pending: Option<usize>,
    /// Providers whose remote key set failed to come for this request.
    pub(super) failed: Vec<usize>,
    /// Remote key sets fetched for this request (used even if they expire at once, as Envoy
    /// verifies with the set it just fetched).
    pub(super) fetched: Vec<(usize, Arc<super::jwks::Jwks>)>,
    /// A verified token of a provider with `clear_route_cache` added a claim header or put
    /// its payload in the metadata (Envoy then clears the route cache).
    pub(super) clear_route: bool,
}

impl<'a> Working<'a> {
    pub fn new(headers: &'a HeaderMap, path: &'a str, now: u64) -> Working<'a> {
        Working {
            headers: Cow::Borrowed(headers),
            path: Cow::Borrowed(path),
            changes: Vec::new(),
            payloads: Vec::new(),
            now,
            pending: None,
            failed: Vec::new(),
            fetched: Vec::new(),
            clear_route: false,
        }
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn remove_header(&mut self, h: &HeaderName) {
        self.headers.to_mut().remove(h);
        self.changes.push(AuthzChange::Remove(h.clone()));
    }

    fn append_header(&mut self, h: &HeaderName, v: HeaderValue) {
        self.headers.to_mut().append(h.clone(), v.clone());
        self.changes.push(AuthzChange::Append(h.clone(), v));
    }
}

impl JwtAuthn {
    /// Checks `req` against `r`.
    pub(super) fn check(&self, r: &Requirement, w: &mut Working<'_>) -> Status {
        match r {
            Requirement::AllowAll => Status::Ok,
            Requirement::Any {
                children,
                allow_missing,
                allow_failed,
            } => {
                // Envoy runs every child at once: one that passes ends the list even while
                // another waits for its remote key set.
                let mut status = Status::Missed;
                let mut pending = false;
                for c in children {
                    match self.check(c, w) {
                        Status::Ok => return Status::Ok,
                        Status::JwksPending => pending = true,
                        s if !matches!(s, Status::Missed | Status::UnknownIssuer)
                            || status == Status::Missed =>
                        {
                            status = s
                        }
                        _ => {}
                    }
                }
                if pending {
                    return Status::JwksPending;
                }
                if *allow_failed || (*allow_missing && status == Status::Missed) {
                    return Status::Ok;
                }
                status
            }
            Requirement::All(children) => {
                // A child that fails without waiting ends the list before one that waits.
                let mut pending = false;
                for c in children {
                    match self.check(c, w) {
                        Status::Ok => {}
                        Status::JwksPending => pending = true,
                        s => return s,
                    }
                }
                if pending {
                    Status::JwksPending
                } else {
                    Status::Ok
                }
            }
            Requirement::Provider {
                provider,
                audiences,
                extractor,
            } => self.authenticate(extractor, Some(*provider), audiences.as_ref(), None, w),
            Requirement::Bypass { failed, extractor } => {
                self.authenticate(extractor, None, None, Some(*failed), w)
            }
        }
    }

    /// Envoy's `AuthenticatorImpl::verify`: `bypass` None for a provider's requirement, else
    /// whether failures are allowed too.
    fn authenticate(
        &self,
        extractor: &Extractor,
        provider: Option<usize>,
        audiences: Option<&Audiences>,
        bypass: Option<bool>,
        w: &mut Working<'_>,
    ) -> Status {
        extractor.sanitize(w);
        let tokens = extractor.extract(w.headers(), &w.path);
        let mut status = Status::Missed;
        for t in tokens.iter().rev() {
            status = self.verify_one(t, provider, audiences, w);
            if status == Status::JwksPending {
                return status;
            }
            if status != Status::Ok && bypass.is_none() {
                break;
            }
        }
        match bypass {
            Some(true) => Status::Ok,
            Some(false) if status == Status::Missed => Status::Ok,
            _ => status,
        }
    }

    fn verify_one(
        &self,
        t: &Found<'_>,
        provider: Option<usize>,
        audiences: Option<&Audiences>,
        w: &mut Working<'_>,
    ) -> Status {
        let jwt = match Jwt::parse(&t.token) {
            Ok(j) => j,
            Err(s) => return s,
        };
        if !t.issuers.allows(&jwt.iss) {
            return Status::UnknownIssuer;
        }
        let Some(pi) = provider.or_else(|| self.by_issuer(&jwt.iss)) else {
            return Status::UnknownIssuer;
        };
        let p = &self.providers[pi];
        let s = jwt.check_time(w.now, p.clock_skew);
        if s != Status::Ok {
            return s;
        }
        if !audiences.unwrap_or(&p.audiences).allows(&jwt.audiences) {
            return Status::AudienceNotAllowed;
        }
        // Envoy 1.40 checks the subject and the lifetime here, after the time and the
        // audiences and before the key, and answers both "Jwt verification fails".
        if p.subjects.as_ref().is_some_and(|m| !m.matches(&jwt.sub))
            || !p.lifetime.allows(w.now, jwt.exp)
        {
            return Status::VerificationFail;
        }
        let fetched;
        let jwks = match &p.keys {
            Keys::Local(j) => j,
            Keys::Remote(_) if w.failed.contains(&pi) => return Status::JwksFetchFail,
            Keys::Remote(r) => match w
                .fetched
                .iter()
                .find(|(i, _)| *i == pi)
                .map(|(_, j)| j.clone())
                .or_else(|| r.current())
            {
                Some(j) => {
                    fetched = j;
                    &*fetched
                }
                None => {
                    w.pending = Some(pi);
                    return Status::JwksPending;
                }
            },
        };
        let s = jwks.verify(&jwt);
        if s != Status::Ok {
            return s;
        }
        good(p, &jwt, t, w);
        Status::Ok
    }

    /// The first provider with this issuer, else the first without one (Envoy's
    /// `JwksCache::findByIssuer`).
    fn by_issuer(&self, iss: &str) -> Option<usize> {
        self.providers
            .iter()
            .position(|p| p.issuer == iss)
            .or_else(|| self.providers.iter().position(|p| p.issuer.is_empty()))
    }
}

/// Envoy's `handleGoodJwt`.
fn good(p: &Provider, jwt: &Jwt<'_>, t: &Found<'_>, w: &mut Working<'_>) {
    if let Some(h) = &p.forward_payload_header {
        let mut v = jwt.payload_b64.to_string();
        if p.pad_forward_payload_header {
            while !v.len().is_multiple_of(4) {
                v.push('=');
            }
        }
        if let Ok(v) = HeaderValue::from_str(&v) {
            w.append_header(h, v);
        }
    }
    for (h, claim) in &p.claim_to_headers {
        let v = claim_value(&jwt.payload, claim).and_then(claim_header);
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            if let Ok(v) = HeaderValue::from_str(&v) {
                w.append_header(h, v);
                w.clear_route |= p.clear_route_cache;
            }
        }
    }
    if !p.forward {
        match &t.place {
            Place::Header(h) => w.remove_header(h),
            Place::Param(name) => {
                let path = without_param(&w.path, name);
                w.path = Cow::Owned(path);
            }
            Place::Cookie => {}
        }
    }
    if let Some(name) = &p.header_in_metadata {
        w.payloads
            .push((name.clone(), Value::Object(jwt.header.clone())));
    }
    if let Some(name) = &p.payload_in_metadata {
        let mut payload = jwt.payload.clone();
        for c in &p.space_delimited_claims {
            if let Some(Value::String(s)) = payload.get(c) {
                let list: Vec<Value> = s
                    .split(' ')
                    .filter(|x| !x.is_empty())
                    .map(|x| Value::String(x.to_string()))
                    .collect();
                // Nothing to split: the claim stays a string, as in Envoy.
                if !list.is_empty() {
                    payload.insert(c.clone(), Value::Array(list));
                }
            }
        }
        w.payloads.push((name.clone(), Value::Object(payload)));
        // Envoy: a claim header added or the payload in the metadata clears the route cache.
        w.clear_route |= p.clear_route_cache;
    }
}

/// A claim's header value as Envoy's `addJWTClaimToHeader` writes it: a string as is, a whole
/// non-negative number without decimals, another number as C's `%f`, a bool as
/// `true` / `false`, a list or object as the base64 of its JSON.
fn claim_header(v: &Value) -> Option<String> {
    use base64::Engine as _;
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let f = n.as_f64()?;
            if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 {
                format!("{}", f as u64)
            } else {
                format!("{f:.6}")
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Array(_) | Value::Object(_) => {
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_string(v).ok()?)
        }
        Value::Null => return None,
    })
}

/// A claim by name, `.` walking into nested objects.
fn claim_value<'v>(payload: &'v Map<String, Value>, claim: &str) -> Option<&'v Value> {
    let mut parts = claim.split('.');
    let mut v = payload.get(parts.next()?)?;
    for k in parts {
        v = v.as_object()?.get(k)?;
    }
    Some(v)
}
