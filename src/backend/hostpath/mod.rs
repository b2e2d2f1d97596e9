//! hostpath backend: a directory per volume under a base path on this node; block volumes are a
//! sparse `disk.img` in that directory, attached to a loop device when staged.
//!
//! Ownership: every volume directory carries a `trusted.` xattr naming its volume id, and the
//! backend only ever removes a directory that carries its own id.

mod controller;
mod limiter;
mod node;
pub mod params;
pub mod record;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::os::{fsutil, statfs};
use crate::state::Store;
use crate::volume::{
    Capability, CapacityRange, CreateRequest, PublishRequest, TopologyRequirement, VolumeId,
    VolumeInfo, VolumeStats,
};
use limiter::Limiter;
use record::{Enforcement, Phase, VolumeRecord};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub const BACKEND: &str = "hostpath";
const IMAGE_FILE: &str = "disk.img";
/// Room a block volume's directory needs beside its image (directory blocks, xattrs).
const BLOCK_QUOTA_SLACK: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct HostpathConfig {
    pub node_id: String,
    pub base: PathBuf,
    pub state_dir: PathBuf,
    pub default_capacity: u64,
}

/// The in-memory index of records, with the totals kept up to date on every change so no
/// operation has to walk all volumes.
#[derive(Default)]
struct Index {
    volumes: BTreeMap<String, VolumeRecord>,
    /// volume id -> name (ids of long names are shortened, so they cannot be parsed back).
    ids: HashMap<String, String>,
    reserved_bytes: u64,
    project_ids: HashSet<u32>,
    /// node id -> volumes ControllerPublished to it
    published_per_node: HashMap<String, usize>,
}

impl Index {
    fn insert(&mut self, rec: VolumeRecord) {
        self.remove(&rec.name);
        self.reserved_bytes += rec.capacity_bytes;
        if let Some(Enforcement::ProjectQuota { id }) = rec.enforced_by {
            self.project_ids.insert(id);
        }
        for node in rec.controller_published.keys() {
            *self.published_per_node.entry(node.clone()).or_default() += 1;
        }
        self.ids.insert(rec.id.clone(), rec.name.clone());
        self.volumes.insert(rec.name.clone(), rec);
    }

    fn remove(&mut self, name: &str) -> Option<VolumeRecord> {
        let rec = self.volumes.remove(name)?;
        self.ids.remove(&rec.id);
        for node in rec.controller_published.keys() {
            if let Some(n) = self.published_per_node.get_mut(node) {
                *n -= 1;
            }
        }
        self.reserved_bytes -= rec.capacity_bytes;
        if let Some(Enforcement::ProjectQuota { id }) = rec.enforced_by {
            self.project_ids.remove(&id);
        }
        Some(rec)
    }
}

pub struct HostpathBackend {
    node: String,
    base: PathBuf,
    default_capacity: u64,
    store: Store,
    limiter: Option<Limiter>,
    base_fs: &'static str,
    index: Mutex<Index>,
}

