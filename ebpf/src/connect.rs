//! cgroup/connect4 and cgroup/connect6: decide capture and rewrite to the outbound listener.
//!
//! A socket is captured when its netns is enrolled (mode != off), it is TCP, and none of the
//! exemptions hold: loopback destination, excluded (or not included) port or CIDR, the proxy's
//! own socket (`SO_MARK == PROXY_MARK`, which needs CAP_NET_ADMIN to set), or an exempt uid/gid
//! when the policy asks for it. Capture stores the original destination by socket cookie and
//! rewrites the destination to 127.0.0.1 / ::1 / ::ffff:127.0.0.1 : outbound_port.

use core::{
    mem::{offset_of, size_of},
    ptr::{addr_of_mut, write_volatile},
};

use aya_ebpf::{
    bindings::{
        bpf_sock, bpf_sock_addr, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2, BPF_F_CURRENT_NETNS,
    },
    helpers::{
        bpf_get_current_uid_gid, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_sk_lookup_tcp,
        bpf_sk_release,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext as _,
};
use sluice_common::{
    flags, is_v4_mapped, Counter, NetnsPolicy, OrigDst, AF_INET, AF_INET6, MAX_CIDRS, MAX_PORTS,
    PROXY_MARK,
};

use crate::{
    addr::{
        ctx_u32, from_ip6, is_loopback, mapped_from_ip4, to_ip6, LOOPBACK_IP4, LOOPBACK_IP6,
        LOOPBACK_MAPPED,
    },
    maps::{active_policy, count, ORIG_BY_SOCK},
};

/// cgroup/connect*: let the connect proceed (possibly to a rewritten address).
const CONNECT_PROCEED: i32 = 1;
/// `SOCK_STREAM`.
const SOCK_STREAM: u32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn sluice_connect4(ctx: SockAddrContext) -> i32 {
    connect4(&ctx);
    CONNECT_PROCEED
}

#[cgroup_sock_addr(connect6)]
pub fn sluice_connect6(ctx: SockAddrContext) -> i32 {
    connect6(&ctx);
    CONNECT_PROCEED
}

#[inline(always)]
fn connect4(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    let Some((policy, netns)) = enrolled_tcp(ctx) else {
        return;
    };
    let ip4 = ctx_u32!(sa, offset_of!(bpf_sock_addr, user_ip4));
    let port_be = ctx_u32!(sa, offset_of!(bpf_sock_addr, user_port)) as u16;
    let dst = mapped_from_ip4(ip4);
    if !should_capture(ctx, policy, &dst, u16::from_be(port_be)) {
        return;
    }
    if !listener_ready(ctx, policy, None) {
        return;
    }
    remember(ctx, netns, dst, port_be, AF_INET);
    // SAFETY: connect4 may write user_ip4 and user_port (4-byte stores).
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip4), LOOPBACK_IP4);
        write_volatile(
            addr_of_mut!((*sa).user_port),
            policy.outbound_port.to_be() as u32,
        );
    }
    count(Counter::Captured, 1);
}

#[inline(always)]
fn connect6(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    let Some((policy, netns)) = enrolled_tcp(ctx) else {
        return;
    };
    const IP6: usize = offset_of!(bpf_sock_addr, user_ip6);
    let words = [
        ctx_u32!(sa, IP6),
        ctx_u32!(sa, IP6 + 4),
        ctx_u32!(sa, IP6 + 8),
        ctx_u32!(sa, IP6 + 12),
    ];
    let port_be = ctx_u32!(sa, offset_of!(bpf_sock_addr, user_port)) as u16;
    let dst = from_ip6(words);
    if !should_capture(ctx, policy, &dst, u16::from_be(port_be)) {
        return;
    }
    let mapped = is_v4_mapped(&dst);
    if !listener_ready(ctx, policy, (!mapped).then_some(LOOPBACK_IP6)) {
        return;
    }
    remember(
        ctx,
        netns,
        dst,
        port_be,
        if mapped { AF_INET } else { AF_INET6 },
    );
    let to = to_ip6(if mapped {
        &LOOPBACK_MAPPED
    } else {
        &LOOPBACK_IP6
    });
    // SAFETY: connect6 may write user_ip6 (4-byte stores, one per word) and user_port.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip6[0]), to[0]);
        write_volatile(addr_of_mut!((*sa).user_ip6[1]), to[1]);
        write_volatile(addr_of_mut!((*sa).user_ip6[2]), to[2]);
        write_volatile(addr_of_mut!((*sa).user_ip6[3]), to[3]);
        write_volatile(
            addr_of_mut!((*sa).user_port),
            policy.outbound_port.to_be() as u32,
        );
    }
    count(Counter::Captured, 1);
}

/// The policy and netns cookie when the socket is TCP and its netns enrolled; counts the skip
/// otherwise.
#[inline(always)]
fn enrolled_tcp(ctx: &SockAddrContext) -> Option<(&'static NetnsPolicy, u64)> {
    let sock_type = ctx_u32!(ctx.sock_addr, offset_of!(bpf_sock_addr, type_));
    // SAFETY: helper available to cgroup/sock_addr programs; ctx is the program's context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let Some(policy) = active_policy(netns) else {
        count(Counter::SkipNotEnrolled, 1);
        return None;
    };
    if sock_type != SOCK_STREAM {
        count(Counter::SkipNotTcp, 1);
        return None;
    }
    Some((policy, netns))
}

