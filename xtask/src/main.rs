//! sluice's build system: `cargo xtask setup | demo | test | bench | soak | image | fuzz |
//! conformance-coverage`.
//!
//! It imports no runtime crate; everything it does is running programs.

mod bench;
mod demo;
mod fuzz;
mod image;
mod setup;
mod soak;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "sluice's build system")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (apt packages, nightly rust-src, bpf-linker). Idempotent.
    Setup,
    /// Benchmark every capture path against direct: latency, throughput, churn, bulk, proxy cost.
    Bench(Box<bench::BenchArgs>),
    /// Mixed traffic, abusive clients, L7 reloads and pod churn through the node agent for
    /// --minutes; samples its RSS, fds and threads each minute; non-zero exit on a failed verdict.
    Soak(Box<soak::SoakArgs>),
    /// Set up, build, then (as root) run two pods with the agent capturing one of them and curl
    /// through it; cleans up everything, also on Ctrl-C.
    Demo {
        /// Skip the setup step (the toolchain is already installed).
        #[arg(long)]
        no_setup: bool,
    },
    /// Build the OCI image (FROM scratch, reproducible) with podman; print digest and size.
    Image {
        /// Build a second time without cache and fail unless the digest is the same.
        #[arg(long)]
        twice: bool,
        /// Remove the image from podman's store afterwards.
        #[arg(long)]
        rm: bool,
        /// Cargo profile of the binaries (`dev`: the debug build, for a quick test image).
        #[arg(long, default_value = "release")]
        profile: String,
    },
    /// Build the cargo-fuzz targets once and run each for a while; fails on any crash or timeout.
    Fuzz(fuzz::FuzzArgs),
    /// Regenerate docs/config-fields.md and docs/conformance-coverage.md from the field inventory
    /// (docs/config-fields.txt) and the conformance cases' `covers:` lists.
    ConformanceCoverage,
    /// Set up, build, then run every test (unit and the root-only integration tests) and a
    /// 60 s run of every fuzz target.
    Test {
        /// Skip the setup step (the toolchain is already installed).
        #[arg(long)]
        no_setup: bool,
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::Bench(a) => bench::run(*a),
        Cmd::Soak(a) => soak::run(*a),
        Cmd::Demo { no_setup } => demo::run(no_setup),
        Cmd::Fuzz(a) => fuzz::run(&a),
        Cmd::ConformanceCoverage => setup::run_cmd(
            "cargo",
            &[
                "run",
                "-q",
                "-p",
                "sluice-tests",
                "--bin",
                "conformance-coverage",
            ],
        ),
        Cmd::Image { twice, rm, profile } => {
            let built = image::run(twice, &profile);
            if rm {
                image::remove()?;
            }
            built
        }
        Cmd::Test { no_setup, args } => {
            if !no_setup {
                setup::run()?;
            }
            // The integration tests drive the real binary (tests/src/sluice_cli.rs finds it).
            setup::run_cmd("cargo", &["build", "-j2", "-p", "sluice"])?;
            let mut cmd = vec!["test", "--no-fail-fast"];
            let extra: Vec<&str> = args.iter().map(String::as_str).collect();
            if !extra.is_empty() {
                cmd.push("--");
                cmd.extend(extra);
            }
            let tests = setup::run_cmd("cargo", &cmd);
            let fuzzed = fuzz::run(&fuzz::FuzzArgs {
                seconds: 60,
                runs: None,
                target: None,
            });
            tests.and(fuzzed)
        }
    }
}
