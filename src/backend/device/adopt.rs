//! Adoption of a device that already carries a filesystem: the operator names it by its
//! BlockDevice uid, and one commit of a record claims it, as a create claims a blank device.
//! Nothing is written to the device: its filesystem is kept, and its type, UUID and signature
//! offsets are recorded as the identity every later stage proves (a stage mounts it, never
//! formats it: the record says the filesystem is finished). A delete releases the claim and
//! keeps the data (`DeviceData::adopted`). The dynamic path never claims such a device: it is
//! no candidate while it carries a signature.

use super::{DeviceBackend, DeviceData, OurFs, VolumeRecord, BACKEND};
use crate::backend::adopt::{not_here, Adopt, AdoptBackend};
use crate::backend::local::LocalVolumes;
use crate::backend::ControllerBackend;
use crate::discovery::{Claim, Entry, State};
use crate::error::{Error, Result};
use crate::os::{blkid, mkfs, mountinfo};
use crate::volume::{AccessKind, VolumeId, VolumeInfo};

impl AdoptBackend for DeviceBackend {
    fn adopt_id(&self, req: &Adopt) -> Result<VolumeId> {
        self.volume_id(req.name())
    }

    fn adopt(&self, req: &Adopt) -> Result<VolumeInfo> {
        let Adopt::Device(req) = req else {
            return Err(not_here(BACKEND, req));
        };
        let id = self.volume_id(&req.name)?.to_string();
        let uid = &req.device_uid;
        let _claiming = self.claiming.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = self.ledger.get(&req.name) {
            if rec.backend.adopted && &rec.backend.uid == uid {
                return Ok(self.volume_info(&rec));
            }
            let why = format!(
                "a volume named {:?} exists already; choose another name",
                req.name
            );
            return Err(Error::exists(id, why));
        }
        self.ledger.refuse_id_of_another(&id, &req.name, "volume")?;
        self.require_reconciled(&id)?;
        let refuse = |why: String| {
            Error::precondition(&id, format!("device {uid}: {why}; nothing was changed"))
        };
        let entry = self.inventory.get(uid).ok_or_else(|| {
            Error::invalid(format!(
                "volume {id}: no device {uid} in this node's inventory (`ferrovol ctl devices` lists them)"
            ))
        })?;
        if let Some(why) = unfit(&id, &entry)? {
            return Err(refuse(why));
        }
        let (d, at) = (&entry.device, entry.device.dev_path.display());
        let sigs = blkid::probe_all(&d.dev_path).map_err(Error::os(&id, format!("probe {at}")))?;
        let fs = match sigs.as_slice() {
            [s] if s.kind == blkid::Kind::Filesystem
                && s.uuid.is_some()
                && mkfs::SUPPORTED.contains(&s.fs_type.as_str()) =>
            {
                OurFs {
                    fs_type: s.fs_type.clone(),
                    uuid: s.uuid.clone().expect("checked"),
                    offsets: vec![s.offset],
                }
            }
            [] => {
                return Err(refuse(format!(
                    "{at} carries no filesystem: a blank device is provisioned, not adopted"
                )))
            }
            found => {
                let found: Vec<String> = found.iter().map(|s| s.to_string()).collect();
                let (found, kinds) = (found.join(", "), mkfs::SUPPORTED.join(" or "));
                return Err(refuse(format!(
                    "{at} holds {found}; adoption takes one {kinds} filesystem with a UUID"
                )));
            }
        };
        let claimed_as = self.fingerprint_of(&id, &entry)?;
        let rec = VolumeRecord::new(
            id.clone(),
            req.name.clone(),
            AccessKind::Mount,
            d.size_bytes,
            DeviceData {
                uid: uid.clone(),
                device_size: d.size_bytes,
                fs: Some(fs.clone()),
                mkfs_options: Vec::new(),
                claimed_as: Some(claimed_as),
                adopted: true,
            },
        );
        self.claim(&rec)?;
        crate::failpoint::hit("device:adopt:after-commit");
        tracing::info!(volume = %id, %uid, device = %at, fs = %fs.fs_type, uuid = %fs.uuid,
            "adopted a device with its filesystem");
        Ok(self.volume_info(&rec))
    }
}

/// Why the inventory's `e` is no device to adopt, if it is not. Its mounts and whether it is
/// held open are read now: the inventory may lag behind the disk.
fn unfit(id: &str, e: &Entry) -> Result<Option<String>> {
    let (d, path) = (&e.device, e.device.dev_path.display());
    let mounts = || mountinfo::read().map_err(Error::os(id, "read mount table"));
    let busy = || blkid::can_open_exclusive(&d.dev_path).map(|free| !free);
    Ok(Some(if e.state != State::Active {
        format!("it is gone (last seen at {path})")
    } else if let Some(why) = super::proof::conflict(e) {
        why
    } else if let Claim::Claimed { volume, node } = &e.claim {
        format!("it is claimed by volume {volume} on node {node}")
    } else if let Claim::Released { reason, volume, .. } = &e.claim {
        format!(
            "it was released ({reason}); an operator must clear it first \
             (`ferrovol ctl clear-released {} --volume {volume}` once the disk is checked)",
            d.uid
        )
    } else if !d.selected {
        format!(
            "{path} is not named by this node's device include rules; \
             name it with --device-include or the device config first"
        )
    } else if let Some(os) = d.holds_os.first() {
        format!("it holds the node's {}", os.display())
    } else if !d.partitions.is_empty() || !d.holders.is_empty() {
        format!(
            "it has partitions {:?} or holders {:?}; adopt a whole-device filesystem",
            d.partitions, d.holders
        )
    } else if let Some(m) = mounts()?.iter().find(|m| m.device == d.dev_number) {
        format!(
            "it is mounted at {}; unmount it first",
            m.mount_point.display()
        )
    } else if busy().map_err(Error::os(id, format!("open {path}")))? {
        format!("{path} is in use (held open exclusively)")
    } else {
        return Ok(None);
    }))
}
