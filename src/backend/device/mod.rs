//! device backend: each volume is one whole block device from the node's discovery inventory.
//!
//! Ownership lives in the state journal: the volume record names its device (by uid) and the
//! filesystem we planned and wrote, and is the device's claim ([`claims`]). The inventory
//! (`devices.json`) holds only what the scans observed.
//!
//! - create: one commit of the record claims the device; nothing is written to the device
//!   before it, so a crash leaves either no record and a blank device, or the volume.
//! - stage: mkfs runs with the UUID recorded at create, then the offsets blkid reports are
//!   recorded. Our UUID without recorded offsets was never handed to a pod (mkfs may have been
//!   cut short): it is made again. Any other signature is refused, never formatted.
//! - delete: record `Deleting` -> wipe (only what we wrote, or everything for raw block) -> one
//!   batch that removes the record and, when the device no longer shows what we wrote, records
//!   it `Released` with the reason. A restart finishes a `Deleting` record; with the journal
//!   damaged, only one whose device's content proves it the volume's own (`recover`).
//! - A device two records name is written, wiped and released for neither ([`claims`]).
//! - A device whose identity is only its port (no WWN or serial) takes no raw volume, and a raw
//!   volume already on one is released unwiped by its delete ([`port`]).
//! - adopt (`adopt`): a device with a filesystem, named by the operator, is claimed with its
//!   data, its UUID and offsets recorded as its proven identity; its delete never wipes.
//! - clear (`clear`): a Released device the operator checked and wiped by hand is made
//!   Unclaimed by one commit removing its release; nothing is written to the device.
//! - Every format, wipe and discard, and every publication of a raw device to a pod, first
//!   proves through the descriptor it writes with (or holds) that the node is the claimed
//!   device ([`proof`]): uid read afresh for that device number, size, the fingerprint taken
//!   at claim, no other device presenting the same uid. A device that fails the proof is never
//!   written: FailedPrecondition, and a delete stays pending until the claimed device is back
//!   or an operator steps in.

mod adopt;
pub mod claims;
mod clear;
mod controller;
mod node;
pub mod params;
mod port;
mod proof;

use crate::backend::{Backend, BackendCaps, Expansion, Reach};
use crate::discovery::{Claim, Filters, Inventory, State};
use crate::error::{Error, Result};
use crate::os::blkid;
use crate::state::{Journal, Ledger, Phase};
use crate::volume::{AccessKind, VolumeCondition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const BACKEND: &str = "device";

/// The filesystem a volume planned (at create) and wrote (at first stage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OurFs {
    pub fs_type: String,
    pub uuid: String,
    /// Offsets of the signatures blkid found right after mkfs; empty until mkfs completed.
    #[serde(default)]
    pub offsets: Vec<u64>,
}

impl OurFs {
    /// Whether `s` is this filesystem's signature.
    fn is(&self, s: &blkid::Signature) -> bool {
        s.kind == blkid::Kind::Filesystem
            && s.fs_type == self.fs_type
            && s.uuid.as_deref() == Some(self.uuid.as_str())
    }

    /// Whether `s` is a signature this filesystem wrote (at its recorded offsets, once known).
    fn made(&self, s: &blkid::Signature) -> bool {
        self.is(s) && (self.offsets.is_empty() || self.offsets.contains(&s.offset))
    }

