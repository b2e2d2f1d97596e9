//! Node side of the device backend: stage (format a blank device once, mount it), publish (bind
//! the staging mount, or the device node for raw block), stats. A format, and the publication
//! of a raw device to a pod, first prove the device is the claimed one ([`super::proof`]).
//!
//! Read-only raw block: a read-only bind mount of a device node does not stop writes to the
//! device, so a read-only block publication sets the kernel's read-only flag on the device
//! (BLKROSET) and clears it when the last one goes. A read-only and a read-write publication
//! of one block volume at the same time are refused (FailedPrecondition): one flag serves both.

use super::proof::Hold;
use super::{shows_device, DeviceBackend, OurFs, VolumeRecord};
use crate::backend::local::{self, is_mounted, LocalNode, LocalVolumes};

use crate::error::{Error, Result};
use crate::node::Target;
use crate::os::mount::BindOptions;
use crate::os::{blkid, blockdev, mkfs, statfs};
use crate::state::{Phase, Publication};
use crate::volume::{AccessKind, CapacityRange, StageRequest, VolumeId, VolumeStats};
use std::path::{Path, PathBuf};
use sys_mount::MountFlags;

/// Mount flags of a capability for the filesystem mount: flags the kernel knows as bits, the
/// rest (discard, errors=..., ...) passed to the filesystem as data.
fn fs_mount_options(flags: &[String], read_only: bool) -> (MountFlags, String) {
    let mut bits = MountFlags::empty();
    let mut data = Vec::new();
    for o in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
        match (o, BindOptions::parse(&[o], false)) {
            ("" | "rw" | "defaults", _) => {}
            ("sync", _) => bits |= MountFlags::SYNCHRONOUS,
            (_, Ok(b)) if !b.flags.is_empty() => bits |= b.flags,
            (other, _) => data.push(other),
        }
    }
    if read_only {
        bits |= MountFlags::RDONLY;
    }
    (bits, data.join(","))
}

/// The per-mount options of a bind: the filesystem mount's flags but `sync`, which is no
/// per-mount flag (filesystem data options were applied at stage).
fn bind_options(flags: &[String], read_only: bool) -> BindOptions {
    let (bits, _) = fs_mount_options(flags, read_only);
    let flags = bits.difference(MountFlags::SYNCHRONOUS);
    BindOptions { flags }
}

