//! The loop devices of a block volume's image, and the binds that show a volume's directory or
//! devices. A device is proven the volume's own before it is used or detached: the kernel names
//! the (device, inode) of its backing file, which must be the image's, re-read now (a path alone
//! could name a file replaced since). The binds tell what a node call killed before its record
//! left behind: a device no bind shows is detached, one a bind shows is kept.

use super::{HostpathBackend, VolumeRecord};
use crate::error::{Error, Result};
use crate::os::{loopdev, mountinfo};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Mount points whose root is a file named like `path` and which show `path` itself (`same`
/// compares their metadata): the binds of one directory or device node, and the CO's binds of
/// those. Only mounts of a file so named are stat'ed, so no unrelated mount point (a hung
/// network mount) is ever touched.
fn binds_of(
    path: &Path,
    same: impl Fn(&fs::Metadata, &fs::Metadata) -> bool,
) -> io::Result<Vec<PathBuf>> {
    let meta = fs::metadata(path)?;
    Ok(mountinfo::read()?
        .into_iter()
        .filter(|m| m.root.file_name() == path.file_name())
        .map(|m| m.mount_point)
        .filter(|p| fs::metadata(p).is_ok_and(|m| same(&m, &meta)))
        .collect())
}

/// Mount points that show the node of `device` (a raw publication binds it).
fn binds_of_device(device: &Path) -> io::Result<Vec<PathBuf>> {
    binds_of(device, |m, d| {
        m.file_type().is_block_device() && m.rdev() == d.rdev()
    })
}

/// Mount points that show the directory `dir` (a stage binds it).
pub(super) fn binds_of_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    binds_of(dir, |m, d| {
        m.is_dir() && m.dev() == d.dev() && m.ino() == d.ino()
    })
}

impl HostpathBackend {
    /// The loop devices attached to this volume's image, each proven by its backing inode.
    pub(super) fn loop_devices(&self, rec: &VolumeRecord) -> Result<Vec<loopdev::Attached>> {
        let vid = rec.id.as_str();
        let image = self.image_path(&rec.name);
        let meta = match fs::metadata(&image) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::os(vid, format!("stat {}", image.display()))(e)),
        };
        let listed =
            loopdev::find_by_backing_file(&image).map_err(Error::os(vid, "list loop devices"))?;
        let mut own = Vec::new();
        for a in listed {
            // A device detached since the listing is no longer the volume's.
            let Ok(dev) = fs::File::open(&a.device) else {
                continue;
            };
            let what = format!("ask {} for its backing file", a.device.display());
            let backing = loopdev::backing_of(&dev).map_err(Error::os(vid, what))?;
            if backing == Some((meta.dev(), meta.ino())) {
                own.push(a);
            }
        }
        Ok(own)
    }

    /// The read-write loop device made by NodeStage.
    pub(super) fn staged_device(&self, rec: &VolumeRecord) -> Result<Option<PathBuf>> {
        Ok(self
            .loop_devices(rec)?
            .into_iter()
            .find(|a| !a.read_only)
            .map(|a| a.device))
    }

    /// Detaches the volume's read-only loop devices that no mount shows. A publication makes
    /// one and binds it at once, so one that nothing shows was left by a publish killed before
    /// its bind or an unpublish killed before its detach: no pod was given it.
    pub(super) fn detach_stray_read_only(&self, rec: &VolumeRecord) -> Result<()> {
        let vid = rec.id.as_str();
        for a in self.loop_devices(rec)?.into_iter().filter(|a| a.read_only) {
            if binds_of_device(&a.device)
                .map_err(Error::os(vid, "read the mount table"))?
                .is_empty()
            {
                loopdev::detach(&a.device)
                    .map_err(Error::os(vid, format!("detach {}", a.device.display())))?;
                tracing::info!(volume = %vid, device = %a.device.display(), "detached a read-only loop device no mount shows");
            }
        }
        Ok(())
    }

    /// Detaches every loop device of the volume, refusing while a mount still shows one (a
    /// publish killed before its record left a bind the CO has not unpublished yet): detached,
    /// its node would show whatever image the kernel attaches to it next.
    pub(super) fn detach_all(&self, rec: &VolumeRecord) -> Result<()> {
        let vid = rec.id.as_str();
        let devices = self.loop_devices(rec)?;
        for a in &devices {
            let binds =
                binds_of_device(&a.device).map_err(Error::os(vid, "read the mount table"))?;
            if let Some(at) = binds.first() {
                return Err(Error::precondition(
                    vid,
                    format!(
                        "{} still shows its loop device {}; unpublish it first",
                        at.display(),
                        a.device.display()
                    ),
                ));
            }
        }
        for a in devices {
            loopdev::detach(&a.device)
                .map_err(Error::os(vid, format!("detach {}", a.device.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{beneath, mountfd};
    use std::os::fd::AsFd;

    fn bind(source: &Path, root: &Path, rel: &str) {
        fs::create_dir_all(root.join(rel)).unwrap();
        let fd = beneath::open_beneath(root, Path::new(rel), nix::fcntl::OFlag::O_PATH).unwrap();
        mountfd::bind_mount_onto(source, fd.as_fd(), false, sys_mount::MountFlags::empty())
            .unwrap();
    }

    /// Needs root (bind mounts).
    #[test]
    fn binds_of_dir_finds_the_binds_of_that_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let (vol, twin) = (root.join("base/vol"), root.join("other/vol"));
        fs::create_dir_all(&vol).unwrap();
        fs::create_dir_all(&twin).unwrap();
        bind(&vol, &root, "stage/vol");
        bind(&root.join("stage/vol"), &root, "pod/mnt");
        // Same name, another directory: not a bind of the volume.
        bind(&twin, &root, "elsewhere/vol");
        let mut found = binds_of_dir(&vol).unwrap();
        found.sort();
        let unmount = || {
            for rel in ["pod/mnt", "stage/vol", "elsewhere/vol"] {
                crate::os::mount::unmount_all(&root.join(rel)).unwrap();
            }
        };
        unmount();
        assert_eq!(found, [root.join("pod/mnt"), root.join("stage/vol")]);
        assert!(binds_of_dir(&vol).unwrap().is_empty());
    }
}
