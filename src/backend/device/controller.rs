//! Controller side of the device backend: create (choose and claim a device), delete (wipe what
//! we made, release the device), capacity, expansion within the device, attach bookkeeping.

use super::params::DeviceParams;
use super::proof::{fingerprint, Fingerprint};
use super::{DeviceBackend, DeviceData, OurFs, VolumeRecord, BACKEND, CAPS};
use crate::backend::local::LocalVolumes;
use crate::backend::params::defining;
use crate::backend::{BackendCaps, Capacity, CapacityRequest, ControllerBackend, Done};
use crate::discovery::{Claim, Entry};
use crate::error::{Error, Result};
use crate::os::{blkid, mkfs, mountinfo};
use crate::state::{Ledger, Phase};
use crate::volume::{AccessKind, Capability, CapacityRange, CreateRequest, VolumeId, VolumeInfo};
use std::collections::HashSet;
use std::path::Path;

mod release;

/// Unmounts every mount of the block device `dev` (leftovers of a stage a crash cut short).
pub(super) fn unmount_device(volume: &str, dev: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let number = std::fs::metadata(dev)
        .map(|m| super::proof::number_of(m.rdev()))
        .map_err(Error::os(volume, format!("stat {}", dev.display())))?;
    let mounts = mountinfo::read().map_err(Error::os(volume, "read mount table"))?;
    // Deepest first, so bind mounts of the staging mount go before it.
    let mut points: Vec<_> = mounts
        .into_iter()
        .filter(|m| m.device == number)
        .map(|m| m.mount_point)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        tracing::warn!(volume, mount = %p.display(), "unmounting a leftover mount of the device");
        crate::os::mount::unmount_all(&p)
            .map_err(Error::os(volume, format!("unmount {}", p.display())))?;
    }
    Ok(())
}

impl DeviceBackend {
    /// Unclaimed devices the class may take for a volume of `kind`, not named by any record,
    /// smallest first; and how many more would fit but are passed over for a raw volume
    /// because their identity is only their port ([`super::port`]).
    fn fitting(
        &self,
        params: &DeviceParams,
        range: Option<&CapacityRange>,
        kind: AccessKind,
    ) -> Result<(Vec<Entry>, usize)> {
        let selector = params.selector()?;
        let taken: HashSet<String> = self
            .ledger
            .records()
            .into_iter()
            .map(|r| r.backend.uid)
            .collect();
        let found: Vec<Entry> = self
            .inventory
            .candidates()
            .into_iter()
            .filter(|e| !taken.contains(&e.device.uid) && selector.matches(&e.device))
            .filter(|e| range.is_none_or(|r| r.admits(e.device.size_bytes)))
            .collect();
        let (mut out, passed) = super::port::placeable(kind, found);
        out.sort_by_key(|e| (e.device.size_bytes, e.device.uid.clone()));
        Ok((out, passed))
    }

    /// In a cluster, a device that looks free may be a volume's whose claim only its
    /// BlockDevice object remembers: no device is given out before the first sync merged them.
    pub(super) fn require_reconciled(&self, volume: &str) -> Result<()> {
        if self.inventory.reconciled() {
            return Ok(());
        }
        let why = "device inventory not yet reconciled with the cluster's BlockDevice objects (they may remember claims this node's state lacks); retry shortly";
        let what = format!("volume {volume} on node {}", self.node);
        Err(Error::storage(what)(std::io::Error::other(why)))
    }

    /// The inventory may lag behind the disk (no uevent tells of a write): re-probe before
    /// claiming. A device that is not blank any more is rescanned and skipped.
    fn still_blank(&self, e: &Entry) -> bool {
        let path = &e.device.dev_path;
        let blank = matches!(blkid::probe_all(path), Ok(s) if s.is_empty())
            && matches!(blkid::can_open_exclusive(path), Ok(true));
        if !blank {
            if let Err(err) = self.inventory.rescan_device(&e.device.kernel_name, None) {
                tracing::warn!(device = %path.display(), error = %err, "rescan failed");
            }
        }
        blank
    }