impl DeviceBackend {
    /// Makes sure the device holds this volume's filesystem: formats a device with no signature
    /// at all (or our own unfinished one), accepts our finished one, refuses anything else.
    /// Sets the offsets in `rec` but does not commit them: the stage's one commit does (a crash
    /// before it leaves our UUID without offsets, which the next stage makes again or, when it
    /// finds the filesystem still mounted at the staging path, adopts).
    fn ensure_fs(&self, rec: &mut VolumeRecord, fs: &OurFs, dev: &Path) -> Result<()> {
        let (vid, at) = (rec.id.clone(), dev.display());
        let probe = || blkid::probe_all(dev).map_err(Error::os(&vid, format!("probe {at}")));
        let finished = !fs.offsets.is_empty();
        // mkfs may follow: prove the device first and hold it open, so that what is probed
        // below is what mkfs writes (a held node cannot turn into another device).
        let _held = (!finished)
            .then(|| self.prove(rec, dev, Hold::Shared, true))
            .transpose()?;
        let sigs = probe()?;
        let (fs_type, uuid) = (&fs.fs_type, &fs.uuid);
        let refused = if sigs.is_empty() && finished {
            Some(format!(
                "the {fs_type} filesystem {uuid} this volume made is gone from {at} \
                 (someone wiped it); refusing to format it again"
            ))
        } else if !sigs.iter().all(|s| fs.is(s)) {
            let found: Vec<String> = sigs.iter().map(|s| s.to_string()).collect();
            let found = found.join(", ");
            Some(format!(
                "{at} holds {found}, not this volume's {fs_type} filesystem {uuid}; \
                 it is never formatted"
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(Error::precondition(vid, why));
        }
        if finished {
            return Ok(());
        }
        // Blank, or our own filesystem whose mkfs never completed (no pod has used it): make it.
        mkfs::make(fs_type, dev, uuid, &rec.backend.mkfs_options)
            .map_err(Error::os(&vid, format!("make a filesystem on {at}")))?;
        crate::failpoint::hit("device:stage:after-mkfs");
        let made = probe()?;
        if made.is_empty() || !made.iter().all(|s| fs.is(s)) {
            return Err(Error::Internal(format!(
                "volume {vid}: after mkfs, {at} shows {made:?}, not the filesystem {uuid}"
            )));
        }
        rec.backend.fs = Some(fs.at(&made));
        tracing::info!(volume = %vid, device = %at, fs = %fs_type, uuid = %uuid, "formatted device");
        Ok(())
    }
}

impl LocalNode for DeviceBackend {
    /// The volume's device, proven the claimed one.
    type Source = PathBuf;
    const FAILPOINTS: &'static str = "device:";

    fn node_record(&self, id: &VolumeId) -> Result<VolumeRecord> {
        let rec = self.record(id)?;
        if rec.phase == Phase::Deleting {
            return Err(Error::precondition(rec.id, "is being deleted"));
        }
        Ok(rec)
    }

    fn stage_volume(&self, rec: &mut VolumeRecord, req: &StageRequest) -> Result<()> {
        let (staging_t, cap) = (&req.staging, &req.capability);
        let staging = staging_t.as_path();
        let vid = rec.id.clone();
        let dev = self.device_path(rec)?;
        let (AccessKind::Mount, Some(fs)) = (rec.kind, rec.backend.fs.clone()) else {
            // Raw: staged and published as before (its pods may be running), with a warning
            // when nothing can tell its disk from another in the same port.
            self.warn_stage_risk(rec);
            return Ok(());
        };
        if !is_mounted(staging, &vid)? {
            self.ensure_fs(rec, &fs, &dev)?;
            let (flags, data) = fs_mount_options(&cap.mount_flags, cap.mode.read_only());
            return staging_t.mount_fs(&vid, &dev, &fs.fs_type, flags, &data);
        }
        if !shows_device(AccessKind::Mount, staging, &dev) {
            return Err(Error::exists(
                vid,
                format!("staging path {} holds another mount", staging.display()),
            ));
        }
        if !fs.offsets.is_empty() {
            return Ok(());
        }
        // Mounted by a stage that crashed before its commit: ours, record it.
        let at = dev.display();
        let sigs = blkid::probe_all(&dev).map_err(Error::os(&vid, format!("probe {at}")))?;
        if sigs.is_empty() || !sigs.iter().all(|s| fs.is(s)) {
            let why = format!(
                "{at} is mounted but shows {sigs:?}, not filesystem {}",
                fs.uuid
            );
            return Err(Error::precondition(vid, why));
        }
        rec.backend.fs = Some(fs.at(&sigs));
        Ok(())
    }

    fn source(&self, rec: &VolumeRecord) -> Result<PathBuf> {
        self.device_path(rec)
    }

    /// The mount (filesystem) or node (raw block) of the volume's own, proven device.
    fn shows_source(&self, rec: &VolumeRecord, dev: &PathBuf, path: &Path) -> bool {
        shows_device(rec.kind, path, dev)
    }

    fn bind_options(&self, _vid: &str, flags: &[String], read_only: bool) -> Result<BindOptions> {
        Ok(bind_options(flags, read_only))
    }

    fn bind_block(
        &self,
        rec: &VolumeRecord,
        dev: &PathBuf,
        target: &Target,
        opts: BindOptions,
        wanted: &Publication,
    ) -> Result<()> {
        let vid = rec.id.as_str();
        let mut published = rec.published.iter();
        if let Some((t, p)) = published.find(|(_, p)| p.read_only != wanted.read_only) {
            let (at, ro) = (t.display(), p.read_only);
            return Err(Error::precondition(
                vid,
                format!("published at {at} with readonly={ro}; one device cannot be read-only and writable at once"),
            ));
        }
        // The pod writes what it likes to the node it is given: prove it first, and hold it
        // until it is bound.
        let _held = self.prove(rec, dev, Hold::Shared, false)?;
        blockdev::set_read_only(dev, wanted.read_only)
            .map_err(Error::os(vid, "set the device's read-only flag"))?;
        target.bind_file(vid, dev, opts)
    }

    /// The last read-only raw publication gone: the device is writable again.
    fn unpublished(&self, rec: &VolumeRecord, removed: Option<&Publication>) -> Result<()> {
        let was_ro = removed.is_some_and(|p| p.read_only);
        if was_ro && rec.kind == AccessKind::Block && rec.published.is_empty() {
            if let Ok(dev) = self.device_path(rec) {
                blockdev::set_read_only(&dev, false)
                    .map_err(Error::os(&rec.id, "clear the device's read-only flag"))?;
            }
        }
        Ok(())
    }

    fn volume_stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats> {
        let rec = self.record(id)?;
        local::require_at(&rec, path, || false)?;
        let condition = self.condition(&rec);
        if rec.kind == AccessKind::Block || condition.abnormal {
            return Ok(VolumeStats {
                total_bytes: rec.capacity_bytes,
                condition: Some(condition),
                ..Default::default()
            });
        }
        let s = statfs::fs_stats(path)
            .map_err(Error::os(&rec.id, format!("statfs {}", path.display())))?;
        let (inodes, free) = (s.total_inodes, s.free_inodes);
        Ok(VolumeStats {
            total_bytes: s.total_bytes,
            used_bytes: s.total_bytes.saturating_sub(s.available_bytes),
            available_bytes: s.available_bytes,
            inodes: (inodes > 0).then(|| (inodes, inodes - free, free)),
            condition: Some(condition),
        })
    }

    fn expand_on_node(&self, id: &VolumeId, _path: &Path, range: CapacityRange) -> Result<u64> {
        // Nothing grows on the node: the volume is the whole device already.
        let rec = self.record(id)?;
        if range.required > rec.capacity_bytes {
            let detail = format!("the device is {} bytes and cannot grow", rec.capacity_bytes);
            return Err(Error::out_of_range(rec.id, detail));
        }
        Ok(rec.capacity_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_options_split_into_flags_and_data() {
        let (f, d) = fs_mount_options(
            &["noatime,discard".into(), "errors=remount-ro".into()],
            true,
        );
        assert!(f.contains(MountFlags::NOATIME | MountFlags::RDONLY));
        assert_eq!(d, "discard,errors=remount-ro");
        let b = bind_options(&["noatime,discard".into()], false);
        assert!(b.flags.contains(MountFlags::NOATIME) && !b.read_only());
    }
}
