//! sk_msg (attached to the SockHash): move app<->proxy bytes straight into the peer socket's
//! receive queue when the netns policy has `fast_path = 1`.
//!
//! The switch is read from the policy map on every message. Turning it off takes effect at once;
//! a socket that sent once through the TCP stack stays there (a reader drains the sk_msg queue
//! before the TCP queue, so switching back would reorder bytes), so turning it on applies to new
//! connections. No logging here: this runs for every send.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{sk_action::SK_PASS, BPF_F_INGRESS},
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::sk_msg,
    programs::SkMsgContext,
    EbpfContext as _,
};
use sluice_common::{Counter, SockTuple, AF_INET6};

use crate::{
    addr::{from_ip6, mapped_from_ip4, remote_port_host},
    maps::{active_policy, count, SLOW_SOCKS, SOCKS},
};

/// sk_msg verdict: deliver (to the redirect target if one was set, else through the stack).
const MSG_PASS: u32 = SK_PASS;

#[sk_msg]
pub fn sluice_sk_msg(ctx: SkMsgContext) -> u32 {
    fast_path(&ctx);
    MSG_PASS
}

#[inline(always)]
fn fast_path(ctx: &SkMsgContext) {
    // SAFETY: helpers available to sk_msg programs.
    let (netns, cookie) = unsafe {
        (
            bpf_get_netns_cookie(ctx.as_ptr()),
            bpf_get_socket_cookie(ctx.as_ptr()),
        )
    };
    if SLOW_SOCKS.get_ptr(&cookie).is_some() {
        return;
    }
    let on = matches!(active_policy(netns), Some(p) if p.fast_path == 1);
    if on {
        let mut peer = peer_tuple(ctx, netns);
        if SOCKS.redirect_msg(ctx, &mut peer, BPF_F_INGRESS as u64) == SK_PASS as i64 {
            count(Counter::FastPathMsgs, 1);
            count(Counter::FastPathBytes, ctx.size() as u64);
            return;
        }
    }
    // Through the stack from now on, for this socket.
    let _ = SLOW_SOCKS.insert(&cookie, &netns, 0);
    count(Counter::FastPathMiss, 1);
}

/// The SockHash key of the peer: this socket's connection seen from the other end.
#[inline(always)]
fn peer_tuple(ctx: &SkMsgContext, netns: u64) -> SockTuple {
    let msg = ctx.msg;
    let mut t = SockTuple::zeroed();
    t.netns_cookie = netns;
    // SAFETY: address and port fields of sk_msg_md, read one 4-byte word at a time.
    unsafe {
        if read_volatile(addr_of!((*msg).family)) == AF_INET6 as u32 {
            t.src_addr = from_ip6([
                read_volatile(addr_of!((*msg).remote_ip6[0])),
                read_volatile(addr_of!((*msg).remote_ip6[1])),
                read_volatile(addr_of!((*msg).remote_ip6[2])),
                read_volatile(addr_of!((*msg).remote_ip6[3])),
            ]);
            t.dst_addr = from_ip6([
                read_volatile(addr_of!((*msg).local_ip6[0])),
                read_volatile(addr_of!((*msg).local_ip6[1])),
                read_volatile(addr_of!((*msg).local_ip6[2])),
                read_volatile(addr_of!((*msg).local_ip6[3])),
            ]);
        } else {
            t.src_addr = mapped_from_ip4(read_volatile(addr_of!((*msg).remote_ip4)));
            t.dst_addr = mapped_from_ip4(read_volatile(addr_of!((*msg).local_ip4)));
        }
        t.src_port = remote_port_host(read_volatile(addr_of!((*msg).remote_port)));
        t.dst_port = read_volatile(addr_of!((*msg).local_port)) as u16;
    }
    t
}
