//! `cargo xtask image`: the OCI image the DaemonSet runs, built by podman `FROM scratch` (no base
//! image is pulled): the release (or `--profile dev`) `sluice` and `sluice-cni`, the iptables tools of the fallback
//! path (xtables-nft/legacy multi-call binaries, their command links and xtables modules) and
//! every shared library they load (from `ldd`). Inputs are copied in sorted order with mtime 0
//! and built with `--timestamp 0`, so two builds of one commit have the same digest. Prints the
//! digest and the compressed (gzip) size, as pushed to a registry.

mod stage;

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::setup::run_cmd;

/// The tag the manifest (`deploy/sluice.yaml`) refers to.
pub const TAG: &str = "localhost/sluice:0.1.0";

/// Builds the image from the `profile` build (`release`, or `dev` for a quick image of the debug
/// binaries, same layout) and prints its digest and compressed size; `twice` builds it again
/// without cache and fails unless the digests match.
pub fn run(twice: bool, profile: &str) -> Result<()> {
    run_cmd(
        "cargo",
        &["build", "-j2", "--profile", profile, "-p", "sluice"],
    )?;
    let bin_dir = match profile {
        "dev" | "test" => "target/debug".to_string(),
        "release" | "bench" => "target/release".to_string(),
        other => format!("target/{other}"),
    };
    let dir = Path::new("target/image");
    let _ = std::fs::remove_dir_all(dir);
    let first = build(Path::new(&bin_dir), dir, "oci-1")?;
    smoke()?;
    println!(
        "image {TAG}\n  digest {}\n  compressed size {} bytes ({:.1} MiB)",
        first.0,
        first.1,
        first.1 as f64 / 1048576.0
    );
    if twice {
        let second = build(Path::new(&bin_dir), dir, "oci-2")?;
        if second.0 != first.0 {
            bail!("not reproducible: {} then {}", first.0, second.0);
        }
        println!("  second build: same digest {}", second.0);
    }
    Ok(())
}

/// Stages the inputs afresh, `podman build`, then a gzip OCI layout of the result:
/// (manifest digest, compressed bytes).
fn build(bin_dir: &Path, dir: &Path, layout: &str) -> Result<(String, u64)> {
    let rootfs = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    stage::stage(bin_dir, &rootfs)?;
    std::fs::write(dir.join("Containerfile"), stage::CONTAINERFILE)?;
    let d = dir.display().to_string();
    podman(&[
        "build",
        "--no-cache",
        "--timestamp",
        "0",
        "--format",
        "oci",
        "-t",
        TAG,
        &d,
    ])?;
    let out = dir.join(layout);
    let dest = format!("oci:{}:sluice", out.display());
    podman(&[
        "push",
        "--compression-format",
        "gzip",
        "--format",
        "oci",
        TAG,
        &dest,
    ])?;
    let index: Value = serde_json::from_slice(&std::fs::read(out.join("index.json"))?)?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json: manifests[0].digest")?
        .to_string();
    let blob = |d: &str| {
        out.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(&digest))?)?;
    let layers = manifest["layers"].as_array().context("manifest: layers")?;
    let size = layers
        .iter()
        .filter_map(|l| l["size"].as_u64())
        .sum::<u64>()
        + manifest["config"]["size"].as_u64().unwrap_or(0);
    Ok((digest, size))
}

/// Runs the image's programs (no privileges, host network: nothing is created on the host) to
/// prove their libraries and modules are all there.
fn smoke() -> Result<()> {
    let run = |entry: &str, args: &[&str], env: &[&str]| {
        let mut a = vec![
            "run",
            "--rm",
            "--network",
            "host",
            "--ulimit",
            "nofile=20000:20000",
        ];
        a.extend(["--ulimit", "nproc=4096:4096", "--entrypoint", entry]);
        for e in env {
            a.extend(["--env", e]);
        }
        a.push(TAG);
        a.extend(args);
        podman(&a)
    };
    run("/sluice", &["--version"], &[])?;
    run("/sluice-cni", &[], &["CNI_COMMAND=VERSION"])?;
    run("/usr/sbin/ip", &["-V"], &[])?;
    for tool in [
        "iptables",
        "ip6tables-restore",
        "iptables-legacy",
        "ip6tables-legacy-save",
    ] {
        run(&format!("/usr/sbin/{tool}"), &["--version"], &[])?;
    }
    Ok(())
}

/// podman with the runtime this machine kind needs (crun refuses hybrid cgroups; ../shared/toolchain.md).
fn podman(args: &[&str]) -> Result<()> {
    let mut all = vec!["--runtime", "runc"];
    all.extend(args);
    run_cmd("podman", &all)
}

/// Removes the image (the staging dir stays for inspection until the next build).
pub fn remove() -> Result<()> {
    podman(&["rmi", "--force", TAG])
}