impl HostpathBackend {
    /// Opens the base path and the state, then reconciles the records with the disk and the
    /// mount table: half-created volumes are rolled back, half-deleted ones finished, and
    /// publications whose mounts are gone are forgotten.
    pub fn open(cfg: HostpathConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&cfg.base)?;
        // Mount-table checks compare paths textually: work with the resolved base.
        let cfg = HostpathConfig {
            base: std::fs::canonicalize(&cfg.base)?,
            ..cfg
        };
        let store = Store::open(&cfg.state_dir.join(BACKEND))?;
        let limiter = Limiter::probe(&cfg.base)?;
        let base_fs = statfs::fs_type(&cfg.base)?;
        match &limiter {
            Some(l) => {
                tracing::info!(base = %cfg.base.display(), fs = base_fs, limit = l.describe(),
                "volume sizes are hard limits")
            }
            None => tracing::warn!(base = %cfg.base.display(), fs = base_fs,
                "no quota on the base path: volume sizes are advisory (use XFS mounted prjquota, ext4 with the project feature mounted prjquota, or btrfs with quota enabled)"),
        }
        let backend = HostpathBackend {
            node: cfg.node_id,
            base: cfg.base,
            default_capacity: cfg.default_capacity,
            store,
            limiter,
            base_fs,
            index: Mutex::new(Index::default()),
        };
        backend.recover()?;
        Ok(backend)
    }

    fn recover(&self) -> std::io::Result<()> {
        let records: Vec<VolumeRecord> = self.store.load_all()?;
        let (mut kept, mut rolled_back, mut finished) = (0, 0, 0);
        for rec in records {
            match rec.phase {
                Phase::Creating => {
                    self.discard(&rec).map_err(std::io::Error::other)?;
                    rolled_back += 1;
                }
                Phase::Deleting => {
                    self.discard(&rec).map_err(std::io::Error::other)?;
                    finished += 1;
                }
                Phase::Ready => {
                    let mut rec = rec;
                    if self.forget_lost_mounts(&mut rec) {
                        self.store.put(&rec.name, &rec)?;
                    }
                    if !self.volume_dir(&rec.name).is_dir() {
                        tracing::warn!(volume = %rec.id, "volume directory is missing; the volume reports an abnormal condition");
                    }
                    self.lock_index().insert(rec);
                    kept += 1;
                }
            }
        }
        tracing::info!(
            volumes = kept,
            rolled_back,
            finished_deletes = finished,
            "hostpath state recovered"
        );
        self.report_orphans()
    }

    /// Directories that carry our marker but have no record (state lost or restored from an old
    /// backup) are left alone and reported, with the id a DeleteVolume needs to remove them.
    fn report_orphans(&self) -> std::io::Result<()> {
        let index = self.lock_index();
        for entry in std::fs::read_dir(&self.base)? {
            let path = entry?.path();
            let known = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| index.volumes.contains_key(n));
            if known {
                continue;
            }
            if let Ok(Some(id)) = fsutil::owner_marker(&path) {
                tracing::warn!(dir = %path.display(), volume = %id,
                    "volume directory without a state record: left in place; DeleteVolume of this id removes it");
            }
        }
        Ok(())
    }

    fn lock_index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().expect("index lock poisoned")
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    fn image_path(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join(IMAGE_FILE)
    }

    /// The record of a ready volume, by id.
    fn record(&self, id: &VolumeId) -> Result<VolumeRecord> {
        self.find(id)
            .filter(|r| r.phase == Phase::Ready)
            .ok_or_else(|| Error::not_found(id.to_string()))
    }

    /// The record of a volume in any phase, by id.
    fn find(&self, id: &VolumeId) -> Option<VolumeRecord> {
        let index = self.lock_index();
        let name = index.ids.get(&id.to_string())?;
        index.volumes.get(name).cloned()
    }

    fn is_local(&self, id: &VolumeId) -> bool {
        id.node == VolumeId::node_tag(&self.node)
    }

    /// Persists `rec` and makes it the indexed version.
    fn save(&self, rec: VolumeRecord) -> Result<()> {
        self.store
            .put(&rec.name, &rec)
            .map_err(Error::os(&rec.id, "write volume state"))?;
        self.lock_index().insert(rec);
        Ok(())
    }

    /// Removes what a record stands for (directory only if it carries our marker), then the
    /// record. Used for deletes and for rolling back creates.
    fn discard(&self, rec: &VolumeRecord) -> Result<()> {
        let dir = self.volume_dir(&rec.name);
        if dir.exists() {
            let marker =
                fsutil::owner_marker(&dir).map_err(Error::os(&rec.id, "read ownership marker"))?;
            match marker {
                Some(m) if m == rec.id => {
                    fsutil::remove_tree_one_fs(&dir)
                        .map_err(Error::os(&rec.id, format!("remove {}", dir.display())))?;
                }
                None if rec.phase == Phase::Creating => {
                    // Crashed between mkdir and marking: remove only if still empty.
                    if let Err(e) = std::fs::remove_dir(&dir) {
                        tracing::warn!(volume = %rec.id, dir = %dir.display(), error = %e, "left an unmarked directory in place");
                    }
                }
                other => {
                    return Err(Error::Internal(format!(
                        "volume {}: refusing to remove {}: it is marked as {:?}, not as this volume",
                        rec.id,
                        dir.display(),
                        other
                    )));
                }
            }
        }
        crate::failpoint::hit("discard:after-remove-dir");
        if let (Some(l), Some(how)) = (&self.limiter, rec.enforced_by) {
            l.release(how)
                .map_err(Error::os(&rec.id, "lift capacity limit"))?;
        }
        self.store
            .remove(&rec.name)
            .map_err(Error::os(&rec.id, "remove volume state"))?;
        self.lock_index().remove(&rec.name);
        Ok(())
    }

    /// One statfs of the base: (size of the whole filesystem, bytes free for new volumes, that is
    /// free space less what existing volumes may still claim).
    fn space(&self) -> Result<(u64, u64)> {
        let fs = statfs::fs_stats(&self.base)
            .map_err(|e| Error::Internal(format!("statfs {}: {e}", self.base.display())))?;
        let reserved = self.lock_index().reserved_bytes;
        Ok((fs.total_bytes, fs.available_bytes.saturating_sub(reserved)))
    }

    fn info(&self, rec: &VolumeRecord) -> VolumeInfo {
        let mut context = BTreeMap::new();
        context.insert("ferrovol.io/backend".to_string(), BACKEND.to_string());
        let kind = match rec.kind {
            crate::volume::AccessKind::Mount => "mount",
            crate::volume::AccessKind::Block => "block",
        };
        context.insert("ferrovol.io/access-type".to_string(), kind.to_string());
        context.insert(
            "ferrovol.io/capacity-enforced".to_string(),
            rec.enforced_by.is_some().to_string(),
        );
        context.insert(
            "ferrovol.io/path".to_string(),
            self.volume_dir(&rec.name).display().to_string(),
        );
        VolumeInfo {
            id: rec.id.clone(),
            node: self.node.clone(),
            capacity_bytes: rec.capacity_bytes,
            context,
            published_nodes: rec.controller_published.keys().cloned().collect(),
            condition: self.condition(rec),
        }
    }

    fn condition(&self, rec: &VolumeRecord) -> crate::volume::VolumeCondition {
        let dir = self.volume_dir(&rec.name);
        let missing = match rec.kind {
            crate::volume::AccessKind::Mount => !dir.is_dir(),
            crate::volume::AccessKind::Block => !self.image_path(&rec.name).is_file(),
        };
        if missing {
            crate::volume::VolumeCondition {
                abnormal: true,
                message: format!("backing storage {} is gone", dir.display()),
            }
        } else {
            crate::volume::VolumeCondition::healthy()
        }
    }
}

