//! The soak report: one row per minute (the agent's RSS, fds and threads, and what happened in
//! that minute), the totals, the abusive clients' outcomes, and the verdict with its bounds.

use std::fmt::Write as _;

use serde::Serialize;

use super::{ops::OpCounts, tally::Counters};
use crate::bench::scale::procstat::Snap;

/// RSS at the end may differ from its value after the first minute by this fraction.
pub const RSS_TOLERANCE: f64 = 0.10;
/// fds and threads at the end may exceed their values after the first minute by this much
/// (in-flight connections at the sampling instant, tokio's blocking threads that linger 10 s).
pub const FD_SLACK: u64 = 32;
pub const THREAD_SLACK: u64 = 8;
/// With every client stopped, fds may exceed the start (one pod enrolled, no traffic) by
/// this much: pooled idle upstream connections.
pub const QUIET_FD_SLACK: u64 = 32;

/// One sample: the agent's numbers and the cumulative counts at that moment.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Minute (0 = start, before any traffic).
    pub minute: u64,
    pub snap: Snap,
    pub clients: Counters,
    pub ops: OpCounts,
}

impl Row {
    fn ok(&self) -> u64 {
        self.clients.good_ok() + self.ops.h2_ok + self.ops.churn_ok
    }

    fn errors(&self) -> u64 {
        self.clients.good_errors()
            + self.ops.h2_errors
            + self.ops.churn_errors
            + self.ops.reload_errors
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The report (markdown) and the failed checks (empty = pass).
pub fn render(rows: &[Row], quiet: &Snap, minutes: u64, alive: bool) -> (String, Vec<String>) {
    let mut md = String::new();
    let _ = writeln!(md, "# sluice soak: {minutes} min through the node agent\n");
    let _ = writeln!(
        md,
        "| min | RSS MiB | fds | threads | good ok | good err | h1 ka | h1 close | h2 | ws | tcp | churn | reloads ok/refused | abusive |"
    );
    let _ = writeln!(
        md,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut prev = &rows[0];
    for r in rows {
        let good = |k: &str| {
            r.clients.good.get(k).map_or(0, |t| t.ok) - prev.clients.good.get(k).map_or(0, |t| t.ok)
        };
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} |",
            r.minute,
            mib(r.snap.rss_kib),
            r.snap.fds,
            r.snap.threads,
            r.ok() - prev.ok(),
            r.errors() - prev.errors(),
            good("h1_keepalive"),
            good("h1_close"),
            r.ops.h2_ok - prev.ops.h2_ok,
            good("websocket"),
            good("tcp"),
            r.ops.churn_ok - prev.ops.churn_ok,
            r.ops.reloads_applied - prev.ops.reloads_applied,
            r.ops.reloads_rejected - prev.ops.reloads_rejected,
            r.clients.abuse_total() - prev.clients.abuse_total(),
        );
        prev = r;
    }
    let _ = writeln!(
        md,
        "| quiet | {:.1} | {} | {} | every client stopped, 3 s later |||||||||||",
        mib(quiet.rss_kib),
        quiet.fds,
        quiet.threads
    );
    let last = rows.last().expect("rows");
    let _ = writeln!(md, "\n## Totals\n");
    let _ = writeln!(md, "| client | ok | errors |\n|---|---:|---|");
    for (k, t) in &last.clients.good {
        let _ = writeln!(md, "| {k} | {} | {:?} |", t.ok, t.errors);
    }
    let o = &last.ops;
    let _ = writeln!(md, "| h2 (h2load) | {} | {} |", o.h2_ok, o.h2_errors);
    let _ = writeln!(
        md,
        "| churn pods (enroll, curl, unenroll) | {} | {} |",
        o.churn_ok, o.churn_errors
    );
    let _ = writeln!(
        md,
        "| reloads (applied + refused as expected) | {} + {} | {} |",
        o.reloads_applied, o.reloads_rejected, o.reload_errors
    );
    if let Some(e) = &o.last_error {
        let _ = writeln!(md, "\nLast driver error: {e}");
    }
    let _ = writeln!(
        md,
        "\n## Abusive clients (outcomes, not errors, except a never_sends outcome other than \
         \"{}\")\n",
        super::abuse::SILENT_OK
    );
    let _ = writeln!(md, "| client | outcomes |\n|---|---|");
    for (k, m) in &last.clients.abuse {
        let _ = writeln!(md, "| {k} | {m:?} |");
    }
    let fails = verdict(rows, quiet, alive);
    let _ = writeln!(
        md,
        "\n## Verdict: {}\n",
        if fails.is_empty() { "PASS" } else { "FAIL" }
    );
    let m1 = rows.get(1).unwrap_or(&rows[0]);
    let _ = writeln!(
        md,
        "- well-behaved errors: {} (must be 0)\n- RSS: {:.1} MiB after minute 1, {:.1} MiB at the end ({:+.1}%, bound ±{:.0}%)\n\
         - fds: {} after minute 1, {} at the end (bound +{FD_SLACK}); quiet {} vs {} at start (bound +{QUIET_FD_SLACK})\n\
         - threads: {} after minute 1, {} at the end (bound +{THREAD_SLACK}); quiet {}\n- agent alive at the end: {alive}",
        last.errors(),
        mib(m1.snap.rss_kib),
        mib(last.snap.rss_kib),
        (last.snap.rss_kib as f64 / m1.snap.rss_kib.max(1) as f64 - 1.0) * 100.0,
        RSS_TOLERANCE * 100.0,
        m1.snap.fds,
        last.snap.fds,
        quiet.fds,
        rows[0].snap.fds,
        m1.snap.threads,
        last.snap.threads,
        quiet.threads,
    );
    for f in &fails {
        let _ = writeln!(md, "- FAILED: {f}");
    }
    (md, fails)
}

/// The failed checks.
fn verdict(rows: &[Row], quiet: &Snap, alive: bool) -> Vec<String> {
    let mut f = Vec::new();
    let last = rows.last().expect("rows");
    let m1 = rows.get(1).unwrap_or(&rows[0]);
    if !alive {
        f.push("the agent died".into());
    }
    if last.errors() > 0 {
        f.push(format!(
            "{} well-behaved requests or actions failed",
            last.errors()
        ));
    }
    if last.ok() == 0 {
        f.push("no well-behaved request succeeded".into());
    }
    // A connection silent through protocol detection must reach the app as opaque TCP.
    if let Some(m) = last.clients.abuse.get("never_sends") {
        let wrong: u64 = m
            .iter()
            .filter(|(o, _)| o.as_str() != super::abuse::SILENT_OK)
            .map(|(_, n)| n)
            .sum();
        if wrong > 0 {
            f.push(format!(
                "{wrong} silent connections were not passed to the app as TCP after the detection timeout"
            ));
        }
    }
    let drift = last.snap.rss_kib as f64 / m1.snap.rss_kib.max(1) as f64 - 1.0;
    if drift.abs() > RSS_TOLERANCE {
        f.push(format!("RSS moved {:+.1}% since minute 1", drift * 100.0));
    }
    if last.snap.fds > m1.snap.fds + FD_SLACK {
        f.push(format!("fds grew {} -> {}", m1.snap.fds, last.snap.fds));
    }
    if last.snap.threads > m1.snap.threads + THREAD_SLACK {
        f.push(format!(
            "threads grew {} -> {}",
            m1.snap.threads, last.snap.threads
        ));
    }
    if quiet.fds > rows[0].snap.fds + QUIET_FD_SLACK {
        f.push(format!(
            "quiet fds {} vs {} at start",
            quiet.fds, rows[0].snap.fds
        ));
    }
    f
}
