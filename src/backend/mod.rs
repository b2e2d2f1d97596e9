//! Storage backends. Each backend is one module behind the `Backend` trait; the CSI layer
//! validates requests, takes the per-volume lock and dispatches here. Backends never speak gRPC.
//! Methods are blocking (they do file system work) and are called from `spawn_blocking`.

pub mod hostpath;

use crate::error::Result;
use crate::volume::{
    Capability, CapacityRange, CreateRequest, PublishRequest, TopologyRequirement, VolumeId,
    VolumeInfo, VolumeStats,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Unpublishing or unstaging a volume that does not exist (any more) is done, unless something
/// is mounted at the path: then we cannot prove it is ours and leave it alone.
pub fn nothing_mounted_at(volume_id: &str, path: &Path) -> Result<()> {
    match crate::os::mountinfo::is_mount_point(path) {
        Ok(false) => Ok(()),
        Ok(true) => Err(crate::error::Error::VolumeNotFound {
            volume: volume_id.to_string(),
            detail: format!(
                "{} is mounted, but not by this volume; left alone",
                path.display()
            ),
        }),
        Err(e) => Err(crate::error::Error::os(volume_id, "read mount table")(e)),
    }
}

/// One page of ListVolumes: entries, and the name of the last one if more may follow.
pub struct Page {
    pub entries: Vec<VolumeInfo>,
    pub next_after: Option<String>,
}

pub trait Backend: Send + Sync {
    /// The backend's name as it appears in StorageClass `backend:` and in volume ids.
    fn name(&self) -> &'static str;
    /// Readiness for Probe: state writable, storage present.
    fn check_ready(&self) -> Result<()>;

    fn create(&self, req: &CreateRequest) -> Result<VolumeInfo>;
    fn delete(&self, id: &VolumeId) -> Result<()>;
    fn get(&self, id: &VolumeId) -> Result<VolumeInfo>;
    fn list(&self, after: Option<&str>, max_entries: usize) -> Result<Page>;
    /// `None` when the capabilities are all supported, else why not.
    fn validate(
        &self,
        id: &VolumeId,
        caps: &[Capability],
        parameters: &BTreeMap<String, String>,
    ) -> Result<Option<String>>;
    fn capacity(
        &self,
        parameters: &BTreeMap<String, String>,
        caps: &[Capability],
        topology: Option<&TopologyRequirement>,
    ) -> Result<u64>;
    /// New capacity, and whether the node must act too.
    fn expand(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)>;
    fn controller_publish(
        &self,
        id: &VolumeId,
        node: &str,
        read_only: bool,
        cap: &Capability,
    ) -> Result<BTreeMap<String, String>>;
    fn controller_unpublish(&self, id: &VolumeId, node: Option<&str>) -> Result<()>;
    /// How many volumes of this backend are controller-published to `node`.
    fn published_count(&self, node: &str) -> usize;

    fn stage(&self, id: &VolumeId, staging: &Path, cap: &Capability) -> Result<()>;
    fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<()>;
    fn publish(&self, req: &PublishRequest) -> Result<()>;
    fn unpublish(&self, id: &VolumeId, target: &Path) -> Result<()>;
    fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats>;
    fn node_expand(&self, id: &VolumeId, path: &Path, range: CapacityRange) -> Result<u64>;
}
