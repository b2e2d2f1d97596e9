//! device backend: each volume is one whole block device from the node's discovery inventory.
//!
//! Ownership lives in two durable places: the volume record in the journal (which device, by
//! uid; the filesystem we planned and wrote) and the device's claim in the inventory. They are
//! changed in an order that makes every crash recoverable from the two alone:
//!
//! - create: record `Creating` (names the uid) -> claim `Claimed` -> record `Ready`. A restart
//!   rolls a `Creating` record back (unclaims the device if it holds our claim; the device was
//!   never written, the CO never got an answer and retries).
//! - stage: the filesystem UUID is chosen at create and recorded, mkfs runs with it, then the
//!   offsets blkid reports are recorded. A filesystem with our UUID but no recorded offsets was
//!   never handed to a pod (mkfs may have been cut short): it is made again. Any other
//!   signature is refused, never formatted.
//! - delete: record `Deleting` -> wipe (only what we wrote, or everything for a raw block
//!   volume) -> claim `Unclaimed` (or `Released` with the reason when the device no longer shows
//!   what we wrote) -> record removed. A restart finishes a `Deleting` record the same way.
//! - Every format, wipe and discard, and every publication of a raw device to a pod, first
//!   proves through the descriptor it writes with (or holds) that the node is the claimed
//!   device ([`proof`]): uid read afresh for that device number, size,
//!   the fingerprint taken at claim, no other device presenting the same uid. A device that
//!   fails the proof is never written; the RPC answers FailedPrecondition and a delete stays
//!   pending until the claimed device is back or an operator steps in.
//! - A `Claimed` device whose volume has no record (lost state) is never given out again: it
//!   turns `Released` for an operator to look at.

mod controller;
mod node;
pub mod params;
mod proof;

use crate::backend::{Backend, BackendCaps, Expansion, Reach};
use crate::discovery::{Claim, Filters, Inventory, State};
use crate::error::{Error, Result};
use crate::state::{Journal, Ledger, Phase};
use crate::volume::{AccessKind, VolumeCondition, VolumeId, VolumeInfo};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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
}

pub type VolumeRecord = crate::state::VolumeRecord<DeviceData>;

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub node_id: String,
    /// The inventory (`devices.json`) lives here.
    pub state_dir: PathBuf,
    pub filters: Filters,
}

static CAPS: BackendCaps = BackendCaps {
    reach: Reach::NodeLocal,
    multi_node: false,
    block: true,
    mount: true,
    controller_publish: true,
    stage: true,
    expansion: Expansion::UpToDevice,
    node_expansion: false,
    clone: false,
};

pub struct DeviceBackend {
    node: String,
    inventory: Arc<Inventory>,
    ledger: Ledger<DeviceData>,
    /// Held from choosing a device to committing its claim, so two creates never pick one.
    claiming: Mutex<()>,
}

impl DeviceBackend {
    /// Opens the inventory (one scan), starts the hotplug monitor (and, in a cluster, the
    /// BlockDevice sync), adopts the records and finishes or rolls back whatever a crash
    /// interrupted (see the module doc).
    pub fn open(
        cfg: DeviceConfig,
        journal: Arc<Journal>,
        live: &HashMap<String, Vec<u8>>,
    ) -> std::io::Result<Self> {
        let inventory = Inventory::open(&cfg.state_dir, &cfg.node_id, cfg.filters)?;
        inventory.start_monitor()?;
        if crate::discovery::sync::in_cluster() {
            // The cluster's view of the node's disks (BlockDevice objects), kept current.
            crate::discovery::sync::spawn(inventory.clone())?;
        }
        let backend = DeviceBackend {
            node: cfg.node_id,
            inventory,
            ledger: Ledger::open(journal, BACKEND, live)?,
            claiming: Mutex::new(()),
        };
        backend.recover();
        Ok(backend)
    }

    /// The live inventory this backend claims from.
    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    fn recover(&self) {
        for rec in self.ledger.records() {
            let result = match rec.phase {
                Phase::Creating => self.roll_back_create(&rec),
                Phase::Deleting => self.finish_delete(&rec),
                Phase::Ready => self.reassert_claim(&rec),
            };
            if let Err(e) = result {
                tracing::warn!(volume = %rec.id, error = %e, "device recovery incomplete; retried at the next start");
            }
        }
        let known: Vec<String> = self.ledger.records().into_iter().map(|r| r.id).collect();
        for e in self.inventory.snapshot() {
            if let Claim::Claimed { volume, node } = &e.claim {
                if node == &self.node && !known.contains(volume) {
                    let reason = format!(
                        "claimed by volume {volume}, of which this driver has no record; not reused"
                    );
                    tracing::warn!(uid = %e.device.uid, %reason, "device released");
                    let claim = Claim::Released {
                        volume: volume.clone(),
                        reason,
                        node: self.node.clone(),
                    };
                    if let Err(err) = self.inventory.set_claim(&e.device.uid, claim) {
                        tracing::warn!(uid = %e.device.uid, error = %err, "could not release device");
                    }
                }
            }
        }
    }

