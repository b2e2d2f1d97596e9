//! Node-side operations of the hostpath backend: stage (bind the directory, or attach the image
//! to a loop device), publish (bind into the pod), stats and node expansion.
//!
//! The loop devices of a block volume's image, and the binds that show a volume's directory or
//! devices. A device is proven the volume's own before it is used or detached: the kernel names
//! the (device, inode) of its backing file, which must be the image's, re-read now (a path alone
//! could name a file replaced since). The binds tell what a node call killed before its record
//! left behind: a device no bind shows is detached, one a bind shows is kept.

use super::{HostpathBackend, VolumeRecord};
use crate::backend::local::{self, is_mounted, LocalNode, LocalVolumes};
use crate::error::{Error, Result};
use crate::node::Target;
use crate::os::mount::BindOptions;
use crate::os::{fsutil, loopdev, mountinfo, statfs};
use crate::state::Publication;
use crate::volume::{AccessKind, CapacityRange, StageRequest, VolumeId, VolumeStats};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

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

    /// Drops publications whose mounts vanished (reboot, manual unmount). True if any did.
    pub(super) fn forget_lost_mounts(&self, rec: &mut VolumeRecord) -> bool {
        let before = (rec.staged_at.clone(), rec.published.len());
        rec.published
            .retain(|target, _| matches!(mountinfo::is_mount_point(target), Ok(true)));
        let staged_alive = match (&rec.staged_at, rec.kind) {
            (None, _) => true,
            (Some(s), AccessKind::Mount) => matches!(mountinfo::is_mount_point(s), Ok(true)),
            (Some(_), AccessKind::Block) => matches!(self.staged_device(rec), Ok(Some(_))),
        };
        if !staged_alive {
            rec.staged_at = None;
        }
        before != (rec.staged_at.clone(), rec.published.len())
    }
}

impl LocalNode for HostpathBackend {
    type Source = ();
    const FAILPOINTS: &'static str = "";

    fn usable(&self, volume: &str) -> Result<()> {
        self.require_base(volume)
    }

    fn stage_volume(&self, rec: &mut VolumeRecord, req: &StageRequest) -> Result<()> {
        let (staging_t, vid) = (&req.staging, rec.id.as_str());
        let staging = staging_t.as_path();
        match rec.kind {
            AccessKind::Mount => {
                let dir = self.volume_dir(&rec.name);
                if !dir.is_dir() {
                    let why = format!("directory {} is gone", dir.display());
                    return Err(Error::precondition(vid, why));
                }
                if !is_mounted(staging, vid)? {
                    staging_t.bind_dir(vid, &dir, BindOptions::default())?;
                    crate::failpoint::hit("stage:after-bind");
                } else if !same_inode(staging, &dir) {
                    let why = format!("staging path {} holds another mount", staging.display());
                    return Err(Error::exists(vid, why));
                }
            }
            AccessKind::Block => {
                if self.staged_device(rec)?.is_none() {
                    let image = self.image_path(&rec.name);
                    let what = format!("attach {} to a loop device", image.display());
                    let dev = loopdev::attach(&image, false).map_err(Error::os(vid, what))?;
                    tracing::info!(volume = %vid, device = %dev.display(), "attached image");
                    crate::failpoint::hit("stage:after-attach");
                }
            }
        }
        Ok(())
    }

    fn unstage_block(&self, rec: &VolumeRecord) -> Result<()> {
        self.detach_all(rec)?;
        crate::failpoint::hit("unstage:after-detach");
        Ok(())
    }

    fn source(&self, _rec: &VolumeRecord) -> Result<()> {
        Ok(())
    }

    /// Whether `path` shows this volume: its directory (bind mount) or the node of one of its
    /// loop devices (proven backed by its image). A mount the record does not name (its call
    /// was killed before the record) is taken down or adopted only when this holds.
    fn shows_source(&self, rec: &VolumeRecord, _src: &(), path: &Path) -> bool {
        match rec.kind {
            AccessKind::Mount => same_inode(path, &self.volume_dir(&rec.name)),
            AccessKind::Block => fs::metadata(path).is_ok_and(|meta| {
                meta.file_type().is_block_device()
                    && (self.loop_devices(rec).unwrap_or_default().iter())
                        .any(|a| fs::metadata(&a.device).is_ok_and(|m| m.rdev() == meta.rdev()))
            }),
        }
    }

