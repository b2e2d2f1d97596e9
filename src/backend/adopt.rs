//! Adoption: existing data brought under the driver in place, without a copy (an operator's
//! call through the admin API, never a CO's). docs/adoption.md describes each kind.

use crate::error::{Error, Result};
use crate::volume::{VolumeId, VolumeInfo};
use std::path::PathBuf;

/// An existing directory on this node to make a volume.
#[derive(Debug, Clone)]
pub struct AdoptDir {
    pub path: PathBuf,
    pub name: String,
    pub capacity: u64,
}

/// A device with a filesystem on this node to claim as a volume, keeping its data.
#[derive(Debug, Clone)]
pub struct AdoptDevice {
    pub device_uid: String,
    pub name: String,
}

/// A backend that can adopt existing data (`Backend::adoption`).
pub trait AdoptBackend: Send + Sync {
    /// The id adopting `name` yields (the admin service locks it first).
    fn adopt_id(&self, name: &str) -> Result<VolumeId>;
    /// Makes `req.path` the volume `req.name`, in place.
    fn adopt_dir(&self, req: &AdoptDir) -> Result<VolumeInfo> {
        Err(Error::invalid(format!(
            "volume {}: this backend does not adopt directories",
            req.name
        )))
    }
    /// Claims the device `req.device_uid` as the volume `req.name`, keeping its filesystem.
    fn adopt_device(&self, req: &AdoptDevice) -> Result<VolumeInfo> {
        Err(Error::invalid(format!(
            "volume {}: this backend does not adopt devices",
            req.name
        )))
    }
}