    fn roll_back_create(&self, rec: &VolumeRecord) -> Result<()> {
        if self.claim_of(&rec.backend.uid) == Some(self.ours(rec)) {
            self.set_claim(rec, Claim::Unclaimed)?;
        }
        tracing::info!(volume = %rec.id, uid = %rec.backend.uid, "rolled back an unfinished create");
        self.ledger.remove(rec)
    }

    fn reassert_claim(&self, rec: &VolumeRecord) -> Result<()> {
        match self.claim_of(&rec.backend.uid) {
            Some(Claim::Unclaimed) => self.set_claim(rec, self.ours(rec)),
            None => {
                tracing::warn!(volume = %rec.id, uid = %rec.backend.uid, "the volume's device is not in the inventory");
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }

    /// The claim this node holds on the device of `rec`.
    fn ours(&self, rec: &VolumeRecord) -> Claim {
        Claim::Claimed {
            volume: rec.id.clone(),
            node: self.node.clone(),
        }
    }

    /// A Released claim of this node for `rec`'s device.
    fn released(&self, rec: &VolumeRecord, reason: String) -> Claim {
        Claim::Released {
            volume: rec.id.clone(),
            reason,
            node: self.node.clone(),
        }
    }

    fn claim_of(&self, uid: &str) -> Option<Claim> {
        self.inventory.get(uid).map(|e| e.claim)
    }

    fn set_claim(&self, rec: &VolumeRecord, claim: Claim) -> Result<()> {
        self.inventory
            .set_claim(&rec.backend.uid, claim)
            .map_err(Error::os(
                &rec.id,
                format!("set claim of device {}", rec.backend.uid),
            ))
    }

    fn record(&self, id: &VolumeId) -> Result<VolumeRecord> {
        self.ledger
            .by_id(&id.to_string())
            .filter(|r| r.phase != Phase::Creating)
            .ok_or_else(|| Error::not_found(id.to_string()))
    }

    fn is_local(&self, id: &VolumeId) -> bool {
        id.node.as_deref() == Some(VolumeId::node_tag(&self.node).as_str())
    }

    /// The /dev path of the volume's device, proven to be the claimed one: found by uid, Active,
    /// and the node at that path is still the device number and size the inventory recorded.
    fn device_path(&self, rec: &VolumeRecord) -> Result<PathBuf> {
        let uid = &rec.backend.uid;
        let e = self.inventory.get(uid).ok_or_else(|| {
            Error::precondition(&rec.id, format!("device {uid} is not in the inventory"))
        })?;
        if e.state != State::Active {
            return Err(Error::precondition(
                &rec.id,
                format!(
                    "device {uid} is gone (Inactive since it was last seen at {})",
                    e.device.dev_path.display()
                ),
            ));
        }
        if let Some(why) = proof::conflict(&e) {
            return Err(Error::precondition(&rec.id, why));
        }
        if e.claim != self.ours(rec) {
            return Err(Error::precondition(
                &rec.id,
                format!("device {uid} is not claimed by this volume ({:?})", e.claim),
            ));
        }
        let path = e.device.dev_path.clone();
        let meta = std::fs::metadata(&path)
            .map_err(Error::os(&rec.id, format!("stat {}", path.display())))?;
        let number = format!(
            "{}:{}",
            nix::sys::stat::major(meta.rdev()),
            nix::sys::stat::minor(meta.rdev())
        );
        if !meta.file_type().is_block_device() || number != e.device.dev_number {
            return Err(Error::precondition(
                &rec.id,
                format!(
                    "{} is device {number}, not {} as discovered for uid {uid}; refusing to use it",
                    path.display(),
                    e.device.dev_number
                ),
            ));
        }
        if e.device.size_bytes != rec.backend.device_size {
            return Err(Error::precondition(
                &rec.id,
                format!(
                    "device {uid} at {} is {} bytes, the volume was made on {} bytes",
                    path.display(),
                    e.device.size_bytes,
                    rec.backend.device_size
                ),
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

    fn info(&self, rec: &VolumeRecord) -> VolumeInfo {
        let kind = match rec.kind {
            AccessKind::Mount => "mount",
            AccessKind::Block => "block",
        };
        let mut context = BTreeMap::from([
            ("ferrovol.io/backend".to_string(), BACKEND.to_string()),
            ("ferrovol.io/access-type".to_string(), kind.to_string()),
            (
                "ferrovol.io/device-uid".to_string(),
                rec.backend.uid.clone(),
            ),
        ]);
        if let Some(fs) = &rec.backend.fs {
            context.insert("ferrovol.io/fs-type".into(), fs.fs_type.clone());
        }
        VolumeInfo {
            id: rec.id.clone(),
            node: Some(self.node.clone()),
            capacity_bytes: rec.capacity_bytes,
            context,
            published_nodes: rec.controller_published.keys().cloned().collect(),
            condition: self.condition(rec),
        }
    }
}

/// Whether `path` is mounted from the block device `dev` (by device number).
fn mounted_from(path: &Path, dev: &Path) -> bool {
    let (Ok(d), Ok(m)) = (std::fs::metadata(dev), crate::os::mountinfo::mount_at(path)) else {
        return false;
    };
    let number = format!(
        "{}:{}",
        nix::sys::stat::major(d.rdev()),
        nix::sys::stat::minor(d.rdev())
    );
    m.is_some_and(|m| m.device == number)
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
}