impl Backend for HostpathBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn check_ready(&self) -> Result<()> {
        if !self.base.is_dir() {
            return Err(Error::Internal(format!(
                "base path {} is missing",
                self.base.display()
            )));
        }
        self.store.check_writable().map_err(|e| {
            Error::Internal(format!(
                "state dir {} is not writable: {e}",
                self.store.dir().display()
            ))
        })
    }

    fn create(&self, req: &CreateRequest) -> Result<VolumeInfo> {
        self.create_volume(req)
    }

    fn delete(&self, id: &VolumeId) -> Result<()> {
        self.delete_volume(id)
    }

    fn get(&self, id: &VolumeId) -> Result<VolumeInfo> {
        Ok(self.info(&self.record(id)?))
    }

    fn list(&self, after: Option<&str>, max_entries: usize) -> Result<super::Page> {
        self.list_volumes(after, max_entries)
    }

    fn validate(
        &self,
        id: &VolumeId,
        caps: &[Capability],
        parameters: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        self.validate_volume(id, caps, parameters)
    }

    fn capacity(
        &self,
        parameters: &BTreeMap<String, String>,
        caps: &[Capability],
        topology: Option<&TopologyRequirement>,
    ) -> Result<u64> {
        self.get_capacity(parameters, caps, topology)
    }

    fn expand(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)> {
        self.expand_volume(id, range)
    }

    fn controller_publish(
        &self,
        id: &VolumeId,
        node: &str,
        read_only: bool,
        cap: &Capability,
    ) -> Result<BTreeMap<String, String>> {
        self.publish_to_node(id, node, read_only, cap)
    }

    fn controller_unpublish(&self, id: &VolumeId, node: Option<&str>) -> Result<()> {
        self.unpublish_from_node(id, node)
    }

    fn published_count(&self, node: &str) -> usize {
        self.lock_index()
            .published_per_node
            .get(node)
            .copied()
            .unwrap_or(0)
    }

    fn stage(&self, id: &VolumeId, staging: &Path, cap: &Capability) -> Result<()> {
        self.stage_volume(id, staging, cap)
    }

    fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        self.unstage_volume(id, staging)
    }

    fn publish(&self, req: &PublishRequest) -> Result<()> {
        self.publish_volume(req)
    }

    fn unpublish(&self, id: &VolumeId, target: &Path) -> Result<()> {
        self.unpublish_volume(id, target)
    }

    fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats> {
        self.volume_stats(id, path)
    }

    fn node_expand(&self, id: &VolumeId, path: &Path, range: CapacityRange) -> Result<u64> {
        self.expand_on_node(id, path, range)
    }
}
