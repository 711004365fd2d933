//! sockops: re-key the original destination by connection, track both loopback ends in the
//! SockHash, and delete per-connection entries when a tracked socket closes.
//!
//! Uncaptured sockets cost one hash lookup at connect / ESTABLISHED and nothing afterwards (the
//! state callback is only enabled on captured sockets).

use core::mem::offset_of;

use aya_ebpf::{
    bindings::{
        bpf_sock_ops, BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE,
    },
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::sock_ops,
    programs::SockOpsContext,
    EbpfContext as _,
};
use sluice_common::{SockTuple, AF_INET6};

use crate::{
    addr::{ctx_u32, from_ip6, mapped_from_ip4, remote_port_host},
    maps::{active_policy, FAST_STATE, ORIG_BY_SOCK, ORIG_BY_TUPLE, SOCKS},
};

/// sockops: the return value is ignored for these callbacks; 1 is the conventional "ok".
const SOCKOPS_OK: u32 = 1;

#[sock_ops]
pub fn sluice_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => connecting(&ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => active_established(&ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => passive_established(&ctx),
        // args[1] is the new TCP state.
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => closed(&ctx),
        _ => {}
    }
    SOCKOPS_OK
}

/// A captured app socket sends its SYN: ask for the state callback now, so its entry is deleted
/// even when the connect fails (no listener) and ESTABLISHED never comes.
#[inline(always)]
fn connecting(ctx: &SockOpsContext) {
    // SAFETY: helper available to sockops programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if ORIG_BY_SOCK.get_ptr(cookie).is_some() {
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    }
}

/// The app end connected (to the listener, if captured): re-key its original destination by
/// connection for the proxy's getsockopt, and track the socket.
#[inline(always)]
fn active_established(ctx: &SockOpsContext) {
    // SAFETY: helper available to sockops programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: read-only copy of the value.
    let Some(orig) = (unsafe { ORIG_BY_SOCK.get(cookie) }) else {
        return;
    };
    let orig = *orig;
    let tuple = own_tuple(ctx);
    if ORIG_BY_TUPLE.insert(tuple, orig, BPF_ANY as u64).is_err() {
        return;
    }
    track(ctx, tuple);
}

/// The proxy end was accepted: track it when the app end is a captured connection.
#[inline(always)]
fn passive_established(ctx: &SockOpsContext) {
    let tuple = own_tuple(ctx);
    if ORIG_BY_TUPLE.get_ptr(tuple.reversed()).is_none() {
        return;
    }
    track(ctx, tuple);
}

/// Puts the socket into the SockHash (sk_msg runs on it from now on) when the fast path is on,
/// and asks for the state callback so `closed` cleans up.
#[inline(always)]
fn track(ctx: &SockOpsContext, mut tuple: SockTuple) {
    // Only when the pod's fast path is on now: a socket in a SockHash gets the kernel's
    // tcp_bpf receive path, whose blocking reads can return a spurious EAGAIN; connections
    // made while the fast path is off keep the plain TCP socket.
    if matches!(active_policy(tuple.netns_cookie), Some(p) if p.fast_path == 1) {
        // SAFETY: `ops` is the program's context; the helper only reads the socket behind it.
        let ops = unsafe { &mut *ctx.ops };
        // Failure (map full) leaves the connection on the TCP stack path, which still works.
        let _ = SOCKS.update(&mut tuple, ops, BPF_ANY as u64);
    }
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// A tracked socket closed: drop what was keyed by it. The SockHash entry leaves on its own.
#[inline(always)]
fn closed(ctx: &SockOpsContext) {
    // SAFETY: helper available to sockops programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let own = own_tuple(ctx);
    let _ = ORIG_BY_SOCK.remove(cookie);
    let _ = FAST_STATE.remove(own);
    // The proxy end keys the connection as its peer (the app) sees it; for the app end this
    // finds nothing, so the proxy can still read the original destination after the app closed.
    let _ = ORIG_BY_TUPLE.remove(own.reversed());
}

/// The connection as this socket sees it (src = local end).
#[inline(always)]
fn own_tuple(ctx: &SockOpsContext) -> SockTuple {
    let ops = ctx.ops;
    let mut t = SockTuple::zeroed();
    // SAFETY: helper available to sockops programs.
    t.netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    if ctx_u32!(ops, offset_of!(bpf_sock_ops, family)) == AF_INET6 as u32 {
        t.src_addr = from_ip6([
            ctx_u32!(ops, offset_of!(bpf_sock_ops, local_ip6)),
            ctx_u32!(ops, offset_of!(bpf_sock_ops, local_ip6) + 4),
            ctx_u32!(ops, offset_of!(bpf_sock_ops, local_ip6) + 8),
            ctx_u32!(ops, offset_of!(bpf_sock_ops, local_ip6) + 12),
        ]);
        t.dst_addr = from_ip6([
            ctx_u32!(ops, offset_of!(bpf_sock_ops, remote_ip6)),
            ctx_u32!(ops, offset_of!(bpf_sock_ops, remote_ip6) + 4),
            ctx_u32!(ops, offset_of!(bpf_sock_ops, remote_ip6) + 8),
            ctx_u32!(ops, offset_of!(bpf_sock_ops, remote_ip6) + 12),
        ]);
    } else {
        t.src_addr = mapped_from_ip4(ctx_u32!(ops, offset_of!(bpf_sock_ops, local_ip4)));
        t.dst_addr = mapped_from_ip4(ctx_u32!(ops, offset_of!(bpf_sock_ops, remote_ip4)));
    }
    t.src_port = ctx_u32!(ops, offset_of!(bpf_sock_ops, local_port)) as u16;
    t.dst_port = remote_port_host(ctx_u32!(ops, offset_of!(bpf_sock_ops, remote_port)));
    t
}
