//! CSI Node service.

use super::convert::{self, abs_path};
use super::{check_node_served, rpc_inline, volume_rpc, Driver};
use crate::error::Error;
use crate::error::Result;
use crate::proto as csi;
use crate::volume::{PublishRequest, StageRequest};
use csi::node_service_capability::rpc::Type as Cap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct NodeService(pub Arc<Driver>);

#[tonic::async_trait]
impl csi::node_server::Node for NodeService {
    async fn node_stage_volume(
        &self,
        req: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        volume_rpc(&self.0, "NodeStageVolume", req, |d, req, id| {
            let staging = abs_path("staging_target_path", &req.staging_target_path)?;
            let cap = convert::required_capability(req.volume_capability.as_ref())?;
            let staging = d.paths.target("staging_target_path", &staging)?;
            let (backend, id) = d.resolve(id, &req.volume_id)?;
            check_node_served(backend.as_ref(), &req.volume_id, &cap)?;
            let stage = StageRequest {
                id,
                staging,
                capability: cap,
                volume_context: convert::parameters(&req.volume_context),
                publish_context: convert::parameters(&req.publish_context),
            };
            let _guard = d.locks.try_lock(&req.volume_id)?;
            backend.stage(&stage)?;
            Ok(csi::NodeStageVolumeResponse {})
        })
        .await
    }

    async fn node_unstage_volume(
        &self,
        req: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        volume_rpc(&self.0, "NodeUnstageVolume", req, |d, req, id| {
            let staging = abs_path("staging_target_path", &req.staging_target_path)?;
            let staging = d.paths.target("staging_target_path", &staging)?;
            let Ok((backend, id)) = d.resolve(id, &req.volume_id) else {
                return crate::backend::nothing_mounted_at(&req.volume_id, staging.as_path())
                    .map(|()| csi::NodeUnstageVolumeResponse {});
            };
            let _guard = d.locks.try_lock(&req.volume_id)?;
            backend.unstage(&id, &staging)?;
            Ok(csi::NodeUnstageVolumeResponse {})
        })
        .await
    }

    async fn node_publish_volume(
        &self,
        req: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        volume_rpc(&self.0, "NodePublishVolume", req, |d, req, id| {
            let staging = if req.staging_target_path.is_empty() {
                None
            } else {
                let path = abs_path("staging_target_path", &req.staging_target_path)?;
                Some(d.paths.target("staging_target_path", &path)?)
            };
            let target = abs_path("target_path", &req.target_path)?;
            let cap = convert::required_capability(req.volume_capability.as_ref())?;
            let target = d.paths.target("target_path", &target)?;
            let (backend, id) = d.resolve(id, &req.volume_id)?;
            check_node_served(backend.as_ref(), &req.volume_id, &cap)?;
            if staging.is_none() && backend.caps().stage {
                let why = "staging_target_path is required (the driver stages volumes)";
                return Err(Error::precondition(&req.volume_id, why));
            }
            let publish = PublishRequest {
                id,
                staging,
                target,
                capability: cap,
                read_only: req.readonly,
                volume_context: convert::parameters(&req.volume_context),
                publish_context: convert::parameters(&req.publish_context),
            };
            let _guard = d.locks.try_lock(&req.volume_id)?;
            backend.publish(&publish)?;
            Ok(csi::NodePublishVolumeResponse {})
        })
        .await
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        volume_rpc(&self.0, "NodeUnpublishVolume", req, |d, req, id| {
            let target = abs_path("target_path", &req.target_path)?;
            let target = d.paths.target("target_path", &target)?;
            let Ok((backend, id)) = d.resolve(id, &req.volume_id) else {
                return crate::backend::nothing_mounted_at(&req.volume_id, target.as_path())
                    .map(|()| csi::NodeUnpublishVolumeResponse {});
            };
            let _guard = d.locks.try_lock(&req.volume_id)?;
            backend.unpublish(&id, &target)?;
            Ok(csi::NodeUnpublishVolumeResponse {})
        })
        .await
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        use csi::volume_usage::Unit;
        volume_rpc(&self.0, "NodeGetVolumeStats", req, |d, req, id| {
            convert::require("volume_path", &req.volume_path)?;
            let (backend, id) = d.resolve(id, &req.volume_id)?;
            let path = convert::volume_path(&req.volume_id, &req.volume_path)?;
            let stats = backend.stats(&id, &path)?;
            let usage = |unit: Unit, (total, used, free): (u64, u64, u64)| csi::VolumeUsage {
                available: free as i64,
                total: total as i64,
                used: used as i64,
                unit: unit as i32,
            };
            let bytes = (stats.total_bytes, stats.used_bytes, stats.available_bytes);
            let inodes = stats.inodes.map(|i| usage(Unit::Inodes, i));
            Ok(csi::NodeGetVolumeStatsResponse {
                usage: [Some(usage(Unit::Bytes, bytes)), inodes]
                    .into_iter()
                    .flatten()
                    .collect(),
                volume_condition: stats.condition.as_ref().map(convert::condition),
            })
        })
        .await
    }

    async fn node_expand_volume(
        &self,
        req: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        volume_rpc(&self.0, "NodeExpandVolume", req, |d, req, id| {
            convert::require("volume_path", &req.volume_path)?;
            let range = convert::capacity_range(req.capacity_range.as_ref())?;
            if let Some(cap) = req.volume_capability.as_ref() {
                convert::capability(cap)?;
            }
            let (backend, id) = d.resolve(id, &req.volume_id)?;
            let path = convert::volume_path(&req.volume_id, &req.volume_path)?;
            let _guard = d.locks.try_lock(&req.volume_id)?;
            let capacity = backend.node_expand(&id, &path, range)?;
            Ok(csi::NodeExpandVolumeResponse {
                capacity_bytes: capacity as i64,
            })
        })
        .await
    }

    async fn node_get_capabilities(
        &self,
        _req: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        use csi::node_service_capability::{Rpc, Type};
        let d = &self.0;
        rpc_inline("NodeGetCapabilities", || {
            // The union over the backends this process serves.
            let mut caps = vec![
                Cap::GetVolumeStats,
                Cap::VolumeCondition,
                Cap::SingleNodeMultiWriter,
            ];
            if d.any(|c| c.stage) {
                caps.push(Cap::StageUnstageVolume);
            }
            if d.any(|c| c.node_expansion) {
                caps.push(Cap::ExpandVolume);
            }
            let capabilities = caps.into_iter().map(|c| csi::NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: c as i32 })),
            });
            Ok(csi::NodeGetCapabilitiesResponse {
                capabilities: capabilities.collect(),
            })
        })
    }

    async fn node_get_info(
        &self,
        _req: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        let d = &self.0;
        rpc_inline("NodeGetInfo", || {
            let node_local = d.any(|c| c.reach == crate::backend::Reach::NodeLocal);
            Ok(csi::NodeGetInfoResponse {
                node_id: d.node_id.clone(),
                max_volumes_per_node: d.max_volumes_per_node,
                accessible_topology: node_local.then(|| convert::node_topology(&d.node_id)),
            })
        })
    }
}
