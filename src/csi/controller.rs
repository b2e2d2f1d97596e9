//! CSI Controller service.

use super::convert::{self, require};
use super::limits::WithinLimits;
use super::{
    check_served, checked_rpc, rpc, rpc_inline, rpc_queued, snapshots, volume_rpc, Driver,
};
use crate::backend::{CapacityRequest, Done};
use crate::error::{Error, Result};
use crate::proto as csi;
use crate::volume::{CreateRequest, TopologyRequirement, VolumeId};
use csi::controller_service_capability::rpc::Type as Cap;
use csi::validate_volume_capabilities_response::Confirmed;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ControllerService(pub Arc<Driver>);

#[tonic::async_trait]
impl csi::controller_server::Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let req = req.into_inner();
        let d = self.0.clone();
        // A copy from a snapshot or volume is long: always on the pool.
        let short = req.volume_content_source.is_none()
            && d.backend_named(req.parameters.get("backend").map(String::as_str))
                .is_ok_and(|b| b.caps().quick_provisioning);
        rpc_queued("CreateVolume", req.name.clone(), short, move || {
            req.check_limits().map_err(Error::InvalidArgument)?;
            require("name", &req.name)?;
            let parameters = convert::parameters(&req.parameters);
            let backend = d.backend_named(parameters.get("backend").map(String::as_str))?;
            let create = CreateRequest {
                name: req.name.clone(),
                capacity: convert::capacity_range(req.capacity_range.as_ref())?,
                capabilities: convert::capabilities(&req.volume_capabilities)?,
                parameters,
                topology: convert::topology_requirement(req.accessibility_requirements.as_ref()),
                content_source: snapshots::content_source(
                    &d,
                    &req.name,
                    req.volume_content_source.as_ref(),
                )?,
            };
            // Each backend copies only its own volumes and snapshots.
            let foreign = create.content_source.as_ref();
            if let Some(src) = foreign.filter(|src| src.backend() != backend.name()) {
                let (name, kind, id, from) = (&req.name, backend.name(), src.id(), src.backend());
                let why = format!("a {kind} volume cannot be made from {id} (a {from} source)");
                return Err(Error::invalid(format!("volume {name}: {why}")));
            }
            let id = backend.create_id(&create)?;
            check_served(backend.as_ref(), &req.name, &create.capabilities)?;
            let guard = d.locks.try_lock(&id.to_string())?;
            let source = create.content_source.as_ref();
            let reading = source.map(|src| d.locks.try_read(&src.id())).transpose()?;
            let source = req.volume_content_source;
            // The volume's lock, and the source's, are held until the commit is decided and
            // its steps have run.
            Ok(backend.create(&create)?.map(move |info| {
                drop((guard, reading));
                let mut volume = convert::volume(&info);
                volume.content_source = source;
                csi::CreateVolumeResponse {
                    volume: Some(volume),
                }
            }))
        })
        .await
    }

    async fn delete_volume(
        &self,
        req: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let req = req.into_inner();
        let d = self.0.clone();
        // Only picks the thread: an id that does not parse is answered on the pool.
        let short = VolumeId::parse(&req.volume_id)
            .ok()
            .flatten()
            .and_then(|id| d.backend_for(&id.backend, &id).ok())
            .is_some_and(|b| b.caps().quick_provisioning);
        rpc_queued("DeleteVolume", req.volume_id.clone(), short, move || {
            req.check_limits().map_err(Error::InvalidArgument)?;
            let parsed = VolumeId::parse(&req.volume_id)?;
            parsed.as_ref().map_or(Ok(()), |id| d.refuse_unserved(id))?;
            // Deleting what never existed succeeds: DeleteVolume is idempotent.
            let Ok((backend, id)) = d.resolve(parsed, &req.volume_id) else {
                return Ok(Done::Now(csi::DeleteVolumeResponse {}));
            };
            let guard = d.locks.try_lock_delete(&id.to_string())?;
            Ok(backend.delete(&id)?.map(move |()| {
                drop(guard);
                csi::DeleteVolumeResponse {}
            }))
        })
        .await
    }

    async fn controller_publish_volume(
        &self,
        req: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        volume_rpc(&self.0, "ControllerPublishVolume", req, |d, req, id| {
            require("node_id", &req.node_id)?;
            let cap = convert::required_capability(req.volume_capability.as_ref())?;
            let (backend, id) = d.resolve(id, &req.volume_id)?;
            check_served(backend.as_ref(), &req.volume_id, std::slice::from_ref(&cap))?;
            if !backend.caps().controller_publish {
                // Nothing to attach for this backend's volumes: any node can use them as is.
                backend.get(&id)?;
                return Ok(csi::ControllerPublishVolumeResponse::default());
            }
            let _guard = d.locks.try_lock(&req.volume_id)?;
            let _gate = d.publish_gate.lock().expect("publish gate poisoned");
            if d.max_volumes_per_node > 0 {
                // Republishing an already published volume is idempotent, not a new attachment.
                let already = backend.get(&id)?.published_nodes.contains(&req.node_id);
                let count: usize = d
                    .backends
                    .iter()
                    .map(|b| b.published_count(&req.node_id))
                    .sum();
                if !already && count as i64 >= d.max_volumes_per_node {
                    return Err(Error::NodeFull {
                        volume: req.volume_id.clone(),
                        node: req.node_id.clone(),
                        count,
                    });
                }
            }
            let publish_context =
                backend.controller_publish(&id, &req.node_id, req.readonly, &cap)?;
            Ok(csi::ControllerPublishVolumeResponse {
                publish_context: publish_context.into_iter().collect(),
            })
        })
        .await
    }

    async fn controller_unpublish_volume(
        &self,
        req: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        volume_rpc(&self.0, "ControllerUnpublishVolume", req, |d, req, id| {
            // A volume that no longer exists is unpublished from every node: OK, as the spec asks.
            let Ok((backend, id)) = d.resolve(id, &req.volume_id) else {
                return Ok(csi::ControllerUnpublishVolumeResponse {});
            };
            let _guard = d.locks.try_lock(&req.volume_id)?;
            let node = (!req.node_id.is_empty()).then_some(req.node_id.as_str());
            backend.controller_unpublish(&id, node)?;
            Ok(csi::ControllerUnpublishVolumeResponse {})
        })
        .await
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        volume_rpc(&self.0, "ValidateVolumeCapabilities", req, |d, req, id| {
            let caps = convert::capabilities(&req.volume_capabilities)?;
            let (backend, id) = d.resolve(id, &req.volume_id)?;
            let params = convert::parameters(&req.parameters);
            // None: every capability is confirmed; else why not.
            let refusal = backend.validate(&id, &caps, &params)?;
            let confirmed = refusal.is_none().then(|| Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: Default::default(),
            });
            Ok(csi::ValidateVolumeCapabilitiesResponse {
                confirmed,
                message: refusal.unwrap_or_default(),
            })
        })
        .await
    }

    async fn list_volumes(
        &self,
        req: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        checked_rpc(&self.0, "ListVolumes", req, |d, req| {
            if req.max_entries < 0 {
                return Err(Error::invalid("max_entries must not be negative"));
            }
            let (entries, next_token) = super::paging::page_across(
                &d.backends,
                |b| b.name(),
                &req.starting_token,
                req.max_entries as usize,
                |b, after, room| {
                    let page = b.list(after, room)?;
                    Ok((page.entries, page.next_after))
                },
            )?;
            Ok(csi::ListVolumesResponse {
                entries: entries
                    .iter()
                    .map(|info| csi::list_volumes_response::Entry {
                        volume: Some(convert::volume(info)),
                        status: Some(csi::list_volumes_response::VolumeStatus {
                            published_node_ids: info.published_nodes.clone(),
                            volume_condition: Some(convert::condition(&info.condition)),
                        }),
                    })
                    .collect(),
                next_token,
            })
        })
        .await
    }

    async fn get_capacity(
        &self,
        req: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        checked_rpc(&self.0, "GetCapacity", req, |d, req| {
            let caps = req
                .volume_capabilities
                .iter()
                .map(convert::capability)
                .collect::<Result<Vec<_>>>()?;
            let parameters = convert::parameters(&req.parameters);
            let backend = d.backend_named(parameters.get("backend").map(String::as_str))?;
            let topology = req
                .accessible_topology
                .as_ref()
                .map(|t| TopologyRequirement {
                    requisite: vec![convert::parameters(&t.segments)],
                    preferred: vec![],
                });
            let capacity = backend.capacity(&CapacityRequest {
                parameters,
                capabilities: caps,
                topology,
            })?;
            Ok(csi::GetCapacityResponse {
                available_capacity: capacity.available as i64,
                maximum_volume_size: Some(capacity.maximum_volume_size as i64),
                minimum_volume_size: None,
            })
        })
        .await
    }

    async fn controller_get_capabilities(
        &self,
        _req: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        use csi::controller_service_capability::{Rpc, Type};
        let d = &self.0;
        rpc_inline("ControllerGetCapabilities", || {
            // The union over the backends this process serves.
            let mut caps = vec![
                Cap::CreateDeleteVolume,
                Cap::ListVolumes,
                Cap::GetCapacity,
                Cap::ListVolumesPublishedNodes,
                Cap::VolumeCondition,
                Cap::GetVolume,
                Cap::SingleNodeMultiWriter,
            ];
            if d.any(|c| c.controller_publish) {
                caps.extend([Cap::PublishUnpublishVolume, Cap::PublishReadonly]);
            }
            if d.any(|c| c.expansion != crate::backend::Expansion::None) {
                caps.push(Cap::ExpandVolume);
            }
            if d.backends.iter().any(|b| b.snapshots().is_some()) {
                caps.extend([Cap::CreateDeleteSnapshot, Cap::ListSnapshots]);
            }
            if d.any(|c| c.clone) {
                caps.push(Cap::CloneVolume);
            }
            let capabilities = caps.into_iter().map(|c| csi::ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: c as i32 })),
            });
            Ok(csi::ControllerGetCapabilitiesResponse {
                capabilities: capabilities.collect(),
            })
        })
    }

    async fn controller_expand_volume(
        &self,
        req: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        volume_rpc(&self.0, "ControllerExpandVolume", req, |d, req, id| {
            if req.capacity_range.is_none() {
                return Err(Error::invalid("capacity_range is required"));
            }
            let range = convert::capacity_range(req.capacity_range.as_ref())?;
            if let Some(cap) = req.volume_capability.as_ref() {
                convert::capability(cap)?;
            }
            let (backend, id) = d.resolve(id, &req.volume_id)?;
            let _guard = d.locks.try_lock(&req.volume_id)?;
            let (capacity, node_expansion_required) = backend.expand(&id, range)?;
            Ok(csi::ControllerExpandVolumeResponse {
                capacity_bytes: capacity as i64,
                node_expansion_required,
            })
        })
        .await
    }

    async fn controller_get_volume(
        &self,
        req: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        volume_rpc(&self.0, "ControllerGetVolume", req, |d, req, id| {
            let (backend, id) = d.resolve(id, &req.volume_id)?;
            let info = backend.get(&id)?;
            Ok(csi::ControllerGetVolumeResponse {
                volume: Some(convert::volume(&info)),
                status: Some(csi::controller_get_volume_response::VolumeStatus {
                    published_node_ids: info.published_nodes.clone(),
                    volume_condition: Some(convert::condition(&info.condition)),
                }),
            })
        })
        .await
    }

    async fn controller_modify_volume(
        &self,
        _req: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        rpc_inline("ControllerModifyVolume", || {
            Err(Error::Unimplemented(
                "ControllerModifyVolume is not offered by this driver".into(),
            ))
        })
    }

    async fn create_snapshot(
        &self,
        req: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        let d = self.0.clone();
        rpc("CreateSnapshot", req.get_ref().name.clone(), move || {
            snapshots::create(&d, req.into_inner())
        })
        .await
    }

    async fn delete_snapshot(
        &self,
        req: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        let req = req.into_inner();
        let d = self.0.clone();
        rpc("DeleteSnapshot", req.snapshot_id.clone(), move || {
            snapshots::delete(&d, req)
        })
        .await
    }

    async fn list_snapshots(
        &self,
        req: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        let d = self.0.clone();
        rpc("ListSnapshots", String::new(), move || {
            snapshots::list(&d, req.into_inner())
        })
        .await
    }

    async fn get_snapshot(
        &self,
        _req: Request<csi::GetSnapshotRequest>,
    ) -> Result<Response<csi::GetSnapshotResponse>, Status> {
        rpc_inline("GetSnapshot", || {
            // Not in csi-sanity v5.4.0; ListSnapshots with snapshot_id answers the same.
            Err(Error::Unimplemented(
                "GetSnapshot is not offered (snapshots are found by ListSnapshots with snapshot_id)".into(),
            ))
        })
    }
}
