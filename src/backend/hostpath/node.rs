//! Node-side operations of the hostpath backend: stage (bind the directory, or attach the image
//! to a loop device), publish (bind into the pod), stats and node expansion.

use super::record::VolumeRecord;
use super::HostpathBackend;
use crate::backend::NodeBackend;
use crate::error::{Error, Result};
use crate::node::Target;
use crate::os::mount::BindOptions;
use crate::os::{fsutil, loopdev, mountinfo, statfs};
use crate::state::Publication;
use crate::volume::{
    AccessKind, CapacityRange, PublishRequest, StageRequest, VolumeId, VolumeStats,
};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn is_mounted(path: &Path, volume: &str) -> Result<bool> {
    mountinfo::is_mount_point(path).map_err(Error::os(volume, "check mount point"))
}

impl HostpathBackend {
    /// Whether `path` shows this volume: its directory (bind mount) or the node of one of its
    /// loop devices (proven backed by its image). A mount the record does not name (its call
    /// was killed before the record) is taken down or adopted only when this holds.
    fn shows_volume(&self, rec: &VolumeRecord, path: &Path) -> bool {
        match rec.kind {
            AccessKind::Mount => same_inode(path, &self.volume_dir(&rec.name)),
            AccessKind::Block => {
                let Some(meta) = fs::metadata(path)
                    .ok()
                    .filter(|m| m.file_type().is_block_device())
                else {
                    return false;
                };
                self.loop_devices(rec)
                    .unwrap_or_default()
                    .iter()
                    .any(|a| fs::metadata(&a.device).is_ok_and(|m| m.rdev() == meta.rdev()))
            }
        }
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

    fn mount_target(
        &self,
        rec: &VolumeRecord,
        staging: &Target,
        target: &Target,
        opts: BindOptions,
    ) -> Result<()> {
        let vid = rec.id.as_str();
        match rec.kind {
            AccessKind::Mount => target.bind_staged(vid, staging, opts),
            AccessKind::Block => {
                // A read-only bind mount does not stop writes to a device node, so a read-only
                // publication gets its own read-only loop device.
                let (device, own_device) = if opts.read_only() {
                    self.detach_stray_read_only(rec)?;
                    let image = self.image_path(&rec.name);
                    let dev = loopdev::attach(&image, true).map_err(Error::os(
                        vid,
                        format!("attach {} read-only", image.display()),
                    ))?;
                    crate::failpoint::hit("publish:after-attach");
                    (dev, true)
                } else {
                    match self.staged_device(rec)? {
                        Some(d) => (d, false),
                        None => {
                            return Err(Error::precondition(
                                vid,
                                "image is not attached; stage it first",
                            ))
                        }
                    }
                };
                target.bind_file(vid, &device, opts).inspect_err(|_| {
                    if own_device {
                        let _ = loopdev::detach(&device);
                    }
                })
            }
        }
    }
}

impl NodeBackend for HostpathBackend {
    fn stage(&self, req: &StageRequest) -> Result<()> {
        let (staging_t, cap) = (&req.staging, &req.capability);
        let staging = staging_t.as_path();
        let mut rec = self.record(&req.id)?;
        let vid = rec.id.clone();
        if let Some(why) = super::CAPS.refuse_on(super::BACKEND, cap, rec.kind) {
            return Err(Error::invalid(format!("volume {vid}: {why}")));
        }
        self.require_base(&vid)?;
        if let Some(prev) = &rec.staged_at {
            if prev != staging {
                return Err(Error::precondition(
                    vid,
                    format!("already staged at {}", prev.display()),
                ));
            }
        }
        match rec.kind {
            AccessKind::Mount => {
                let dir = self.volume_dir(&rec.name);
                if !dir.is_dir() {
                    return Err(Error::precondition(
                        vid,
                        format!("directory {} is gone", dir.display()),
                    ));
                }
                if is_mounted(staging, &vid)? {
                    if !same_inode(staging, &dir) {
                        return Err(Error::exists(
                            vid,
                            format!("staging path {} holds another mount", staging.display()),
                        ));
                    }
                } else {
                    staging_t.bind_dir(&vid, &dir, BindOptions::default())?;
                    crate::failpoint::hit("stage:after-bind");
                }
            }
            AccessKind::Block => {
                if self.staged_device(&rec)?.is_none() {
                    let image = self.image_path(&rec.name);
                    let dev = loopdev::attach(&image, false).map_err(Error::os(
                        &vid,
                        format!("attach {} to a loop device", image.display()),
                    ))?;
                    tracing::info!(volume = %vid, device = %dev.display(), "attached image");
                    crate::failpoint::hit("stage:after-attach");
                }
            }
        }
        if rec.staged_at.as_deref() != Some(staging) {
            rec.staged_at = Some(staging.to_path_buf());
            self.save(rec)?;
        }
        Ok(())
    }

    fn unstage(&self, id: &VolumeId, staging_t: &Target) -> Result<()> {
        let staging = staging_t.as_path();
        let Ok(mut rec) = self.record(id) else {
            return crate::backend::nothing_mounted_at(&id.to_string(), staging);
        };
        let vid = rec.id.clone();
        if let Some(t) = rec.published.keys().next() {
            return Err(Error::precondition(
                vid,
                format!("still published at {}; unpublish it first", t.display()),
            ));
        }
        match rec.kind {
            AccessKind::Mount => {
                if is_mounted(staging, &vid)? {
                    if rec.staged_at.as_deref() != Some(staging)
                        && !self.shows_volume(&rec, staging)
                    {
                        return Err(Error::not_found_because(
                            vid,
                            format!(
                                "not staged at {}; its mount is left alone",
                                staging.display()
                            ),
                        ));
                    }
                    staging_t.unmount_all(&vid)?;
                    crate::failpoint::hit("unstage:after-unmount");
                }
            }
            AccessKind::Block => {
                self.detach_all(&rec)?;
                crate::failpoint::hit("unstage:after-detach");
            }
        }
        if rec.staged_at.take().is_some() {
            self.save(rec)?;
        }
        Ok(())
    }

