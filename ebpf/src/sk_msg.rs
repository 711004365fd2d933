//! sk_msg (attached to the SockHash): move app<->proxy bytes straight into the peer socket's
//! receive queue when the netns policy has `fast_path = 1`.
//!
//! The switch is read from the policy map on every message. Turning it off takes effect at once;
//! a socket that sent once through the TCP stack stays there (a reader drains the sk_msg queue
//! before the TCP queue, so switching back would reorder bytes), so turning it on applies to new
//! connections.
//!
//! Backpressure: the kernel charges redirected bytes to the peer without checking its receive
//! buffer, so a writer faster than its reader would queue until the TCP memory limit refuses
//! and the writer's send fails with ENOMEM. Each socket therefore has a budget
//! ([`FAST_PATH_TURN_BUDGET`] bytes while its peer is silent, [`FAST_PATH_LIFE_BUDGET`] in all):
//! past it the socket is demoted to the TCP stack for good, whose flow control throttles the
//! writer. Demotion keeps byte order (the reader drains what the fast path queued first).
//! No logging here: this runs for every send.

use core::mem::offset_of;

use aya_ebpf::{
    bindings::{sk_action::SK_PASS, sk_msg_md, BPF_F_INGRESS},
    helpers::bpf_get_netns_cookie,
    macros::sk_msg,
    programs::SkMsgContext,
    EbpfContext as _,
};
use sluice_common::{
    Counter, FastState, SockTuple, AF_INET6, FAST_PATH_LIFE_BUDGET, FAST_PATH_TURN_BUDGET,
};

use crate::{
    addr::{ctx_u32, from_ip6, mapped_from_ip4, remote_port_host},
    maps::{active_policy, count, FAST_STATE, SOCKS},
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
    let entry = FAST_STATE.get_ptr_mut(&own);
    // SAFETY (all derefs of `entry` and `peer_entry` below): map values stay valid for the
    // program run; sk_msg runs under the sending socket's lock, so only the peer's reset of
    // `turn_bytes` can race with us, and a lost reset only demotes a little early.
    let mut st = match entry {
        Some(p) => unsafe { *p },
        None => FastState::zeroed(),
    };
    if st.slow != 0 {
        return;
    }
    let on = matches!(active_policy(netns), Some(p) if p.fast_path == 1);
    if on {
        let size = ctx.size();
        st.turn_bytes = st.turn_bytes.saturating_add(size);
        st.life_bytes += size as u64;
        if st.turn_bytes <= FAST_PATH_TURN_BUDGET && st.life_bytes <= FAST_PATH_LIFE_BUDGET {
            let mut peer = own.reversed();
            if SOCKS.redirect_msg(ctx, &mut peer, BPF_F_INGRESS as u64) == SK_PASS as i64 {
                store(entry, &own, &st);
                // We answered: the peer's bytes are being read, its turn budget starts over.
                if let Some(peer_entry) = FAST_STATE.get_ptr_mut(&peer) {
                    unsafe { (*peer_entry).turn_bytes = 0 };
                }
                count(Counter::FastPathMsgs, 1);
                count(Counter::FastPathBytes, size as u64);
                return;
            }
        } else {
            count(Counter::FastPathDemoted, 1);
        }
    }
    // Through the stack from now on, for this socket.
    st.slow = 1;
    store(entry, &own, &st);
    count(Counter::FastPathMiss, 1);
}

/// Writes this socket's fast-path state: in place when it has an entry, else as a new one (the
/// LRU map makes room by evicting its least recently used entry, whose budget starts over).
#[inline(always)]
fn store(entry: Option<*mut FastState>, own: &SockTuple, st: &FastState) {
    match entry {
        // SAFETY: see `fast_path`.
        Some(p) => unsafe { *p = *st },
        None => {
            let _ = FAST_STATE.insert(own, st, 0);
        }
    }
}

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
