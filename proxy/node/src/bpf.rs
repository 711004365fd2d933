//! Loading, attaching and pinning sluice's eBPF programs, and the per-netns maps.
//!
//! API contract (the agent codes against it):
//! - [`Datapath::load`] loads the embedded object, attaches every cgroup program to `cgroup`
//!   (connect4/6, sockops, getsockopt, getpeername4/6) and sk_msg on the SockHash, pins the maps
//!   under `pin_dir` (reusing pins left by an earlier agent), and returns a guard; dropping it
//!   detaches the programs (pinned maps stay).
//! - [`Datapath::set_policy`] / [`Datapath::remove_netns`] write and delete the per-netns policy;
//!   `remove_netns` deletes every entry keyed by that netns cookie in every map.
//! - [`Datapath::counters`] sums the per-CPU counters.
//! - Inbound capture (`inbound.rs`): [`Datapath::attach_inbound`] links sk_lookup to a pod's
//!   netns, [`Datapath::set_inbound_listener`] registers the pod's 15006 listening socket(s);
//!   [`Datapath::detach_inbound`] / [`Datapath::remove_inbound_listener`] undo them and
//!   `remove_netns` does both.
//! - [`Datapath::persist`] (opt-in, for an agent restart) pins the cgroup links and the
//!   per-netns sk_lookup links under `<pin_dir>/links` and leaves everything attached after the
//!   process exits; the next [`Datapath::load`] on the same `pin_dir` attaches its own programs
//!   first, then releases the pinned cgroup links and adopts the sk_lookup ones (swapping its
//!   program in with `BPF_LINK_UPDATE`), so capture never stops.
//!
//! What the proxy side must do for capture to work:
//! - mark every upstream socket with `SO_MARK = PROXY_MARK` before connect, else it is captured
//!   again (setting a mark needs CAP_NET_ADMIN; a sidecar without it uses `flags::EXEMPT_UID`
//!   with its uid/gid instead);
//! - listen on both 127.0.0.1:outbound_port and [::1]:outbound_port inside the pod netns (IPv4
//!   and v4-mapped IPv6 destinations land on the first, IPv6 on the second), from a process in
//!   the attached cgroup (accepted sockets inherit the listener's cgroup);
//! - for inbound capture, bind `0.0.0.0:inbound_port` and/or `[::]:inbound_port` inside the pod
//!   netns, `listen()`, and pass each socket to [`Datapath::set_inbound_listener`]; the accepted
//!   socket's local address is the original destination (no getsockopt needed); forward to the
//!   app from 127.0.0.6 (or ::6, added to `lo`), which sk_lookup never captures, with
//!   `SO_MARK = PROXY_MARK` so connect4/6 do not capture it either;
//! - read the original destination with `getsockopt(SOL_IP, SO_ORIGINAL_DST)` (IPv4) or
//!   `getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)` (IPv6) on the accepted socket;
//! - key policies by the pod's netns cookie ([`netns_cookie_of`] on any socket made in it);
//! - treat EAGAIN on a read as "poll again" (tokio does): with the fast path on, both loopback
//!   ends use the kernel's sockmap receive path, which can wake a blocked reader without data and
//!   return EAGAIN even on a blocking socket (seen on 6.18). Apps doing blocking reads on a
//!   captured connection can see that too, which is why the fast path is a per-pod switch.
//!
//! The fast path switch is read per message: off takes effect at once; on applies to
//! connections made afterwards (a socket that sent through the stack stays there, else bytes
//! could be reordered).

mod attach;
mod error;
mod fs;
mod handover;
pub mod host_check;
mod inbound;
mod instance_loader;
mod link;
mod prog_load;

use std::{
    os::fd::{AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, SockHash},
    Ebpf, EbpfLoader,
};
use sluice_common::{
    mode, Counter, FastState, ListenerKey, NetnsPolicy, OrigDst, SockTuple, COUNTER_SLOTS,
    MAP_COUNTERS, MAP_FAST_STATE, MAP_INBOUND_LISTENERS, MAP_ORIG_BY_SOCK, MAP_ORIG_BY_TUPLE,
    MAP_POLICY, MAP_SOCKS, MAX_CIDRS, MAX_PORTS,
};

pub use attach::{Hook, Target, HOOKS};
pub use error::{BpfError, IPTABLES_HINT};
pub use fs::{check_cgroup2, default_cgroup_root, ensure_bpffs, HYBRID_CGROUP2, UNIFIED_CGROUP2};
pub use inbound::SK_LOOKUP_PIN_PREFIX;

