//! Controller-side operations of the hostpath backend: create, delete, expand, list, capacity,
//! and the attach bookkeeping of ControllerPublish. StorageClass parameters are decoded with
//! serde from the parameter map.

use super::provision::Limiter;
use super::{Enforcement, HostpathBackend, HostpathData, VolumeRecord, CAPS};
use crate::backend::local::LocalVolumes;
use crate::backend::params::defining;
use crate::backend::{BackendCaps, Capacity, CapacityRequest, ControllerBackend, Done};
use crate::error::{Error, Result};
use crate::os::{fsutil, markers};
use crate::state::{Ledger, Queued};
use crate::volume::{
    AccessKind, CapacityRange, CreateRequest, VolumeCondition, VolumeId, VolumeInfo,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs;

/// Sizes are whole 4 KiB blocks (a block volume's loop device needs 512-byte multiples).
pub(super) const ALIGN: u64 = 4096;

/// How a volume's size is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum QuotaMode {
    /// Enforce with a project quota where the filesystem supports it, else advisory.
    #[default]
    Auto,
    /// Refuse to create a volume whose size cannot be enforced.
    Enforce,
    /// Never set a quota.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct HostpathParams {
    #[serde(default)]
    pub quota: QuotaMode,
    /// The node's pool (named base path) the volume lives in.
    #[serde(default = "default_pool")]
    pub pool: String,
}

fn default_pool() -> String {
    super::pool_config::DEFAULT_POOL.to_string()
}

impl HostpathParams {
    pub(super) fn decode(params: &BTreeMap<String, String>) -> Result<Self> {
        let p: Self = crate::backend::params::decode(super::BACKEND, params)?;
        super::pool_config::validate_name(&p.pool)
            .map_err(|e| Error::invalid(format!("parameter pool: {e}")))?;
        Ok(p)
    }
}

