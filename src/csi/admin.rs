//! The admin service (proto/admin.proto): adoption of existing data, called by an operator
//! through `ferrovol ctl adopt` on the node's socket. Thin like the CSI services: validate,
//! lock the volume, hand the work to the backend on the blocking pool.

use super::{rpc, Driver};
use crate::backend::adopt::{AdoptBackend, AdoptDevice, AdoptDir};
use crate::backend::{device, hostpath};
use crate::error::{Error, Result};
use crate::proto::admin as pb;
use crate::volume::{VolumeInfo, TOPOLOGY_NODE_KEY};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminService {
    driver: Arc<Driver>,
}

impl AdminService {
    pub fn new(driver: Arc<Driver>) -> Self {
        AdminService { driver }
    }
}

/// The adopting side of the backend `name`, or why there is none here.
fn adopter<'a>(driver: &'a Driver, name: &str) -> Result<&'a dyn AdoptBackend> {
    driver
        .backend(name)?
        .adoption()
        .ok_or_else(|| Error::invalid(format!("backend {name} adopts nothing")))
}

fn response(driver: &Driver, info: VolumeInfo) -> pb::AdoptResponse {
    pb::AdoptResponse {
        volume_id: info.id,
        capacity_bytes: info.capacity_bytes as i64,
        capacity_enforced: info
            .context
            .get("ferrovol.io/capacity-enforced")
            .is_some_and(|v| v == "true"),
        fs_type: info
            .context
            .get("ferrovol.io/fs-type")
            .cloned()
            .unwrap_or_default(),
        volume_context: info.context.into_iter().collect(),
        driver_name: driver.name.clone(),
        node_id: info.node.unwrap_or_else(|| driver.node_id.clone()),
        topology_key: TOPOLOGY_NODE_KEY.to_string(),
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn adopt_directory(
        &self,
        req: Request<pb::AdoptDirectoryRequest>,
    ) -> Result<Response<pb::AdoptResponse>, Status> {
        let req = req.into_inner();
        let d = self.driver.clone();
        rpc("AdoptDirectory", req.name.clone(), move || {
            if req.path.is_empty() {
                return Err(Error::invalid("path is required"));
            }
            if req.capacity_bytes <= 0 {
                return Err(Error::invalid(format!(
                    "volume {}: capacity_bytes must be positive",
                    req.name
                )));
            }
            let b = adopter(&d, hostpath::BACKEND)?;
            let id = b.adopt_id(&req.name)?;
            let _guard = d.locks.try_lock(&id.to_string())?;
            let info = b.adopt_dir(&AdoptDir {
                path: PathBuf::from(&req.path),
                name: req.name,
                capacity: req.capacity_bytes as u64,
            })?;
            Ok(response(&d, info))
        })
        .await
    }

    async fn adopt_device(
        &self,
        req: Request<pb::AdoptDeviceRequest>,
    ) -> Result<Response<pb::AdoptResponse>, Status> {
        let req = req.into_inner();
        let d = self.driver.clone();
        rpc("AdoptDevice", req.name.clone(), move || {
            if req.device_uid.is_empty() {
                return Err(Error::invalid("device_uid is required"));
            }
            let b = adopter(&d, device::BACKEND)?;
            let id = b.adopt_id(&req.name)?;
            let _guard = d.locks.try_lock(&id.to_string())?;
            let info = b.adopt_device(&AdoptDevice {
                device_uid: req.device_uid,
                name: req.name,
            })?;
            Ok(response(&d, info))
        })
        .await
    }
}
