//! The CSI calls of `HostpathPools`: each goes to one pool (see `pools`): a new volume's by
//! its class's `pool` parameter, everything else by which pool holds the id; lists merge the
//! pools' pages in name order.
//!
//! Adoption on a node with hostpath pools: a directory becomes a volume of the pool whose
//! filesystem holds it, since adoption is one rename that never leaves a filesystem (`adopt`).
//! The pool whose base contains the directory (local-path-provisioner's directories, once its
//! path is a pool) is that pool; otherwise the first usable pool on the directory's filesystem
//! (st_dev; on btrfs, the subvolume it sits in). Names stay unique across the node's pools, as
//! for CreateVolume.

use super::controller::HostpathParams;
use super::pools::HostpathPools;
use super::{HostpathBackend, BACKEND, CAPS};
use crate::backend::adopt::{not_here, Adopt, AdoptBackend, AdoptDir};
use crate::backend::local::LocalVolumes;
use crate::backend::{
    Backend, BackendCaps, Capacity, CapacityRequest, ControllerBackend, Done, NodeBackend, Page,
    SnapshotBackend,
};
use crate::error::{Error, Result};
use crate::node::Target;
use crate::snapshot::ContentSource;
use crate::snapshot::{SnapshotFilter, SnapshotId, SnapshotInfo, SnapshotPage, SnapshotRequest};
use crate::volume::{
    Capability, CapacityRange, CreateRequest, PublishRequest, StageRequest, VolumeId, VolumeInfo,
    VolumeStats,
};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

/// One pool's page: (name, entry) in name order, and the name to resume after if more follow.
type Paged<T> = (Vec<(String, T)>, Option<String>);

/// Merges per-pool pages (each of at most `max` after the same cursor) into one page of at
/// most `max` (0: all), with the name to resume after.
fn merge<T>(pages: Vec<Paged<T>>, max: usize) -> (Vec<T>, Option<String>) {
    let more_in_a_pool = pages.iter().any(|(_, more)| more.is_some());
    let mut all: Vec<(String, T)> = pages.into_iter().flat_map(|(e, _)| e).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let cut = max != 0 && all.len() > max;
    if cut {
        all.truncate(max);
    }
    let next = (cut || more_in_a_pool)
        .then(|| all.last().map(|(name, _)| name.clone()))
        .flatten();
    (all.into_iter().map(|(_, e)| e).collect(), next)
}

/// Calls on one volume, by its id: each goes to the pool that holds the volume (`for_volume`).
macro_rules! by_volume {
    ($(fn $call:ident(&self, $id:ident: &VolumeId $(, $arg:ident: $ty:ty)*) -> $out:ty;)*) => {
        $(fn $call(&self, $id: &VolumeId $(, $arg: $ty)*) -> $out {
            self.for_volume($id).$call($id $(, $arg)*)
        })*
    };
}

impl HostpathPools {
    /// For an id no pool holds (its state lost): `f` in each pool that can take changes now,
    /// each removing what it marked with the id; with none, in the fallback, which says why.
    fn in_usable_pools(&self, f: impl Fn(&HostpathBackend) -> Result<()>) -> Result<()> {
        let usable: Vec<_> = self.pools().filter(|p| p.pool_down().is_none()).collect();
        if usable.is_empty() {
            return f(&self.fallback());
        }
        usable.iter().try_for_each(|p| f(p))
    }

    /// The pool a new volume goes to: its class's, refusing a name another pool holds and a
    /// content source in another pool (its data is on another filesystem).
    fn pool_for(&self, req: &CreateRequest) -> Result<Arc<HostpathBackend>> {
        let id = self.volume_id(&req.name)?.to_string();
        let params = HostpathParams::decode(&req.parameters)?;
        let wanted = params.pool.as_str();
        self.pools()
            .try_for_each(|p| p.ledger.refuse_id_of_another(&id, &req.name, "volume"))?;
        if let Some(other) = self.holder_of_name(&req.name) {
            if other.pool != wanted {
                let why = format!(
                    "exists in hostpath pool {:?}, not in pool {wanted:?}",
                    other.pool
                );
                return Err(Error::exists(id, why));
            }
            // A repeat: answered by its own pool, whatever that pool's state now.
            return Ok(other);
        }
        let pool = self.for_create(wanted, &id)?;
        let source_pool = match &req.content_source {
            Some(ContentSource::Snapshot(s)) => self
                .pools()
                .find(|p| p.snaps.by_id(&s.to_string()).is_some()),
            Some(ContentSource::Volume(v)) => self.holder(&v.to_string()),
            None => None,
        };
        if let Some(src) = source_pool.filter(|s| s.pool != wanted) {
            return Err(Error::invalid(format!(
                "volume {id}: its content source lives in hostpath pool {:?}; a volume made from \
                 it must be in that pool too (this class asks for pool {wanted:?})",
                src.pool
            )));
        }
        Ok(pool)
    }

