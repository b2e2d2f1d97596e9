//! Adoption: existing data brought under the driver in place, without a copy (an operator's
//! call through the admin API, never a CO's). docs/adoption.md describes each kind.

use crate::error::{Error, Result};
use crate::volume::{VolumeId, VolumeInfo};
use std::path::PathBuf;

/// An existing directory on this node to make a hostpath volume.
#[derive(Debug, Clone)]
pub struct AdoptDir {
    pub path: PathBuf,
    pub name: String,
    pub capacity: u64,
    /// btrfs: a reflink copy into a new subvolume (limited by a qgroup), the original renamed
    /// aside, instead of a rename of the original.
    pub reflink_copy: bool,
    /// The pods of this node and the host paths they use, to refuse a directory one of them
    /// uses (`pod_paths`); None where no Kubernetes is configured (no pods can exist there).
    pub pods: Option<std::sync::Arc<dyn super::pod_paths::PodPaths>>,
}

/// A device with a filesystem on this node to claim as a volume, keeping its data.
#[derive(Debug, Clone)]
pub struct AdoptDevice {
    pub device_uid: String,
    pub name: String,
}

/// An existing directory on an NFS share to make a managed NFS volume (a record on the share).
#[derive(Debug, Clone)]
pub struct AdoptNfsDir {
    pub server: String,
    pub share: String,
    /// Relative to the share root.
    pub sub_dir: String,
    pub name: String,
    pub capacity: u64,
    /// What DeleteVolume does with it afterwards: "retain" (the default), "archive", "delete".
    pub on_delete: String,
}

/// What to adopt.
#[derive(Debug, Clone)]
pub enum Adopt {
    Dir(AdoptDir),
    Device(AdoptDevice),
    NfsDir(AdoptNfsDir),
}

impl Adopt {
    pub fn name(&self) -> &str {
        match self {
            Adopt::Dir(r) => &r.name,
            Adopt::Device(r) => &r.name,
            Adopt::NfsDir(r) => &r.name,
        }
    }
}

/// A backend that can adopt existing data (`Backend::adoption`).
pub trait AdoptBackend: Send + Sync {
    /// The id adopting `req` yields (the admin service locks it first).
    fn adopt_id(&self, req: &Adopt) -> Result<VolumeId>;
    /// Makes `req`'s data a volume, in place; a repeat answers the same volume.
    fn adopt(&self, req: &Adopt) -> Result<VolumeInfo>;
}

/// The error for a kind of adoption a backend does not do.
pub fn not_here(backend: &str, req: &Adopt) -> Error {
    Error::invalid(format!(
        "volume {}: backend {backend} does not adopt this kind of data",
        req.name()
    ))
}
