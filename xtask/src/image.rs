//! `cargo xtask image`: the OCI image the DaemonSet runs, built by podman `FROM scratch` (no base
//! image is pulled): the release `sluice` and `sluice-cni`, the iptables tools of the fallback
//! path (xtables-nft/legacy multi-call binaries, their command links and xtables modules) and
//! every shared library they load (from `ldd`). Inputs are copied in sorted order with mtime 0
//! and built with `--timestamp 0`, so two builds of one commit have the same digest. Prints the
//! digest and the compressed (gzip) size, as pushed to a registry.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::setup::run_cmd;

/// The tag the manifest (`deploy/sluice.yaml`) refers to.
pub const TAG: &str = "localhost/sluice:0.1.0";

const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";
/// Command names the multi-call binaries answer to (argv[0]); the nft backend is the default.
const NFT_LINKS: &[&str] = &[
    "iptables",
    "iptables-restore",
    "iptables-save",
    "ip6tables",
    "ip6tables-restore",
    "ip6tables-save",
    "iptables-nft",
    "iptables-nft-restore",
    "iptables-nft-save",
    "ip6tables-nft",
    "ip6tables-nft-restore",
    "ip6tables-nft-save",
];
const LEGACY_LINKS: &[&str] = &[
    "iptables-legacy",
    "iptables-legacy-restore",
    "iptables-legacy-save",
    "ip6tables-legacy",
    "ip6tables-legacy-restore",
    "ip6tables-legacy-save",
];

const CONTAINERFILE: &str = "FROM scratch\n\
    COPY rootfs/ /\n\
    ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
    ENTRYPOINT [\"/sluice\"]\n";

/// Builds the image and prints its digest and compressed size; `twice` builds it again without
/// cache and fails unless the digests match.
pub fn run(twice: bool) -> Result<()> {
    run_cmd("cargo", &["build", "-j2", "--release", "-p", "sluice"])?;
    let dir = Path::new("target/image");
    let _ = std::fs::remove_dir_all(dir);
    let first = build(dir, "oci-1")?;
    smoke()?;
    println!(
        "image {TAG}\n  digest {}\n  compressed size {} bytes ({:.1} MiB)",
        first.0,
        first.1,
        first.1 as f64 / 1048576.0
    );
    if twice {
        let second = build(dir, "oci-2")?;
        if second.0 != first.0 {
            bail!("not reproducible: {} then {}", first.0, second.0);
        }
        println!("  second build: same digest {}", second.0);
    }
    Ok(())
}

/// Copies every input into `rootfs` at its host path, sorted, mtimes 0.
fn stage(rootfs: &Path) -> Result<()> {
    let release = Path::new("target/release");
    let mut elves: Vec<PathBuf> = Vec::new();
    for bin in ["sluice", "sluice-cni"] {
        copy_file(&release.join(bin), &rootfs.join(bin))?;
        elves.push(release.join(bin));
    }
    for multi in [
        "/usr/sbin/xtables-nft-multi",
        "/usr/sbin/xtables-legacy-multi",
    ] {
        copy_into(rootfs, Path::new(multi))?;
        elves.push(multi.into());
    }
    for (target, links) in [
        ("xtables-nft-multi", NFT_LINKS),
        ("xtables-legacy-multi", LEGACY_LINKS),
    ] {
        for l in links {
            std::os::unix::fs::symlink(target, rootfs.join("usr/sbin").join(l))?;
        }
    }
    let mut modules: Vec<PathBuf> = std::fs::read_dir(XTABLES_DIR)
        .with_context(|| format!("{XTABLES_DIR} (apt package iptables)"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    modules.sort();
    for m in &modules {
        copy_into(rootfs, m)?;
    }
    elves.extend(modules);
    for lib in shared_libs(&elves)? {
        copy_into(rootfs, &lib)?;
    }
    run_cmd(
        "find",
        &[
            &rootfs.display().to_string(),
            "-exec",
            "touch",
            "-h",
            "-d",
            "@0",
            "{}",
            "+",
        ],
    )
}

/// Every library `ldd` resolves for `elves` (and the dynamic loader), sorted.
fn shared_libs(elves: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for elf in elves {
        let out = Command::new("ldd")
            .arg(elf)
            .output()
            .context("running ldd")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line
                .split("=>")
                .last()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            if path.starts_with('/') {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libs)
}

/// `host` copied (dereferenced) to the same path under `rootfs`.
fn copy_into(rootfs: &Path, host: &Path) -> Result<()> {
    copy_file(host, &rootfs.join(host.strip_prefix("/").unwrap_or(host)))
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Stages the inputs afresh, `podman build`, then a gzip OCI layout of the result:
/// (manifest digest, compressed bytes).
fn build(dir: &Path, layout: &str) -> Result<(String, u64)> {
    let rootfs = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    stage(&rootfs)?;
    std::fs::write(dir.join("Containerfile"), CONTAINERFILE)?;
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
