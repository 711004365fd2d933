//! The agent's workers ask the kernel for a short scheduler slice.
//!
//! Since Linux 6.6 the fair class is EEVDF, and a task that is picked keeps the core for its
//! whole slice (`RUN_TO_PARITY`): the default is 0.7 ms x (1 + log2 CPUs), 1.4 ms on two cores.
//! A worker busy with a pod at full speed therefore makes every other task that wakes on its core
//! (a quiet pod's client and server, the worker that would serve the quiet pod) wait up to that
//! long, whatever its nice value: a lower priority shrinks the busy thread's share of the core,
//! not the slice it was granted. That wait is what a quiet pod's p99 showed next to a busy
//! neighbour (`cargo xtask bench --scale`, noisy-neighbour section; ARCHITECTURE.md "Per-pod
//! fairness").
//!
//! Since 6.12 a task can ask for its own slice with `sched_setattr(2)` (`sched_runtime`,
//! 100 µs to 100 ms, no privilege needed). A worker with a 100 µs slice gives the core up to a
//! waking task within 100 µs when the kernel lets that task in at its wakeup; one it does not
//! (a task that comes back owing time) waits for the next tick, which [`super::give_way`]
//! shortens. Older kernels take the call and ignore the runtime.

/// `sched_attr` of `sched_setattr(2)` (its first version, 56 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// The shortest slice EEVDF grants.
pub const MIN_SLICE_US: u32 = 100;

/// The longest slice EEVDF grants.
pub const MAX_SLICE_US: u32 = 100_000;

/// Asks the kernel to give the calling thread slices of `us` microseconds (clamped to
/// [`MIN_SLICE_US`]..=[`MAX_SLICE_US`]), keeping its normal policy and nice 0. `0` leaves the
/// kernel's default. For a runtime's `on_thread_start`.
pub fn request(us: u32) -> std::io::Result<()> {
    if us == 0 {
        return Ok(());
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: u64::from(us.clamp(MIN_SLICE_US, MAX_SLICE_US)) * 1_000,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // pid 0 = the calling thread.
    // SAFETY: `attr` is a sched_attr of the size it states and outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// [`request`] for a runtime's `on_thread_start`; a refusal is logged once per process.
pub fn for_worker(us: u32) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(e) = request(us) {
        WARNED.call_once(|| {
            tracing::warn!(error = %e, slice_us = us, "the workers keep the kernel's scheduler slice");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice the kernel reports for the calling thread (`se.slice` in ns), if it reports one.
    fn slice_ns() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.rsplit(':').next()?.trim().parse().ok()
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for() {
        std::thread::spawn(|| {
            request(100).expect("sched_setattr with a runtime needs no privilege");
            match slice_ns() {
                Some(ns) => assert_eq!(ns, 100_000),
                // A kernel without EEVDF (before 6.6) has no `se.slice` and ignores the runtime.
                None => assert!(
                    std::env::var_os("CI").is_none(),
                    "/proc/thread-self/sched shows no se.slice: kernel before 6.6?"
                ),
            }
            request(5).unwrap();
            if let Some(ns) = slice_ns() {
                assert_eq!(ns, 100_000, "clamped to the minimum");
            }
        })
        .join()
        .unwrap();
    }
}
