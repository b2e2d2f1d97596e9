//! The node side of the fake backend: staging and publication recorded in memory, nothing
//! mounted. Unknown volumes behave as in the real backends: gone is done, unless something is
//! mounted at the path.

use super::FakeBackend;
use ferrovol::backend::NodeBackend;
use ferrovol::error::{Error, Result};
use ferrovol::node::Target;
use ferrovol::volume::{
    AccessKind, CapacityRange, PublishRequest, StageRequest, VolumeCondition, VolumeId, VolumeStats,
};
use std::path::Path;

impl NodeBackend for FakeBackend {
    fn stage(&self, req: &StageRequest) -> Result<()> {
        self.record(format!(
            "stage {} {}",
            req.id,
            req.staging.as_path().display()
        ));
        let mut st = self.state();
        Self::find(&st, &req.id)?;
        st.staged
            .insert((req.id.to_string(), req.staging.path.clone()));
        Ok(())
    }

    fn unstage(&self, id: &VolumeId, staging: &Target) -> Result<()> {
        let staging = staging.as_path();
        self.record(format!("unstage {id} {}", staging.display()));
        let mut st = self.state();
        if Self::find(&st, id).is_err() {
            // As the real backends: gone is done, unless something is mounted there.
            return ferrovol::backend::nothing_mounted_at(&id.to_string(), staging);
        }
        st.staged.remove(&(id.to_string(), staging.to_path_buf()));
        Ok(())
    }

    fn publish(&self, req: &PublishRequest) -> Result<()> {
        self.record(format!(
            "publish {} {}",
            req.id,
            req.target.as_path().display()
        ));
        let mut st = self.state();
        Self::find(&st, &req.id)?;
        let id = req.id.to_string();
        if self.caps.stage {
            let staged = req
                .staging
                .as_ref()
                .is_some_and(|p| st.staged.contains(&(id.clone(), p.path.clone())));
            if !staged {
                return Err(Error::precondition(
                    id,
                    "not staged at the staging_target_path",
                ));
            }
        }
        let key = (id.clone(), req.target.path.clone());
        match st.node_published.get(&key) {
            Some(ro) if *ro != req.read_only => Err(Error::exists(
                id,
                format!(
                    "already published at {} with readonly={ro}",
                    req.target.as_path().display()
                ),
            )),
            _ => {
                st.node_published.insert(key, req.read_only);
                Ok(())
            }
        }
    }

    fn unpublish(&self, id: &VolumeId, target: &Target) -> Result<()> {
        let target = target.as_path();
        self.record(format!("unpublish {id} {}", target.display()));
        let mut st = self.state();
        if Self::find(&st, id).is_err() {
            return ferrovol::backend::nothing_mounted_at(&id.to_string(), target);
        }
        st.node_published
            .remove(&(id.to_string(), target.to_path_buf()));
        Ok(())
    }

    fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats> {
        self.record(format!("stats {id} {}", path.display()));
        let st = self.state();
        let v = Self::find(&st, id)?.1;
        let key = (id.to_string(), path.to_path_buf());
        if !st.node_published.contains_key(&key) && !st.staged.contains(&key) {
            return Err(Error::not_found_because(
                id.to_string(),
                format!("it is not published at {}", path.display()),
            ));
        }
        Ok(VolumeStats {
            total_bytes: v.capacity,
            used_bytes: 0,
            available_bytes: v.capacity,
            inodes: (v.kind == AccessKind::Mount).then_some((1000, 1, 999)),
            condition: Some(VolumeCondition::healthy()),
        })
    }

    fn node_expand(&self, id: &VolumeId, path: &Path, _range: CapacityRange) -> Result<u64> {
        self.record(format!("node_expand {id} {}", path.display()));
        let st = self.state();
        Ok(Self::find(&st, id)?.1.capacity)
    }
}
