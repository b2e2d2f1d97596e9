//! One generated request per field set of each Controller and Node RPC.

use super::strategies::*;
use super::Fuzz;
use ferrovol::proto as csi;
use proptest::prelude::*;

pub fn controller_rpcs(f: &Fuzz) {
    let p = &f.pools;
    let c = || f.driver.controller();

    let pools = p.clone();
    f.run(
        "CreateVolume",
        (
            name(p),
            range(),
            capabilities(),
            map(PARAM_KEYS),
            map(SECRET_KEYS),
            content_source(p),
            topology_requirement(),
            map(PARAM_KEYS),
        )
            .prop_map(|(name, cr, caps, params, secrets, src, topo, mutable)| {
                csi::CreateVolumeRequest {
                    name,
                    capacity_range: cr,
                    volume_capabilities: caps,
                    parameters: params,
                    secrets,
                    volume_content_source: src,
                    accessibility_requirements: topo,
                    mutable_parameters: mutable,
                }
            }),
        |req| {
            let pools = pools.clone();
            async move {
                let r = c().create_volume(req).await;
                // Later cases reach the volumes this one made.
                if let Ok(resp) = &r {
                    if let Some(v) = &resp.get_ref().volume {
                        pools.add_id(v.volume_id.clone());
                    }
                }
                r
            }
        },
    );
    f.run(
        "ValidateVolumeCapabilities",
        (volume_id(p), map(CONTEXT_KEYS), capabilities(), map(PARAM_KEYS), map(SECRET_KEYS))
            .prop_map(|(volume_id, ctx, caps, params, secrets)| {
                csi::ValidateVolumeCapabilitiesRequest {
                    volume_id,
                    volume_context: ctx,
                    volume_capabilities: caps,
                    parameters: params,
                    secrets,
                    mutable_parameters: Default::default(),
                }
            }),
        |req| async move { c().validate_volume_capabilities(req).await },
    );
    f.run(
        "ControllerPublishVolume",
        (volume_id(p), node_id(), opt_capability(), any::<bool>(), map(SECRET_KEYS), map(CONTEXT_KEYS))
            .prop_map(|(volume_id, node_id, cap, readonly, secrets, ctx)| {
                csi::ControllerPublishVolumeRequest {
                    volume_id,
                    node_id,
                    volume_capability: cap,
                    readonly,
                    secrets,
                    volume_context: ctx,
                }
            }),
        |req| async move { c().controller_publish_volume(req).await },
    );
    f.run(
        "ControllerUnpublishVolume",
        (volume_id(p), node_id(), map(SECRET_KEYS)).prop_map(|(volume_id, node_id, secrets)| {
            csi::ControllerUnpublishVolumeRequest { volume_id, node_id, secrets }
        }),
        |req| async move { c().controller_unpublish_volume(req).await },
    );
    f.run(
        "ListVolumes",
        (max_entries(), token()).prop_map(|(max_entries, starting_token)| {
            csi::ListVolumesRequest { max_entries, starting_token }
        }),
        |req| async move { c().list_volumes(req).await },
    );
    f.run(
        "GetCapacity",
        (capabilities(), map(PARAM_KEYS), proptest::option::of(topology())).prop_map(
            |(caps, params, topo)| csi::GetCapacityRequest {
                volume_capabilities: caps,
                parameters: params,
                accessible_topology: topo,
            },
        ),
        |req| async move { c().get_capacity(req).await },
    );
    f.run("ControllerGetCapabilities", Just(()), |_| async move {
        c().controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
            .await
    });
    f.run(
        "CreateSnapshot",
        (volume_id(p), name(p), map(SECRET_KEYS), map(PARAM_KEYS)).prop_map(
            |(source_volume_id, name, secrets, parameters)| csi::CreateSnapshotRequest {
                source_volume_id,
                name,
                secrets,
                parameters,
            },
        ),
        |req| async move { c().create_snapshot(req).await },
    );
    f.run(
        "DeleteSnapshot",
        (text(), map(SECRET_KEYS))
            .prop_map(|(snapshot_id, secrets)| csi::DeleteSnapshotRequest { snapshot_id, secrets }),
        |req| async move { c().delete_snapshot(req).await },
    );
    f.run(
        "ListSnapshots",
        (max_entries(), token(), volume_id(p), text(), map(SECRET_KEYS)).prop_map(
            |(max_entries, starting_token, source_volume_id, snapshot_id, secrets)| {
                csi::ListSnapshotsRequest {
                    max_entries,
                    starting_token,
                    source_volume_id,
                    snapshot_id,
                    secrets,
                }
            },
        ),
        |req| async move { c().list_snapshots(req).await },
    );
    f.run(
        "GetSnapshot",
        (text(), map(SECRET_KEYS))
            .prop_map(|(snapshot_id, secrets)| csi::GetSnapshotRequest { snapshot_id, secrets }),
        |req| async move { c().get_snapshot(req).await },
    );
    f.run(
        "ControllerExpandVolume",
        (volume_id(p), range(), map(SECRET_KEYS), opt_capability()).prop_map(
            |(volume_id, cr, secrets, cap)| csi::ControllerExpandVolumeRequest {
                volume_id,
                capacity_range: cr,
                secrets,
                volume_capability: cap,
            },
        ),
        |req| async move { c().controller_expand_volume(req).await },
    );
    f.run(
        "ControllerGetVolume",
        volume_id(p).prop_map(|volume_id| csi::ControllerGetVolumeRequest { volume_id }),
        |req| async move { c().controller_get_volume(req).await },
    );
    f.run(
        "ControllerModifyVolume",
        (volume_id(p), map(SECRET_KEYS), map(PARAM_KEYS)).prop_map(
            |(volume_id, secrets, mutable_parameters)| csi::ControllerModifyVolumeRequest {
                volume_id,
                secrets,
                mutable_parameters,
            },
        ),
        |req| async move { c().controller_modify_volume(req).await },
    );
}

