//! `filter_chain_match` as Envoy matches it: the criteria of one chain ([`ChainMatch`]), the
//! facts of one connection ([`ConnFacts`]) and Envoy's most-specific-wins choice ([`select`]).
//!
//! Envoy walks the criteria in a fixed order (destination port, destination IP, server name,
//! transport protocol, application protocols, direct source IP, source type, source IP, source
//! port). At each criterion it keeps only the chains with the most specific value that admits
//! the connection (an exact port over no port, the longest prefix, an exact name over the
//! longest wildcard over none, ...) and never backtracks: when the chains kept at one criterion
//! all fail a later one, no chain matches (the listener's `default_filter_chain`, if any, takes
//! the connection; otherwise it is closed). Pure and allocation-free per connection.

use std::net::{IpAddr, SocketAddr};

/// Number of criteria Envoy walks.
const LEVELS: usize = 9;

/// A CIDR range (`address_prefix` masked to `prefix_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// `prefix_len`.
    pub len: u8,
}

impl Cidr {
    /// The range `addr/len`, host bits cleared; `None` when `len` exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Self { addr, len })
    }

    /// Whether `ip` is in the range (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(i)) => Cidr::new(i.into(), self.len) == Some(*self),
            (IpAddr::V6(_), IpAddr::V6(i)) => Cidr::new(i.into(), self.len) == Some(*self),
            _ => false,
        }
    }
}

/// `filter_chain_match.source_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SourceType {
    /// `ANY` (default).
    #[default]
    Any,
    /// `SAME_IP_OR_LOOPBACK`: the peer is a loopback address or the connection's own address.
    Local,
    /// `EXTERNAL`: any other peer.
    External,
}

/// One chain's `filter_chain_match` (empty lists and `None` admit anything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainMatch {
    /// `destination_port`.
    pub destination_port: Option<u16>,
    /// `prefix_ranges` (destination IP).
    pub prefix_ranges: Vec<Cidr>,
    /// `server_names`; a wildcard `*.example.com` is kept as `.example.com`.
    pub server_names: Vec<String>,
    /// `transport_protocol` (`raw_buffer`, `tls`, ...).
    pub transport_protocol: Option<String>,
    /// `application_protocols`.
    pub application_protocols: Vec<String>,
    /// `direct_source_prefix_ranges` (the directly connected peer, before a PROXY header).
    pub direct_source_prefix_ranges: Vec<Cidr>,
    /// `source_type`.
    pub source_type: SourceType,
    /// `source_prefix_ranges`.
    pub source_prefix_ranges: Vec<Cidr>,
    /// `source_ports`.
    pub source_ports: Vec<u16>,
}

/// The application protocols a connection requests: none, the http_inspector's one, or the
/// TLS ClientHello's ALPN list (in the client's order).
#[derive(Debug, Clone, Copy, Default)]
pub enum AppProtocols<'a> {
    /// Nothing detected.
    #[default]
    None,
    /// One protocol (`http/1.1`, `http/1.0`, `h2c`).
    One(&'a str),
    /// The ALPN list.
    List(&'a [String]),
}

impl<'a> AppProtocols<'a> {
    fn len(&self) -> usize {
        match self {
            AppProtocols::None => 0,
            AppProtocols::One(_) => 1,
            AppProtocols::List(l) => l.len(),
        }
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        match *self {
            AppProtocols::None => None,
            AppProtocols::One(p) => (i == 0).then_some(p),
            AppProtocols::List(l) => l.get(i).map(String::as_str),
        }
    }
}

/// What Envoy knows of a connection when it chooses the filter chain.
#[derive(Debug, Clone, Copy)]
pub struct ConnFacts<'a> {
    /// The destination (the original destination on a captured listener).
    pub dst: SocketAddr,
    /// The peer.
    pub src: SocketAddr,
    /// The directly connected peer when a PROXY header restored another `src` (`None`: `src`).
    pub direct_src: Option<std::net::IpAddr>,
    /// The TLS SNI (tls_inspector), if any.
    pub server_name: Option<&'a str>,
    /// `tls` (tls_inspector saw a ClientHello) or `raw_buffer`.
    pub transport_protocol: &'a str,
    /// The requested application protocols.
    pub application_protocols: AppProtocols<'a>,
}

impl ConnFacts<'_> {
    fn is_local(&self) -> bool {
        self.src.ip().is_loopback() || self.src.ip() == self.dst.ip()
    }
}