    /// The pool `dir` is adopted into (see the module doc). A path that cannot be read or
    /// resolved goes to the default pool, whose checks name the cause.
    fn pool_holding(&self, id: &str, dir: &AdoptDir) -> Result<Arc<HostpathBackend>> {
        let pools: Vec<_> = self.pools().collect();
        let Ok(real) = std::fs::canonicalize(&dir.path) else {
            return Ok(self.fallback());
        };
        if let Some(p) = pools.iter().find(|p| p.base.starts_with(&real)) {
            return Err(Error::invalid(format!(
                "volume {id}: {} is the base path of hostpath pool {:?} or a parent of it",
                dir.path.display(),
                p.pool
            )));
        }
        if let Some(p) = pools.iter().find(|p| real.starts_with(&p.base)) {
            return Ok(p.clone());
        }
        let Ok(dev) = super::adopt_checks::fs_dev(&real) else {
            return Ok(self.fallback());
        };
        let dev_of = |p: &HostpathBackend| std::fs::metadata(&p.base).ok().map(|m| m.dev());
        if let Some(p) = pools
            .iter()
            .find(|p| p.pool_down().is_none() && dev_of(p) == Some(dev))
        {
            return Ok(p.clone());
        }
        // With one pool, its own checks say best what is wrong (a mount point, another
        // filesystem than its base).
        if pools.len() == 1 {
            return Ok(self.fallback());
        }
        if let Ok(Some(m)) = crate::os::mountinfo::first_mount_below(&real) {
            return Err(Error::precondition(
                id,
                format!(
                    "{} is in use: {} is a mount point; nothing was changed",
                    dir.path.display(),
                    m.display()
                ),
            ));
        }
        let show = |d: u64| format!("{}:{}", libc::major(d), libc::minor(d));
        let known: Vec<String> = pools
            .iter()
            .map(|p| {
                let d = dev_of(p).map_or_else(|| "missing".to_string(), show);
                format!("{} at {} (device {d})", p.pool, p.base.display())
            })
            .collect();
        Err(Error::precondition(
            id,
            format!(
                "{} (device {}) lies on no hostpath pool's filesystem (pools: {}); adoption moves no data across filesystems: make its filesystem a pool, or copy it into a new volume. Nothing was changed",
                dir.path.display(),
                show(dev),
                known.join(", ")
            ),
        ))
    }
}

impl ControllerBackend for HostpathPools {
    fn volume_id(&self, name: &str) -> Result<VolumeId> {
        VolumeId::for_volume(BACKEND, &self.node, name)
    }

    fn create(&self, req: &CreateRequest) -> Result<Done<VolumeInfo>> {
        self.pool_for(req)?.create(req)
    }

    fn delete(&self, id: &VolumeId) -> Result<Done<()>> {
        if let Some(pool) = self.holder(&id.to_string()) {
            return pool.delete(id);
        }
        self.refuse_unserved(&id.to_string())?;
        // No record: each usable pool removes a directory marked with this id (state lost).
        crate::backend::require_local(id, &self.node)?;
        self.in_usable_pools(|p| p.delete(id)?.wait())
            .map(Done::Now)
    }

    by_volume! {
        fn get(&self, id: &VolumeId) -> Result<VolumeInfo>;
        fn validate(&self, id: &VolumeId, caps: &[Capability], parameters: &BTreeMap<String, String>)
            -> Result<Option<String>>;
        fn expand(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)>;
        fn controller_publish(&self, id: &VolumeId, node: &str, read_only: bool, cap: &Capability)
            -> Result<BTreeMap<String, String>>;
        fn controller_unpublish(&self, id: &VolumeId, node: Option<&str>) -> Result<()>;
    }

    fn list(&self, after: Option<&str>, max: usize) -> Result<Page> {
        let pages = self.pools().map(|p| {
            p.ledger
                .page(after, max, |_| true, |r| (r.name.clone(), p.volume_info(r)))
        });
        let (entries, next_after) = merge(pages.collect(), max);
        Ok(Page {
            entries,
            next_after,
        })
    }

    /// The class's pool's free space; none when this node lacks the pool or it is down.
    fn capacity(&self, req: &CapacityRequest) -> Result<Capacity> {
        let params = HostpathParams::decode(&req.parameters)?;
        match self.slot(&params.pool).map(|slot| self.refresh(slot)) {
            Some(pool) if pool.pool_down().is_none() => pool.capacity(req),
            _ => Ok(Capacity::default()),
        }
    }

    fn published_count(&self, node: &str) -> usize {
        self.pools().map(|p| p.published_count(node)).sum()
    }
}

impl NodeBackend for HostpathPools {
    fn stage(&self, req: &StageRequest) -> Result<()> {
        self.for_volume(&req.id).stage(req)
    }

    fn publish(&self, req: &PublishRequest) -> Result<()> {
        self.for_volume(&req.id).publish(req)
    }

