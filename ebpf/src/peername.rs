//! cgroup/getpeername4 and getpeername6: a captured app socket reports the address it asked
//! for, not the outbound listener it was redirected to.

use core::ptr::{addr_of_mut, write_volatile};

use aya_ebpf::{
    helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
    EbpfContext as _,
};
use sluice_common::{is_v4_mapped, Counter, OrigDst};

use crate::{
    addr::{ip4_of_mapped, to_ip6},
    maps::{count, ORIG_BY_SOCK},
};

/// cgroup/getpeername*: return the (possibly rewritten) address.
const PEERNAME_OK: i32 = 1;

#[cgroup_sock_addr(getpeername4)]
pub fn sluice_getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(orig) = original(&ctx) {
        if is_v4_mapped(&orig.addr) {
            let sa = ctx.sock_addr;
            // SAFETY: getpeername4 may write user_ip4 and user_port (4-byte stores).
            unsafe {
                write_volatile(addr_of_mut!((*sa).user_ip4), ip4_of_mapped(&orig.addr));
                write_volatile(addr_of_mut!((*sa).user_port), orig.port_be as u32);
            }
            count(Counter::PeernameRestored, 1);
        }
    }
    PEERNAME_OK
}

#[cgroup_sock_addr(getpeername6)]
pub fn sluice_getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(orig) = original(&ctx) {
        let sa = ctx.sock_addr;
        let w = to_ip6(&orig.addr);
        // SAFETY: getpeername6 may write user_ip6 (4-byte stores, one per word) and user_port.
        unsafe {
            write_volatile(addr_of_mut!((*sa).user_ip6[0]), w[0]);
            write_volatile(addr_of_mut!((*sa).user_ip6[1]), w[1]);
            write_volatile(addr_of_mut!((*sa).user_ip6[2]), w[2]);
            write_volatile(addr_of_mut!((*sa).user_ip6[3]), w[3]);
            write_volatile(addr_of_mut!((*sa).user_port), orig.port_be as u32);
        }
        count(Counter::PeernameRestored, 1);
    }
    PEERNAME_OK
}

/// The original destination of this (captured app) socket.
#[inline(always)]
fn original(ctx: &SockAddrContext) -> Option<OrigDst> {
    // SAFETY: helper available to cgroup/sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: read-only copy of the value.
    unsafe { ORIG_BY_SOCK.get(cookie) }.copied()
}
