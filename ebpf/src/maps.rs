//! Every map of the data path, with its key, value, writer, reader and size.
//!
//! All maps are pinned by name (`<pin_dir>/<name>`), so an agent restart finds the same state.
//! Names carry the layout version (`_v1`); see `sluice_common::MAP_VERSION`.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, SockHash},
};
use sluice_common::{
    Counter, FastState, ListenerKey, NetnsPolicy, OrigDst, SockTuple, COUNTER_SLOTS,
};

/// Enrolled network namespaces.
/// netns cookie (u64) -> [`NetnsPolicy`]; written by the agent; read by every program; 4096.
#[map(name = "sluice_policy_v1")]
pub static POLICY: HashMap<u64, NetnsPolicy> = HashMap::pinned(4096, 0);

/// Counters, per CPU (no atomics on bpfel).
/// [`Counter`] index (u32) -> u64; written by every program; summed by the agent;
/// `COUNTER_SLOTS` (32) slots.
#[map(name = "sluice_counters_v2")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

/// Original destination of a captured app socket, until that socket closes.
/// socket cookie (u64) -> [`OrigDst`]; written by connect4/6, deleted by sockops on close; read by
/// sockops (to re-key) and getpeername4/6; LRU 65536 (a floor: close normally deletes).
#[map(name = "sluice_orig_sock_v1")]
pub static ORIG_BY_SOCK: LruHashMap<u64, OrigDst> = LruHashMap::pinned(65536, 0);

/// Original destination by connection, for the proxy's accepted socket.
/// [`SockTuple`] as the app sees it (src = app, dst = listener) -> [`OrigDst`]; written by sockops
/// on ACTIVE_ESTABLISHED, deleted by sockops when the proxy end closes; read by getsockopt;
/// LRU 65536.
#[map(name = "sluice_orig_tuple_v1")]
pub static ORIG_BY_TUPLE: LruHashMap<SockTuple, OrigDst> = LruHashMap::pinned(65536, 0);

/// Both loopback ends of every captured app<->proxy connection (sk_msg is attached here).
/// [`SockTuple`] as the socket sees it -> socket; written by sockops on ESTABLISHED, entries leave
/// when their socket closes (kernel); read by sk_msg (`msg_redirect_hash`); 65536.
#[map(name = "sluice_socks_v1")]
pub static SOCKS: SockHash<SockTuple> = SockHash::pinned(65536, 0);

/// Fast-path budget of every socket sk_msg has seen, and whether it was demoted to the TCP stack
/// for good (a reader drains the sk_msg queue before the TCP queue, so mixing paths would reorder
/// bytes).
/// [`SockTuple`] as the socket sees it (sk_msg cannot read socket cookies) -> [`FastState`];
/// written by sk_msg; deleted by sockops on close; LRU 65536.
#[map(name = "sluice_fast_state_v1")]
pub static FAST_STATE: LruHashMap<SockTuple, FastState> = LruHashMap::pinned(65536, 0);

/// Inbound listening sockets (15006) of every netns with inbound capture, one per family.
/// [`ListenerKey`] (netns cookie, family) -> listening socket; written by the agent (a socket
/// leaves by itself when it closes); read by sk_lookup (`bpf_sk_assign`); 8192 (2 per netns).
#[map(name = "sluice_inbound_listeners_v1")]
pub static INBOUND_LISTENERS: SockHash<ListenerKey> = SockHash::pinned(8192, 0);

/// Adds `n` to counter `c` on this CPU.
#[inline(always)]
pub fn count(c: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, only this program invocation touches it.
        unsafe { *slot += n };
    }
}

/// The policy of an enrolled netns whose mode is not `off`.
#[inline(always)]
pub fn active_policy(netns_cookie: u64) -> Option<&'static NetnsPolicy> {
    // SAFETY: the value is only read; the agent replaces it whole with one update.
    let p: &NetnsPolicy = unsafe { POLICY.get(netns_cookie) }?;
    if p.mode == sluice_common::mode::OFF {
        None
    } else {
        Some(p)
    }
}
