//! Storage backends. Each backend is one module behind the `Backend` trait; the CSI layer
//! validates requests, takes the per-volume lock and dispatches here. Backends never speak gRPC.
//! Methods are blocking (they do file system or network work) and run on the blocking pool.

pub mod adopt;
pub mod caps;
pub mod clear;
pub mod device;
pub mod done;
pub mod hostpath;
pub mod local;
pub mod nfs;
pub mod params;
pub mod pod_paths;
pub mod registry;

pub use caps::{BackendCaps, Capacity, Expansion, Reach};
pub use done::Done;

use crate::error::{Error, Result};
use crate::node::Target;
use crate::snapshot::{SnapshotFilter, SnapshotId, SnapshotInfo, SnapshotPage, SnapshotRequest};
use crate::volume::{
    Capability, CapacityRange, CreateRequest, PublishRequest, StageRequest, TopologyRequirement,
    VolumeId, VolumeInfo, VolumeStats,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Unpublishing or unstaging a volume that does not exist (any more) is done, unless something
/// is mounted at the path: then we cannot prove it is ours and leave it alone.
pub fn nothing_mounted_at(volume_id: &str, path: &Path) -> Result<()> {
    let read = crate::os::mountinfo::is_mount_point(path);
    if !read.map_err(Error::os(volume_id, "read mount table"))? {
        return Ok(());
    }
    let at = path.display();
    let why = format!("{at} is mounted, but not by this volume; left alone");
    Err(Error::not_found_because(volume_id, why))
}

/// A CreateVolume of a name that exists: AlreadyExists unless it asks for the volume's access
/// type, a range that admits its capacity, and the parameters it was made with.
pub fn check_existing<E>(
    rec: &crate::state::VolumeRecord<E>,
    kind: crate::volume::AccessKind,
    range: &CapacityRange,
    params: &BTreeMap<String, String>,
) -> Result<()> {
    let mismatch = if rec.kind != kind {
        format!("exists with access type {:?}", rec.kind)
    } else if !range.admits(rec.capacity_bytes) {
        format!(
            "exists with capacity {} bytes, outside the requested range",
            rec.capacity_bytes
        )
    } else if &rec.parameters != params {
        format!("exists with parameters {:?}", rec.parameters)
    } else {
        return Ok(());
    };
    Err(Error::exists(rec.id.clone(), mismatch))
}

/// One page of ListVolumes (or ListSnapshots): entries, and the name of the last one if more
/// may follow.
pub struct Page<T = VolumeInfo> {
    pub entries: Vec<T>,
    pub next_after: Option<String>,
}

/// GetCapacity, decoded.
#[derive(Debug, Clone, Default)]
pub struct CapacityRequest {
    pub parameters: BTreeMap<String, String>,
    pub capabilities: Vec<Capability>,
    pub topology: Option<TopologyRequirement>,
}

/// Controller side: provisioning and attach bookkeeping.
pub trait ControllerBackend: Send + Sync {
    /// The id CreateVolume of `name` yields.
    fn volume_id(&self, name: &str) -> Result<VolumeId>;
    /// The id CreateVolume `req` yields (the CSI layer locks it before `create`): by default
    /// `volume_id` of its name; a backend whose ids name where the volume goes overrides it.
    fn create_id(&self, req: &CreateRequest) -> Result<VolumeId> {
        self.volume_id(&req.name)
    }
    /// CreateVolume; a backend whose last step waits for the journal returns it unfinished, so
    /// the CSI layer can wait for the commit as a task (`Done::finish`).
    fn create(&self, req: &CreateRequest) -> Result<Done<VolumeInfo>>;
    /// DeleteVolume, split at its commit like `create`.
    fn delete(&self, id: &VolumeId) -> Result<Done<()>>;
    fn get(&self, id: &VolumeId) -> Result<VolumeInfo>;
    fn list(&self, after: Option<&str>, max_entries: usize) -> Result<Page>;
    /// `None` when the capabilities are all supported, else why not.
    fn validate(
        &self,
        id: &VolumeId,
        caps: &[Capability],
        parameters: &BTreeMap<String, String>,
    ) -> Result<Option<String>>;
    fn capacity(&self, req: &CapacityRequest) -> Result<Capacity>;
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
}

/// Snapshots, for a backend that takes them (`Backend::snapshots`).
pub trait SnapshotBackend: Send + Sync {
    /// The id CreateSnapshot of `name` yields (the CSI layer locks it before `create_snapshot`).
    fn snapshot_id(&self, name: &str) -> Result<SnapshotId>;
    /// Takes snapshot `req.name` of `req.source`; the same name and source again returns the
    /// existing snapshot, the same name for another source is AlreadyExists.
    fn create_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotInfo>;
    /// Deletes a snapshot; one that does not exist is deleted already.
    fn delete_snapshot(&self, id: &SnapshotId) -> Result<()>;
    /// One page of snapshots in name order after `after` (`max` 0: all), filtered.
    fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        after: Option<&str>,
        max: usize,
    ) -> Result<SnapshotPage>;
}

/// Node side: making a volume appear at the paths the CO names.
pub trait NodeBackend: Send + Sync {
    fn stage(&self, req: &StageRequest) -> Result<()>;
    fn unstage(&self, id: &VolumeId, staging: &Target) -> Result<()>;
    fn publish(&self, req: &PublishRequest) -> Result<()>;
    fn unpublish(&self, id: &VolumeId, target: &Target) -> Result<()>;
    fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats>;
    fn node_expand(&self, id: &VolumeId, path: &Path, range: CapacityRange) -> Result<u64>;
}

pub trait Backend: ControllerBackend + NodeBackend {
    /// The backend's name as it appears in StorageClass `backend:` and in volume ids.
    fn name(&self) -> &'static str;
    /// What this backend supports; the services answer capability RPCs from these.
    fn caps(&self) -> &BackendCaps;
    /// Readiness for Probe: state writable, storage present.
    fn check_ready(&self) -> Result<()>;
    /// Snapshots (and CreateVolume from one), when this backend takes them.
    fn snapshots(&self) -> Option<&dyn SnapshotBackend> {
        None
    }
    /// Adoption of existing data (the admin API), when this backend offers it.
    fn adoption(&self) -> Option<&dyn adopt::AdoptBackend> {
        None
    }
    /// How Released devices are cleared, if this backend leaves any.
    fn releases(&self) -> Option<&dyn clear::ReleaseBackend> {
        None
    }
}

/// Only the node that holds a node-local volume may delete it: FailedPrecondition elsewhere.
pub(crate) fn require_local(id: &VolumeId, node: &str) -> Result<()> {
    if id.node.as_deref() == Some(VolumeId::node_tag(node).as_str()) {
        return Ok(());
    }
    let home = id.node.as_deref().unwrap_or("?");
    let why = format!(
        "the volume lives on node {home}; only that node's plugin can delete it (this is {node})"
    );
    Err(Error::precondition(id.to_string(), why))
}
