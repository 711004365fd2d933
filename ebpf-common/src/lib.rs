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
pub const MAP_COUNTERS: &str = "sluice_counters_v2";
/// Original destination of a captured app socket: socket cookie (u64) -> [`OrigDst`].
pub const MAP_ORIG_BY_SOCK: &str = "sluice_orig_sock_v1";
/// Original destination by connection: [`SockTuple`] (app side view) -> [`OrigDst`].
pub const MAP_ORIG_BY_TUPLE: &str = "sluice_orig_tuple_v1";
/// SockHash of both loopback ends of captured connections: [`SockTuple`] (own view) -> socket.
pub const MAP_SOCKS: &str = "sluice_socks_v1";
/// Fast-path state of every socket sk_msg has seen (its budget, and whether it was demoted to the
/// TCP stack for good): [`SockTuple`] (own view) -> [`FastState`].
pub const MAP_FAST_STATE: &str = "sluice_fast_state_v1";
/// SockHash of each enrolled netns's inbound listener(s): [`ListenerKey`] -> listening socket.
pub const MAP_INBOUND_LISTENERS: &str = "sluice_inbound_listeners_v1";
/// Name of the sk_lookup program's load-time global holding the cookie of the netns that
/// instance is linked to (u64). sk_lookup cannot call `bpf_get_netns_cookie`.
pub const SK_LOOKUP_NETNS_GLOBAL: &str = "SLUICE_NETNS_COOKIE";
/// Every map, for iteration and cleanup in user space.
pub const ALL_MAPS: [&str; 7] = [
    MAP_POLICY,
    MAP_COUNTERS,
    MAP_ORIG_BY_SOCK,
    MAP_ORIG_BY_TUPLE,
    MAP_SOCKS,
    MAP_FAST_STATE,
    MAP_INBOUND_LISTENERS,
];

/// `AF_INET`, as stored in [`OrigDst::family`].
pub const AF_INET: u16 = 2;
/// `AF_INET6`, as stored in [`OrigDst::family`].
pub const AF_INET6: u16 = 10;
/// `SO_ORIGINAL_DST` (SOL_IP) and `IP6T_SO_ORIGINAL_DST` (SOL_IPV6) share this option number.
pub const SO_ORIGINAL_DST: i32 = 80;

/// `SO_MARK` the proxy sets on every upstream socket it opens. Setting a mark needs
/// CAP_NET_ADMIN, so an application cannot forge it; connect4/6 never capture a socket carrying it.
pub const PROXY_MARK: u32 = 0x5_1ce;

/// Istio's proxy identity (uid and gid of the istio-proxy container).
pub const PROXY_UID: u32 = 1337;

/// Default outbound listener port (Envoy's virtualOutbound).
pub const OUTBOUND_PORT: u16 = 15001;
/// Default inbound listener port (Envoy's virtualInbound).
pub const INBOUND_PORT: u16 = 15006;

/// Inbound ports sk_lookup never captures, whatever the policy says (Istio's own ports: HBONE,
/// Prometheus, health, merged metrics). The policy's `exclude_inbound_ports` adds to these, and
/// the inbound and outbound listener ports are never captured either.
pub const ALWAYS_EXCLUDED_INBOUND_PORTS: [u16; 4] = [15008, 15090, 15021, 15020];

/// Source address of the proxy's inbound passthrough connections (IPv4, inside 127.0.0.0/8,
/// which `lo` owns whole). sk_lookup never captures a connection from it, so there is no loop.
pub const PASSTHROUGH_SRC_V4: [u8; 4] = [127, 0, 0, 6];
/// Source address of the proxy's inbound passthrough connections (IPv6, `::6`; it must be added
/// to `lo` with `ip -6 addr add ::6/128 dev lo`). Never captured by sk_lookup.
pub const PASSTHROUGH_SRC_V6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6];

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
    /// When no proxy listener exists in the netns, let connections go direct instead of refusing
    /// them: outbound (connect4/6 finds nothing on the outbound port) and inbound (sk_lookup
    /// finds no registered inbound listener; without the flag the SYN is dropped and the client
    /// gets a reset).
    pub const FAIL_OPEN: u8 = 1 << 1;
    /// Userspace only (no program reads it): a node-mode pod served by the agent's L4
    /// passthrough even when the agent has an L7 config (`sluice enroll --engine l4`). Kept in
    /// the policy so an agent adopting the pod after a crash or an upgrade serves it the same way.
    pub const L4_ONLY: u8 = 1 << 2;
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
        Self {
            addr: [0; 16],
            prefix_len: 0,
            _pad: [0; 7],
        }
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

/// `addr` as `::ffff:a.b.c.d` (how every IPv4 address is stored in keys and values).
#[inline(always)]
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// True when a 16-byte address is v4-mapped (`::ffff:0:0/96`).
#[inline(always)]
pub fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

/// Where a captured connection was really going. Written by connect4/6, read by sockops,
/// getsockopt and getpeername.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// Destination address, network order; IPv4 v4-mapped.
    pub addr: [u8; 16],
    /// Destination port, network order.
    pub port_be: u16,
    /// [`AF_INET`] when `addr` is v4-mapped (IPv4 or v4-mapped IPv6 destination), else [`AF_INET6`].
    pub family: u16,
    pub _pad: [u8; 4],
    /// Netns cookie of the app socket (lets user space find every entry of a netns).
    pub netns_cookie: u64,
}

impl OrigDst {
    pub const fn zeroed() -> Self {
        Self {
            addr: [0; 16],
            port_be: 0,
            family: 0,
            _pad: [0; 4],
            netns_cookie: 0,
        }
    }

