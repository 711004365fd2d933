//! Envoy's role-based access control engine (`config.rbac.v3.RBAC`): named policies, each a set
//! of permissions (what the request does) and principals (who sends it); a policy matches when
//! one of its permissions and one of its principals match. `ALLOW` lets a request through when a
//! policy matches, `DENY` when none does, `LOG` always. Used by the HTTP filter
//! (`http/filters/rbac.rs`); the request facts ([`Facts`]) carry no request for a connection
//! check, where header and path matchers then see no header.
//!
//! Compiled once per config version (`rbac/build.rs`); evaluation is pure and allocation-free.

pub(crate) mod build;
pub mod network;
pub(crate) mod raw;
pub mod rules;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

use crate::{
    config::Cidr,
    http::filters::metadata::{DynamicMetadata, MetadataMatcher},
    route::{HeaderLookup, HeaderMatcher, RequestView, StringMatcher},
};

/// `RBAC.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `ALLOW`: allowed when a policy matches.
    Allow,
    /// `DENY`: allowed when no policy matches.
    Deny,
    /// `LOG`: always allowed (the match only marks the request for logging).
    Log,
}

/// One engine: an action and its policies, sorted by name (Envoy keeps them in an ordered map,
/// so the first matching policy by name is the one reported).
#[derive(Debug)]
pub struct Engine {
    /// `action`.
    pub action: Action,
    /// `policies`, by name.
    pub policies: Vec<(String, Policy)>,
    /// Whether a `remote_ip` principal reads the client after `x-forwarded-for` processing
    /// (else [`Facts::remote`] is never read, and a caller may skip working it out).
    pub needs_remote: bool,
}

/// `Policy`: matches when any permission and any principal match.
#[derive(Debug)]
pub struct Policy {
    /// `permissions`.
    pub permissions: Vec<Permission>,
    /// `principals`.
    pub principals: Vec<Principal>,
}

/// `Permission`: a property of the request or of its destination.
#[derive(Debug)]
pub enum Permission {
    /// `any: true`.
    Any,
    /// `and_rules`.
    And(Vec<Permission>),
    /// `or_rules`.
    Or(Vec<Permission>),
    /// `not_rule`.
    Not(Box<Permission>),
    /// `header` (pseudo-headers read the request line).
    Header(HeaderMatcher),
    /// `url_path`: the path without query and fragment.
    UrlPath(StringMatcher),
    /// `uri_template`: the path without query and fragment fully matches the template's
    /// regex (`route/uri_template.rs`).
    UriTemplate(regex::Regex),
    /// `destination_ip`.
    DestinationIp(Cidr),
    /// `destination_port`.
    DestinationPort(u16),
    /// `destination_port_range`: `[start, end)`.
    DestinationPortRange(i64, i64),
    /// `requested_server_name` (empty without TLS).
    RequestedServerName(StringMatcher),
    /// `metadata`: the request's dynamic metadata (never matched by a connection check, which
    /// has none, unless the matcher wants the value absent).
    Metadata(MetadataMatcher),
}

/// `Principal`: a property of the downstream.
#[derive(Debug)]
pub enum Principal {
    /// `any: true`.
    Any,
    /// `and_ids`.
    And(Vec<Principal>),
    /// `or_ids`.
    Or(Vec<Principal>),
    /// `not_id`.
    Not(Box<Principal>),
    /// `authenticated`: a TLS connection (none: never), whose peer certificate's URI SANs, else
    /// DNS SANs, else subject match `principal_name` (unset: any TLS connection), as Envoy.
    Authenticated(Option<StringMatcher>),
    /// `source_ip` (deprecated): the connection's peer (the source a PROXY header stated).
    SourceIp(Cidr),
    /// `direct_remote_ip`: the directly connected peer (also when a PROXY header stated
    /// another source).
    DirectRemoteIp(Cidr),
    /// `remote_ip`: the downstream address after `x-forwarded-for` processing.
    RemoteIp(Cidr),
    /// `header`.
    Header(HeaderMatcher),
    /// `url_path`.
    UrlPath(StringMatcher),
    /// `metadata`: the request's dynamic metadata (istiod's `requestPrincipals` and
    /// `request.auth.claims` read the jwt_authn filter's payload).
    Metadata(MetadataMatcher),
    /// `filter_state`: sluice's filters set no filter state, so no key is ever present and
    /// the matcher fails, as Envoy's does for a missing key.
    FilterState,
}

/// What the engine checks a request (or connection) against.
pub struct Facts<'a, H: HeaderLookup + ?Sized> {
    /// The request line and headers (`None`: a connection, no request).
    pub request: Option<&'a RequestView<'a, H>>,
    /// The connection's peer.
    pub peer: SocketAddr,
    /// The directly connected peer's address (the peer's, unless a PROXY header stated
    /// another).
    pub direct: IpAddr,
    /// The downstream address after `x-forwarded-for` processing (the peer without a request).
    pub remote: IpAddr,
    /// The connection's destination (the original destination of a captured connection).
    pub local: SocketAddr,
    /// The TLS SNI (empty for plaintext).
    pub sni: &'a str,
    /// What the downstream TLS handshake established (None: plaintext).
    pub tls: Option<&'a crate::downstream_tls::TlsFacts>,
    /// The request's dynamic metadata (None: a connection, or no filter writes any).
    pub metadata: Option<&'a DynamicMetadata>,
}

