//! Node-side operations of the hostpath backend: stage (bind the directory, or attach the image
//! to a loop device), publish (bind into the pod), stats and node expansion.

use super::{HostpathBackend, VolumeRecord};
use crate::backend::local::{self, is_mounted, LocalNode, LocalVolumes};

use crate::error::{Error, Result};
use crate::node::Target;
use crate::os::mount::BindOptions;
use crate::os::{fsutil, loopdev, mountinfo, statfs};
use crate::state::Publication;
use crate::volume::{AccessKind, CapacityRange, StageRequest, VolumeId, VolumeStats};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

impl HostpathBackend {
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