/// Applies the exemptions in order; counts the reason of a skip.
#[inline(always)]
fn should_capture(ctx: &SockAddrContext, p: &NetnsPolicy, dst: &[u8; 16], port: u16) -> bool {
    let skip = if is_loopback(dst) {
        Some(Counter::SkipLoopback)
    } else if is_proxy_socket(ctx.sock_addr, p) {
        Some(Counter::SkipProxy)
    } else if !port_selected(p, port) {
        Some(Counter::SkipPort)
    } else if !cidr_selected(p, dst) {
        Some(Counter::SkipCidr)
    } else {
        None
    };
    match skip {
        Some(c) => {
            count(c, 1);
            false
        }
        None => true,
    }
}

/// The proxy's own socket: marked with PROXY_MARK (setting SO_MARK needs CAP_NET_ADMIN, so an
/// app cannot forge it), or owned by the exempt uid/gid when the policy opts into that.
#[inline(always)]
fn is_proxy_socket(sa: *mut bpf_sock_addr, p: &NetnsPolicy) -> bool {
    // SAFETY: ctx->sk is a PTR_TO_SOCKET (never NULL in sock_addr programs); `mark` is a
    // readable bpf_sock field (it is what SO_MARK set).
    let sk = unsafe { (*sa).__bindgen_anon_1.sk };
    let mark = ctx_u32!(sk, offset_of!(bpf_sock, mark));
    if mark == PROXY_MARK {
        return true;
    }
    if p.flags & flags::EXEMPT_UID != 0 {
        let uid_gid = bpf_get_current_uid_gid();
        let uid = uid_gid as u32;
        let gid = (uid_gid >> 32) as u32;
        return uid == p.exempt_uid || gid == p.exempt_gid;
    }
    false
}

/// Not excluded, and included when an include list exists.
#[inline(always)]
fn port_selected(p: &NetnsPolicy, port: u16) -> bool {
    let mut i = 0;
    while i < MAX_PORTS {
        if i >= p.n_exclude_outbound_ports as usize {
            break;
        }
        if p.exclude_outbound_ports[i] == port {
            return false;
        }
        i += 1;
    }
    if p.n_include_outbound_ports == 0 {
        return true;
    }
    let mut i = 0;
    while i < MAX_PORTS {
        if i >= p.n_include_outbound_ports as usize {
            break;
        }
        if p.include_outbound_ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Not inside an excluded CIDR, and inside an included one when an include list exists.
#[inline(always)]
fn cidr_selected(p: &NetnsPolicy, dst: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < MAX_CIDRS {
        if i >= p.n_exclude_outbound_cidrs as usize {
            break;
        }
        if p.exclude_outbound_cidrs[i].contains(dst) {
            return false;
        }
        i += 1;
    }
    if p.n_include_outbound_cidrs == 0 {
        return true;
    }
    let mut i = 0;
    while i < MAX_CIDRS {
        if i >= p.n_include_outbound_cidrs as usize {
            break;
        }
        if p.include_outbound_cidrs[i].contains(dst) {
            return true;
        }
        i += 1;
    }
    false
}

/// With `flags::FAIL_OPEN`, capture only when a listener exists on the outbound port of the
/// socket's netns (127.0.0.1, or ::1 when `v6` is given); otherwise the connect goes direct
/// instead of being refused. Without the flag, always true (fail closed, like iptables).
#[inline(always)]
fn listener_ready(ctx: &SockAddrContext, p: &NetnsPolicy, v6: Option<[u8; 16]>) -> bool {
    if p.flags & flags::FAIL_OPEN == 0 {
        return true;
    }
    // SAFETY: an all-zero bpf_sock_tuple is valid (zero source: only listeners match).
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = match v6 {
        None => {
            tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: 0,
                daddr: LOOPBACK_IP4,
                sport: 0,
                dport: p.outbound_port.to_be(),
            };
            size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>()
        }
        Some(addr) => {
            tuple.__bindgen_anon_1.ipv6 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                saddr: [0; 4],
                daddr: to_ip6(&addr),
                sport: 0,
                dport: p.outbound_port.to_be(),
            };
            size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>()
        }
    };
    // SAFETY: helper available to cgroup/sock_addr programs; the tuple lives on the stack and
    // a found socket is released on the only path that gets one.
    let found = unsafe {
        let sk = bpf_sk_lookup_tcp(
            ctx.as_ptr(),
            &mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        );
        if sk.is_null() {
            false
        } else {
            bpf_sk_release(sk.cast());
            true
        }
    };
    if !found {
        count(Counter::SkipNoListener, 1);
    }
    found
}

/// Stores the original destination under the socket cookie.
#[inline(always)]
fn remember(ctx: &SockAddrContext, netns: u64, addr: [u8; 16], port_be: u16, family: u16) {
    // SAFETY: helper available to cgroup/sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let mut orig = OrigDst::zeroed();
    orig.addr = addr;
    orig.port_be = port_be;
    orig.family = family;
    orig.netns_cookie = netns;
    // A full LRU map evicts the oldest entry, so insert only fails on memory pressure; the
    // connect then proceeds to the listener without an original destination (the proxy logs it).
    let _ = ORIG_BY_SOCK.insert(cookie, orig, 0);
}