    /// The fingerprint of the chosen device, read through a descriptor; its number must be
    /// the one the inventory has (else the inventory lags: the CO retries).
    pub(super) fn fingerprint_of(&self, volume: &str, e: &Entry) -> Result<Fingerprint> {
        let (at, want) = (e.device.dev_path.display(), &e.device.dev_number);
        let fp = std::fs::File::open(&e.device.dev_path)
            .and_then(|f| fingerprint(&f))
            .map_err(Error::os(volume, format!("read identity of {at}")))?;
        if fp.dev_number != *want {
            let now = &fp.dev_number;
            let why =
                format!("{at} is device {now}, the inventory has {want}; retry once it caught up");
            return Err(Error::precondition(volume, why));
        }
        Ok(fp)
    }

    /// fsType from the class, else the capability's, else ext4; the two must agree.
    fn fs_type_for(&self, id: &str, params: &DeviceParams, caps: &[Capability]) -> Result<String> {
        let from_cap = caps.iter().map(|c| &*c.fs_type).find(|f| !f.is_empty());
        let why = match (params.fs_type(), from_cap) {
            (Some(a), Some(b)) if a != b => {
                format!("fsType {a:?} and the capability's fs_type {b:?} differ")
            }
            (class, cap) => match class.or(cap).unwrap_or("ext4") {
                fs if mkfs::SUPPORTED.contains(&fs) => return Ok(fs.to_string()),
                fs => format!("fs_type {fs:?} is not one of {:?}", mkfs::SUPPORTED),
            },
        };
        Err(Error::invalid(format!("volume {id}: {why}")))
    }
}

impl LocalVolumes for DeviceBackend {
    type Ext = DeviceData;
    const BACKEND: &'static str = BACKEND;
    const CAPS: &'static BackendCaps = &CAPS;

    fn ledger(&self) -> &Ledger<VolumeRecord> {
        &self.ledger
    }

    fn node_id(&self) -> &str {
        &self.node
    }

    fn volume_info(&self, rec: &VolumeRecord) -> VolumeInfo {
        let uid = ("ferrovol.io/device-uid", rec.backend.uid.clone());
        let fs = rec.backend.fs.as_ref();
        let fs_type = fs.map(|fs| ("ferrovol.io/fs-type", fs.fs_type.clone()));
        self.info_of(rec, [uid].into_iter().chain(fs_type), self.condition(rec))
    }

    fn create_volume(&self, req: &CreateRequest) -> Result<Done<VolumeInfo>> {
        let id_str = self.volume_id(&req.name)?.to_string();
        let params = DeviceParams::decode(&req.parameters)?;
        let kind = CAPS.access_kind(BACKEND, &id_str, &req.capabilities)?;
        self.check_topology(&id_str, req)?;
        let range = req.capacity;
        // Only for its check that required_bytes is within limit_bytes: the size is the device's.
        range.resolve(0, 1, &id_str)?;
        let fs_type = match kind {
            AccessKind::Block => None,
            AccessKind::Mount => Some(self.fs_type_for(&id_str, &params, &req.capabilities)?),
        };
        let wanted_params = defining(&req.parameters);
        self.ledger
            .refuse_id_of_another(&id_str, &req.name, "volume")?;
        let _claiming = self.claiming.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = self.ledger.get(&req.name) {
            if rec.phase == Phase::Deleting {
                return Err(Error::precondition(id_str, "is being deleted; retry later"));
            }
            crate::backend::check_existing(&rec, kind, &range, &wanted_params)?;
            return Ok(Done::Now(self.volume_info(&rec)));
        }
        self.require_reconciled(&id_str)?;
        let pick = || -> Result<(Option<Entry>, usize)> {
            let (fitting, passed) = self.fitting(&params, Some(&range), kind)?;
            Ok((fitting.into_iter().find(|e| self.still_blank(e)), passed))
        };
        let (mut found, mut passed) = pick()?;
        if found.is_none() {
            // A device another process held open exclusively at the last scan (a probe, a
            // second scanner) may be free now: look at those again before answering.
            for e in self.inventory.snapshot() {
                let held = e.device.selected && e.device.held_exclusively;
                let rescanned =
                    held.then(|| self.inventory.rescan_device(&e.device.kernel_name, None));
                if let Some(Err(err)) = rescanned {
                    tracing::warn!(volume = %id_str, device = %e.device.dev_path.display(), error = %err, "rescan failed");
                }
            }
            (found, passed) = pick()?;
        }
        let Some(entry) = found else {
            let (node, want, limit) = (&self.node, range.required, range.limit);
            let passed = super::port::passed_over(passed);
            let why = format!("no unclaimed device on node {node} fits {want} bytes (limit {limit}) and the class's selector{passed}");
            return Err(Error::no_space(id_str, why));
        };
        let size = entry.device.size_bytes;
        let claimed_as = self.fingerprint_of(&id_str, &entry)?;
        let fs = match fs_type {
            Some(fs_type) => Some(OurFs {
                fs_type,
                uuid: mkfs::random_uuid().map_err(Error::os(&id_str, "make a UUID"))?,
                offsets: Vec::new(),
            }),
            None => None,
        };
        let mut rec = VolumeRecord::new(
            id_str.clone(),
            req.name.clone(),
            kind,
            size,
            DeviceData {
                uid: entry.device.uid.clone(),
                device_size: size,
                fs,
                mkfs_options: params.mkfs_args(),
                claimed_as: Some(claimed_as),
                adopted: false,
            },
        );
        rec.parameters = wanted_params;
        self.claim(&rec)?;
        crate::failpoint::hit("device:create:after-commit");
        tracing::info!(volume = %id_str, uid = %entry.device.uid, device = %entry.device.dev_path.display(), size, "claimed device");
        Ok(Done::Now(self.volume_info(&rec)))
    }