/// Where the maps are pinned by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sluice";
/// The bpffs mount point.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Subdirectory of the pin dir holding the links of a persisted data path.
pub const LINKS_DIR: &str = "links";

/// The eBPF object built by build.rs from the `ebpf/` crate (empty under `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice"));

/// Whether this build embeds the eBPF object (build.rs skips it under `AYA_BUILD_SKIP=1`,
/// which only the fuzz build sets).
pub fn object_built() -> Result<(), BpfError> {
    if OBJECT.is_empty() {
        return Err(BpfError::Unavailable(
            "this binary was built with AYA_BUILD_SKIP=1 and embeds no eBPF object".into(),
        ));
    }
    Ok(())
}

/// What [`Datapath::load`] needs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// cgroup v2 directory the programs attach to (the root in production, a subtree in tests).
    pub cgroup: PathBuf,
    /// bpffs directory for pins.
    pub pin_dir: PathBuf,
}

/// Summed per-CPU counters, indexed by [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; COUNTER_SLOTS as usize]);

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

/// The loaded and attached programs and their maps. Dropping it detaches the programs.
pub struct Datapath {
    // Declared first so they drop first: closing a cgroup link detaches its hook.
    links: Vec<link::CgroupLink>,
    // Per-netns sk_lookup links (closing one detaches it).
    inbound_links: inbound::InboundLinks,
    // Holds the programs and the sk_msg attachment (detached when it drops).
    ebpf: Ebpf,
    sk_msg: aya::programs::sk_msg::SkMsgLinkId,
    policy: HashMap<MapData, u64, NetnsPolicy>,
    counters: PerCpuArray<MapData, u64>,
    orig_by_sock: HashMap<MapData, u64, OrigDst>,
    orig_by_tuple: HashMap<MapData, SockTuple, OrigDst>,
    socks: SockHash<MapData, SockTuple>,
    fast_state: HashMap<MapData, SockTuple, FastState>,
    inbound_listeners: SockHash<MapData, ListenerKey>,
    cgroup: PathBuf,
    pin_dir: PathBuf,
    // Set by [`Datapath::pin_links_now`]: sk_lookup links are pinned as soon as they are made.
    pin_eagerly: bool,
    // Loads the per-pod sk_lookup instances (the kernel BTF parsed once, not per enrollment).
    instance_loader: instance_loader::InstanceLoader,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("cgroup", &self.cgroup)
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

/// Makes the allocator hand large blocks (> 256 KiB) straight back to the kernel when freed, for
/// a long-lived process that loads objects (the agent: at start and on every enroll). glibc's
/// default raises its mmap threshold to the largest block freed so far, so the loader's
/// multi-MiB BTF buffers (see [`release_loader_memory`]) would stay in the heap afterwards:
/// measured 31.9 MiB RSS after one enroll, 10.8 MiB with this. Request buffers stay far below
/// the threshold, so the hot path is unaffected. Process-wide; call once before loading.
pub fn limit_heap_retention() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// Gives the heap pages an object load freed back to the kernel. `EbpfLoader::new` parses the
/// kernel's BTF (about 5 MiB of /sys/kernel/btf/vmlinux, some 20 MiB once parsed) whenever it is
/// called, although these programs need no CO-RE relocation (hence `.btf(None)`; the per-pod
/// sk_lookup instances share one loader, see `instance_loader`); glibc keeps what is freed in the
/// loading thread's arena, which left the agent about 20 MiB larger after its first enroll.
/// Control plane only (load and enroll), never per connection.
fn release_loader_memory() {
    sluice_engine::heap::trim();
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(BpfError::MapMissing { map: name })?;
    T::try_from(map).map_err(BpfError::map(name, "open"))
}

impl Datapath {
    /// Loads the object, pins (or reuses) its maps under `pin_dir` and attaches every program.
    pub fn load(opts: &LoadOptions) -> Result<Self, BpfError> {
        object_built()?;
        check_cgroup2(&opts.cgroup)?;
        if opts.pin_dir.starts_with(BPFFS) {
            ensure_bpffs(Path::new(BPFFS))?;
        }
        host_check::pin_dir_on_bpffs(&opts.pin_dir)?;
        std::fs::create_dir_all(&opts.pin_dir).map_err(|source| BpfError::PinDir {
            path: opts.pin_dir.clone(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .default_map_pin_directory(&opts.pin_dir)
            .load(OBJECT)
            .map_err(|e| BpfError::Object {
                pin_dir: opts.pin_dir.clone(),
                source: Box::new(e),
            })?;
        let policy = take(&mut ebpf, MAP_POLICY)?;
        let counters = take(&mut ebpf, MAP_COUNTERS)?;
        let orig_by_sock = take(&mut ebpf, MAP_ORIG_BY_SOCK)?;
        let orig_by_tuple = take(&mut ebpf, MAP_ORIG_BY_TUPLE)?;
        let socks: SockHash<MapData, SockTuple> = take(&mut ebpf, MAP_SOCKS)?;
        let fast_state = take(&mut ebpf, MAP_FAST_STATE)?;
        let inbound_listeners = take(&mut ebpf, MAP_INBOUND_LISTENERS)?;
        let attached = attach::load_and_attach(&mut ebpf, &opts.cgroup, socks.fd())?;
        // sk_lookup links of a persisted agent: our program replaces theirs in place.
        let mut instance_loader = instance_loader::InstanceLoader::new(&opts.pin_dir);
        let inbound_links = inbound::adopt_pinned(&opts.pin_dir, &mut instance_loader)?;
        // Make before break: ours are attached, now release what a persisted agent left.
        let links_dir = opts.pin_dir.join(LINKS_DIR);
        link::release_pinned(&links_dir).map_err(|source| BpfError::Links {
            path: links_dir.clone(),
            source,
        })?;
        release_loader_memory();
        Ok(Self {
            links: attached.links,
            inbound_links,
            ebpf,
            sk_msg: attached.sk_msg,
            policy,
            counters,
            orig_by_sock,
            orig_by_tuple,
            socks,
            fast_state,
            inbound_listeners,
            cgroup: opts.cgroup.clone(),
            pin_dir: opts.pin_dir.clone(),
            pin_eagerly: false,
            instance_loader,
        })
    }

    /// Crash safety: pins every link under `<pin_dir>/links` now, and every sk_lookup link as
    /// soon as [`Datapath::attach_inbound`] makes it, so the programs stay attached even when
    /// the process dies without running [`Datapath::persist`] (SIGKILL, OOM). The next
    /// [`Datapath::load`] on the same pins takes over exactly as after `persist`. Dropping the
    /// data path then no longer detaches anything: call it only when the programs should outlive
    /// the process (the agent's `--persist`).
    pub fn pin_links_now(&mut self) -> Result<(), BpfError> {
        let dir = self.pin_dir.join(LINKS_DIR);
        let links_err = |source| BpfError::Links {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(links_err)?;
        for l in &self.links {
            let path = dir.join(l.program);
            let _ = std::fs::remove_file(&path);
            l.pin(&path).map_err(links_err)?;
        }
        Self::pin_inbound_links(&self.inbound_links, &self.pin_dir)?;
        self.pin_eagerly = true;
        Ok(())
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The directory holding the pinned maps.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Enrolls (or updates) a netns. The value is replaced whole, so programs never see a
    /// half-written policy. Rejects an invalid policy naming the field.
    pub fn set_policy(&mut self, netns_cookie: u64, policy: &NetnsPolicy) -> Result<(), BpfError> {
        validate(policy)?;
        self.policy
            .insert(netns_cookie, *policy, 0)
            .map_err(BpfError::map(MAP_POLICY, "insert"))
    }

    /// The policy of one netns, if enrolled.
    pub fn policy(&self, netns_cookie: u64) -> Result<Option<NetnsPolicy>, BpfError> {
        match self.policy.get(&netns_cookie, 0) {
            Ok(p) => Ok(Some(p)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(BpfError::map(MAP_POLICY, "lookup")(e)),
        }
    }

    /// Deletes every map entry keyed by this netns cookie and detaches its sk_lookup link;
    /// returns how many entries (the link counts as one) were removed.
    pub fn remove_netns(&mut self, netns_cookie: u64) -> Result<usize, BpfError> {
        let mut removed = usize::from(self.detach_inbound(netns_cookie)?);
        removed += self.remove_inbound_listener(netns_cookie)?;
        match self.policy.remove(&netns_cookie) {
            Ok(()) => removed += 1,
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(BpfError::map(MAP_POLICY, "remove")(e)),
        }
        for k in self.orig_by_sock_keys(netns_cookie)? {
            removed += gone(self.orig_by_sock.remove(&k), MAP_ORIG_BY_SOCK)?;
        }
        for k in self.orig_by_tuple_keys(netns_cookie)? {
            removed += gone(self.orig_by_tuple.remove(&k), MAP_ORIG_BY_TUPLE)?;
        }
        for k in self.socks_keys(netns_cookie)? {
            removed += gone(self.socks.remove(&k), MAP_SOCKS)?;
        }
        for k in self.fast_state_keys(netns_cookie)? {
            removed += gone(self.fast_state.remove(&k), MAP_FAST_STATE)?;
        }
        Ok(removed)
    }

    /// Every enrolled netns cookie with its policy.
    pub fn policies(&self) -> Result<Vec<(u64, NetnsPolicy)>, BpfError> {
        self.policy
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(BpfError::map(MAP_POLICY, "iterate"))
    }

    /// Number of entries, in every map, that belong to this netns cookie, plus 1 for its
    /// sk_lookup link (0 after `remove_netns`).
    pub fn entries_for(&self, netns_cookie: u64) -> Result<usize, BpfError> {
        let policy = usize::from(self.policy(netns_cookie)?.is_some());
        let link = usize::from(self.inbound_links.contains_key(&netns_cookie));
        Ok(policy
            + link
            + self.inbound_listener_keys(netns_cookie)?.len()
            + self.orig_by_sock_keys(netns_cookie)?.len()
            + self.orig_by_tuple_keys(netns_cookie)?.len()
            + self.socks_keys(netns_cookie)?.len()
            + self.fast_state_keys(netns_cookie)?.len())
    }

    /// [`entries_for`](Self::entries_for) of every netns at once: one walk of each map, so a
    /// status report costs the same for 1 pod or 1,000 (per-pod walks would be pods x entries).
    pub fn entries_by_cookie(&self) -> Result<std::collections::HashMap<u64, usize>, BpfError> {
        let mut n = std::collections::HashMap::<u64, usize>::new();
        for (c, _) in self.policies()? {
            *n.entry(c).or_default() += 1;
        }
        for c in self.inbound_links.keys() {
            *n.entry(*c).or_default() += 1;
        }
        for kv in self.orig_by_sock.iter() {
            match kv {
                Ok((_, v)) => *n.entry(v.netns_cookie).or_default() += 1,
                // An LRU entry can vanish between get_next_key and lookup.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(BpfError::map(MAP_ORIG_BY_SOCK, "iterate")(e)),
            }
        }
        tally(
            &mut n,
            self.inbound_listeners.keys(),
            MAP_INBOUND_LISTENERS,
            |k| k.netns_cookie,
        )?;
        tally(&mut n, self.orig_by_tuple.keys(), MAP_ORIG_BY_TUPLE, |k| {
            k.netns_cookie
        })?;
        tally(&mut n, self.socks.keys(), MAP_SOCKS, |k| k.netns_cookie)?;
        tally(&mut n, self.fast_state.keys(), MAP_FAST_STATE, |k| {
            k.netns_cookie
        })?;
        Ok(n)
    }

    /// Entries per map (all netns), in [`sluice_common::ALL_MAPS`] order except the counter
    /// array (fixed size): policy, orig-by-socket, orig-by-tuple, sockhash, fast-path state,
    /// inbound listeners.
    pub fn map_sizes(&self) -> Result<[usize; 6], BpfError> {
        Ok([
            self.policy.keys().count(),
            self.orig_by_sock.keys().count(),
            self.orig_by_tuple.keys().count(),
            self.socks.keys().count(),
            self.fast_state.keys().count(),
            self.inbound_listeners.keys().count(),
        ])
    }

    /// The original destination recorded for a connection, as the app end sees it.
    pub fn orig_dst_by_tuple(&self, tuple: &SockTuple) -> Result<Option<OrigDst>, BpfError> {
        match self.orig_by_tuple.get(tuple, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(BpfError::map(MAP_ORIG_BY_TUPLE, "lookup")(e)),
        }
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<Counters, BpfError> {
        let mut out = Counters::default();
        for (i, slot) in out.0.iter_mut().enumerate() {
            let per_cpu = self
                .counters
                .get(&(i as u32), 0)
                .map_err(BpfError::map(MAP_COUNTERS, "lookup"))?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Leaves every program attached after this process exits (agent restart): pins the cgroup
    /// links and the per-netns sk_lookup links under `<pin_dir>/links` and keeps sk_msg on the
    /// pinned SockHash. The next
    /// [`Datapath::load`] with the same `pin_dir` takes over without a capture gap.
    pub fn persist(self) -> Result<(), BpfError> {
        let Self {
            links,
            inbound_links,
            mut ebpf,
            sk_msg,
            pin_dir,
            ..
        } = self;
        let dir = pin_dir.join(LINKS_DIR);
        let links_err = |source| BpfError::Links {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(links_err)?;
        for l in &links {
            // Already pinned by `pin_links_now`: pin again (same link) instead of failing.
            let path = dir.join(l.program);
            let _ = std::fs::remove_file(&path);
            l.pin(&path).map_err(links_err)?;
        }
        Self::pin_inbound_links(&inbound_links, &pin_dir)?;
        let prog: &mut aya::programs::SkMsg = ebpf
            .program_mut("sluice_sk_msg")
            .ok_or(BpfError::ProgramMissing {
                program: "sluice_sk_msg",
                hook: "sk_msg",
            })?
            .try_into()
            .map_err(|e| BpfError::Unavailable(format!("program sluice_sk_msg: {e}")))?;
        let sk_msg_link = prog
            .take_link(sk_msg)
            .map_err(|e| BpfError::Unavailable(format!("sk_msg link: {e}")))?;
        // Not dropped, so not detached: the SockHash keeps the program (replaced by the next
        // agent's attach).
        std::mem::forget(sk_msg_link);
        Ok(())
    }

    /// Detaches the programs and removes the pinned maps (a full uninstall; a plain drop keeps
    /// the pins for the next agent).
    pub fn unload_and_unpin(self) -> Result<(), BpfError> {
        let pin_dir = self.pin_dir.clone();
        drop(self);
        let links_dir = pin_dir.join(LINKS_DIR);
        link::release_pinned(&links_dir).map_err(|source| BpfError::Links {
            path: links_dir.clone(),
            source,
        })?;
        match std::fs::remove_dir(&links_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BpfError::Links {
                    path: links_dir,
                    source,
                })
            }
        }
        for name in sluice_common::ALL_MAPS {
            let path = pin_dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(BpfError::PinDir { path, source }),
            }
        }
        Ok(())
    }

    /// Kernel program id of every hook (for `bpftool prog show id <id>`), in [`HOOKS`] order.
    pub fn program_ids(&self) -> Result<Vec<(&'static str, u32)>, BpfError> {
        HOOKS
            .iter()
            .map(|h| {
                let prog = self
                    .ebpf
                    .program(h.program)
                    .ok_or(BpfError::ProgramMissing {
                        program: h.program,
                        hook: h.hook,
                    })?;
                let info = prog.info().map_err(|e| {
                    BpfError::Unavailable(format!(
                        "program info of {} (hook {}): {e}",
                        h.program, h.hook
                    ))
                })?;
                Ok((h.hook, info.id()))
            })
            .collect()
    }

    fn orig_by_sock_keys(&self, netns: u64) -> Result<Vec<u64>, BpfError> {
        let mut keys = Vec::new();
        for kv in self.orig_by_sock.iter() {
            match kv {
                Ok((k, v)) if v.netns_cookie == netns => keys.push(k),
                Ok(_) => {}
                // An LRU entry can vanish between get_next_key and lookup.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(BpfError::map(MAP_ORIG_BY_SOCK, "iterate")(e)),
            }
        }
        Ok(keys)
    }

    fn orig_by_tuple_keys(&self, netns: u64) -> Result<Vec<SockTuple>, BpfError> {
        collect_keys(self.orig_by_tuple.keys(), MAP_ORIG_BY_TUPLE, |k| {
            k.netns_cookie == netns
        })
    }

    fn socks_keys(&self, netns: u64) -> Result<Vec<SockTuple>, BpfError> {
        collect_keys(self.socks.keys(), MAP_SOCKS, |k| k.netns_cookie == netns)
    }

    fn fast_state_keys(&self, netns: u64) -> Result<Vec<SockTuple>, BpfError> {
        collect_keys(self.fast_state.keys(), MAP_FAST_STATE, |k| {
            k.netns_cookie == netns
        })
    }
}

/// Adds one to `n[cookie(key)]` for every key of a map.
fn tally<K>(
    n: &mut std::collections::HashMap<u64, usize>,
    keys: impl Iterator<Item = Result<K, aya::maps::MapError>>,
    map: &'static str,
    cookie: impl Fn(&K) -> u64,
) -> Result<(), BpfError> {
    for k in keys {
        *n.entry(cookie(&k.map_err(BpfError::map(map, "iterate"))?))
            .or_default() += 1;
    }
    Ok(())
}

fn collect_keys<K>(
    keys: impl Iterator<Item = Result<K, aya::maps::MapError>>,
    map: &'static str,
    keep: impl Fn(&K) -> bool,
) -> Result<Vec<K>, BpfError> {
    let mut out = Vec::new();
    for k in keys {
        let k = k.map_err(BpfError::map(map, "iterate"))?;
        if keep(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// 1 when the entry was removed, 0 when it was already gone (closed socket, LRU eviction).
fn gone(r: Result<(), aya::maps::MapError>, map: &'static str) -> Result<usize, BpfError> {
    match r {
        Ok(()) => Ok(1),
        Err(aya::maps::MapError::KeyNotFound) => Ok(0),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(0)
        }
        Err(e) => Err(BpfError::map(map, "remove")(e)),
    }
}

/// Checks what the programs rely on: counts within the arrays, a listener port when capturing.
pub fn validate(p: &NetnsPolicy) -> Result<(), BpfError> {
    let bad =
        |field: &'static str, why: String| Err(BpfError::InvalidPolicy { field, reason: why });
    if p.mode > mode::SIDECAR {
        return bad(
            "mode",
            format!("{} is not off(0), node(1) or sidecar(2)", p.mode),
        );
    }
    if p.fast_path > 1 {
        return bad("fast_path", format!("{} is not 0 or 1", p.fast_path));
    }
    if p.mode != mode::OFF && p.outbound_port == 0 {
        return bad("outbound_port", "must be set when mode is not off".into());
    }
    for (field, n, max) in [
        (
            "n_exclude_outbound_ports",
            p.n_exclude_outbound_ports,
            MAX_PORTS,
        ),
        (
            "n_include_outbound_ports",
            p.n_include_outbound_ports,
            MAX_PORTS,
        ),
        (
            "n_exclude_inbound_ports",
            p.n_exclude_inbound_ports,
            MAX_PORTS,
        ),
        (
            "n_exclude_outbound_cidrs",
            p.n_exclude_outbound_cidrs,
            MAX_CIDRS,
        ),
        (
            "n_include_outbound_cidrs",
            p.n_include_outbound_cidrs,
            MAX_CIDRS,
        ),
    ] {
        if n as usize > max {
            return bad(field, format!("{n} exceeds the maximum {max}"));
        }
    }
    for (field, list, n) in [
        (
            "exclude_outbound_cidrs",
            &p.exclude_outbound_cidrs,
            p.n_exclude_outbound_cidrs,
        ),
        (
            "include_outbound_cidrs",
            &p.include_outbound_cidrs,
            p.n_include_outbound_cidrs,
        ),
    ] {
        if let Some(c) = list[..n as usize].iter().find(|c| c.prefix_len > 128) {
            return bad(field, format!("prefix length {} exceeds 128", c.prefix_len));
        }
    }
    Ok(())
}

/// The netns cookie (`SO_NETNS_COOKIE`) of the namespace a socket belongs to; the key of the
/// policy map. Any socket created inside the pod netns will do.
pub fn netns_cookie_of(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datapath_can_move_to_the_agent_thread() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Datapath>();
    }

    #[test]
    fn validate_names_the_field() {
        let mut p = NetnsPolicy::zeroed();
        p.mode = mode::NODE;
        let e = validate(&p).unwrap_err().to_string();
        assert!(e.contains("outbound_port"), "{e}");
        p.outbound_port = 15001;
        assert!(validate(&p).is_ok());
        p.n_include_outbound_cidrs = 1;
        p.include_outbound_cidrs[0].prefix_len = 129;
        let e = validate(&p).unwrap_err().to_string();
        assert!(e.contains("include_outbound_cidrs"), "{e}");
        p.include_outbound_cidrs[0].prefix_len = 104;
        p.mode = 7;
        assert!(validate(&p).unwrap_err().to_string().contains("mode"));
    }
}
