//! Staging the image's root filesystem (shared by `cargo xtask image` and the tests crate's
//! manifest runner, which includes this file with `#[path]`, so both build the same layout):
//! `sluice` and `sluice-cni` from a cargo profile directory, iproute2's `ip`, the iptables tools of the fallback
//! path and every shared library they load (from `ldd`), copied at their host paths with mtime 0.
//! Depends on std and anyhow only.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// iproute2 (apt package iproute2), found on the image's PATH.
const IP_TOOL: &str = "/usr/sbin/ip";
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

/// The image: the staged tree and nothing else.
pub const CONTAINERFILE: &str = "FROM scratch\n\
    COPY rootfs/ /\n\
    ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
    ENTRYPOINT [\"/sluice\"]\n";

/// Copies every input into `rootfs` at its host path, sorted, mtimes 0.
pub fn stage(bin_dir: &Path, rootfs: &Path) -> Result<()> {
    let mut elves: Vec<PathBuf> = Vec::new();
    for bin in ["sluice", "sluice-cni"] {
        copy_file(&bin_dir.join(bin), &rootfs.join(bin))?;
        elves.push(bin_dir.join(bin));
    }
    // The agent runs `ip -6 addr replace ::6/128 dev lo` in each node-mode pod (inbound
    // passthrough source; sidecar.rs).
    copy_into(rootfs, Path::new(IP_TOOL))?;
    elves.push(IP_TOOL.into());
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
    let root = rootfs.display().to_string();
    let status = Command::new("find")
        .args([&root, "-exec", "touch", "-h", "-d", "@0", "{}", "+"])
        .status()
        .context("running find")?;
    if !status.success() {
        bail!("resetting mtimes under {root} failed ({status})");
    }
    Ok(())
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