/// The outcome of one engine for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'e> {
    /// Whether the request may continue.
    pub allowed: bool,
    /// The first matching policy by name (Envoy's effective policy id), if any.
    pub policy: Option<&'e str>,
}

impl Engine {
    /// Envoy's `handleAction`: the verdict and the first matching policy.
    pub fn check<H: HeaderLookup + ?Sized>(&self, f: &Facts<'_, H>) -> Verdict<'_> {
        let policy = self
            .policies
            .iter()
            .find(|(_, p)| p.matches(f))
            .map(|(n, _)| n.as_str());
        let allowed = match self.action {
            Action::Allow => policy.is_some(),
            Action::Deny => policy.is_none(),
            Action::Log => true,
        };
        Verdict { allowed, policy }
    }
}

impl Policy {
    fn matches<H: HeaderLookup + ?Sized>(&self, f: &Facts<'_, H>) -> bool {
        self.permissions.iter().any(|p| p.matches(f))
            && self.principals.iter().any(|p| p.matches(f))
    }
}

impl Permission {
    fn matches<H: HeaderLookup + ?Sized>(&self, f: &Facts<'_, H>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(f)),
            Permission::Or(any) => any.iter().any(|p| p.matches(f)),
            Permission::Not(p) => !p.matches(f),
            Permission::Header(h) => header_matches(h, f),
            Permission::UrlPath(m) => path_matches(m, f),
            Permission::UriTemplate(re) => f.request.is_some_and(|r| {
                let end = r.path.find(['?', '#']).unwrap_or(r.path.len());
                re.is_match(&r.path[..end])
            }),
            Permission::DestinationIp(c) => c.contains(f.local.ip()),
            Permission::DestinationPort(p) => f.local.port() == *p,
            Permission::DestinationPortRange(start, end) => {
                (*start..*end).contains(&i64::from(f.local.port()))
            }
            Permission::RequestedServerName(m) => m.matches(f.sni),
            Permission::Metadata(m) => metadata_matches(m, f.metadata),
        }
    }
}

impl Principal {
    /// Whether this principal (or one inside it) is a `remote_ip`.
    fn reads_remote(&self) -> bool {
        match self {
            Principal::RemoteIp(_) => true,
            Principal::And(v) | Principal::Or(v) => v.iter().any(Principal::reads_remote),
            Principal::Not(p) => p.reads_remote(),
            _ => false,
        }
    }

    fn matches<H: HeaderLookup + ?Sized>(&self, f: &Facts<'_, H>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(f)),
            Principal::Or(any) => any.iter().any(|p| p.matches(f)),
            Principal::Not(p) => !p.matches(f),
            Principal::FilterState => false,
            Principal::Authenticated(m) => authenticated(m.as_ref(), f.tls),
            Principal::SourceIp(c) => c.contains(f.peer.ip()),
            Principal::DirectRemoteIp(c) => c.contains(f.direct),
            Principal::RemoteIp(c) => c.contains(f.remote),
            Principal::Header(h) => header_matches(h, f),
            Principal::UrlPath(m) => path_matches(m, f),
            Principal::Metadata(m) => metadata_matches(m, f.metadata),
        }
    }
}

/// Envoy's `AuthenticatedMatcher`: any URI SAN, then any DNS SAN, then the subject (empty
/// without a peer certificate) matches; without a matcher any TLS connection does.
fn authenticated(m: Option<&StringMatcher>, tls: Option<&crate::downstream_tls::TlsFacts>) -> bool {
    let Some(tls) = tls else { return false };
    let Some(m) = m else { return true };
    let Some(peer) = &tls.peer else {
        return m.matches("");
    };
    peer.uri_sans.iter().any(|u| m.matches(u))
        || peer.dns_sans.iter().any(|d| m.matches(d))
        || m.matches(&peer.subject)
}

/// A header matcher against the request; without one (a connection), against no header.
fn header_matches<H: HeaderLookup + ?Sized>(h: &HeaderMatcher, f: &Facts<'_, H>) -> bool {
    match f.request {
        Some(r) => crate::route::header_matches(h, r),
        None => h.matches(None),
    }
}

/// Envoy's `PathMatcher`: the path without query string and fragment; no request, no match.
fn path_matches<H: HeaderLookup + ?Sized>(m: &StringMatcher, f: &Facts<'_, H>) -> bool {
    f.request.is_some_and(|r| {
        let end = r.path.find(['?', '#']).unwrap_or(r.path.len());
        m.matches(&r.path[..end])
    })
}

/// A metadata matcher over the request's metadata (none: an empty set, as Envoy's stream info
/// has before any filter writes).
fn metadata_matches(m: &MetadataMatcher, md: Option<&DynamicMetadata>) -> bool {
    match md {
        Some(md) => m.matches(md),
        None => m.matches(&DynamicMetadata::default()),
    }
}