    by_volume! {
        fn unstage(&self, id: &VolumeId, staging: &Target) -> Result<()>;
        fn unpublish(&self, id: &VolumeId, target: &Target) -> Result<()>;
        fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats>;
        fn node_expand(&self, id: &VolumeId, path: &Path, range: CapacityRange) -> Result<u64>;
    }
}

impl SnapshotBackend for HostpathPools {
    fn snapshot_id(&self, name: &str) -> Result<SnapshotId> {
        SnapshotId::new(BACKEND, Some(&self.node), name)
    }

    /// In the source volume's pool (a snapshot shares its filesystem); a name another pool
    /// holds is answered by that pool (the same snapshot again, or AlreadyExists).
    fn create_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotInfo> {
        let named = self.pools().find(|p| p.snaps.get(&req.name).is_some());
        let pool = named.unwrap_or_else(|| self.for_volume(&req.source));
        pool.create_snapshot(req)
    }

    fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        let holds = |p: &Arc<HostpathBackend>| p.snaps.by_id(&id.to_string()).is_some();
        if let Some(pool) = self.pools().find(holds) {
            return pool.delete_snapshot(id);
        }
        self.refuse_unserved(&id.to_string())?;
        self.in_usable_pools(|p| p.delete_snapshot(id))
    }

    fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        after: Option<&str>,
        max: usize,
    ) -> Result<SnapshotPage> {
        let wanted_id = filter.snapshot.as_ref().map(|s| s.to_string());
        let wanted_source = filter.source.as_ref().map(|v| v.to_string());
        let keep = |r: &super::snapshot::SnapRecord| {
            wanted_id.as_ref().is_none_or(|w| &r.id == w)
                && wanted_source
                    .as_ref()
                    .is_none_or(|w| &r.source_volume_id == w)
        };
        let pages = self.pools().map(|p| {
            p.snaps.page(after, max, keep, |r| {
                (r.name.clone(), HostpathBackend::snapshot_info(r))
            })
        });
        let (entries, next_after) = merge(pages.collect(), max);
        Ok(SnapshotPage {
            entries,
            next_after,
        })
    }
}

impl Backend for HostpathPools {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn caps(&self) -> &BackendCaps {
        &CAPS
    }

    /// Ready while one pool is: a pool whose disk is missing is reported (log, metric, no
    /// capacity) but does not fail Probe, whose failure would restart the whole plugin.
    fn check_ready(&self) -> Result<()> {
        let mut first_err = None;
        for pool in self.pools() {
            let Err(e) = pool.check_ready() else {
                return Ok(());
            };
            first_err.get_or_insert(e);
        }
        Err(first_err.unwrap_or_else(|| Error::Internal("no hostpath pool".into())))
    }

    fn snapshots(&self) -> Option<&dyn SnapshotBackend> {
        Some(self)
    }

    fn adoption(&self) -> Option<&dyn AdoptBackend> {
        Some(self)
    }
}

impl AdoptBackend for HostpathPools {
    fn adopt_id(&self, req: &Adopt) -> Result<VolumeId> {
        VolumeId::for_volume(BACKEND, &self.node, req.name())
    }

    fn adopt(&self, req: &Adopt) -> Result<VolumeInfo> {
        let Adopt::Dir(dir) = req else {
            return Err(not_here(BACKEND, req));
        };
        let id = self.adopt_id(req)?.to_string();
        // A repeat, or a name taken: the pool that holds the name answers either.
        if let Some(pool) = self.holder_of_name(&dir.name) {
            return pool.adopt_dir(dir);
        }
        if let Some(owner) = self.pools().find_map(|p| p.ledger.id_owner(&id)) {
            let why = format!("this id already belongs to volume {owner:?}; choose another name");
            return Err(Error::exists(id, why));
        }
        self.pool_holding(&id, dir)?.adopt_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::merge;

    fn page(names: &[&str], more: bool) -> (Vec<(String, String)>, Option<String>) {
        (
            names
                .iter()
                .map(|n| (n.to_string(), n.to_string()))
                .collect(),
            more.then(|| names.last().unwrap_or(&"").to_string()),
        )
    }

    #[test]
    fn merges_pages_in_name_order_and_resumes_after_the_last() {
        let (e, next) = merge(vec![page(&["a", "c"], false), page(&["b", "d"], false)], 3);
        assert_eq!(e, ["a", "b", "c"]);
        assert_eq!(next.as_deref(), Some("c"));
        let (e, next) = merge(vec![page(&["a"], false), page(&["b"], false)], 0);
        assert_eq!(e, ["a", "b"]);
        assert_eq!(next, None);
        let (e, next) = merge(vec![page(&["a", "b"], true), page(&[], false)], 2);
        assert_eq!(e, ["a", "b"]);
        assert_eq!(next.as_deref(), Some("b"));
    }
}
