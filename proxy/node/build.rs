//! Builds the eBPF crate for bpfel-unknown-none with aya-build and leaves the object in OUT_DIR.
//!
//! `AYA_BUILD_SKIP=1` (aya-build's own switch) skips the nested eBPF build and leaves an empty
//! object: the crate then compiles without the eBPF toolchain and `Datapath::load` refuses to
//! run (`bpf::object_built`). Only the fuzz build (fuzz/, `cargo xtask fuzz`) sets it, so its
//! sanitizer RUSTFLAGS never reach the kernel object; every other build embeds the real one.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
        std::fs::write(out.join("sluice"), b"").context("writing the empty eBPF object")?;
        println!("cargo:warning=AYA_BUILD_SKIP is set: no eBPF object, the data path cannot load");
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .iter()
        .find(|p| p.name.as_str() == "sluice-ebpf")
        .ok_or_else(|| anyhow!("sluice-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // aya-build watches the eBPF crate's directory; the shared types are compiled into the object too.
    let common = root_dir
        .parent()
        .ok_or_else(|| anyhow!("no parent for {root_dir}"))?
        .join("ebpf-common");
    println!("cargo:rerun-if-changed={common}");
    // aya-build echoes the nested cargo's stderr as `cargo:warning=` lines; its progress lines
    // ("Compiling ...", "Finished ...") are noise to a new user. Errors and compiler warnings
    // still come through (quiet only drops progress).
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
