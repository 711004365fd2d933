//! Noisy neighbour on one agent with every pod enrolled: the quiet pod (pod 1) runs the open
//! loop at `plan.quiet_rps` over 16 connections, alone and then while pod 0 runs wrk at its
//! maximum rate (64 connections, nice 19) through the same agent. Pods enrolled in order are
//! placed on the agent's workers in turn, so with two workers pod 1 is on the other worker than
//! pod 0; the `same-worker` variants take pod 2, on pod 0's worker (with and without per-pod
//! turns, with and without the busy worker yielding its core, with turns bounded in time). Repeated `plan.reps` times, alone and
//! with the neighbour interleaved; the ratio is taken per repetition.

use std::time::Duration;

use anyhow::{bail, Result};

use super::{
    super::{loadgen::OpenResult, paths::start::Agent},
    ctx::Ctx,
    report::Metrics,
};

/// The agent's fairness measures switched off one at a time, each its own section
/// (`noisy-l4-<name>`, `noisy-l7-<name>`) and report row: what each buys, in the same run.
pub struct Variant {
    /// Section and key suffix.
    pub name: &'static str,
    /// Extra `sluice agent` arguments.
    pub args: &'static [&'static str],
    /// The report row's label after the engine.
    pub label: &'static str,
    /// The quiet pod.
    pub quiet: usize,
}

pub const VARIANTS: [Variant; 8] = [
    Variant {
        name: "unbounded",
        args: &["--pod-workers", "0"],
        label: "no per-pod bound (`--pod-workers 0`)",
        quiet: QUIET,
    },
    Variant {
        name: "kernel-slice",
        args: &["--worker-slice-us", "0"],
        label: "the kernel's default slice (`--worker-slice-us 0`)",
        quiet: QUIET,
    },
    Variant {
        name: "same-worker",
        args: &[],
        label: "the quiet pod on the neighbour's worker (pod 2)",
        quiet: 2,
    },
    Variant {
        name: "same-worker-fifo",
        args: &["--pod-turn", "0"],
        label: "the quiet pod on the neighbour's worker, no per-pod turns (`--pod-turn 0`)",
        quiet: 2,
    },
    Variant {
        name: "same-worker-no-yield",
        args: &["--worker-yield-us", "0"],
        label: "the quiet pod on the neighbour's worker, the busy worker never yields its core (`--worker-yield-us 0`)",
        quiet: 2,
    },
    Variant {
        name: "same-worker-turn-20us",
        args: &["--pod-turn-us", "20"],
        label: "the quiet pod on the neighbour's worker, turns of at most 20 µs (`--pod-turn-us 20`)",
        quiet: 2,
    },
    Variant {
        name: "same-worker-own-turns",
        args: &["--pod-turn-shared", "0"],
        label: "the quiet pod on the neighbour's worker, no shorter turns while shared (`--pod-turn-shared 0`)",
        quiet: 2,
    },
    Variant {
        name: "same-worker-window-1ms",
        args: &["--pod-turn-shared-window-us", "1000"],
        label: "the quiet pod on the neighbour's worker, shared for 1 ms after a switch (`--pod-turn-shared-window-us 1000`)",
        quiet: 2,
    },
];

/// The quiet pod of the base rows.
pub const QUIET: usize = 1;
const NOISY: usize = 0;

fn quiet_run(cx: &Ctx, quiet: usize, secs: f64) -> Result<OpenResult> {
    let r = cx.multi(&[quiet], cx.plan.quiet_rps, 16, secs)?;
    if r.requests == 0 {
        bail!("quiet pod: no request answered ({} errors)", r.errors);
    }
    Ok(r)
}

/// `agent` None: the control run with no proxy (no pod enrolled), for what the shared cores
/// alone do to the quiet pod `quiet`.
pub fn run(
    cx: &Ctx,
    agent: Option<&mut Agent>,
    key: &str,
    quiet: usize,
    m: &mut Metrics,
) -> Result<()> {
    let secs = cx.plan.noisy_secs;
    // Warm-up of the quiet pod's path (not timed). A failure is a finding, recorded and
    // printed, not hidden; the run goes on.
    if let Err(e) = quiet_run(cx, quiet, 0.5) {
        println!("FINDING: {key}: the quiet pod's warm-up failed: {e:#}");
        m.push(&format!("{key}.noisy.warmup_failures"), 1.0);
    }
    for _ in 0..cx.plan.reps {
        let alone = quiet_run(cx, quiet, secs)?;
        // wrk runs 1 s before and after the quiet pod's window, at nice 19: its own CPU goes
        // to it only when nothing else wants the core, as if it ran on its own cores; what
        // the quiet pod still feels is what it shares with the neighbour: the agent and the
        // one nginx both pods call.
        let noisy = cx.wrk_start_noisy(NOISY, 64, secs + 2.0)?;
        std::thread::sleep(Duration::from_secs(1));
        let with = quiet_run(cx, quiet, secs);
        let wrk = cx.wrk_wait(noisy, secs + 2.0)?;
        let with = with?;
        m.push(&format!("{key}.noisy.alone.p50_us"), alone.p50_us);
        m.push(&format!("{key}.noisy.alone.p99_us"), alone.p99_us);
        m.push(&format!("{key}.noisy.with.p50_us"), with.p50_us);
        m.push(&format!("{key}.noisy.with.p99_us"), with.p99_us);
        m.push(&format!("{key}.noisy.with.rps"), with.achieved_rps);
        m.push(
            &format!("{key}.noisy.errors"),
            (alone.errors + with.errors) as f64,
        );
        m.push(&format!("{key}.noisy.neighbour_rps"), wrk);
        m.push(
            &format!("{key}.noisy.p99_ratio"),
            with.p99_us / alone.p99_us,
        );
    }
    match agent {
        Some(a) => a.run.check_alive(),
        None => Ok(()),
    }
}
