//! A worker thread's scheduling priority follows the pod whose task it polls: a pod that wants
//! more than its share of the workers (its tasks waited for a permit within [`HOT_FOR`]) is
//! served at nice [`BULK_NICE`], every other pod at the agent's own priority.
//!
//! The permits keep a busy pod to its share of the workers, but the worker serving it still
//! competes with every other pod's processes for the core at the agent's priority: a quiet pod's
//! client and server wake up behind it and wait for the scheduler's slice (measured: a quiet
//! pod's p99 9x with the share alone, L4). At nice 10 the busy pod's excess runs when the cores
//! have nothing else to do, as the pod's own processes do under their cgroup's weight.
//!
//! Going back from nice 10 to 0 needs `CAP_SYS_NICE`; without it ([`available`] says so once) the
//! threads never leave their priority and only the permits apply. The priority changes only on a
//! switch between a hot and a quiet pod on one worker: one `setpriority(2)` per switch, none per
//! poll.

use std::{
    cell::Cell,
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

/// The nice value of a worker while it polls a hot pod's task.
pub const BULK_NICE: i32 = 10;

/// How long a pod stays hot after its tasks last waited for a permit.
pub const HOT_FOR: Duration = Duration::from_millis(100);

/// Milliseconds since the first use (a coarse clock for [`Heat`]).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a pod last wanted more than its share.
#[derive(Debug, Default)]
pub(super) struct Heat {
    /// `now_ms() + 1` at the last wait; 0 = never.
    waited_at: AtomicU64,
}

impl Heat {
    /// One of the pod's tasks found no permit.
    pub(super) fn waited(&self) {
        self.waited_at.store(now_ms() + 1, Ordering::Relaxed);
    }

    /// Whether the pod waited within [`HOT_FOR`].
    pub(super) fn hot(&self) -> bool {
        match self.waited_at.load(Ordering::Relaxed) {
            0 => false,
            t => now_ms() + 1 - t < HOT_FOR.as_millis() as u64,
        }
    }
}

/// Whether this process may move its threads back to nice 0 (`CAP_SYS_NICE` in its effective
/// set); read once from `/proc/self/status`.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        const CAP_SYS_NICE: u32 = 23;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
    })
}

thread_local! {
    /// Whether this thread runs at [`BULK_NICE`] now.
    static BULK: Cell<bool> = const { Cell::new(false) };
}

/// Moves the calling thread to the hot or the normal lane if it is not there yet.
pub(super) fn enter(hot: bool) {
    if BULK.with(Cell::get) == hot || !available() {
        return;
    }
    let nice = if hot { BULK_NICE } else { 0 };
    // PRIO_PROCESS with a thread id sets that one thread's nice value (Linux).
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let ok = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0
    };
    if ok {
        BULK.with(|b| b.set(hot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_hot_for_a_while_after_it_waited() {
        let h = Heat::default();
        assert!(!h.hot(), "never waited");
        h.waited();
        assert!(h.hot());
        h.waited_at.store(1, Ordering::Relaxed);
        std::thread::sleep(HOT_FOR + Duration::from_millis(20));
        assert!(!h.hot(), "cooled down");
    }

    #[test]
    fn a_thread_moves_to_the_bulk_lane_and_back() {
        if !available() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CAP_SYS_NICE is needed to test the lanes (run as root)"
            );
            return;
        }
        std::thread::spawn(|| {
            let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as _) };
            enter(true);
            assert_eq!(nice(), BULK_NICE);
            enter(true);
            enter(false);
            assert_eq!(nice(), 0);
        })
        .join()
        .unwrap();
    }
}
