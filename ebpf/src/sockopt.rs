//! cgroup/getsockopt: answer `getsockopt(SOL_IP, SO_ORIGINAL_DST)` and
//! `getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)` for the proxy's accepted socket, so the proxy
//! makes exactly the call it makes behind iptables REDIRECT.

use core::{
    mem::offset_of,
    ptr::{addr_of_mut, write_volatile},
};

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sockopt},
    helpers::bpf_get_netns_cookie,
    macros::cgroup_sockopt,
    programs::SockoptContext,
    EbpfContext as _,
};
use sluice_common::{
    is_v4_mapped, Counter, OrigDst, SockTuple, AF_INET, AF_INET6, SO_ORIGINAL_DST,
};

use crate::{
    addr::{ctx_u32, from_ip6, mapped_from_ip4},
    maps::{count, ORIG_BY_TUPLE},
};

/// cgroup/getsockopt: keep the (possibly rewritten) result; 0 would turn it into EPERM.
const SOCKOPT_OK: i32 = 1;
const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

#[cgroup_sockopt(getsockopt)]
pub fn sluice_getsockopt(ctx: SockoptContext) -> i32 {
    answer_original_dst(&ctx);
    SOCKOPT_OK
}

#[inline(always)]
fn answer_original_dst(ctx: &SockoptContext) {
    let so = ctx.sockopt;
    // SAFETY: level and optname are readable sockopt context fields.
    let (level, optname) = unsafe { ((*so).level, (*so).optname) };
    if optname != SO_ORIGINAL_DST || (level != SOL_IP && level != SOL_IPV6) {
        return;
    }
    // SAFETY: ctx->sk is a PTR_TO_SOCKET in getsockopt programs.
    let sk = unsafe { (*so).__bindgen_anon_1.sk };
    // SAFETY: helper available to cgroup/sockopt programs.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // The accepted socket sees the app as its peer; the map is keyed as the app sees it.
    let key = peer_view(sk, netns);
    // SAFETY: read-only copy of the value.
    let Some(orig) = (unsafe { ORIG_BY_TUPLE.get(key) }) else {
        return;
    };
    let orig = *orig;
    let written = if level == SOL_IP {
        is_v4_mapped(&orig.addr) && write_sockaddr_in(so, &orig)
    } else {
        write_sockaddr_in6(so, &orig)
    };
    if written {
        count(Counter::OrigDstAnswered, 1);
    }
}

/// The connection as the peer sees it: src = our remote end, dst = our local end.
#[inline(always)]
fn peer_view(sk: *mut bpf_sock, netns: u64) -> SockTuple {
    const FAMILY: usize = offset_of!(bpf_sock, family);
    const SRC_IP4: usize = offset_of!(bpf_sock, src_ip4);
    const SRC_IP6: usize = offset_of!(bpf_sock, src_ip6);
    const SRC_PORT: usize = offset_of!(bpf_sock, src_port);
    const DST_PORT: usize = offset_of!(bpf_sock, dst_port);
    const DST_IP4: usize = offset_of!(bpf_sock, dst_ip4);
    const DST_IP6: usize = offset_of!(bpf_sock, dst_ip6);
    let mut t = SockTuple::zeroed();
    t.netns_cookie = netns;
    if ctx_u32!(sk, FAMILY) == AF_INET6 as u32 {
        t.src_addr = from_ip6([
            ctx_u32!(sk, DST_IP6),
            ctx_u32!(sk, DST_IP6 + 4),
            ctx_u32!(sk, DST_IP6 + 8),
            ctx_u32!(sk, DST_IP6 + 12),
        ]);
        t.dst_addr = from_ip6([
            ctx_u32!(sk, SRC_IP6),
            ctx_u32!(sk, SRC_IP6 + 4),
            ctx_u32!(sk, SRC_IP6 + 8),
            ctx_u32!(sk, SRC_IP6 + 12),
        ]);
    } else {
        t.src_addr = mapped_from_ip4(ctx_u32!(sk, DST_IP4));
        t.dst_addr = mapped_from_ip4(ctx_u32!(sk, SRC_IP4));
    }
    // dst_port: a __be16 in the low half of a 4-byte readable field; src_port: host order.
    t.src_port = u16::from_be(ctx_u32!(sk, DST_PORT) as u16);
    t.dst_port = ctx_u32!(sk, SRC_PORT) as u16;
    t
}

/// Writes a `sockaddr_in` into the caller's buffer and sets optlen / retval.
#[inline(always)]
fn write_sockaddr_in(so: *mut bpf_sockopt, orig: &OrigDst) -> bool {
    let mut sin = [0u8; SOCKADDR_IN_LEN];
    let fam = AF_INET.to_ne_bytes();
    let port = orig.port_be.to_ne_bytes();
    sin[0] = fam[0];
    sin[1] = fam[1];
    sin[2] = port[0];
    sin[3] = port[1];
    sin[4] = orig.addr[12];
    sin[5] = orig.addr[13];
    sin[6] = orig.addr[14];
    sin[7] = orig.addr[15];
    store(so, &sin)
}

/// Writes a `sockaddr_in6` into the caller's buffer and sets optlen / retval.
#[inline(always)]
fn write_sockaddr_in6(so: *mut bpf_sockopt, orig: &OrigDst) -> bool {
    let mut sin6 = [0u8; SOCKADDR_IN6_LEN];
    let fam = AF_INET6.to_ne_bytes();
    let port = orig.port_be.to_ne_bytes();
    sin6[0] = fam[0];
    sin6[1] = fam[1];
    sin6[2] = port[0];
    sin6[3] = port[1];
    // flowinfo (4..8) stays 0, address at 8..24, scope_id (24..28) stays 0.
    let mut i = 0;
    while i < 16 {
        sin6[8 + i] = orig.addr[i];
        i += 1;
    }
    store(so, &sin6)
}

/// Copies `bytes` to optval when the caller's buffer is large enough, then reports success.
#[inline(always)]
fn store<const N: usize>(so: *mut bpf_sockopt, bytes: &[u8; N]) -> bool {
    // SAFETY: optval/optval_end delimit the kernel's copy of the caller's buffer; the bounds
    // check below is what the verifier needs before the store.
    unsafe {
        let optval = (*so).__bindgen_anon_2.optval as *mut u8;
        let optval_end = (*so).__bindgen_anon_3.optval_end as *mut u8;
        if optval.add(N) > optval_end {
            return false;
        }
        write_volatile(optval as *mut [u8; N], *bytes);
        // Each field on its own: LLVM merges optlen+retval into one 8-byte store otherwise and
        // the verifier refuses it ("invalid bpf_context access off=32 size=8").
        write_volatile(addr_of_mut!((*so).optlen), N as i32);
        write_volatile(addr_of_mut!((*so).retval), 0);
    }
    true
}
