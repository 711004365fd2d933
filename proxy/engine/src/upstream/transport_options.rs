//! Per-request transport socket options (Envoy's `TransportSocketOptions`): the SNI, the name
//! the server certificate must carry and the ALPN list a request's upstream TLS handshake uses
//! instead of its cluster's, from the cluster's `auto_sni` / `auto_san_validation` and Istio's
//! `istio.alpn` filter. Envoy keys a host's connection pools by them, so a connection made with
//! one set never carries a request of another; [`super::Host::pool_for`] keeps one pool per set.
//!
//! The SNI, SAN and ALPN only change a TLS handshake: a plaintext host ignores them. The
//! downstream addresses an `upstream_proxy_protocol` transport socket states are options too
//! (Envoy's `ProxyProtocolFilterState` is part of its pool key): a connection whose header
//! named one client never carries another's request.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// An ALPN list, as offered on the wire.
pub type AlpnList = Arc<[Box<[u8]>]>;

/// A request's transport options, borrowed from the request and its configuration (no
/// allocation to look up the pool that already has them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptionsRef<'a> {
    /// The SNI to send (`auto_sni`: the request's host, not an IP address).
    pub sni: Option<&'a str>,
    /// The name one of the certificate's SANs must match (`auto_san_validation`).
    pub san: Option<&'a str>,
    /// The ALPN list to offer (`istio.alpn`).
    pub alpn: Option<&'a AlpnList>,
    /// The downstream connection's source and destination, for a PROXY header.
    pub proxy: Option<(SocketAddr, SocketAddr)>,
}

impl OptionsRef<'_> {
    /// No option: the cluster's own handshake.
    pub fn is_none(&self) -> bool {
        self.sni.is_none() && self.san.is_none() && self.alpn.is_none() && self.proxy.is_none()
    }

    /// Only the options a transport uses: the TLS ones when it is TLS, the addresses when it
    /// sends a PROXY header.
    pub fn used_by(self, tls: bool, proxy: bool) -> Self {
        Self {
            sni: self.sni.filter(|_| tls),
            san: self.san.filter(|_| tls),
            alpn: self.alpn.filter(|_| tls),
            proxy: self.proxy.filter(|_| proxy),
        }
    }

    /// The owned copy a new pool keeps.
    pub fn to_owned(&self) -> TransportOptions {
        TransportOptions {
            sni: self.sni.map(Box::from),
            san: self.san.map(Box::from),
            alpn: self.alpn.cloned(),
            proxy: self.proxy,
        }
    }
}

/// The options a connection was made with (a pool's key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportOptions {
    /// See [`OptionsRef::sni`].
    pub sni: Option<Box<str>>,
    /// See [`OptionsRef::san`].
    pub san: Option<Box<str>>,
    /// See [`OptionsRef::alpn`].
    pub alpn: Option<AlpnList>,
    /// See [`OptionsRef::proxy`].
    pub proxy: Option<(SocketAddr, SocketAddr)>,
}

impl TransportOptions {
    /// Whether these are the options `r` describes (host names compared ignoring case, as
    /// Envoy's pool key hashes them).
    pub fn is(&self, r: &OptionsRef<'_>) -> bool {
        let same = |a: Option<&str>, b: Option<&str>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        self.proxy == r.proxy
            && same(self.sni.as_deref(), r.sni)
            && same(self.san.as_deref(), r.san)
            && match (&self.alpn, r.alpn) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
    }
}

/// A connector and the cluster's client config it was made from.
type Made = (Arc<ClientConfig>, TlsConnector);

/// A keyed pool's options and the TLS client configs made for them (HTTP/2-or-own ALPN, and
/// HTTP/1's), each kept with the cluster config it was made from: one per pool, so its
/// connections resume TLS sessions (rustls resumes only under the same verifier), made again
/// when the cluster's TLS changes (a new secret).
pub struct KeyedTransport {
    /// The options.
    pub options: TransportOptions,
    made: Mutex<[Option<Made>; 2]>,
    /// When a request last took the pool ([`super::now_ms`], to the second): the least
    /// recently used keyed pool goes first past [`MAX_KEYED_POOLS`].
    last_used: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for KeyedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedTransport")
            .field("options", &self.options)
            .finish()
    }
}

impl KeyedTransport {
    /// Options without a config made yet.
    pub fn new(options: TransportOptions) -> Self {
        Self {
            options,
            made: Mutex::new([None, None]),
            last_used: std::sync::atomic::AtomicU64::new(super::now_ms()),
        }
    }

    /// Notes a use now (a write at most once a second, so workers sharing the pool do not
    /// write its cache line on every request).
    pub fn touch(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = super::now_ms();
        if now.saturating_sub(self.last_used.load(Relaxed)) >= 1000 {
            self.last_used.store(now, Relaxed);
        }
    }

    /// When it was last used ([`super::now_ms`]).
    pub fn last_used(&self) -> u64 {
        self.last_used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The connector for `base` (`h1`: HTTP/1's), made by `make` unless made from the same
    /// `base` before.
    pub fn connector(
        &self,
        h1: bool,
        base: &TlsConnector,
        make: impl FnOnce() -> TlsConnector,
    ) -> TlsConnector {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut made[usize::from(h1)];
        match slot {
            Some((from, c)) if Arc::ptr_eq(from, base.config()) => c.clone(),
            _ => {
                let c = make();
                *slot = Some((base.config().clone(), c.clone()));
                c
            }
        }
    }
}

/// Most pools a host keeps for requests with SNI / SAN / ALPN options (a client choosing the Host header of
/// an `auto_sni` cluster cannot grow a host's pools without bound): past it the least recently
/// used one is let go (its connections close once free). The idle sweep drops pools left
/// without a connection.
pub const MAX_KEYED_POOLS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_compare_by_value_and_borrowed_lookups_need_no_copy() {
        let alpn: AlpnList = Arc::from(vec![Box::from(&b"istio-h2"[..]), Box::from(&b"h2"[..])]);
        let same: AlpnList = Arc::from(vec![Box::from(&b"istio-h2"[..]), Box::from(&b"h2"[..])]);
        let r = OptionsRef {
            sni: Some("api.example.com"),
            san: Some("api.example.com"),
            alpn: Some(&alpn),
            proxy: None,
        };
        let owned = r.to_owned();
        assert!(owned.is(&r));
        assert!(owned.is(&OptionsRef {
            alpn: Some(&same),
            ..r
        }));
        assert!(!owned.is(&OptionsRef { san: None, ..r }));
        assert!(!owned.is(&OptionsRef {
            sni: Some("other.example.com"),
            ..r
        }));
        assert!(OptionsRef::default().is_none());
        assert!(!r.is_none());
    }
}