    fn publish(&self, req: &PublishRequest) -> Result<()> {
        let mut rec = self.record(&req.id)?;
        let vid = rec.id.clone();
        let cap = &req.capability;
        let target = req.target.as_path();
        if let Some(why) = super::CAPS.refuse_on(super::BACKEND, cap, rec.kind) {
            return Err(Error::invalid(format!("volume {vid}: {why}")));
        }
        let staging_t = req.staging.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "volume {vid}: staging_target_path is required (the driver stages volumes)"
            ))
        })?;
        let staging = staging_t.as_path();
        self.require_base(&vid)?;
        if rec.staged_at.as_deref() != Some(staging) {
            return Err(Error::precondition(
                vid,
                format!("not staged at {}", staging.display()),
            ));
        }
        // A staging mount that vanished (manual unmount, a crashed kubelet) would turn into an
        // empty directory on the node's root filesystem: never publish that to a pod.
        if rec.kind == AccessKind::Mount && !self.shows_volume(&rec, staging) {
            return Err(Error::precondition(
                vid,
                format!(
                    "{} no longer shows the volume; stage it again",
                    staging.display()
                ),
            ));
        }
        let opts = BindOptions::parse(&cap.mount_flags, req.read_only || cap.mode.read_only())
            .map_err(|e| Error::invalid(format!("volume {vid}: {e}")))?;
        let wanted = Publication {
            read_only: opts.read_only(),
            mount_flags: cap.mount_flags.clone(),
        };
        if is_mounted(target, &vid)? {
            // Already mounted (a retry): only the rare unrecorded case needs the mount table.
            let same = match rec.published.get(target) {
                Some(p) => *p == wanted,
                None => {
                    self.shows_volume(&rec, target)
                        && mountinfo::mount_at(target)
                            .map_err(Error::os(&vid, "read mount table"))?
                            .is_some_and(|entry| opts.matches(&entry))
                }
            };
            if !same {
                return Err(Error::exists(
                    vid,
                    format!(
                        "{} is already mounted with other options or another volume",
                        target.display()
                    ),
                ));
            }
        } else {
            self.mount_target(&rec, staging_t, &req.target, opts)?;
            crate::failpoint::hit("publish:after-bind");
        }
        if rec.published.get(target) != Some(&wanted) {
            rec.published.insert(target.to_path_buf(), wanted);
            self.save(rec)?;
        }
        Ok(())
    }

    fn unpublish(&self, id: &VolumeId, target_t: &Target) -> Result<()> {
        let target = target_t.as_path();
        let Ok(mut rec) = self.record(id) else {
            return crate::backend::nothing_mounted_at(&id.to_string(), target);
        };
        let vid = rec.id.clone();
        if is_mounted(target, &vid)? {
            if !rec.published.contains_key(target) && !self.shows_volume(&rec, target) {
                return Err(Error::not_found_because(
                    vid,
                    format!(
                        "not published at {}; its mount is left alone",
                        target.display()
                    ),
                ));
            }
            target_t.unmount_all(&vid)?;
            crate::failpoint::hit("unpublish:after-unmount");
        }
        if rec.kind == AccessKind::Block {
            // The publication's own read-only device, and any an earlier killed call left.
            self.detach_stray_read_only(&rec)?;
        }
        target_t.remove(&vid);
        if rec.published.remove(target).is_some() {
            self.save(rec)?;
        }
        Ok(())
    }

    fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats> {
        let rec = self.record(id)?;
        let vid = rec.id.clone();
        let known = rec.staged_at.as_deref() == Some(path) || rec.published.contains_key(path);
        if !path.exists() || !(known || self.shows_volume(&rec, path)) {
            return Err(Error::VolumeNotFound {
                volume: vid,
                detail: format!("it is not published at {}", path.display()),
            });
        }
        let condition = Some(self.condition(&rec));
        if rec.kind == AccessKind::Block {
            return Ok(VolumeStats {
                total_bytes: rec.capacity_bytes,
                condition,
                ..Default::default()
            });
        }
        let fs_now = statfs::fs_stats(path)
            .map_err(Error::os(&vid, format!("statfs {}", path.display())))?;
        let limiter = match rec.backend.enforced_by {
            Some(_) => self.limiter()?,
            None => None,
        };
        let (used, inodes_used) = match (limiter, rec.backend.enforced_by) {
            (Some(l), Some(how)) => l
                .usage(&self.volume_dir(&rec.name), how)
                .map_err(Error::os(&vid, "read capacity usage"))?,
            _ => {
                let (bytes, inodes) = fsutil::disk_usage(path)
                    .map_err(Error::os(&vid, format!("measure {}", path.display())))?;
                (bytes, Some(inodes))
            }
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

    fn node_expand(&self, id: &VolumeId, path: &Path, range: CapacityRange) -> Result<u64> {
        let mut rec = self.record(id)?;
        let vid = rec.id.clone();
        if !path.exists() {
            return Err(Error::VolumeNotFound {
                volume: vid,
                detail: format!("path {} does not exist", path.display()),
            });
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
                    .map_err(Error::os(&vid, format!("resize {}", a.device.display())))?;
            }
        }
        Ok(rec.capacity_bytes)
    }
}
