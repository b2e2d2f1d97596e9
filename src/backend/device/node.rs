//! Node side of the device backend: stage (format a blank device once, mount it), publish (bind
//! the staging mount, or the device node for raw block), stats. A format, and the publication
//! of a raw device to a pod, first prove the device is the claimed one ([`super::proof`]).
//!
//! Read-only raw block: a read-only bind mount of a device node does not stop writes to the
//! device, so a read-only block publication sets the kernel's read-only flag on the device
//! (BLKROSET) and clears it when the last one goes. A read-only and a read-write publication
//! of one block volume at the same time are refused (FailedPrecondition): one flag serves both.

use super::proof::Hold;
use super::{mounted_from, shows_device, DeviceBackend, OurFs, VolumeRecord};
use crate::backend::NodeBackend;
use crate::error::{Error, Result};
use crate::node::Target;
use crate::os::mount::BindOptions;
use crate::os::{blkid, blockdev, mkfs, mountinfo, statfs};
use crate::state::{Phase, Publication};
use crate::volume::{
    AccessKind, CapacityRange, PublishRequest, StageRequest, VolumeId, VolumeStats,
};
use std::path::Path;
use sys_mount::MountFlags;

/// Mount flags of a capability for the filesystem mount: flags the kernel knows as bits, the
/// rest (discard, errors=..., ...) passed to the filesystem as data.
fn fs_mount_options(flags: &[String], read_only: bool) -> (MountFlags, String) {
    let mut bits = MountFlags::empty();
    let mut data = Vec::new();
    for o in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
        match o {
            "" | "rw" | "defaults" => {}
            "ro" => bits |= MountFlags::RDONLY,
            "nosuid" => bits |= MountFlags::NOSUID,
            "nodev" => bits |= MountFlags::NODEV,
            "noexec" => bits |= MountFlags::NOEXEC,
            "noatime" => bits |= MountFlags::NOATIME,
            "nodiratime" => bits |= MountFlags::NODIRATIME,
            "relatime" => bits |= MountFlags::RELATIME,
            "strictatime" => bits |= MountFlags::STRICTATIME,
            "sync" => bits |= MountFlags::SYNCHRONOUS,
            other => data.push(other),
        }
    }
    if read_only {
        bits |= MountFlags::RDONLY;
    }
    (bits, data.join(","))
}

/// The per-mount options of a bind (filesystem data options were applied at stage).
fn bind_options(flags: &[String], read_only: bool) -> BindOptions {
    let known: Vec<&str> = flags
        .iter()
        .flat_map(|f| f.split(','))
        .filter(|o| BindOptions::parse(&[*o], false).is_ok())
        .collect();
    BindOptions::parse(&known, read_only).unwrap_or_default()
}

fn is_mounted(path: &Path, volume: &str) -> Result<bool> {
    mountinfo::is_mount_point(path).map_err(Error::os(volume, "check mount point"))
}

impl DeviceBackend {
    fn node_record(&self, id: &VolumeId) -> Result<VolumeRecord> {
        let rec = self.record(id)?;
        if rec.phase == Phase::Deleting {
            return Err(Error::precondition(rec.id, "is being deleted"));
        }
        Ok(rec)
    }

    /// Makes sure the device holds this volume's filesystem: formats a device with no signature
    /// at all (or our own unfinished one), accepts our finished one, refuses anything else.
    /// Sets the offsets in `rec` but does not commit them: the stage's one commit does (a crash
    /// before it leaves our UUID without offsets, which the next stage makes again or, when it
    /// finds the filesystem still mounted at the staging path, adopts).
    fn ensure_fs(&self, rec: &mut VolumeRecord, fs: &OurFs, dev: &Path) -> Result<()> {
        let vid = rec.id.clone();
        let probe =
            || blkid::probe_all(dev).map_err(Error::os(&vid, format!("probe {}", dev.display())));
        let ours = |s: &blkid::Signature| {
            s.kind == blkid::Kind::Filesystem
                && s.fs_type == fs.fs_type
                && s.uuid.as_deref() == Some(fs.uuid.as_str())
        };
        let finished = !fs.offsets.is_empty();
        // mkfs may follow: prove the device first and hold it open, so that what is probed
        // below is what mkfs writes (a held node cannot turn into another device).
        let _held = match finished {
            true => None,
            false => Some(self.prove(rec, dev, Hold::Shared, true)?),
        };
        let sigs = probe()?;
        if sigs.is_empty() && finished {
            return Err(Error::precondition(
                vid,
                format!(
                    "the {} filesystem {} this volume made is gone from {} (someone wiped it); refusing to format it again",
                    fs.fs_type, fs.uuid, dev.display()
                ),
            ));
        }
        if !sigs.iter().all(ours) {
            let found: Vec<String> = sigs.iter().map(|s| s.to_string()).collect();
            return Err(Error::precondition(
                vid,
                format!(
                    "{} holds {}, not this volume's {} filesystem {}; it is never formatted",
                    dev.display(),
                    found.join(", "),
                    fs.fs_type,
                    fs.uuid
                ),
            ));
        }
        if finished {
            return Ok(());
        }
        // Blank, or our own filesystem whose mkfs never completed (no pod has used it): make it.
        mkfs::make(&fs.fs_type, dev, &fs.uuid, &rec.backend.mkfs_options).map_err(Error::os(
            &vid,
            format!("make a filesystem on {}", dev.display()),
        ))?;
        crate::failpoint::hit("device:stage:after-mkfs");
        let made = probe()?;
        if made.is_empty() || !made.iter().all(ours) {
            return Err(Error::Internal(format!(
                "volume {vid}: after mkfs, {} shows {made:?}, not the filesystem {}",
                dev.display(),
                fs.uuid
            )));
        }
        let mut done = fs.clone();
        done.offsets = made.iter().map(|s| s.offset).collect();
        rec.backend.fs = Some(done);
        tracing::info!(volume = %vid, device = %dev.display(), fs = %fs.fs_type, uuid = %fs.uuid, "formatted device");
        Ok(())
    }

