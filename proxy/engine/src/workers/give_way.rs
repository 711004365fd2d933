//! A busy worker gives its core up to other tasks at least every `--worker-yield-us`.
//!
//! The short slice ([`super::slice`]) lets a task that wakes on a busy worker's core in early
//! only when the kernel finds it eligible at its wakeup. A task that ran its share just before it
//! slept comes back owing time (negative lag under EEVDF): it is queued, and with the default
//! `PREEMPT_NONE` kernel and no high-resolution tick nothing picks again before the next
//! scheduler tick (4 ms at 250 Hz). A worker that never sleeps, because it serves a pod at full
//! speed, so kept such a task off its core for up to 4 ms. The bench showed it on a quiet pod
//! placed on the busy pod's worker: the quiet pod's own server, woken by the worker on the
//! worker's core, waited 1 to 4 ms for a core in 2% of its requests (`perf sched`), which was
//! the quiet pod's p99 (`cargo xtask bench --scale --paths noisy-l7-same-worker`;
//! ARCHITECTURE.md "Per-pod fairness").
//!
//! So after a lane's turn, a worker that has been running for the interval since it last slept
//! or yielded calls `sched_yield(2)`: the kernel picks again, a queued task that is due runs,
//! and when none is queued the call returns at once (a fraction of a µs, once per interval of
//! busy time). It changes no task's share of the core, only how long a waiting one waits.

use std::{cell::Cell, time::Instant};

thread_local! {
    /// The interval in ns, 0: never yield (not a worker, or `--worker-yield-us 0`).
    static EVERY_NS: Cell<u64> = const { Cell::new(0) };
    /// When the worker last woke or yielded.
    static SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The default of `--worker-yield-us`: one slice of [`super::slice::MIN_SLICE_US`]. Against
/// 200 µs it took the quiet pod's p99 next to a busy pod on its worker from 2.2x to 1.6x its
/// p99 alone on the L4 path, with the neighbour's rate no lower (`cargo xtask bench --scale`,
/// noisy-l4-same-worker).
pub const DEFAULT_US: u32 = 100;

/// Makes the calling thread (a worker, at its start) yield after `us` µs of busy time; 0: never.
pub fn for_worker(us: u32) {
    EVERY_NS.with(|c| c.set(u64::from(us) * 1_000));
}

/// The worker woke from its sleep (its runtime's `on_thread_unpark`): its busy time starts now.
pub fn woke() {
    if EVERY_NS.with(Cell::get) != 0 {
        SINCE.with(|c| c.set(Some(Instant::now())));
    }
}

/// After a lane's turn: yields the core if the worker has been busy for its interval. Returns
/// whether it yielded.
pub fn after_turn() -> bool {
    let every = EVERY_NS.with(Cell::get);
    if every == 0 {
        return false;
    }
    let now = Instant::now();
    let Some(since) = SINCE.with(Cell::get) else {
        SINCE.with(|c| c.set(Some(now)));
        return false;
    };
    if (now - since).as_nanos() < u128::from(every) {
        return false;
    }
    // SAFETY: sched_yield takes no argument and cannot fail on Linux.
    unsafe { libc::sched_yield() };
    SINCE.with(|c| c.set(Some(Instant::now())));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_yields_once_per_interval_of_busy_time_and_never_when_off() {
        std::thread::spawn(|| {
            // Off (the default of a thread that is not a worker).
            assert!(!after_turn());
            // Long enough that a preempted test thread does not pass it between two calls.
            for_worker(5_000);
            woke();
            assert!(!after_turn(), "just woke");
            let start = Instant::now();
            while start.elapsed().as_micros() < 5_100 {
                std::hint::spin_loop();
            }
            // The yield itself: the kernel picks again (here nothing else waits, or something does
            // and the thread runs again after it).
            assert!(after_turn(), "busy for longer than the interval");
            assert!(!after_turn(), "the interval starts again at the yield");
            for_worker(0);
            assert!(!after_turn());
        })
        .join()
        .unwrap();
    }
}
