//! `cargo xtask fuzz`: builds the cargo-fuzz targets of fuzz/ once (nightly, ASan, debug
//! assertions, `AYA_BUILD_SKIP=1` so no sanitizer flag reaches the eBPF build), runs each for a
//! time (and/or a number of executions) with a 1 s per-input timeout, and reports executions and
//! exec/s per target. Any crash, timeout or out-of-memory fails it. See docs/fuzzing.md.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

/// Every target in fuzz/Cargo.toml, in report order.
pub const TARGETS: &[&str] = &["config", "detect", "route", "control", "cni", "xds"];

/// How a run is bounded.
#[derive(clap::Args, Debug, Clone)]
pub struct FuzzArgs {
    /// Seconds per target (libFuzzer -max_total_time).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Stop a target after this many executions (libFuzzer -runs), whichever comes first.
    #[arg(long)]
    pub runs: Option<u64>,
    /// Run only this target (default: all).
    #[arg(long)]
    pub target: Option<String>,
}

struct Report {
    target: String,
    execs: u64,
    exec_per_sec: u64,
    seconds: f64,
    outcome: String,
}

fn fuzz_dir() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).join("fuzz")
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "--target {t:?}: no such fuzz target (have {})",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    build()?;
    let mut reports = Vec::new();
    for t in targets {
        reports.push(run_target(t, args)?);
    }
    eprintln!("\nfuzz report");
    eprintln!(
        "{:<10} {:>14} {:>10} {:>9}  result",
        "target", "executions", "exec/s", "seconds"
    );
    for r in &reports {
        eprintln!(
            "{:<10} {:>14} {:>10} {:>9.0}  {}",
            r.target, r.execs, r.exec_per_sec, r.seconds, r.outcome
        );
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.outcome != "ok")
        .map(|r| r.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs under fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// One build of every target; the runs below use the binaries directly, so nothing rebuilds.
fn build() -> Result<()> {
    eprintln!("fuzz: building the targets (nightly, address sanitizer, debug assertions)");
    let status = Command::new("cargo")
        .args([
            "+nightly",
            "fuzz",
            "build",
            "--release",
            "--debug-assertions",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("AYA_BUILD_SKIP", "1")
        .status()
        .context("running cargo fuzz (run `cargo xtask setup` to install cargo-fuzz)")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    Ok(())
}

fn run_target(target: &str, args: &FuzzArgs) -> Result<Report> {
    let dir = fuzz_dir();
    let bin = dir
        .join("target/x86_64-unknown-linux-gnu/release")
        .join(target);
    // New inputs go to corpus-run/ (not in git); the committed seeds are read from corpus/.
    let grown = dir.join("corpus-run").join(target);
    let artifacts = dir.join("artifacts").join(target);
    let logs = dir.join("target/logs");
    for d in [&grown, &artifacts, &logs] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg(&grown)
        .arg(dir.join("corpus").join(target))
        .arg(format!("-max_total_time={}", args.seconds))
        .arg("-timeout=1")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    if let Some(runs) = args.runs {
        cmd.arg(format!("-runs={runs}"));
    }
    let dict = dir.join("dict").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    eprintln!(
        "fuzz: {target}: up to {} s{} (log {})",
        args.seconds,
        args.runs
            .map(|r| format!(" or {r} runs"))
            .unwrap_or_default(),
        log_path.display()
    );
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("running {} (build it first)", bin.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let stat = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let outcome = if status.success() {
        "ok".to_string()
    } else {
        let why = [
            "deadly signal",
            "timeout",
            "out-of-memory",
            "panicked",
            "ERROR",
        ]
        .into_iter()
        .find(|k| text.contains(k))
        .unwrap_or("failed");
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!(
            "fuzz: {target} FAILED ({status}); last lines of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        format!("FAILED: {why}")
    };
    Ok(Report {
        target: target.to_string(),
        execs: stat("number_of_executed_units"),
        exec_per_sec: stat("average_exec_per_sec"),
        seconds,
        outcome,
    })
}