/// The longest range of `ranges` containing `ip`: `Some(0)` for an empty list (any address),
/// `None` when none does (an explicit `/0` ranks with the empty list).
fn prefix_rank(ranges: &[Cidr], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges
        .iter()
        .filter(|c| c.contains(ip))
        .map(|c| u32::from(c.len))
        .max()
}

fn server_name_rank(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni.filter(|s| !s.is_empty())?;
    names
        .iter()
        .filter_map(|n| {
            if n == sni {
                Some(u32::MAX)
            } else if n.starts_with('.') && sni.len() > n.len() && sni.ends_with(n.as_str()) {
                // Envoy tries `.b.example.com` before `.example.com` (longest suffix first).
                Some(n.len() as u32)
            } else {
                None
            }
        })
        .max()
}

fn app_protocol_rank(protos: &[String], conn: AppProtocols<'_>) -> Option<u32> {
    if protos.is_empty() {
        return Some(0);
    }
    // The first of the connection's protocols that some chain lists wins.
    let n = conn.len();
    (0..n)
        .find(|&i| conn.get(i).is_some_and(|p| protos.iter().any(|x| x == p)))
        .map(|i| (n - i) as u32)
}

/// How specifically `m` admits `f` at criterion `level` (higher is more specific), `None` when
/// it does not.
fn rank(level: usize, m: &ChainMatch, f: &ConnFacts<'_>) -> Option<u32> {
    let exact = |want: bool| if want { Some(1) } else { None };
    match level {
        0 => match m.destination_port {
            None => Some(0),
            Some(p) => exact(p == f.dst.port()),
        },
        1 => prefix_rank(&m.prefix_ranges, f.dst.ip()),
        2 => server_name_rank(&m.server_names, f.server_name),
        3 => match &m.transport_protocol {
            None => Some(0),
            Some(t) => exact(t == f.transport_protocol),
        },
        4 => app_protocol_rank(&m.application_protocols, f.application_protocols),
        5 => prefix_rank(
            &m.direct_source_prefix_ranges,
            f.direct_src.unwrap_or_else(|| f.src.ip()),
        ),
        6 => match m.source_type {
            SourceType::Any => Some(0),
            SourceType::Local => exact(f.is_local()),
            SourceType::External => exact(!f.is_local()),
        },
        7 => prefix_rank(&m.source_prefix_ranges, f.src.ip()),
        _ => match m.source_ports.is_empty() {
            true => Some(0),
            false => exact(m.source_ports.contains(&f.src.port())),
        },
    }
}

/// Whether `m` admits `f` on every criterion on its own (no most-specific choice).
pub fn admits(m: &ChainMatch, f: &ConnFacts<'_>) -> bool {
    (0..LEVELS).all(|l| rank(l, m, f).is_some())
}

/// Envoy's choice among `chains` (each with its match) for `f`: the index of the chain, or
/// `None` when no chain matches.
pub fn select<'m>(
    chains: impl Iterator<Item = &'m ChainMatch> + Clone,
    f: &ConnFacts<'_>,
) -> Option<usize> {
    let mut best = [0u32; LEVELS];
    let kept = |m: &ChainMatch, best: &[u32]| {
        best.iter()
            .enumerate()
            .all(|(l, b)| rank(l, m, f) == Some(*b))
    };
    for level in 0..LEVELS {
        best[level] = chains
            .clone()
            .filter(|m| kept(m, &best[..level]))
            .filter_map(|m| rank(level, m, f))
            .max()?;
    }
    chains.clone().position(|m| kept(m, &best))
}

/// Whether two matches share a key on every criterion (an empty list is its own key, as in
/// Envoy's match tree): Envoy refuses such a listener.
pub fn overlaps(a: &ChainMatch, b: &ChainMatch) -> bool {
    fn share<T: PartialEq>(a: &[T], b: &[T]) -> bool {
        (a.is_empty() && b.is_empty()) || a.iter().any(|x| b.contains(x))
    }
    a.destination_port == b.destination_port
        && share(&a.prefix_ranges, &b.prefix_ranges)
        && share(&a.server_names, &b.server_names)
        && a.transport_protocol == b.transport_protocol
        && share(&a.application_protocols, &b.application_protocols)
        && share(
            &a.direct_source_prefix_ranges,
            &b.direct_source_prefix_ranges,
        )
        && a.source_type == b.source_type
        && share(&a.source_prefix_ranges, &b.source_prefix_ranges)
        && share(&a.source_ports, &b.source_ports)
}

#[cfg(test)]
#[path = "chain_match_tests.rs"]
mod tests;
