//! sk_msg (attached to the SockHash): move app<->proxy bytes straight into the peer socket's
//! receive queue when the netns policy has `fast_path = 1`.
//!
//! The switch is read from the policy map on every message. Turning it off takes effect at once;
//! a socket that sent once through the TCP stack stays there (a reader drains the sk_msg queue
//! before the TCP queue, so switching back would reorder bytes), so turning it on applies to new
//! connections. No logging here: this runs for every send.

use core::mem::offset_of;

use aya_ebpf::{
    bindings::{sk_action::SK_PASS, sk_msg_md, BPF_F_INGRESS},
    helpers::bpf_get_netns_cookie,
    macros::sk_msg,
    programs::SkMsgContext,
    EbpfContext as _,
};
use sluice_common::{Counter, SockTuple, AF_INET6};

use crate::{
    addr::{ctx_u32, from_ip6, mapped_from_ip4, remote_port_host},
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
    // SAFETY: helper available to sk_msg programs (bpf_get_socket_cookie is not, hence tuple
    // keys: "program of this type cannot use helper bpf_get_socket_cookie#46").
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let own = own_tuple(ctx, netns);
    if SLOW_SOCKS.get_ptr(own).is_some() {
        return;
    }
    let on = matches!(active_policy(netns), Some(p) if p.fast_path == 1);
    if on {
        let mut peer = own.reversed();
        if SOCKS.redirect_msg(ctx, &mut peer, BPF_F_INGRESS as u64) == SK_PASS as i64 {
            count(Counter::FastPathMsgs, 1);
            count(Counter::FastPathBytes, ctx.size() as u64);
            return;
        }
    }
    // Through the stack from now on, for this socket.
    let _ = SLOW_SOCKS.insert(own, SLOW, 0);
    count(Counter::FastPathMiss, 1);
}

/// Value of a [`SLOW_SOCKS`] entry (only presence matters).
const SLOW: u8 = 1;

/// This socket's connection as it sees it (its SockHash key; reversed, the peer's).
#[inline(always)]
fn own_tuple(ctx: &SkMsgContext, netns: u64) -> SockTuple {
    let msg = ctx.msg;
    let mut t = SockTuple::zeroed();
    t.netns_cookie = netns;
    if ctx_u32!(msg, offset_of!(sk_msg_md, family)) == AF_INET6 as u32 {
        t.src_addr = from_ip6([
            ctx_u32!(msg, offset_of!(sk_msg_md, local_ip6)),
            ctx_u32!(msg, offset_of!(sk_msg_md, local_ip6) + 4),
            ctx_u32!(msg, offset_of!(sk_msg_md, local_ip6) + 8),
            ctx_u32!(msg, offset_of!(sk_msg_md, local_ip6) + 12),
        ]);
        t.dst_addr = from_ip6([
            ctx_u32!(msg, offset_of!(sk_msg_md, remote_ip6)),
            ctx_u32!(msg, offset_of!(sk_msg_md, remote_ip6) + 4),
            ctx_u32!(msg, offset_of!(sk_msg_md, remote_ip6) + 8),
            ctx_u32!(msg, offset_of!(sk_msg_md, remote_ip6) + 12),
        ]);
    } else {
        t.src_addr = mapped_from_ip4(ctx_u32!(msg, offset_of!(sk_msg_md, local_ip4)));
        t.dst_addr = mapped_from_ip4(ctx_u32!(msg, offset_of!(sk_msg_md, remote_ip4)));
    }
    t.src_port = ctx_u32!(msg, offset_of!(sk_msg_md, local_port)) as u16;
    t.dst_port = remote_port_host(ctx_u32!(msg, offset_of!(sk_msg_md, remote_port)));
    t
}