pub fn node_rpcs(f: &Fuzz) {
    let p = &f.pools;
    let n = || f.driver.node();

    f.run("NodeGetCapabilities", Just(()), |_| async move {
        n().node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
            .await
    });
    f.run("NodeGetInfo", Just(()), |_| async move {
        n().node_get_info(csi::NodeGetInfoRequest {}).await
    });
    f.run(
        "NodeStageVolume",
        (volume_id(p), map(CONTEXT_KEYS), path(p), opt_capability(), map(SECRET_KEYS), map(CONTEXT_KEYS))
            .prop_map(|(volume_id, pctx, staging, cap, secrets, vctx)| {
                csi::NodeStageVolumeRequest {
                    volume_id,
                    publish_context: pctx,
                    staging_target_path: staging,
                    volume_capability: cap,
                    secrets,
                    volume_context: vctx,
                }
            }),
        |req| async move { n().node_stage_volume(req).await },
    );
    f.run(
        "NodePublishVolume",
        (
            volume_id(p),
            map(CONTEXT_KEYS),
            path(p),
            path(p),
            opt_capability(),
            any::<bool>(),
            map(SECRET_KEYS),
            map(CONTEXT_KEYS),
        )
            .prop_map(|(volume_id, pctx, staging, target, cap, readonly, secrets, vctx)| {
                csi::NodePublishVolumeRequest {
                    volume_id,
                    publish_context: pctx,
                    staging_target_path: staging,
                    target_path: target,
                    volume_capability: cap,
                    readonly,
                    secrets,
                    volume_context: vctx,
                }
            }),
        |req| async move { n().node_publish_volume(req).await },
    );
    f.run(
        "NodeGetVolumeStats",
        (volume_id(p), path(p), path(p)).prop_map(|(volume_id, volume_path, staging)| {
            csi::NodeGetVolumeStatsRequest {
                volume_id,
                volume_path,
                staging_target_path: staging,
            }
        }),
        |req| async move { n().node_get_volume_stats(req).await },
    );
    f.run(
        "NodeExpandVolume",
        (volume_id(p), path(p), range(), path(p), opt_capability(), map(SECRET_KEYS)).prop_map(
            |(volume_id, volume_path, cr, staging, cap, secrets)| csi::NodeExpandVolumeRequest {
                volume_id,
                volume_path,
                capacity_range: cr,
                staging_target_path: staging,
                volume_capability: cap,
                secrets,
            },
        ),
        |req| async move { n().node_expand_volume(req).await },
    );
    f.run(
        "NodeUnpublishVolume",
        (volume_id(p), path(p))
            .prop_map(|(volume_id, target_path)| csi::NodeUnpublishVolumeRequest { volume_id, target_path }),
        |req| async move { n().node_unpublish_volume(req).await },
    );
    f.run(
        "NodeUnstageVolume",
        (volume_id(p), path(p)).prop_map(|(volume_id, staging_target_path)| {
            csi::NodeUnstageVolumeRequest { volume_id, staging_target_path }
        }),
        |req| async move { n().node_unstage_volume(req).await },
    );
}

/// Last, so the volumes it removes served every other RPC first.
pub fn delete_volume(f: &Fuzz) {
    let c = || f.driver.controller();
    f.run(
        "DeleteVolume",
        (volume_id(&f.pools), map(SECRET_KEYS))
            .prop_map(|(volume_id, secrets)| csi::DeleteVolumeRequest { volume_id, secrets }),
        |req| async move { c().delete_volume(req).await },
    );
}