    /// The destination port in host order.
    pub const fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

/// A TCP connection seen from one end, in one network namespace. Loopback tuples repeat in
/// every netns, so the netns cookie is part of the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockTuple {
    /// Netns cookie of the socket.
    pub netns_cookie: u64,
    /// Source (local) address, network order; IPv4 v4-mapped.
    pub src_addr: [u8; 16],
    /// Destination (remote) address, network order; IPv4 v4-mapped.
    pub dst_addr: [u8; 16],
    /// Source port, host order.
    pub src_port: u16,
    /// Destination port, host order.
    pub dst_port: u16,
    pub _pad: [u8; 4],
}

impl SockTuple {
    pub const fn zeroed() -> Self {
        Self {
            netns_cookie: 0,
            src_addr: [0; 16],
            dst_addr: [0; 16],
            src_port: 0,
            dst_port: 0,
            _pad: [0; 4],
        }
    }

    /// The same connection seen from the other end.
    pub const fn reversed(&self) -> Self {
        Self {
            netns_cookie: self.netns_cookie,
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            _pad: [0; 4],
        }
    }
}

/// Bytes a socket may move over the fast path while its peer stays silent. The kernel queues
/// fast-path bytes on the peer without checking its receive buffer (no backpressure), so a
/// writer that outruns its reader is demoted to the TCP stack once it is this far ahead; the
/// stack's flow control then throttles it. Request/response traffic resets the budget every
/// turn (each send by the peer) and never reaches it. About a default-autotuned TCP receive
/// window.
pub const FAST_PATH_TURN_BUDGET: u32 = 4 << 20;
/// Bytes a socket may move over the fast path in its life. Bounds the queue also when both ends
/// stream at once (each send resets the other's turn budget); a long-lived connection past it
/// goes on over the TCP stack.
pub const FAST_PATH_LIFE_BUDGET: u64 = 1 << 30;

/// Fast-path state of one socket (the value of [`MAP_FAST_STATE`]), written by sk_msg only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastState {
    /// Bytes sent over the fast path since the peer last sent (see [`FAST_PATH_TURN_BUDGET`]).
    pub turn_bytes: u32,
    /// 1 once the socket sent through the TCP stack: it stays there, because a reader drains
    /// the fast-path queue before the TCP queue and switching back would reorder bytes.
    pub slow: u8,
    pub _pad: [u8; 3],
    /// Bytes sent over the fast path in the socket's life (see [`FAST_PATH_LIFE_BUDGET`]).
    pub life_bytes: u64,
}

impl FastState {
    pub const fn zeroed() -> Self {
        Self {
            turn_bytes: 0,
            slow: 0,
            _pad: [0; 3],
            life_bytes: 0,
        }
    }
}

/// Key of the inbound listener SockHash: one listening socket per (netns, address family). An
/// `AF_INET6` socket that is not `IPV6_V6ONLY` also takes IPv4 connections when no `AF_INET` one
/// is registered.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// Netns cookie of the pod.
    pub netns_cookie: u64,
    /// [`AF_INET`] or [`AF_INET6`]: the family of the listening socket.
    pub family: u16,
    pub _pad: [u8; 6],
}

impl ListenerKey {
    pub const fn new(netns_cookie: u64, family: u16) -> Self {
        Self {
            netns_cookie,
            family,
            _pad: [0; 6],
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
    /// Skipped: loopback destination (connect4/6), or loopback / passthrough source (sk_lookup).
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
    /// Skipped: not a TCP (SOCK_STREAM) socket.
    SkipNotTcp = 11,
    /// sk_msg found no peer socket, the fast path off or the socket's budget spent: the message
    /// went through the TCP stack, and the socket stays on the stack path from then on (byte
    /// order).
    FastPathMiss = 12,
    /// Skipped: `flags::FAIL_OPEN` is set and nothing listens on the outbound port.
    SkipNoListener = 13,
    /// sk_lookup left an inbound connection alone: excluded port (policy list, Istio's own ports
    /// or the listener ports). Loopback and passthrough sources count as `SkipLoopback`.
    InboundSkipPort = 14,
    /// sk_lookup found no live inbound listener for an inbound connection it would capture: it
    /// went direct (`flags::FAIL_OPEN`) or was dropped (fail closed).
    InboundNoListener = 15,
    /// sk_msg demoted a socket to the TCP stack for good: its fast-path budget ran out (a bulk
    /// writer ahead of its reader, see [`FAST_PATH_TURN_BUDGET`]). Also counted in `FastPathMiss`.
    FastPathDemoted = 16,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 17] = [
        Counter::Captured,
        Counter::SkipNotEnrolled,
        Counter::SkipLoopback,
        Counter::SkipPort,
        Counter::SkipCidr,
        Counter::SkipProxy,
        Counter::FastPathMsgs,
        Counter::FastPathBytes,
        Counter::OrigDstAnswered,
        Counter::PeernameRestored,
        Counter::InboundCaptured,
        Counter::SkipNotTcp,
        Counter::FastPathMiss,
        Counter::SkipNoListener,
        Counter::InboundSkipPort,
        Counter::InboundNoListener,
        Counter::FastPathDemoted,
    ];
}

/// Number of slots in the counter array.
pub const COUNTER_SLOTS: u32 = 32;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data, `#[repr(C)]`, every byte is a named field (padding is explicit).
    unsafe impl aya::Pod for super::NetnsPolicy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Cidr {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OrigDst {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockTuple {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FastState {}
}
