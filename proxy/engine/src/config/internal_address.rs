//! `HttpConnectionManager.internal_address_config`: which downstream addresses make a request
//! internal (Envoy's `InternalAddressConfig`).
//!
//! Without the field no request is internal (Envoy 1.40's default since
//! `explicit_internal_address_config`). With it, an address inside one of `cidr_ranges` is
//! internal; with no range at all, Envoy's private ranges are (`Network::Utility::isInternalAddress`:
//! 10/8, 172.16/12, 192.168/16, 127.0.0.1, fd00::/8 and ::1). `unix_sockets` is for pipe
//! listeners, which sluice does not have: accepted, and no TCP peer is a unix socket.

use std::net::IpAddr;

use serde::Deserialize;

use super::{chain_match::Cidr, raw::RawCidrRange, validate_chain::cidr, ConfigError, FieldPath};

/// `InternalAddressConfig` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInternalAddressConfig {
    /// A no-op: no listener here is a unix socket.
    #[allow(dead_code)]
    pub unix_sockets: Option<bool>,
    #[serde(default)]
    pub cidr_ranges: Vec<RawCidrRange>,
}

/// The addresses whose requests are internal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalAddresses {
    /// `cidr_ranges`; empty: Envoy's private ranges.
    ranges: Vec<Cidr>,
}

impl InternalAddresses {
    /// The addresses in `ranges` (empty: Envoy's private ranges).
    pub fn new(ranges: Vec<Cidr>) -> Self {
        Self { ranges }
    }

    /// Whether a request from `ip` (the final remote address) is internal.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.ranges.is_empty() {
            return is_private(ip);
        }
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

/// Envoy's `Network::Utility::isInternalAddress`: RFC 1918, 127.0.0.1, fd00::/8 and ::1.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            b0 == 10
                || (b0 == 192 && b1 == 168)
                || (b0 == 172 && (16..=31).contains(&b1))
                || a == std::net::Ipv4Addr::LOCALHOST
        }
        IpAddr::V6(a) => a.octets()[0] == 0xfd || a.is_loopback(),
    }
}

/// `internal_address_config` at `p`.
pub(crate) fn parse(
    raw: Option<&RawInternalAddressConfig>,
    p: &FieldPath,
) -> Result<Option<InternalAddresses>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let p = p.field("internal_address_config");
    let mut ranges = Vec::with_capacity(raw.cidr_ranges.len());
    for (i, r) in raw.cidr_ranges.iter().enumerate() {
        ranges.push(cidr(r, &p.field("cidr_ranges").index(i))?);
    }
    Ok(Some(InternalAddresses { ranges }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_range_means_envoys_private_ranges() {
        let all = InternalAddresses::new(vec![]);
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.1",
            "192.168.0.1",
            "127.0.0.1",
            "fd00::1",
            "::1",
        ] {
            assert!(all.contains(ip(a)), "{a}");
        }
        for a in [
            "172.32.0.1",
            "127.0.0.2",
            "100.64.0.1",
            "203.0.113.9",
            "fc00::1",
            "2001:db8::1",
        ] {
            assert!(!all.contains(ip(a)), "{a}");
        }
    }

    #[test]
    fn ranges_replace_the_private_ones() {
        let r = InternalAddresses::new(vec![Cidr::new(ip("203.0.113.0"), 24).unwrap()]);
        assert!(r.contains(ip("203.0.113.9")));
        assert!(!r.contains(ip("10.1.2.3")));
        assert!(
            !r.contains(ip("::ffff:203.0.113.9")),
            "families are not mixed"
        );
    }
}
