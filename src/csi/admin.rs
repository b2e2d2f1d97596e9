//! The admin service (proto/admin.proto): adoption of existing data and the clearing of a
//! Released device, called by an operator through `ferrovol ctl adopt` and `ferrovol ctl
//! clear-released` on the driver's socket. Thin like the CSI services: validate, lock the
//! volume, hand the work to the backend on the blocking pool.

use super::convert::require;
use super::{rpc, Driver};
use crate::backend::adopt::{Adopt, AdoptDevice, AdoptDir, AdoptNfsDir};
use crate::backend::clear::{ClearReleased, Cleared};
use crate::backend::pod_paths::PodPaths;
use crate::backend::{device, hostpath, nfs};
use crate::error::{Error, Result};
use crate::proto::admin as pb;
use crate::volume::{VolumeInfo, TOPOLOGY_NODE_KEY};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminService {
    pub driver: Arc<Driver>,
    /// Whether this process serves the controller role: an NFS volume's record is the
    /// controller's to write, never a node plugin's.
    pub controller: bool,
    /// This node's pods and their host paths, for a directory's adoption; None without
    /// Kubernetes.
    pub pods: Option<Arc<dyn PodPaths>>,
}

impl AdminService {
    /// Runs the adoption `build` decodes on backend `backend`, under the volume's lock.
    async fn adopt(
        &self,
        method: &'static str,
        backend: &'static str,
        name: String,
        build: impl FnOnce() -> Result<Adopt> + Send + 'static,
    ) -> Result<Response<pb::AdoptResponse>, Status> {
        let driver = self.driver.clone();
        rpc(method, name, move || {
            let req = build()?;
            let b = driver
                .backend(backend)?
                .adoption()
                .ok_or_else(|| Error::invalid(format!("backend {backend} adopts nothing")))?;
            let id = b.adopt_id(&req)?;
            let _guard = driver.locks.try_lock(&id.to_string())?;
            let info = b.adopt(&req)?;
            Ok(response(&driver, info))
        })
        .await
    }
}

fn response(driver: &Driver, info: VolumeInfo) -> pb::AdoptResponse {
    let context = &info.context;
    pb::AdoptResponse {
        volume_id: info.id,
        capacity_bytes: info.capacity_bytes as i64,
        capacity_enforced: context
            .get("ferrovol.io/capacity-enforced")
            .is_some_and(|v| v == "true"),
        fs_type: context
            .get("ferrovol.io/fs-type")
            .cloned()
            .unwrap_or_default(),
        volume_context: info.context.into_iter().collect(),
        driver_name: driver.name.clone(),
        topology_key: (info.node.as_ref()).map_or_else(String::new, |_| TOPOLOGY_NODE_KEY.into()),
        node_id: info.node.unwrap_or_default(),
    }
}

fn capacity(name: &str, bytes: i64) -> Result<u64> {
    if bytes <= 0 {
        return Err(Error::invalid(format!(
            "volume {name}: capacity_bytes must be positive"
        )));
    }
    Ok(bytes as u64)
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn adopt_directory(
        &self,
        req: Request<pb::AdoptDirectoryRequest>,
    ) -> Result<Response<pb::AdoptResponse>, Status> {
        let r = req.into_inner();
        let (pods, name) = (self.pods.clone(), r.name.clone());
        self.adopt("AdoptDirectory", hostpath::BACKEND, name, move || {
            require("path", &r.path)?;
            Ok(Adopt::Dir(AdoptDir {
                path: PathBuf::from(&r.path),
                capacity: capacity(&r.name, r.capacity_bytes)?,
                name: r.name,
                reflink_copy: r.reflink_copy,
                pods,
            }))
        })
        .await
    }

    async fn adopt_device(
        &self,
        req: Request<pb::AdoptDeviceRequest>,
    ) -> Result<Response<pb::AdoptResponse>, Status> {
        let r = req.into_inner();
        self.adopt("AdoptDevice", device::BACKEND, r.name.clone(), move || {
            require("device_uid", &r.device_uid)?;
            Ok(Adopt::Device(AdoptDevice {
                device_uid: r.device_uid,
                name: r.name,
            }))
        })
        .await
    }

    async fn clear_released_device(
        &self,
        req: Request<pb::ClearReleasedDeviceRequest>,
    ) -> Result<Response<pb::ClearReleasedDeviceResponse>, Status> {
        let r = req.into_inner();
        let driver = self.driver.clone();
        rpc("ClearReleasedDevice", r.volume.clone(), move || {
            require("device_uid", &r.device_uid)?;
            require("volume", &r.volume)?;
            let backend = device::BACKEND;
            let b = (driver.backend(backend)?.releases())
                .ok_or_else(|| Error::invalid(format!("backend {backend} releases nothing")))?;
            // The volume the release names: no operation on that id runs meanwhile.
            let _guard = driver.locks.try_lock(&r.volume)?;
            let req = ClearReleased {
                device_uid: r.device_uid,
                volume: r.volume,
            };
            Ok(match b.clear_released(&req)? {
                Cleared::Cleared {
                    reason,
                    candidate,
                    device_path,
                } => pb::ClearReleasedDeviceResponse {
                    cleared: true,
                    reason,
                    candidate,
                    device_path,
                },
                Cleared::AlreadyUnclaimed {
                    candidate,
                    device_path,
                } => pb::ClearReleasedDeviceResponse {
                    cleared: false,
                    reason: String::new(),
                    candidate,
                    device_path,
                },
            })
        })
        .await
    }

    async fn adopt_nfs_directory(
        &self,
        req: Request<pb::AdoptNfsDirectoryRequest>,
    ) -> Result<Response<pb::AdoptResponse>, Status> {
        let r = req.into_inner();
        let controller = self.controller;
        self.adopt("AdoptNfsDirectory", nfs::BACKEND, r.name.clone(), move || {
            if !controller {
                return Err(Error::precondition(
                    &r.name,
                    "this process serves no controller role; run it against the NFS controller's socket",
                ));
            }
            for (field, v) in [("server", &r.server), ("share", &r.share), ("sub_dir", &r.sub_dir)] {
                require(field, v)?;
            }
            Ok(Adopt::NfsDir(AdoptNfsDir {
                capacity: capacity(&r.name, r.capacity_bytes)?,
                server: r.server,
                share: r.share,
                sub_dir: r.sub_dir,
                name: r.name,
                on_delete: r.on_delete,
            }))
        })
        .await
    }
}