    fn delete_volume(&self, id: &VolumeId) -> Result<Done<()>> {
        crate::backend::require_local(id, &self.node)?;
        // No record: nothing of ours to undo (an unknown claim turns Released at start).
        let Some(mut rec) = self.ledger.by_id(&id.to_string()) else {
            return Ok(Done::Now(()));
        };
        let _claiming = self.claiming.lock().unwrap_or_else(|p| p.into_inner());
        if rec.phase == Phase::Deleting {
            return self.finish_delete(&rec).map(Done::Now);
        }
        if let Some(why) = rec.in_use() {
            return Err(Error::precondition(rec.id, why));
        }
        rec.phase = Phase::Deleting;
        self.ledger.save(rec.clone())?;
        crate::failpoint::hit("device:delete:after-intent");
        self.finish_delete(&rec).map(Done::Now)
    }

    fn capacity_for(&self, req: &CapacityRequest) -> Result<Capacity> {
        let params = DeviceParams::decode(&req.parameters)?;
        if let Some(none) = self.no_capacity_for(req) {
            return Ok(none);
        }
        // A raw volume takes no device identified only by its port; with no capability given,
        // what a filesystem volume may take.
        let caps = &req.capabilities;
        let kind = match caps.is_empty() {
            true => AccessKind::Mount,
            false => CAPS.access_kind(BACKEND, "", caps)?,
        };
        let sizes: Vec<u64> = self
            .fitting(&params, None, kind)?
            .0
            .iter()
            .map(|e| e.device.size_bytes)
            .collect();
        Ok(Capacity {
            available: sizes.iter().sum(),
            maximum_volume_size: sizes.iter().copied().max().unwrap_or(0),
        })
    }

    fn expand_volume(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)> {
        let rec = self.record(id)?;
        let (volume, size) = (rec.id, rec.capacity_bytes);
        if range.required == 0 && range.limit == 0 {
            let why = format!("volume {volume}: capacity_range is required");
            return Err(Error::invalid(why));
        }
        let detail = if range.limit != 0 && range.limit < size {
            format!(
                "limit_bytes {} is below the device's size {size}; volumes do not shrink",
                range.limit
            )
        } else if range.required > size {
            format!(
                "{} bytes requested; the volume is a whole device of {size} bytes and cannot grow beyond it",
                range.required
            )
        } else {
            // Within the device: already that large, nothing to do on the node either.
            return Ok((size, false));
        };
        Err(Error::OutOfRange { volume, detail })
    }
}
