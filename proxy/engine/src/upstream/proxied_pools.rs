//! A host's pools for requests whose upstream connections start with a PROXY header
//! (`upstream_proxy_protocol`): one per downstream (source, destination) pair and routing
//! priority, as Envoy keys its pools by the connection's `ProxyProtocolFilterState`, so a
//! connection whose header named one client never carries another client's request.
//!
//! Unlike the SNI/ALPN keyed pools there is no cap: each pair is a client connection the
//! listener accepted, and a cap would make a busy gateway's pools evict each other (a new
//! upstream connection per request). Pools without a connection and not in use go at the idle
//! sweep. A map under a lock, taken once per request of such a cluster only.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use super::{pool::HostPool, transport_options::OptionsRef, RequestBody};
use crate::config::RoutingPriority;

type Key = (RoutingPriority, SocketAddr, SocketAddr);
/// The pools of one key: one per other option set (SNI, ALPN), usually one.
type Pools = Vec<Arc<HostPool<RequestBody>>>;

/// A host's PROXY-keyed pools (empty until a request needs one).
#[derive(Default)]
pub struct ProxiedPools(OnceLock<Mutex<HashMap<Key, Pools>>>);

impl std::fmt::Debug for ProxiedPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxiedPools")
    }
}

impl ProxiedPools {
    /// The pool of priority `p` for options `o` (whose `proxy` is set) to a host of
    /// `transport`, made by the first such request.
    pub fn get(
        &self,
        p: RoutingPriority,
        o: &OptionsRef<'_>,
        transport: u8,
        (src, dst): (SocketAddr, SocketAddr),
    ) -> Arc<HostPool<RequestBody>> {
        let mut m = self
            .0
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let pools = m.entry((p, src, dst)).or_default();
        if let Some(found) = pools.iter().find(|x| x.is_for(p, o)) {
            return found.clone();
        }
        let new = Arc::new(HostPool::keyed(p, transport, o.to_owned()));
        pools.push(new.clone());
        new
    }

    /// Closes the pools' idle connections ([`HostPool::drop_idle`]) and lets go of the pools
    /// neither in use nor holding a connection; returns how many connections it closed.
    pub fn drop_idle(&self, timeout: Option<Duration>) -> u64 {
        let Some(m) = self.0.get() else { return 0 };
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        m.retain(|_, pools| {
            pools.retain(|x| {
                closed += x.drop_idle(timeout);
                Arc::strong_count(x) > 1 || x.holds_connections()
            });
            !pools.is_empty()
        });
        closed
    }

    /// Whether one of them holds a connection.
    pub fn holds_connections(&self) -> bool {
        self.0.get().is_some_and(|m| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .flatten()
                .any(|x| x.holds_connections())
        })
    }

    /// How many pools there are (tests).
    #[cfg(test)]
    pub fn pool_count(&self) -> usize {
        self.0.get().map_or(0, |m| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(Vec::len)
                .sum()
        })
    }
}
