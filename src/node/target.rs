//! Staging and target paths: resolved beneath a publish root, mounted onto file descriptors.

use crate::error::{Error, Result};
use crate::os::beneath::{self, PublishRoots};
use crate::os::mount::BindOptions;
use crate::os::{mountfd, mountinfo};
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use sys_mount::MountFlags;

/// The publish roots of this node plugin: every staging and target path must lie below one.
#[derive(Debug, Clone)]
pub struct NodePaths {
    roots: PublishRoots,
}

impl NodePaths {
    pub fn new(roots: PublishRoots) -> Self {
        NodePaths { roots }
    }

    pub fn roots(&self) -> &[PathBuf] {
        self.roots.roots()
    }

    /// The target a request names, or InvalidArgument naming the path, the field and the roots.
    pub fn target(&self, field: &str, path: &Path) -> Result<Target> {
        let (root, rel) = self
            .roots
            .locate(path)
            .map_err(|e| Error::invalid(format!("{field}: {e}")))?;
        Ok(Target {
            path: root.join(&rel),
            root: root.to_path_buf(),
            rel,
        })
    }
}

/// A path below a publish root. `path` is for messages, records and read-only checks; every
/// change (create, mount, unmount) goes through `root` + `rel` without following symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    root: PathBuf,
    rel: PathBuf,
}

impl Target {
    /// A target for tests and tools that have no roots: the parent is the root.
    pub fn unchecked(path: &Path) -> Self {
        Target {
            path: path.to_path_buf(),
            root: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            rel: PathBuf::from(path.file_name().unwrap_or_default()),
        }
    }

    pub fn as_path(&self) -> &Path {
        &self.path
    }

    fn os(&self, volume: &str, action: &str) -> impl FnOnce(io::Error) -> Error + use<> {
        Error::os(
            volume.to_string(),
            format!("{action} {}", self.path.display()),
        )
    }

    pub fn is_mounted(&self, volume: &str) -> Result<bool> {
        mountinfo::is_mount_point(&self.path).map_err(self.os(volume, "check mount point"))
    }

    /// Bind-mounts the directory `source` onto this target (a directory, made if missing).
    pub fn bind_dir(&self, volume: &str, source: &Path, opts: BindOptions) -> Result<()> {
        let fd = beneath::mkdir_beneath(&self.root, &self.rel, 0o750)
            .map_err(self.os(volume, "create"))?;
        mountfd::bind_mount_onto(source, fd.as_fd(), opts.read_only(), opts.flags)
            .map_err(self.os(volume, &format!("bind {} to", source.display())))
    }

    /// Bind-mounts the device node `device` onto this target (a file, made if missing).
    pub fn bind_file(&self, volume: &str, device: &Path, opts: BindOptions) -> Result<()> {
        let fd = beneath::create_file_beneath(&self.root, &self.rel, 0o640)
            .map_err(self.os(volume, "create"))?;
        mountfd::bind_mount_onto(device, fd.as_fd(), opts.read_only(), opts.flags)
            .map_err(self.os(volume, &format!("bind {} to", device.display())))
    }

    /// Mounts the filesystem on `device` onto this target (a directory, made if missing).
    pub fn mount_fs(
        &self,
        volume: &str,
        device: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> Result<()> {
        let fd = beneath::mkdir_beneath(&self.root, &self.rel, 0o750)
            .map_err(self.os(volume, "create"))?;
        mountfd::fs_mount_onto(device, fstype, flags, data, fd.as_fd())
            .map_err(self.os(volume, &format!("mount {} ({fstype}) on", device.display())))
    }

    /// Unmounts everything stacked on this target; done when nothing is mounted there.
    pub fn unmount_all(&self, volume: &str) -> Result<()> {
        while beneath::unmount_beneath(&self.root, &self.rel).map_err(self.os(volume, "unmount"))? {
        }
        Ok(())
    }

    /// Removes the (unmounted) target directory or file; a failure is logged, not fatal.
    pub fn remove(&self, volume: &str) {
        let removed = match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => fs::remove_dir(&self.path),
            Ok(_) => fs::remove_file(&self.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(volume, target = %self.path.display(), error = %e, "target path left in place");
        }
    }
}

impl AsRef<Path> for Target {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}