    /// This filesystem as written: at the offsets of its signatures `sigs`.
    fn at(&self, sigs: &[blkid::Signature]) -> OurFs {
        let offsets = sigs.iter().map(|s| s.offset).collect();
        OurFs {
            offsets,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceData {
    /// The claimed device's stable uid (never its /dev name).
    pub uid: String,
    pub device_size: u64,
    /// None for raw block volumes.
    #[serde(default)]
    pub fs: Option<OurFs>,
    #[serde(default)]
    pub mkfs_options: Vec<String>,
    /// The device as read through a descriptor when it was claimed; compared before every
    /// write. None in records made before fingerprints were taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_as: Option<proof::Fingerprint>,
    /// Claimed by adoption with the data it carried (`adopt`): a delete releases the claim and
    /// keeps the filesystem, never wipes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

pub type VolumeRecord = crate::state::VolumeRecord<DeviceData>;

static CAPS: BackendCaps = BackendCaps {
    reach: Reach::NodeLocal,
    multi_node: false,
    block: true,
    controller_publish: true,
    stage: true,
    expansion: Expansion::UpToDevice,
    node_expansion: false,
    quick_provisioning: false,
    clone: false,
};

pub struct DeviceBackend {
    node: String,
    inventory: Arc<Inventory>,
    ledger: Ledger<VolumeRecord>,
    /// Held from choosing a device to committing its claim, so two creates never pick one.
    claiming: Mutex<()>,
}

impl DeviceBackend {
    /// Opens the records and the inventory (one scan, placed by the claims the records make),
    /// starts the hotplug monitor (and, in a cluster, the BlockDevice sync) and finishes the
    /// deletes a crash interrupted. The inventory (`devices.json`) lives in `state_dir`.
    /// `fresh`: the state journal did not exist before this start (the sync then keeps the
    /// claims of this node that only its BlockDevice objects record).
    pub fn open(
        node_id: String,
        state_dir: &Path,
        filters: Filters,
        journal: Arc<Journal>,
        live: &HashMap<String, Vec<u8>>,
        fresh: bool,
    ) -> std::io::Result<Self> {
        let ledger = Ledger::open_counted(journal, BACKEND, BACKEND, live)?;
        let inventory = Inventory::open_with_claims(state_dir, &node_id, filters, |legacy| {
            claims::adopt(&ledger, live, &node_id, legacy)
        })?;
        inventory.start_monitor()?;
        if crate::discovery::sync::in_cluster() {
            // The cluster's view of the node's disks (BlockDevice objects), kept current; it
            // also remembers claims this node's state lost, and creates wait for its first sync.
            crate::discovery::sync::spawn(inventory.clone(), fresh)?;
        }
        // Standalone, nothing outside the state dir remembers a claim: if the state dir is
        // lost, a raw volume's device without a signature looks blank and can be given out
        // again. That cannot be told from here; keep the state dir.
        let backend = DeviceBackend {
            node: node_id,
            inventory,
            ledger,
            claiming: Mutex::new(()),
        };
        backend.recover();
        Ok(backend)
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    fn recover(&self) {
        // A damaged journal may have lost the batch that finished a delete and the create that
        // then took its device: the claim proves nothing, nor does the journal's silence about
        // another volume. A delete is finished only when the device's content proves it the
        // volume's own (its filesystem, by the UUID drawn at its create) or when it writes
        // nothing (adopted); a raw volume's wipe has no such proof and waits for an operator.
        let damage = self.ledger.journal().damage();
        let records = self.ledger.records().into_iter();
        for rec in records.filter(|r| r.phase == Phase::Deleting) {
            if damage.is_some() && !rec.backend.adopted && !self.content_proves(&rec) {
                tracing::error!(volume = %rec.id, uid = %rec.backend.uid,
                    "delete not finished: the state journal is damaged and the device's content does not prove it is still this volume's; nothing written, the record is kept (DeleteVolume of this id finishes it)");
                continue;
            }
            if let Err(e) = self.finish_delete(&rec) {
                tracing::warn!(volume = %rec.id, error = %e, "device recovery incomplete; retried at the next start");
            }
        }
    }

    /// Whether the device holds the filesystem `rec` made (by its UUID) and nothing else.
    fn content_proves(&self, rec: &VolumeRecord) -> bool {
        let (Some(fs), Ok(path)) = (&rec.backend.fs, self.device_path(rec)) else {
            return false;
        };
        matches!(blkid::probe_all(&path), Ok(sigs)
            if !sigs.is_empty() && sigs.iter().all(|s| fs.made(s)))
    }

    /// Why nothing may be done with `rec`'s device: other records claim it too. Takes the
    /// ledger's lock, so never called under it (`volume_info` is, through `page`): there the
    /// device shows the Released claim `claims::from_records` gave it, naming both volumes.
    fn contested(&self, rec: &VolumeRecord) -> Option<String> {
        let uid = &rec.backend.uid;
        let mut others = Vec::new();
        self.ledger.for_each(|r| {
            if &r.backend.uid == uid && r.id != rec.id {
                others.push(r.id.clone());
            }
        });
        (!others.is_empty()).then(|| claims::contested_reason(uid, &rec.id, &others))
    }

    fn ours(&self, rec: &VolumeRecord) -> Claim {
        let (volume, node) = (rec.id.clone(), self.node.clone());
        Claim::Claimed { volume, node }
    }

    fn released(&self, rec: &VolumeRecord, reason: String) -> Claim {
        Claim::Released {
            volume: rec.id.clone(),
            reason,
            node: self.node.clone(),
        }
    }

    /// Whether the inventory shows `rec`'s device claimed by it.
    fn holds(&self, rec: &VolumeRecord) -> bool {
        self.inventory
            .get(&rec.backend.uid)
            .is_some_and(|e| e.claim == self.ours(rec))
    }

    /// Claims `rec`'s device: shown first, so a claim another node took meanwhile refuses
    /// this one; the one commit of the record is the claim.
    fn claim(&self, rec: &VolumeRecord) -> Result<()> {
        let uid = &rec.backend.uid;
        self.inventory
            .set_claim(uid, self.ours(rec))
            .map_err(Error::os(&rec.id, format!("claim device {uid}")))?;
        let unshow = |_: &_| self.show_claim(rec, Claim::Unclaimed);
        self.ledger.save(rec.clone()).inspect_err(unshow)
    }

    /// Shows `claim` on `rec`'s device, once the journal holds it.
    fn show_claim(&self, rec: &VolumeRecord, claim: Claim) {
        if let Err(e) = self.inventory.set_claim(&rec.backend.uid, claim) {
            tracing::warn!(volume = %rec.id, uid = %rec.backend.uid, error = %e, "claim not shown in the inventory");
        }
    }

    /// The /dev path of the volume's device, proven to be the claimed one: found by uid, Active,
    /// and the node at that path is still the device number and size the inventory recorded.
    fn device_path(&self, rec: &VolumeRecord) -> Result<PathBuf> {
        let uid = &rec.backend.uid;
        let refuse = |why: String| Err(Error::precondition(&rec.id, why));
        let Some(e) = self.inventory.get(uid) else {
            return refuse(format!("device {uid} is not in the inventory"));
        };
        let (path, d) = (e.device.dev_path.clone(), &e.device);
        let at = path.display();
        if e.state != State::Active {
            return refuse(format!(
                "device {uid} is gone (Inactive since it was last seen at {at})"
            ));
        }
        if let Some(why) = proof::conflict(&e) {
            return refuse(why);
        }
        if e.claim != self.ours(rec) {
            return refuse(format!(
                "device {uid} is not claimed by this volume ({:?})",
                e.claim
            ));
        }
        let meta = std::fs::metadata(&path).map_err(Error::os(&rec.id, format!("stat {at}")))?;
        let (number, want) = (proof::number_of(meta.rdev()), &d.dev_number);
        if !meta.file_type().is_block_device() || number != *want {
            return refuse(format!(
                "{at} is device {number}, not {want} as discovered for uid {uid}; refusing to use it"
            ));
        }
        let (size, made_on) = (d.size_bytes, rec.backend.device_size);
        if size != made_on {
            return refuse(format!(
                "device {uid} at {at} is {size} bytes, the volume was made on {made_on} bytes"
            ));
        }
        Ok(path)
    }

    fn condition(&self, rec: &VolumeRecord) -> VolumeCondition {
        match self.device_path(rec) {
            Ok(_) => VolumeCondition::healthy(),
            Err(e) => VolumeCondition {
                abnormal: true,
                message: e.to_string(),
            },
        }
    }
}

/// Whether `path` shows the block device `dev`: a filesystem mounted from it (by device
/// number), or for raw block its device node itself, which a raw publication binds there (that
/// mount's device number is the filesystem's holding the node, so the node is compared).
fn shows_device(kind: AccessKind, path: &Path, dev: &Path) -> bool {
    let Ok(d) = std::fs::metadata(dev) else {
        return false;
    };
    match kind {
        AccessKind::Mount => crate::os::mountinfo::mount_at(path)
            .is_ok_and(|m| m.is_some_and(|m| m.device == proof::number_of(d.rdev()))),
        AccessKind::Block => std::fs::metadata(path)
            .is_ok_and(|p| p.file_type().is_block_device() && p.rdev() == d.rdev()),
    }
}

impl Backend for DeviceBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn caps(&self) -> &BackendCaps {
        &CAPS
    }

    fn check_ready(&self) -> Result<()> {
        self.ledger.check_writable()
    }

    fn adoption(&self) -> Option<&dyn crate::backend::adopt::AdoptBackend> {
        Some(self)
    }

    fn releases(&self) -> Option<&dyn crate::backend::clear::ReleaseBackend> {
        Some(self)
    }
}
