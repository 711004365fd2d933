//! Per-request transport socket options (Envoy's `TransportSocketOptions`): the SNI, the name
//! the server certificate must carry and the ALPN list a request's upstream TLS handshake uses
//! instead of its cluster's, from the cluster's `auto_sni` / `auto_san_validation` and Istio's
//! `istio.alpn` filter. Envoy keys a host's connection pools by them, so a connection made with
//! one set never carries a request of another; [`super::Host::pool_for`] keeps one pool per set.
//!
//! They only change a TLS handshake: a plaintext host ignores them (and keeps one pool).

use std::sync::Arc;

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
}

impl OptionsRef<'_> {
    /// No option: the cluster's own handshake.
    pub fn is_none(&self) -> bool {
        self.sni.is_none() && self.san.is_none() && self.alpn.is_none()
    }

    /// The owned copy a new pool keeps.
    pub fn to_owned(&self) -> TransportOptions {
        TransportOptions {
            sni: self.sni.map(Box::from),
            san: self.san.map(Box::from),
            alpn: self.alpn.cloned(),
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
}

impl TransportOptions {
    /// Whether these are the options `r` describes.
    pub fn is(&self, r: &OptionsRef<'_>) -> bool {
        self.sni.as_deref() == r.sni
            && self.san.as_deref() == r.san
            && match (&self.alpn, r.alpn) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
    }
}

/// Most pools a host keeps for requests with options; past it a request's connection is not
/// pooled (a client choosing the Host header of an `auto_sni` cluster cannot grow a host's
/// pools without bound). The idle sweep drops such pools once their connections are gone.
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
