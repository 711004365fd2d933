//! The route chosen again after a filter cleared the route cache (Envoy's `clearRouteCache`):
//! jwt_authn with `clear_route_cache` once a verified token added a claim header or put its
//! payload in the metadata, ext_authz with `clear_route_cache` once an allowed check changed a
//! request header.
//!
//! The route is first chosen before the filters run, as Envoy's HCM does. A filter that clears
//! the cache leaves a [`RouteSnapshot`]: the request headers, path and dynamic metadata as that
//! filter left them. The filters after it read their per-route configs from the route chosen
//! with the snapshot, and the router forwards by it; a later filter's changes do not move the
//! route unless it clears the cache too. Which filters run stays as the first route had it
//! (`FilterConfig.disabled`): Envoy builds a request's filter chain once, on arrival. Choosing a route is pure given the same view (the
//! request's one random value included), so choosing it from the snapshot again gives the
//! same route each time.

use http::{header::HOST, uri::PathAndQuery, HeaderMap};

use super::metadata::DynamicMetadata;
use crate::route::RequestView;

/// What the route is chosen again from.
#[derive(Debug)]
pub struct RouteSnapshot {
    headers: HeaderMap,
    /// A `host` a filter set (an ext_authz service's allowed upstream header): the authority
    /// the route is chosen again with, as Envoy's `:authority` would be.
    authority: Option<String>,
    path: Option<PathAndQuery>,
    metadata: DynamicMetadata,
}

impl RouteSnapshot {
    /// The request as the clearing filter left it: its headers (`changed`, or `orig` when no
    /// filter changed them), the path (`None`: as sent) and the dynamic metadata written so far.
    pub fn new(
        changed: Option<&HeaderMap>,
        orig: &HeaderMap,
        path: Option<PathAndQuery>,
        metadata: DynamicMetadata,
    ) -> RouteSnapshot {
        let authority = changed.and_then(|h| host_set(h, orig)).map(str::to_owned);
        RouteSnapshot {
            headers: changed.unwrap_or(orig).clone(),
            authority,
            path,
            metadata,
        }
    }

    /// `base` (the request line as routing first saw it) with the snapshot's headers, path
    /// and metadata.
    pub fn view<'a>(&'a self, base: &RequestView<'a, HeaderMap>) -> RequestView<'a, HeaderMap> {
        RequestView {
            headers: &self.headers,
            authority: self.authority.as_deref().or(base.authority),
            path: self.path.as_ref().map_or(base.path, PathAndQuery::as_str),
            metadata: Some(&self.metadata),
            ..*base
        }
    }
}

/// A `host` the filters set (`changed` against the request as it came, `orig`): the authority
/// the request now has, as Envoy's `:authority` would be.
pub(crate) fn host_set<'h>(changed: &'h HeaderMap, orig: &HeaderMap) -> Option<&'h str> {
    changed
        .get(HOST)
        .filter(|v| orig.get(HOST) != Some(*v))
        .and_then(|v| v.to_str().ok())
}
