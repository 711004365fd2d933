//! A provider's `remote_jwks`: the key set fetched from `http_uri` through its cluster when a
//! token first needs it (Envoy fetches on demand too, without `async_fetch`), kept for
//! `cache_duration` (10 minutes by default), fetched again after. A failed fetch (no cluster or
//! host, no answer within `timeout`, a status other than 200, a body that is no usable JWKS) is
//! `Jwks remote fetch is failed` for the request and is not cached.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{header, HeaderValue, Request};

use super::jwks::Jwks;
use crate::{
    http::{filters::ext_authz::call, local_reply},
    upstream::Cluster,
};

/// Envoy's default `cache_duration`.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(600);

/// The most of a key set's body read.
const MAX_BODY: usize = 1 << 20;

/// One provider's remote key set.
#[derive(Debug)]
pub struct RemoteJwks {
    pub(super) uri: http::Uri,
    pub(super) cluster: String,
    pub(super) timeout: Option<Duration>,
    pub(super) cache: Duration,
    fetched: Mutex<Option<(Instant, Arc<Jwks>)>>,
}

impl RemoteJwks {
    pub fn new(
        uri: http::Uri,
        cluster: String,
        timeout: Option<Duration>,
        cache: Duration,
    ) -> Self {
        // Whole seconds, as Envoy reads the duration.
        RemoteJwks {
            uri,
            cluster,
            timeout,
            cache: Duration::from_secs(cache.as_secs()),
            fetched: Mutex::new(None),
        }
    }

    /// The key set, while its fetch is fresh.
    pub fn current(&self) -> Option<Arc<Jwks>> {
        let g = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .filter(|(at, _)| at.elapsed() < self.cache)
            .map(|(_, j)| j.clone())
    }

    /// Fetches the key set (cached for later requests); None when the fetch failed.
    pub async fn fetch(&self, clusters: &HashMap<String, Arc<Cluster>>) -> Option<Arc<Jwks>> {
        let answer = call::call(
            &self.cluster,
            clusters,
            self.request(),
            self.timeout,
            |head| if head.status == 200 { MAX_BODY } else { 0 },
        )
        .await;
        let Some(a) = answer.filter(|a| a.head.status == 200 && !a.cut && !a.broken) else {
            tracing::debug!(uri = %self.uri, "jwt_authn: the key set fetch failed");
            return None;
        };
        let text = String::from_utf8_lossy(&a.body);
        match Jwks::parse(&text) {
            Ok(j) => {
                let j = Arc::new(j);
                *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), j.clone()));
                Some(j)
            }
            Err(e) => {
                tracing::debug!(uri = %self.uri, error = %e, "jwt_authn: the fetched key set is unusable");
                None
            }
        }
    }

    /// Envoy's `JwksFetcher` request: GET the URI's path, Host its authority, and the headers
    /// Envoy's fetch carries.
    fn request(&self) -> Request<crate::http::Body> {
        let mut r = Request::new(local_reply::empty());
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        *r.uri_mut() = path;
        let h = r.headers_mut();
        if let Some(a) = self.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
        // What Envoy 1.40's fetch carries (observed by the conformance suite: its async
        // client's placeholder downstream address and the fetcher's user agent).
        h.insert(header::USER_AGENT, HeaderValue::from_static("Go-browser"));
        h.insert("x-envoy-internal", HeaderValue::from_static("true"));
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.2"));
        if let Some(t) = self.timeout {
            let ms: u64 = t.as_millis().try_into().unwrap_or(u64::MAX);
            h.insert("x-envoy-expected-rq-timeout-ms", HeaderValue::from(ms));
        }
        r
    }
}