    fn adopt_offsets(&self, rec: &mut VolumeRecord, fs: &OurFs, dev: &Path) -> Result<()> {
        let sigs = blkid::probe_all(dev)
            .map_err(Error::os(&rec.id, format!("probe {}", dev.display())))?;
        let ours = !sigs.is_empty()
            && sigs
                .iter()
                .all(|s| s.fs_type == fs.fs_type && s.uuid.as_deref() == Some(fs.uuid.as_str()));
        if !ours {
            return Err(Error::precondition(
                &rec.id,
                format!(
                    "{} is mounted but shows {sigs:?}, not filesystem {}",
                    dev.display(),
                    fs.uuid
                ),
            ));
        }
        let mut done = fs.clone();
        done.offsets = sigs.iter().map(|s| s.offset).collect();
        rec.backend.fs = Some(done);
        Ok(())
    }
}

impl NodeBackend for DeviceBackend {
    fn stage(&self, req: &StageRequest) -> Result<()> {
        let (staging_t, cap) = (&req.staging, &req.capability);
        let staging = staging_t.as_path();
        let mut rec = self.node_record(&req.id)?;
        let vid = rec.id.clone();
        if let Some(why) = super::CAPS.refuse_on(super::BACKEND, cap, rec.kind) {
            return Err(Error::invalid(format!("volume {vid}: {why}")));
        }
        if let Some(prev) = &rec.staged_at {
            if prev != staging {
                return Err(Error::precondition(
                    vid,
                    format!("already staged at {}", prev.display()),
                ));
            }
        }
        let dev = self.device_path(&rec)?;
        if let (AccessKind::Mount, Some(fs)) = (rec.kind, rec.backend.fs.clone()) {
            if is_mounted(staging, &vid)? {
                if !mounted_from(staging, &dev) {
                    return Err(Error::exists(
                        vid,
                        format!("staging path {} holds another mount", staging.display()),
                    ));
                }
                if fs.offsets.is_empty() {
                    // Mounted by a stage that crashed before its commit: ours, record it.
                    self.adopt_offsets(&mut rec, &fs, &dev)?;
                }
            } else {
                self.ensure_fs(&mut rec, &fs, &dev)?;
                let (flags, data) = fs_mount_options(&cap.mount_flags, cap.mode.read_only());
                staging_t.mount_fs(&vid, &dev, &fs.fs_type, flags, &data)?;
            }
        }
        let before = self.record(&req.id)?;
        rec.staged_at = Some(staging.to_path_buf());
        if rec != before {
            self.ledger.save(rec)?;
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
        if rec.kind == AccessKind::Mount && is_mounted(staging, &vid)? {
            let ours = rec.staged_at.as_deref() == Some(staging)
                || self
                    .device_path(&rec)
                    .is_ok_and(|d| mounted_from(staging, &d));
            if !ours {
                return Err(Error::not_found_because(
                    vid,
                    format!(
                        "not staged at {}; its mount is left alone",
                        staging.display()
                    ),
                ));
            }
            staging_t.unmount_all(&vid)?;
        }
        if rec.staged_at.take().is_some() {
            self.ledger.save(rec)?;
        }
        Ok(())
    }

    fn publish(&self, req: &PublishRequest) -> Result<()> {
        let mut rec = self.node_record(&req.id)?;
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
        if rec.staged_at.as_deref() != Some(staging) {
            return Err(Error::precondition(
                vid,
                format!("not staged at {}", staging.display()),
            ));
        }
        let dev = self.device_path(&rec)?;
        if rec.kind == AccessKind::Mount && !mounted_from(staging, &dev) {
            return Err(Error::precondition(
                vid,
                format!(
                    "{} no longer shows the volume; stage it again",
                    staging.display()
                ),
            ));
        }
        let opts = bind_options(&cap.mount_flags, req.read_only || cap.mode.read_only());
        let wanted = Publication {
            read_only: opts.read_only(),
            mount_flags: cap.mount_flags.clone(),
        };
        if is_mounted(target, &vid)? {
            let same = match rec.published.get(target) {
                Some(p) => *p == wanted,
                None => {
                    mounted_from(target, &dev)
                        && mountinfo::mount_at(target)
                            .map_err(Error::os(&vid, "read mount table"))?
                            .is_some_and(|e| opts.matches(&e))
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
            match rec.kind {
                AccessKind::Mount => req.target.bind_staged(&vid, staging_t, opts)?,
                AccessKind::Block => {
                    if let Some((t, p)) = rec
                        .published
                        .iter()
                        .find(|(_, p)| p.read_only != wanted.read_only)
                    {
                        return Err(Error::precondition(
                            vid,
                            format!(
                                "published at {} with readonly={}; one device cannot be read-only and writable at once",
                                t.display(),
                                p.read_only
                            ),
                        ));
                    }
                    // The pod writes what it likes to the node it is given: prove it first,
                    // and hold it until it is bound.
                    let _held = self.prove(&rec, &dev, Hold::Shared, false)?;
                    blockdev::set_read_only(&dev, wanted.read_only)
                        .map_err(Error::os(&vid, "set the device's read-only flag"))?;
                    req.target.bind_file(&vid, &dev, opts)?;
                }
            }
        }
        crate::failpoint::hit("device:publish:after-bind");
        if rec.published.get(target) != Some(&wanted) {
            rec.published.insert(target.to_path_buf(), wanted);
            self.ledger.save(rec)?;
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
            // A publish killed between its bind and its record leaves a mount the record does
            // not name: it is ours when it shows the volume's own, proven device.
            let shows = self.device_path(&rec).is_ok_and(|d| match rec.kind {
                AccessKind::Mount => mounted_from(target, &d),
                AccessKind::Block => shows_device(target, &d),
            });
            if !rec.published.contains_key(target) && !shows {
                return Err(Error::not_found_because(
                    vid,
                    format!(
                        "not published at {}; its mount is left alone",
                        target.display()
                    ),
                ));
            }
            target_t.unmount_all(&vid)?;
        }
        target_t.remove(&vid);
        let was_ro = rec.published.remove(target).is_some_and(|p| p.read_only);
        if was_ro && rec.kind == AccessKind::Block && rec.published.is_empty() {
            if let Ok(dev) = self.device_path(&rec) {
                blockdev::set_read_only(&dev, false)
                    .map_err(Error::os(&vid, "clear the device's read-only flag"))?;
            }
        }
        self.ledger.save(rec)?;
        Ok(())
    }

    fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats> {
        let rec = self.record(id)?;
        let vid = rec.id.clone();
        let known = rec.staged_at.as_deref() == Some(path) || rec.published.contains_key(path);
        if !path.exists() || !known {
            return Err(Error::VolumeNotFound {
                volume: vid,
                detail: format!("it is not published at {}", path.display()),
            });
        }
        let condition = self.condition(&rec);
        if rec.kind == AccessKind::Block || condition.abnormal {
            return Ok(VolumeStats {
                total_bytes: rec.capacity_bytes,
                condition: Some(condition),
                ..Default::default()
            });
        }
        let s = statfs::fs_stats(path)
            .map_err(Error::os(&vid, format!("statfs {}", path.display())))?;
        Ok(VolumeStats {
            total_bytes: s.total_bytes,
            used_bytes: s.total_bytes.saturating_sub(s.available_bytes),
            available_bytes: s.available_bytes,
            inodes: (s.total_inodes > 0).then(|| {
                (
                    s.total_inodes,
                    s.total_inodes - s.free_inodes,
                    s.free_inodes,
                )
            }),
            condition: Some(condition),
        })
    }

    fn node_expand(&self, id: &VolumeId, _path: &Path, range: CapacityRange) -> Result<u64> {
        // Nothing grows on the node: the volume is the whole device already.
        let rec = self.record(id)?;
        if range.required > rec.capacity_bytes {
            return Err(Error::OutOfRange {
                volume: rec.id,
                detail: format!("the device is {} bytes and cannot grow", rec.capacity_bytes),
            });
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
