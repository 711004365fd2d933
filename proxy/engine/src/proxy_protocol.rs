//! The PROXY protocol (HAProxy's v1 text and v2 binary headers), both ways, as Envoy 1.40:
//!
//! - downstream, the `envoy.filters.listener.proxy_protocol` listener filter
//!   ([`parse`]: what the first bytes of a connection say; [`read`]: peeking at a socket until
//!   they say it, then consuming the header): a PROXY header gives the connection its client's
//!   source and destination (Istio's `gatewayTopology.proxyProtocol` behind a load balancer);
//! - upstream, the `envoy.transport_sockets.upstream_proxy_protocol` transport socket
//!   ([`encode`]): each upstream connection starts with a header naming the downstream
//!   connection's addresses (a DestinationRule's `trafficPolicy.proxyProtocol`).
//!
//! TLVs are skipped (checked for shape, never kept): sluice has no TLV consumer.

pub mod encode;
pub mod parse;
pub mod read;

/// The two header versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header (12-byte signature).
    V2,
}

impl Version {
    /// `v1` / `v2`, as Envoy's stats name them.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// The v2 signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 signature (with its space).
pub const V1_SIGNATURE: &[u8; 6] = b"PROXY ";
/// Longest v1 header Envoy reads (its MAX_PROXY_PROTO_LEN_V1).
pub const V1_MAX_LEN: usize = 108;
/// The fixed part of a v2 header: signature, version/command, family/transport, length.
pub const V2_HEADER_LEN: usize = 16;
