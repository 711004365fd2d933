//! Types shared by the eBPF programs and the user-space loader.
//!
//! Every type here is `#[repr(C)]`, has explicit padding fields and a zeroed constructor, so a map
//! key or value never carries uninitialised bytes. Byte order is in the field names: `_be` is network
//! order, everything else is host order.
#![no_std]

/// Version suffix of every map name. Bump it when a key or value layout changes, so a pinned map
/// written by an older agent is never read with the wrong layout.
pub const MAP_VERSION: &str = "v1";

/// Per-netns policy map name: netns cookie (u64) -> [`NetnsPolicy`].
pub const MAP_POLICY: &str = "sluice_policy_v1";
/// Per-CPU counters: index ([`Counter`] as u32) -> u64.
pub const MAP_COUNTERS: &str = "sluice_counters_v1";

/// `SO_MARK` the proxy sets on every upstream socket it opens. Setting a mark needs
/// CAP_NET_ADMIN, so an application cannot forge it; connect4/6 never capture a socket carrying it.
pub const PROXY_MARK: u32 = 0x5_1ce;

/// Istio's proxy identity (uid and gid of the istio-proxy container).
pub const PROXY_UID: u32 = 1337;

/// Default outbound listener port (Envoy's virtualOutbound).
pub const OUTBOUND_PORT: u16 = 15001;
/// Default inbound listener port (Envoy's virtualInbound).
pub const INBOUND_PORT: u16 = 15006;

/// Capture mode of an enrolled pod.
pub mod mode {
    /// Nothing is captured.
    pub const OFF: u8 = 0;
    /// The node agent serves the pod's listeners in-process (default).
    pub const NODE: u8 = 1;
    /// A `sluice sidecar` process inside the pod owns the listeners.
    pub const SIDECAR: u8 = 2;
}

/// Bits of [`NetnsPolicy::flags`].
pub mod flags {
    /// Sockets owned by `exempt_uid` / `exempt_gid` are not captured (Istio-style sidecar option;
    /// never set in node mode by default, so an app running as uid 1337 is still captured).
    pub const EXEMPT_UID: u8 = 1 << 0;
    /// When no proxy listener exists in the netns, let connections go direct instead of refusing.
    pub const FAIL_OPEN: u8 = 1 << 1;
}

/// Maximum number of ports in each port list of a policy.
pub const MAX_PORTS: usize = 16;
/// Maximum number of CIDRs in each CIDR list of a policy.
pub const MAX_CIDRS: usize = 8;

/// An IPv4 or IPv6 prefix. IPv4 is stored v4-mapped (`::ffff:a.b.c.d`) with `prefix_len + 96`,
/// so one comparison covers IPv4, IPv6 and v4-mapped IPv6 destinations.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// Address bytes in network order.
    pub addr: [u8; 16],
    /// Prefix length in IPv6 terms (0..=128).
    pub prefix_len: u8,
    pub _pad: [u8; 7],
}

impl Cidr {
    pub const fn zeroed() -> Self {
        Self { addr: [0; 16], prefix_len: 0, _pad: [0; 7] }
    }

    /// True when the (IPv6 or v4-mapped) address `addr` is inside this prefix.
    #[inline(always)]
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        let mut i = 0;
        while i < 16 {
            let bits = self.prefix_len as i32 - (i as i32) * 8;
            if bits <= 0 {
                return true;
            }
            let mask: u8 = if bits >= 8 { 0xff } else { !(0xffu8 >> bits) };
            if (addr[i] ^ self.addr[i]) & mask != 0 {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// Per-network-namespace capture policy, keyed by netns cookie. Written by the agent on enroll,
/// read by every program. Ports are host order; a list is the first `n_*` entries of its array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsPolicy {
    /// One of [`mode`].
    pub mode: u8,
    /// 1: sk_msg moves app<->proxy bytes between the loopback sockets; 0: through the TCP stack.
    pub fast_path: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    pub _pad0: u8,
    /// Outbound listener port inside the pod netns (127.0.0.1 / ::1).
    pub outbound_port: u16,
    /// Inbound listener port inside the pod netns.
    pub inbound_port: u16,
    /// uid exempt from capture when `flags::EXEMPT_UID` is set.
    pub exempt_uid: u32,
    /// gid exempt from capture when `flags::EXEMPT_UID` is set.
    pub exempt_gid: u32,
    pub n_exclude_outbound_ports: u8,
    pub n_include_outbound_ports: u8,
    pub n_exclude_inbound_ports: u8,
    pub n_exclude_outbound_cidrs: u8,
    pub n_include_outbound_cidrs: u8,
    pub _pad1: [u8; 3],
    /// Outbound destination ports never captured.
    pub exclude_outbound_ports: [u16; MAX_PORTS],
    /// When non-empty, only these outbound destination ports are captured.
    pub include_outbound_ports: [u16; MAX_PORTS],
    /// Inbound ports never captured (15008, 15090, 15021, 15020 by default).
    pub exclude_inbound_ports: [u16; MAX_PORTS],
    /// Outbound destinations never captured.
    pub exclude_outbound_cidrs: [Cidr; MAX_CIDRS],
    /// When non-empty, only destinations inside these are captured.
    pub include_outbound_cidrs: [Cidr; MAX_CIDRS],
}

impl NetnsPolicy {
    pub const fn zeroed() -> Self {
        Self {
            mode: mode::OFF,
            fast_path: 0,
            flags: 0,
            _pad0: 0,
            outbound_port: 0,
            inbound_port: 0,
            exempt_uid: 0,
            exempt_gid: 0,
            n_exclude_outbound_ports: 0,
            n_include_outbound_ports: 0,
            n_exclude_inbound_ports: 0,
            n_exclude_outbound_cidrs: 0,
            n_include_outbound_cidrs: 0,
            _pad1: [0; 3],
            exclude_outbound_ports: [0; MAX_PORTS],
            include_outbound_ports: [0; MAX_PORTS],
            exclude_inbound_ports: [0; MAX_PORTS],
            exclude_outbound_cidrs: [Cidr::zeroed(); MAX_CIDRS],
            include_outbound_cidrs: [Cidr::zeroed(); MAX_CIDRS],
        }
    }
}

/// Indexes of the per-CPU counter array. User space sums the CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// connect4/6 rewrote the destination to the outbound listener.
    Captured = 0,
    /// Skipped: netns not enrolled (or mode off).
    SkipNotEnrolled = 1,
    /// Skipped: loopback destination.
    SkipLoopback = 2,
    /// Skipped: excluded (or not included) destination port.
    SkipPort = 3,
    /// Skipped: excluded (or not included) destination CIDR.
    SkipCidr = 4,
    /// Skipped: the proxy's own socket (mark) or an exempt uid/gid.
    SkipProxy = 5,
    /// sk_msg redirected a message over the fast path.
    FastPathMsgs = 6,
    /// Bytes carried by the fast path.
    FastPathBytes = 7,
    /// cgroup/getsockopt answered SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST.
    OrigDstAnswered = 8,
    /// getpeername4/6 restored the original destination.
    PeernameRestored = 9,
    /// sk_lookup steered an inbound connection to the inbound listener.
    InboundCaptured = 10,
}

/// Number of slots in the counter array.
pub const COUNTER_SLOTS: u32 = 16;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data, `#[repr(C)]`, every byte is a named field (padding is explicit).
    unsafe impl aya::Pod for super::NetnsPolicy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Cidr {}
}