impl HostpathBackend {
    /// A directory with our marker but no record (state lost): ours, so delete it. A shortened
    /// id does not spell out the directory's name: then the base is searched for its marker.
    fn delete_orphan(&self, id: &VolumeId) -> Result<()> {
        let id_str = id.to_string();
        let marked = |dir: &std::path::Path| matches!(markers::owner_marker(dir), Ok(Some(m)) if m == id_str);
        let direct = self.volume_dir(&id.key);
        let dir = if marked(&direct) {
            Some(direct)
        } else if id.key.contains('~') {
            fs::read_dir(&self.base)
                .map_err(Error::os(&id_str, format!("read {}", self.base.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| marked(p))
        } else {
            None
        };
        if let Some(dir) = dir {
            tracing::warn!(volume = %id_str, dir = %dir.display(), "deleting a volume directory that had no state record");
            fsutil::remove_tree_one_fs(&dir)
                .map_err(Error::os(&id_str, format!("remove {}", dir.display())))?;
        }
        Ok(())
    }
}

impl LocalVolumes for HostpathBackend {
    type Ext = super::HostpathData;
    const BACKEND: &'static str = super::BACKEND;
    const CAPS: &'static BackendCaps = &CAPS;

    fn ledger(&self) -> &Ledger<VolumeRecord> {
        &self.ledger
    }

    fn node_id(&self) -> &str {
        &self.node
    }

    fn volume_info(&self, rec: &VolumeRecord) -> VolumeInfo {
        self.info_with(rec, self.condition(rec))
    }

    /// Makes and marks the directory, then queues the record: the volume exists once the
    /// record is durable (the `Done`'s commit).
    fn create_volume(&self, req: &CreateRequest) -> Result<Done<VolumeInfo>> {
        let id_str = self.volume_id(&req.name)?.to_string();
        let params = HostpathParams::decode(&req.parameters)?;
        let kind = CAPS.access_kind(super::BACKEND, &id_str, &req.capabilities)?;
        self.check_topology(&id_str, req)?;
        self.require_base(&id_str)?;
        let source = (req.content_source.as_ref())
            .map(|src| self.resolve_source(&id_str, src))
            .transpose()?;
        if let Some(src) = source.as_ref().filter(|s| s.kind != kind) {
            return Err(Error::invalid(format!(
                "volume {id_str}: source {} is a {:?} volume, this one would be {kind:?}",
                src.id, src.kind
            )));
        }
        let default = source
            .as_ref()
            .map_or(self.default_capacity, |s| s.capacity);
        let capacity = req.capacity.resolve(default, ALIGN, &id_str)?;
        if let Some(src) = source.as_ref().filter(|s| capacity < s.capacity) {
            let (src_id, src_bytes) = (&src.id, src.capacity);
            let why =
                format!("{capacity} bytes is smaller than the source {src_id} ({src_bytes} bytes)");
            return Err(Error::out_of_range(id_str, why));
        }
        let source_id = source.as_ref().map(|s| s.id.clone());
        let wanted_params = defining(&req.parameters);

        self.ledger
            .refuse_id_of_another(&id_str, &req.name, "volume")?;
        if let Some(rec) = self.ledger.get(&req.name) {
            if rec.backend.source != source_id {
                let why = format!("exists with content source {:?}", rec.backend.source);
                return Err(Error::exists(id_str, why));
            }
            crate::backend::check_existing(&rec, kind, &req.capacity, &wanted_params)?;
            return Ok(Done::Now(self.volume_info(&rec)));
        }

        self.check_room(&id_str, capacity, capacity, self.space_for(capacity)?)?;

        let enforced_by = match (params.quota, self.limiter()?) {
            (QuotaMode::None, _) | (QuotaMode::Auto, None) => None,
            (QuotaMode::Enforce, None) => {
                return Err(Error::invalid(format!(
                    "volume {id_str}: quota=enforce, but base path {} ({}) has no quota to enforce it with",
                    self.base.display(),
                    self.base_fs
                )))
            }
            (_, Some(Limiter::Btrfs(_))) => Some(Enforcement::BtrfsQgroup),
            (_, Some(Limiter::Project(_))) => Some(Enforcement::ProjectQuota {
                id: self.allocate_project_id(&id_str)?,
            }),
        };

        let incarnation =
            fsutil::random_token().map_err(Error::os(&id_str, "draw the incarnation token"))?;
        let mut rec = VolumeRecord::new(
            id_str.clone(),
            req.name.clone(),
            kind,
            capacity,
            HostpathData {
                enforced_by,
                source: source_id,
                incarnation: Some(incarnation),
                adopted_from: None,
            },
        );
        rec.parameters = wanted_params;
        // Make and mark the directory first; a crash before the commit below leaves a directory
        // marked by this store and no record, which the next start rolls back.
        let made = match &source {
            Some(src) => self.materialize_from(&rec, src),
            None => self.materialize(&rec),
        };
        let dir = self.volume_dir(&rec.name);
        // Only what this create marked: a directory it refused to take over (another volume's
        // of this name) stays as it was.
        let its_own = made.is_ok()
            || !dir.exists()
            || markers::read_markers(&dir)
                .is_ok_and(|m| m.is_none_or(|m| m.incarnation == rec.backend.incarnation));
        let rollback = move |me: &Self| {
            if let Err(undo) = me.remove_dir_of(&id_str, &dir, enforced_by) {
                tracing::warn!(volume = %id_str, error = %undo, "rollback of failed create incomplete; the next start finishes it");
            }
        };
        made.inspect_err(|_| {
            if its_own {
                rollback(self)
            }
        })?;
        crate::failpoint::hit("create:before-commit");
        // Just made: no need to look at the disk for its condition.
        let info = self.info_with(&rec, VolumeCondition::healthy());
        let queued = self.ledger.queue_save(rec);
        let Queued { ticket, pending } = queued.inspect_err(|_| rollback(self))?;
        let me = self.arc();
        Ok(Done::after_commit(
            self.ledger.journal().clone(),
            ticket,
            move |outcome| {
                // The commit point: once the record is durable the volume exists.
                if let Err(e) = pending.settle(&me.ledger, outcome) {
                    rollback(&me);
                    return Err(e);
                }
                Ok(info)
            },
        ))
    }

    /// Queues the record's removal; the directory goes once the removal is durable (the
    /// `Done`'s commit).
    fn delete_volume(&self, id: &VolumeId) -> Result<Done<()>> {
        crate::backend::require_local(id, &self.node)?;
        let id_str = id.to_string();
        self.require_base(&id_str)?;
        let Some(rec) = self.ledger.by_id(&id_str) else {
            return self.delete_orphan(id).map(Done::Now);
        };
        if let Some(why) = rec.in_use() {
            return Err(Error::precondition(id_str, why));
        }
        let dir = self.volume_dir(&rec.name);
        // Only a directory that carries this volume's marker is removed. One put under its name
        // by hand (a copy restored without its trusted.* xattrs, another volume's) is not the
        // volume's to take: refused before anything changes.
        if fs::symlink_metadata(&dir).is_ok() {
            if let Some(why) = self.not_ours(&id_str, &dir, true) {
                let why = format!(
                    "{} is under the volume's name but is not its directory: {why}. Nothing was removed and the volume is kept; move that directory out of the base path (or remove it yourself if its content is to go with the volume), then delete the volume again",
                    dir.display()
                );
                return Err(Error::precondition(&id_str, why));
            }
        }
        let refuse = |at: &std::path::Path, why| {
            let why = format!("{} {why} first (nothing was removed)", at.display());
            Err(Error::precondition(&id_str, why))
        };
        // A stage or publish killed before its record may have left a bind of the directory
        // (refused: a pod may see it) or an unbound loop device of the image (detached).
        if dir.is_dir() {
            if let Some(at) = super::node::binds_of_dir(&dir)
                .map_err(Error::os(&id_str, "look for binds of the volume"))?
                .first()
            {
                return refuse(at, "still shows it; unstage or unpublish it");
            }
        }
        if rec.kind == AccessKind::Block {
            self.detach_all(&rec)?;
            let image = self.image_path(&rec.name);
            if image.exists() {
                // NodeUnstage detached the image's loop device, but the kernel finishes a detach
                // only when the last opener closes the device (a short-lived blkid, a process
                // that inherited the descriptor): give such a deferred detach a moment.
                let find = || crate::os::loopdev::find_by_backing_file(&image);
                let mut attached = find().map_err(Error::os(&id_str, "list loop devices"))?;
                if !attached.is_empty() {
                    // Only the wait runs as a long step (off the runtime's worker).
                    attached = crate::backend::done::long_step(|| {
                        for _ in 0..19 {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            if find()?.is_empty() {
                                return Ok(Vec::new());
                            }
                        }
                        find()
                    })
                    .map_err(Error::os(&id_str, "list loop devices"))?;
                }
                if let Some(a) = attached.first() {
                    let why = format!("its image is still attached to {}", a.device.display());
                    return Err(Error::precondition(id_str, why));
                }
            }
        }
        // Anything mounted inside would be removed with the tree or stop it half-way: refuse
        // before touching anything, naming what is in the way.
        if let Some(m) = crate::os::mountinfo::first_mount_below(&dir)
            .map_err(Error::os(&id_str, "look for mounts inside the volume"))?
        {
            return refuse(&m, "is mounted inside the volume; unmount it");
        }
        // Commit the removal (the one sync), then lift the limit and remove the directory. Nothing
        // on disk or in the quota table changes before the commit, so a failed one leaves the
        // volume whole and limited. A directory a crash leaves after it is marked by this store
        // and has no record: the next start lifts its limit and removes it. Until it is gone its
        // project still counts usage, so no create takes the project id meanwhile.
        crate::failpoint::hit("delete:before-commit");
        let Queued { ticket, pending } = self.ledger.queue_remove(&rec)?;
        let me = self.arc();
        Ok(Done::after_commit(
            self.ledger.journal().clone(),
            ticket,
            move |outcome| {
                pending.settle(&me.ledger, outcome)?;
                crate::failpoint::hit("delete:after-commit");
                // The volume is deleted whatever happens here: a limit left in place only keeps
                // its (empty) project id from being reused.
                if let Err(e) = me.release_limit(&id_str, rec.backend.enforced_by) {
                    tracing::warn!(volume = %id_str, error = %e, "deleted; its capacity limit could not be lifted");
                }
                me.remove_deleted(&id_str, &rec.name);
                Ok(())
            },
        ))
    }

    fn capacity_for(&self, req: &CapacityRequest) -> Result<Capacity> {
        let params = HostpathParams::decode(&req.parameters)?;
        if self.base_usable().is_err()
            || params.quota == QuotaMode::Enforce && self.limiter()?.is_none()
        {
            return Ok(Capacity::default());
        }
        self.no_capacity_for(req)
            .map_or_else(|| Ok(Capacity::pooled(self.space()?.1)), Ok)
    }

    fn expand_volume(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)> {
        if !self.is_local(id.node.as_deref()) {
            // external-resizer has no node-deployment mode: one resizer in the cluster asks a
            // ferrovol that does not hold the volume. Only the volume's own node can grow it, so
            // the answer is "the node does it": kubelet then calls NodeExpandVolume there, which
            // grows the limit and the image (expand_on_node).
            let id_str = id.to_string();
            if range.required == 0 {
                let why = format!("volume {id_str}: capacity_range.required_bytes is required");
                return Err(Error::invalid(why));
            }
            return Ok((range.resolve(0, ALIGN, &id_str)?, true));
        }
        self.grow(id, range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_quota_and_ignores_sidecar_keys() {
        let p = HostpathParams::decode(&map(&[
            ("quota", "enforce"),
            ("backend", "hostpath"),
            ("csi.storage.k8s.io/pvc/name", "x"),
        ]))
        .unwrap();
        assert_eq!(p.quota, QuotaMode::Enforce);
        assert_eq!(
            HostpathParams::decode(&map(&[])).unwrap().quota,
            QuotaMode::Auto
        );
    }

    #[test]
    fn rejects_unknown_keys_and_values() {
        let e = HostpathParams::decode(&map(&[("basepath", "/x")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("basepath") && text.contains("quota"),
            "{text}"
        );
        assert!(HostpathParams::decode(&map(&[("quota", "sometimes")])).is_err());
        assert!(HostpathParams::decode(&map(&[("pool", "Fast/1")])).is_err());
        let p = HostpathParams::decode(&map(&[("pool", "fast")])).unwrap();
        assert_eq!(p.pool, "fast");
        assert_eq!(HostpathParams::decode(&map(&[])).unwrap().pool, "default");
    }
}
