//! What the scale bench reads of a process from /proc: VmRSS and VmHWM, open fds, threads,
//! CPU (utime + stime of /proc/PID/stat, clock ticks) and context switches (wake-ups).

use std::fs;

use anyhow::{Context as _, Result};
use serde::Serialize;

/// A snapshot of one process (or a sum over several).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Snap {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

impl std::ops::Add for Snap {
    type Output = Snap;
    fn add(self, o: Snap) -> Snap {
        Snap {
            rss_kib: self.rss_kib + o.rss_kib,
            hwm_kib: self.hwm_kib + o.hwm_kib,
            fds: self.fds + o.fds,
            threads: self.threads + o.threads,
        }
    }
}

fn status_field(s: &str, name: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// RSS, peak RSS, fds and threads of `pid`.
pub fn snap(pid: u32) -> Result<Snap> {
    let p = format!("/proc/{pid}/status");
    let s = fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    let field = |n: &str| status_field(&s, n).with_context(|| format!("{p}: no {n}"));
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("read /proc/{pid}/fd"))?
        .count() as u64;
    Ok(Snap {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        fds,
        threads: field("Threads:")?,
    })
}

/// The sum of the snapshots of `pids`.
pub fn snap_sum(pids: &[u32]) -> Result<Snap> {
    pids.iter()
        .try_fold(Snap::default(), |acc, &p| Ok(acc + snap(p)?))
}

/// utime + stime of `pid` in seconds (whole process, all threads, from /proc/PID/stat).
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let p = format!("/proc/{pid}/stat");
    let s = fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = s.rsplit_once(") ").map(|(_, r)| r).context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{p}: field {i}"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(14)? + ticks(15)?) as f64 / hz)
}

/// CPU seconds summed over `pids`.
pub fn cpu_sum(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

/// Context switches (voluntary + involuntary) over every thread of `pid`: each one is a
/// wake-up of a thread.
pub fn switches(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for e in fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        if let Ok(s) = fs::read_to_string(e?.path().join("status")) {
            total += status_field(&s, "voluntary_ctxt_switches:").unwrap_or(0);
            total += status_field(&s, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        }
    }
    Ok(total)
}
