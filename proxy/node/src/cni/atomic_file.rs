//! Whole-file replacement as readers of the CNI directories need it: write a hidden temporary
//! file next to the target (unique per process, so two writers never share one), give it the
//! mode and owner the target should have, fsync, then `rename(2)` over the target. A reader sees
//! the old file or the new one, never a partial one.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// Mode and owner a replacement keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner, when it must be set (differs from ours).
    pub owner: Option<(u32, u32)>,
}

impl Ownership {
    /// What `path` has now.
    pub fn of(path: &Path) -> io::Result<Self> {
        let m = fs::metadata(path)?;
        Ok(Self {
            mode: m.mode() & 0o7777,
            owner: Some((m.uid(), m.gid())),
        })
    }

    /// A fresh file with `mode`, owned by us.
    pub fn new(mode: u32) -> Self {
        Self { mode, owner: None }
    }
}

/// Replaces `path` with `content` atomically, with `own`'s mode and owner.
pub fn replace(path: &Path, content: &[u8], own: Ownership) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        if let Some((uid, gid)) = own.owner {
            let m = f.metadata()?;
            if (m.uid(), m.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
        }
        f.set_permissions(fs::Permissions::from_mode(own.mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `.<name>.sluice-<pid>.tmp` beside `path`: hidden and with an extension no CNI runtime reads.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.sluice-{}.tmp", std::process::id()))
}

/// Removes `path`; a file already gone is fine.
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_the_mode_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("sl-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("10-a.conflist");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        replace(&p, b"new", Ownership::of(&p).unwrap()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
