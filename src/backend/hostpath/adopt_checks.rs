//! The checks a directory passes before it is adopted (`adopt`): what it is, where it lies,
//! whose it is, who uses it. Each refusal names the directory and the cause; none changes
//! anything.

use super::HostpathBackend;
use crate::error::{Error, Result};
use crate::os::btrfs::BtrfsQgroups;
use crate::os::{inuse, markers, mountinfo};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The device of the filesystem (btrfs: the subvolume) a rename of `dir` must stay in: its
/// own, or for a btrfs subvolume, which has a device of its own, the one it sits in.
pub(super) fn fs_dev(dir: &Path) -> io::Result<u64> {
    if BtrfsQgroups::is_subvolume(dir) {
        Ok(std::fs::metadata(dir.parent().unwrap_or(Path::new("/")))?.dev())
    } else {
        Ok(std::fs::metadata(dir)?.dev())
    }
}

/// Whether `a` and `b` lie on one filesystem (by the device the mount table shows for the mount
/// holding each: on btrfs the same for all its subvolumes), as a reflink copy needs.
pub(super) fn same_filesystem(a: &Path, b: &Path) -> io::Result<bool> {
    Ok(mountinfo::holding_mount(a)?.device == mountinfo::holding_mount(b)?.device)
}

impl HostpathBackend {
    /// The canonical path of a directory that may be adopted, or why not.
    pub(super) fn check_source(&self, id: &str, path: &Path) -> Result<PathBuf> {
        let shown = path.display();
        let invalid = |why: String| Err(Error::invalid(format!("volume {id}: {shown} {why}")));
        let refuse = |why: String| {
            Err(Error::precondition(
                id,
                format!("{shown} {why}; nothing was changed"),
            ))
        };
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return invalid("is not an absolute path without '..'".into());
        }
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| Error::invalid(format!("volume {id}: cannot adopt {shown}: {e}")))?;
        if meta.file_type().is_symlink() {
            return invalid(
                "is a symbolic link; adopt the directory it points to, by its own path".into(),
            );
        }
        if !meta.is_dir() {
            return invalid("is not a directory".into());
        }
        let real =
            std::fs::canonicalize(path).map_err(Error::os(id, format!("resolve {shown}")))?;
        if real != path.components().collect::<PathBuf>() {
            return invalid(format!(
                "lies behind a symbolic link (it is {}); give that path",
                real.display()
            ));
        }
        let base = &self.base;
        if base.starts_with(&real) {
            return invalid(format!(
                "is the base path {} or a parent of it",
                base.display()
            ));
        }
        let journal = self.ledger.journal().dir();
        if journal.starts_with(&real) {
            return invalid(format!(
                "holds the driver's state journal {}",
                journal.display()
            ));
        }
        if let Ok(inside) = real.strip_prefix(base) {
            let first = inside.iter().next().unwrap_or_default().to_string_lossy();
            let top = base.join(first.as_ref());
            if inside.components().count() > 1 || first.starts_with('.') {
                let whose = match markers::owner_marker(&top).ok().flatten() {
                    Some(o) => format!("the directory of volume {o}"),
                    None if first.starts_with('.') => "the driver's own".to_string(),
                    None => {
                        "a directory of the base that is no volume: adopt that one, whole".into()
                    }
                };
                return refuse(format!(
                    "lies inside {} in the base, {whose}",
                    top.display()
                ));
            }
            if let Some(rec) = self.ledger.get(&first) {
                return refuse(format!("is the directory of volume {}", rec.id));
            }
        }
        match markers::read_markers(&real) {
            Ok(None) => {}
            Ok(Some(m)) => {
                return refuse(format!(
                    "carries the ownership marker of volume {} (state store {}); it belongs to that volume",
                    m.volume,
                    m.store.as_deref().unwrap_or("?")
                ))
            }
            Err(e) => return Err(Error::os(id, format!("read the markers of {shown}"))(e)),
        }
        Ok(real)
    }

    /// The directory must lie in the base's filesystem (and btrfs subvolume): adoption renames,
    /// it never copies across filesystems.
    pub(super) fn check_same_fs(&self, id: &str, dir: &Path) -> Result<()> {
        let base = std::fs::metadata(&self.base)
            .map_err(Error::os(id, format!("stat {}", self.base.display())))?;
        let dev = fs_dev(dir).map_err(Error::os(id, format!("stat {}", dir.display())))?;
        if dev != base.dev() {
            let show = |d: u64| format!("{}:{}", libc::major(d), libc::minor(d));
            return Err(Error::precondition(
                id,
                format!(
                    "{} is on another filesystem (device {}) than the base path {} (device {}); adoption moves no data across filesystems: copy it into a new volume instead. Nothing was changed",
                    dir.display(),
                    show(dev),
                    self.base.display(),
                    show(base.dev())
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a directory something on this node uses (see `os::inuse` for the proof).
    pub(super) fn check_unused(&self, id: &str, dir: &Path) -> Result<()> {
        let what = format!("find the users of {}", dir.display());
        let why =
            crate::backend::done::long_step(|| inuse::in_use(dir)).map_err(Error::os(id, what))?;
        why.map_or(Ok(()), |why| {
            Err(Error::precondition(
                id,
                format!(
                    "{} is in use: {why}; stop the pod or process using it first. Nothing was changed",
                    dir.display()
                ),
            ))
        })
    }
}
