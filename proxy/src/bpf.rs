//! Loading, attaching and pinning sluice's eBPF programs, and the per-netns maps.
//!
//! API contract (the agent codes against it; the kernel work fills it in):
//! - [`Datapath::load`] loads the embedded object, attaches every cgroup program to `cgroup`
//!   (connect4/6, sockops, sk_msg on the SockHash, getsockopt, getpeername4/6), pins the maps
//!   under `pin_dir`, and returns a guard; dropping it detaches the programs.
//! - [`Datapath::set_policy`] / [`Datapath::remove_netns`] write and delete the per-netns policy;
//!   `remove_netns` deletes every entry keyed by that netns cookie in every map.
//! - [`Datapath::counters`] sums the per-CPU counters.

use std::path::PathBuf;

use sluice_common::{Counter, NetnsPolicy, COUNTER_SLOTS};

/// Where the maps are pinned by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sluice";

/// What [`Datapath::load`] needs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// cgroup v2 directory the programs attach to (the root in production, a subtree in tests).
    pub cgroup: PathBuf,
    /// bpffs directory for pins.
    pub pin_dir: PathBuf,
}

/// Errors of the kernel side. Each names the operation and the hook, map or path involved.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("eBPF data path not available: {0}")]
    Unavailable(String),
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
    _private: (),
}

impl Datapath {
    pub fn load(_opts: &LoadOptions) -> Result<Self, BpfError> {
        Err(BpfError::Unavailable("not built yet".into()))
    }

    pub fn set_policy(&mut self, _netns_cookie: u64, _policy: &NetnsPolicy) -> Result<(), BpfError> {
        Err(BpfError::Unavailable("not built yet".into()))
    }

    /// Deletes every map entry keyed by this netns cookie; returns how many were removed.
    pub fn remove_netns(&mut self, _netns_cookie: u64) -> Result<usize, BpfError> {
        Err(BpfError::Unavailable("not built yet".into()))
    }

    /// Every enrolled netns cookie with its policy.
    pub fn policies(&self) -> Result<Vec<(u64, NetnsPolicy)>, BpfError> {
        Err(BpfError::Unavailable("not built yet".into()))
    }

    /// Number of entries, in every map, that belong to this netns cookie (0 after `remove_netns`).
    pub fn entries_for(&self, _netns_cookie: u64) -> Result<usize, BpfError> {
        Err(BpfError::Unavailable("not built yet".into()))
    }

    pub fn counters(&self) -> Result<Counters, BpfError> {
        Err(BpfError::Unavailable("not built yet".into()))
    }
}

/// The cgroup v2 mount: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on unified ones.
pub fn default_cgroup_root() -> Result<PathBuf, BpfError> {
    Err(BpfError::Unavailable("not built yet".into()))
}
