//! Adoption on a node with hostpath pools: a directory becomes a volume of the pool whose
//! filesystem holds it, since adoption is one rename that never leaves a filesystem (`adopt`).
//! The pool whose base contains the directory (local-path-provisioner's directories, once its
//! path is a pool) is that pool; otherwise the first usable pool on the directory's filesystem
//! (st_dev; on btrfs, the subvolume it sits in). Names stay unique across the node's pools, as
//! for CreateVolume.

use super::pools::HostpathPools;
use super::{HostpathBackend, BACKEND};
use crate::backend::adopt::{not_here, Adopt, AdoptBackend, AdoptDir};
use crate::error::{Error, Result};
use crate::volume::{VolumeId, VolumeInfo};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

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

impl HostpathPools {
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
