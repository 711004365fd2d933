//! sk_lookup: hand incoming TCP connections of an enrolled pod to its inbound listener (15006).
//!
//! Attached per network namespace (one link per pod). For a new TCP connection whose netns is
//! enrolled (mode != off), whose source is neither loopback nor the proxy's passthrough address
//! (127.0.0.6, ::6) and whose local port is not excluded, the listening socket registered for
//! that netns is assigned with `bpf_sk_assign`: no NAT, no conntrack, the accepted socket's local
//! address is the original destination. With no live listener registered the connection goes to
//! the app directly under `flags::FAIL_OPEN`, and is dropped (client sees a reset) otherwise.
//!
//! sk_lookup cannot call `bpf_get_netns_cookie` (the verifier: "program of this type cannot use
//! helper bpf_get_netns_cookie#122", kernel 6.18), so the loader loads one instance of this
//! program per pod with [`SLUICE_NETNS_COOKIE`] set to the cookie of the netns it links it to.

use core::mem::offset_of;

use aya_ebpf::{
    bindings::{bpf_sk_lookup, BPF_SK_LOOKUP_F_NO_REUSEPORT},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use sluice_common::{
    flags, Counter, ListenerKey, NetnsPolicy, AF_INET, AF_INET6, ALWAYS_EXCLUDED_INBOUND_PORTS,
    MAX_PORTS, PASSTHROUGH_SRC_V6,
};

use crate::{
    addr::{ctx_u32, from_ip6, is_loopback},
    maps::{active_policy, count, INBOUND_LISTENERS},
};

/// sk_lookup: continue (with the assigned socket, if any; else the normal lookup).
const SK_PASS: u32 = 1;
/// sk_lookup: no socket for this packet (TCP answers the SYN with a reset).
const SK_DROP: u32 = 0;
/// `IPPROTO_TCP`.
const IPPROTO_TCP: u32 = 6;

/// Cookie of the netns this program instance is linked to; set by the loader at load time
/// (`EbpfLoader::set_global`, name `sluice_common::SK_LOOKUP_NETNS_GLOBAL`). 0 never matches a
/// policy, so an instance loaded without it captures nothing.
#[unsafe(no_mangle)]
static SLUICE_NETNS_COOKIE: u64 = 0;

#[sk_lookup]
pub fn sluice_sk_lookup(ctx: SkLookupContext) -> u32 {
    match try_sk_lookup(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn try_sk_lookup(ctx: &SkLookupContext) -> Result<u32, u32> {
    let sk = ctx.lookup;
    if ctx_u32!(sk, offset_of!(bpf_sk_lookup, protocol)) != IPPROTO_TCP {
        return Ok(SK_PASS);
    }
    // SAFETY: a plain read of a global; volatile so the compiler does not fold the 0 it was
    // compiled with (the loader rewrites it in .rodata).
    let netns = unsafe { core::ptr::read_volatile(&SLUICE_NETNS_COOKIE) };
    let Some(policy) = active_policy(netns) else {
        count(Counter::SkipNotEnrolled, 1);
        return Ok(SK_PASS);
    };
    let family = ctx_u32!(sk, offset_of!(bpf_sk_lookup, family));
    let v4 = family == AF_INET as u32;
    // The source alone decides, not the ingress interface: a local connection to the pod IP
    // (the proxy's passthrough) does not report lo's ifindex (checked on 6.18). 127/8 and ::1
    // from the wire are martians the kernel drops earlier; a wire peer posing as ::6 is left to
    // the app but cannot complete the handshake (the SYN-ACK goes to the pod's own ::6 on lo).
    if v4 {
        // remote_ip4 holds the network-order bytes: the first octet is the low byte.
        let src = ctx_u32!(sk, offset_of!(bpf_sk_lookup, remote_ip4));
        if src.to_ne_bytes()[0] == 127 {
            count(Counter::SkipLoopback, 1);
            return Ok(SK_PASS);
        }
    } else {
        const IP6: usize = offset_of!(bpf_sk_lookup, remote_ip6);
        let src = from_ip6([
            ctx_u32!(sk, IP6),
            ctx_u32!(sk, IP6 + 4),
            ctx_u32!(sk, IP6 + 8),
            ctx_u32!(sk, IP6 + 12),
        ]);
        if is_loopback(&src) || src == PASSTHROUGH_SRC_V6 {
            count(Counter::SkipLoopback, 1);
            return Ok(SK_PASS);
        }
    }
    // local_port is host order.
    let port = ctx_u32!(sk, offset_of!(bpf_sk_lookup, local_port)) as u16;
    if port_excluded(policy, port) {
        count(Counter::InboundSkipPort, 1);
        return Ok(SK_PASS);
    }
    // An IPv4 connection takes the AF_INET listener, or a dual-stack AF_INET6 one
    // (bpf_sk_assign refuses a v6-only socket with -EAFNOSUPPORT, so that falls through).
    // NO_REUSEPORT: exactly the registered socket, even when a new owner shares the port with
    // SO_REUSEPORT during a hand-over (else the kernel would pick one of the group by hash).
    let flags = BPF_SK_LOOKUP_F_NO_REUSEPORT as u64;
    let assigned = (v4
        && INBOUND_LISTENERS
            .redirect_sk_lookup(ctx, ListenerKey::new(netns, AF_INET), flags)
            .is_ok())
        || INBOUND_LISTENERS
            .redirect_sk_lookup(ctx, ListenerKey::new(netns, AF_INET6), flags)
            .is_ok();
    if assigned {
        count(Counter::InboundCaptured, 1);
        return Ok(SK_PASS);
    }
    count(Counter::InboundNoListener, 1);
    if policy.flags & flags::FAIL_OPEN != 0 {
        Ok(SK_PASS)
    } else {
        Err(SK_DROP)
    }
}

/// Istio's own ports, the listener ports, and the policy's `exclude_inbound_ports`.
#[inline(always)]
fn port_excluded(p: &NetnsPolicy, port: u16) -> bool {
    if port == p.inbound_port || port == p.outbound_port {
        return true;
    }
    let mut i = 0;
    while i < ALWAYS_EXCLUDED_INBOUND_PORTS.len() {
        if ALWAYS_EXCLUDED_INBOUND_PORTS[i] == port {
            return true;
        }
        i += 1;
    }
    let mut i = 0;
    while i < MAX_PORTS {
        if i >= p.n_exclude_inbound_ports as usize {
            break;
        }
        if p.exclude_inbound_ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}
