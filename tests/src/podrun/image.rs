//! The manifest's image built from this workspace's debug binaries (the layout of `cargo xtask
//! image`: its staging code is included from xtask, so both build the same tree), tagged as the
//! manifest names it, and removed again on drop.

#[path = "../../../xtask/src/image/stage.rs"]
mod stage;

use super::podman::{podman, podman_ok};
use crate::{sluice_cli::sluice_bin, unique_name};

/// An image in podman's store, removed (`podman rmi -f`) on drop; an image that had the tag
/// before (e.g. a release build) is set aside and gets the tag back.
pub struct TestImage {
    pub tag: String,
    saved: Option<String>,
}

impl TestImage {
    /// Stages `sluice` and `sluice-cni` from the directory of the binary the tests use,
    /// `podman build`s it as `tag`; the staging copy is removed at once.
    pub fn build(tag: &str) -> Self {
        let bin = sluice_bin();
        let bin_dir = bin.parent().expect("sluice has a directory");
        let dir = std::env::temp_dir().join(unique_name("image"));
        let staged = stage_into(bin_dir, &dir);
        let saved = podman(&["image", "exists", tag]).status.success().then(|| {
            let saved = format!("localhost/{}:saved", unique_name("podrun"));
            podman_ok(&["tag", tag, &saved]);
            podman_ok(&["untag", tag, tag]);
            saved
        });
        let image = Self {
            tag: tag.into(),
            saved,
        };
        let built = staged.map(|()| {
            podman(&[
                "build",
                "--timestamp",
                "0",
                "--format",
                "oci",
                "-t",
                tag,
                &dir.display().to_string(),
            ])
        });
        let _ = std::fs::remove_dir_all(&dir);
        match built {
            Err(e) => panic!("staging the image from {}: {e:#}", bin_dir.display()),
            Ok(out) => assert!(
                out.status.success(),
                "podman build {tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        image
    }
}

fn stage_into(bin_dir: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    stage::stage(bin_dir, &dir.join("rootfs"))?;
    std::fs::write(dir.join("Containerfile"), stage::CONTAINERFILE)?;
    Ok(())
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "--force", &self.tag]);
        if let Some(saved) = &self.saved {
            let _ = podman(&["tag", saved, &self.tag]);
            let _ = podman(&["untag", saved, saved]);
        }
    }
}