    fn bind_options(&self, vid: &str, flags: &[String], read_only: bool) -> Result<BindOptions> {
        BindOptions::parse(flags, read_only)
            .map_err(|e| Error::invalid(format!("volume {vid}: {e}")))
    }

    /// A read-only bind mount does not stop writes to a device node, so a read-only
    /// publication gets its own read-only loop device.
    fn bind_block(
        &self,
        rec: &VolumeRecord,
        _src: &(),
        target: &Target,
        opts: BindOptions,
        _wanted: &Publication,
    ) -> Result<()> {
        let vid = rec.id.as_str();
        if !opts.read_only() {
            let device = self
                .staged_device(rec)?
                .ok_or_else(|| Error::precondition(vid, "image is not attached; stage it first"))?;
            return target.bind_file(vid, &device, opts);
        }
        self.detach_stray_read_only(rec)?;
        let image = self.image_path(&rec.name);
        let what = format!("attach {} read-only", image.display());
        let device = loopdev::attach(&image, true).map_err(Error::os(vid, what))?;
        crate::failpoint::hit("publish:after-attach");
        target.bind_file(vid, &device, opts).inspect_err(|_| {
            let _ = loopdev::detach(&device);
        })
    }

    /// The publication's own read-only device, and any an earlier killed call left.
    fn unpublished(&self, rec: &VolumeRecord, _removed: Option<&Publication>) -> Result<()> {
        match rec.kind {
            AccessKind::Block => self.detach_stray_read_only(rec),
            AccessKind::Mount => Ok(()),
        }
    }

    fn volume_stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats> {
        let rec = self.record(id)?;
        let vid = rec.id.as_str();
        local::require_at(&rec, path, || self.shows(&rec, path))?;
        let condition = Some(self.condition(&rec));
        if rec.kind == AccessKind::Block {
            return Ok(VolumeStats {
                total_bytes: rec.capacity_bytes,
                condition,
                ..Default::default()
            });
        }
        let fs_now =
            statfs::fs_stats(path).map_err(Error::os(vid, format!("statfs {}", path.display())))?;
        let (used, inodes_used) = match self.enforcer(rec.backend.enforced_by)? {
            Some((l, how)) => l
                .usage(&self.volume_dir(&rec.name), how)
                .map_err(Error::os(vid, "read capacity usage"))?,
            None => fsutil::disk_usage(path)
                .map(|(bytes, inodes)| (bytes, Some(inodes)))
                .map_err(Error::os(vid, format!("measure {}", path.display())))?,
        };
        Ok(VolumeStats {
            total_bytes: rec.capacity_bytes,
            used_bytes: used,
            available_bytes: rec
                .capacity_bytes
                .saturating_sub(used)
                .min(fs_now.available_bytes),
            // Filesystems without inode tables (btrfs) report none; so do we then.
            inodes: (fs_now.total_inodes > 0).then(|| {
                let used = inodes_used.unwrap_or(fs_now.total_inodes - fs_now.free_inodes);
                (fs_now.total_inodes, used, fs_now.free_inodes)
            }),
            condition,
        })
    }

    fn expand_on_node(&self, id: &VolumeId, path: &Path, range: CapacityRange) -> Result<u64> {
        let mut rec = self.record(id)?;
        if !path.exists() {
            let why = format!("path {} does not exist", path.display());
            return Err(Error::not_found_because(rec.id, why));
        }
        if range.required > rec.capacity_bytes {
            // The cluster's one resizer could not reach this node's state (ControllerExpand
            // answered "the node does it"): grow here, on the node that holds the volume.
            self.grow(id, range)?;
            rec = self.record(id)?;
        }
        if rec.kind == AccessKind::Block {
            for a in self.loop_devices(&rec)? {
                loopdev::refresh_capacity(&a.device)
                    .map_err(Error::os(&rec.id, format!("resize {}", a.device.display())))?;
            }
        }
        Ok(rec.capacity_bytes)
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
        mountfd::bind_mount_onto(source, fd.as_fd(), sys_mount::MountFlags::empty()).unwrap();
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
