//! Staging and target paths: resolved beneath a publish root, mounted onto file descriptors.

use crate::error::{Error, Result};
use crate::os::beneath::{self, PublishRoots};
use crate::os::mount::BindOptions;
use crate::os::{mountfd, mountinfo};
use nix::fcntl::OFlag;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use sys_mount::MountFlags;

/// The publish roots of a node plugin: every staging and target path must lie below one.
impl PublishRoots {
    /// The target a request names, or InvalidArgument naming the path, the field and the roots.
    pub fn target(&self, field: &str, path: &Path) -> Result<Target> {
        let invalid = |e: String| Error::invalid(format!("{field}: {e}"));
        let (root, rel) = self.locate(path).map_err(invalid)?;
        no_links_below(root, &rel).map_err(invalid)?;
        Ok(Target {
            path: root.join(&rel),
            root: root.to_path_buf(),
            rel,
        })
    }
}

/// Refuses a path through a symlink, or a non-directory, below its root. Changes go through
/// descriptors opened beneath the root anyway; this makes the refusal an InvalidArgument naming
/// the culprit (not a later ELOOP/ENOTDIR that reads as a driver fault) and keeps read-only
/// checks on the plain path (is a mount there?) inside the root. A missing component ends it.
fn no_links_below(root: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut at = root.to_path_buf();
    let last = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let why = "is a symbolic link, which is not followed below a publish root";
                return Err(format!("{} {why}", at.display()));
            }
            Ok(m) if !m.is_dir() && i + 1 < last => {
                return Err(format!("{} is not a directory", at.display()))
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                return Err(format!("{}: {e}", at.display()))
            }
            Err(_) => break,
        }
    }
    Ok(())
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
        let what = format!("{action} {}", self.path.display());
        Error::os(volume.to_string(), what)
    }

    /// This target as a directory, made if missing.
    fn mkdir(&self, volume: &str) -> Result<std::os::fd::OwnedFd> {
        beneath::mkdir_beneath(&self.root, &self.rel, 0o750).map_err(self.os(volume, "create"))
    }

    pub fn is_mounted(&self, volume: &str) -> Result<bool> {
        mountinfo::is_mount_point(&self.path).map_err(self.os(volume, "check mount point"))
    }

    /// Bind-mounts the directory `source` onto this target (a directory, made if missing).
    pub fn bind_dir(&self, volume: &str, source: &Path, opts: BindOptions) -> Result<()> {
        let fd = self.mkdir(volume)?;
        mountfd::bind_mount_onto(source, fd.as_fd(), opts.flags)
            .map_err(self.os(volume, &format!("bind {} to", source.display())))
    }

    /// Bind-mounts the staged directory `staging` (itself a path below a publish root) onto this
    /// target (a directory, made if missing). The source is opened beneath its root like the
    /// target, so a staging path swapped for a symlink out of the root is refused, not bound.
    pub fn bind_staged(&self, volume: &str, staging: &Target, opts: BindOptions) -> Result<()> {
        let action = format!("bind {} to", staging.path.display());
        let src = beneath::open_beneath(&staging.root, &staging.rel, OFlag::O_PATH)
            .map_err(self.os(volume, &action))?;
        let fd = self.mkdir(volume)?;
        mountfd::bind_fd_mount_onto(src.as_fd(), fd.as_fd(), opts.flags)
            .map_err(self.os(volume, &action))
    }

    /// Bind-mounts the device node `device` onto this target (a file, made if missing).
    pub fn bind_file(&self, volume: &str, device: &Path, opts: BindOptions) -> Result<()> {
        let fd = beneath::create_file_beneath(&self.root, &self.rel, 0o640)
            .map_err(self.os(volume, "create"))?;
        mountfd::bind_mount_onto(device, fd.as_fd(), opts.flags)
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
        let fd = self.mkdir(volume)?;
        mountfd::fs_mount_onto(device, fstype, flags, data, fd.as_fd())
            .map_err(self.os(volume, &format!("mount {} ({fstype}) on", device.display())))
    }

    /// Unmounts everything stacked on this target; done when nothing is mounted there.
    pub fn unmount_all(&self, volume: &str) -> Result<()> {
        while beneath::unmount_beneath(&self.root, &self.rel).map_err(self.os(volume, "unmount"))? {
        }
        Ok(())
    }

    /// Removes the (unmounted) target directory or file; a failure is logged, not fatal. The
    /// parent is opened beneath the root, so a component swapped for a symlink since the check
    /// cannot make this remove something outside it.
    pub fn remove(&self, volume: &str) {
        match self.remove_beneath() {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(volume, target = %self.path.display(), error = %e, "target path left in place")
            }
            _ => {}
        }
    }

    fn remove_beneath(&self) -> io::Result<()> {
        use nix::sys::stat::fstatat;
        use nix::unistd::{unlinkat, UnlinkatFlags};
        let Some(name) = self.rel.file_name() else {
            let msg = "a publish root is never removed";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        };
        let parent_rel = self.rel.parent().unwrap_or(Path::new(""));
        let dir = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let parent = beneath::open_beneath(&self.root, parent_rel, dir)?;
        let st = fstatat(&parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let flag = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        Ok(unlinkat(&parent, name, flag)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn paths(root: &Path) -> PublishRoots {
        PublishRoots::new(vec![root.to_path_buf()]).unwrap()
    }

    #[test]
    fn a_link_a_file_or_an_over_long_name_on_the_way_is_invalid_argument() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(root.join("pods")).unwrap();
        fs::create_dir_all(outside.join("empty")).unwrap();
        fs::write(root.join("file"), b"").unwrap();
        symlink(&outside, root.join("link")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let p = paths(&root);
        let long = "x".repeat(300);
        for bad in [
            "link/empty",
            "link",
            "loop/x",
            "file/x",
            &format!("pods/{long}/x"),
        ] {
            let e = p.target("target_path", &root.join(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e}");
        }
        // Missing components below an ordinary directory are fine: the driver creates them.
        p.target("target_path", &root.join("pods/new/vol")).unwrap();
        p.target("target_path", &root.join("file")).unwrap();
    }

    /// Whether anything is mounted at `path` (a read of the mount table).
    fn mounted(path: &Path) -> bool {
        crate::os::mountinfo::mount_at(path).unwrap().is_some()
    }

    #[test]
    fn a_staging_path_swapped_for_a_link_out_of_the_root_is_never_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(root.join("staging/vol")).unwrap();
        fs::create_dir_all(outside.join("vol")).unwrap();
        fs::write(outside.join("vol/secret"), b"host data").unwrap();
        let p = paths(&root);
        for swap in ["parent", "last"] {
            let staging = p
                .target("staging_target_path", &root.join("staging/vol"))
                .unwrap();
            let target = p
                .target("target_path", &root.join(format!("pods/{swap}")))
                .unwrap();
            // After the request was checked, the staging path leads out of the root.
            if swap == "parent" {
                fs::remove_dir_all(root.join("staging")).unwrap();
                symlink(&outside, root.join("staging")).unwrap();
            } else {
                fs::remove_dir(root.join("staging/vol")).unwrap();
                symlink(outside.join("vol"), root.join("staging/vol")).unwrap();
            }
            let bound = target.bind_staged("v", &staging, BindOptions::default());
            let leaked = mounted(target.as_path());
            if leaked {
                nix::mount::umount2(target.as_path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
            }
            assert!(!leaked, "{swap}: the directory outside the root was bound");
            assert!(bound.is_err(), "{swap}: answered OK for a bind not made");
            if swap == "parent" {
                fs::remove_file(root.join("staging")).unwrap();
                fs::create_dir_all(root.join("staging")).unwrap();
            } else {
                fs::remove_file(root.join("staging/vol")).unwrap();
            }
            fs::create_dir_all(root.join("staging/vol")).unwrap();
        }
    }

    #[test]
    fn remove_never_follows_a_parent_swapped_for_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(root.join("pods/vol")).unwrap();
        fs::create_dir_all(outside.join("vol")).unwrap();
        let t = paths(&root)
            .target("target_path", &root.join("pods/vol"))
            .unwrap();
        // After the check, the parent becomes a link out of the root.
        fs::remove_dir_all(root.join("pods")).unwrap();
        symlink(&outside, root.join("pods")).unwrap();
        t.remove("v");
        assert!(outside.join("vol").is_dir(), "removed through a symlink");
        fs::remove_file(root.join("pods")).unwrap();
        fs::create_dir_all(root.join("pods/vol")).unwrap();
        t.remove("v");
        assert!(
            !root.join("pods/vol").exists(),
            "the target itself is removed"
        );
    }
}
