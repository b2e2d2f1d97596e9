//! One generated request per field set of each Controller and Node RPC.

use super::plausible::*;
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
        either(|g| {
            (
                name_g(p, g),
                range_g(g),
                capabilities_g(g),
                map_g(PARAM_KEYS, g),
                map_g(SECRET_KEYS, g),
                if g {
                    Just(None).boxed()
                } else {
                    content_source(p)
                },
                if g {
                    Just(None).boxed()
                } else {
                    topology_requirement()
                },
                map_g(PARAM_KEYS, g),
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
                })
                .boxed()
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
        either(|g| {
            (
                volume_id_g(p, g),
                map_g(CONTEXT_KEYS, g),
                capabilities_g(g),
                map_g(PARAM_KEYS, g),
                map_g(SECRET_KEYS, g),
            )
                .prop_map(|(volume_id, ctx, caps, params, secrets)| {
                    csi::ValidateVolumeCapabilitiesRequest {
                        volume_id,
                        volume_context: ctx,
                        volume_capabilities: caps,
                        parameters: params,
                        secrets,
                        mutable_parameters: Default::default(),
                    }
                })
                .boxed()
        }),
        |req| async move { c().validate_volume_capabilities(req).await },
    );
    f.run(
        "ControllerPublishVolume",
        either(|g| {
            (
                volume_id_g(p, g),
                node_id(),
                opt_capability_g(g),
                any::<bool>(),
                map_g(SECRET_KEYS, g),
                map_g(CONTEXT_KEYS, g),
            )
                .prop_map(|(volume_id, node_id, cap, readonly, secrets, ctx)| {
                    csi::ControllerPublishVolumeRequest {
                        volume_id,
                        node_id,
                        volume_capability: cap,
                        readonly,
                        secrets,
                        volume_context: ctx,
                    }
                })
                .boxed()
        }),
        |req| async move { c().controller_publish_volume(req).await },
    );
    f.run(
        "ControllerUnpublishVolume",
        either(|g| {
            (volume_id_g(p, g), node_id(), map_g(SECRET_KEYS, g))
                .prop_map(
                    |(volume_id, node_id, secrets)| csi::ControllerUnpublishVolumeRequest {
                        volume_id,
                        node_id,
                        secrets,
                    },
                )
                .boxed()
        }),
        |req| async move { c().controller_unpublish_volume(req).await },
    );
    f.run(
        "ListVolumes",
        (max_entries(), token()).prop_map(|(max_entries, starting_token)| {
            csi::ListVolumesRequest {
                max_entries,
                starting_token,
            }
        }),
        |req| async move { c().list_volumes(req).await },
    );
    f.run(
        "GetCapacity",
        either(|g| {
            (
                capabilities_g(g),
                map_g(PARAM_KEYS, g),
                proptest::option::of(topology()),
            )
                .prop_map(|(caps, params, topo)| csi::GetCapacityRequest {
                    volume_capabilities: caps,
                    parameters: params,
                    accessible_topology: topo,
                })
                .boxed()
        }),
        |req| async move { c().get_capacity(req).await },
    );
    f.run("ControllerGetCapabilities", Just(()), |_| async move {
        c().controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
            .await
    });
    f.run(
        "CreateSnapshot",
        either(|g| {
            (
                volume_id_g(p, g),
                name_g(p, g),
                map_g(SECRET_KEYS, g),
                map_g(PARAM_KEYS, g),
            )
                .prop_map(|(source_volume_id, name, secrets, parameters)| {
                    csi::CreateSnapshotRequest {
                        source_volume_id,
                        name,
                        secrets,
                        parameters,
                    }
                })
                .boxed()
        }),
        |req| async move { c().create_snapshot(req).await },
    );
    f.run(
        "DeleteSnapshot",
        either(|g| {
            (text(), map_g(SECRET_KEYS, g))
                .prop_map(|(snapshot_id, secrets)| csi::DeleteSnapshotRequest {
                    snapshot_id,
                    secrets,
                })
                .boxed()
        }),
        |req| async move { c().delete_snapshot(req).await },
    );
    f.run(
        "ListSnapshots",
        either(|g| {
            (
                max_entries(),
                token(),
                volume_id_g(p, g),
                text(),
                map_g(SECRET_KEYS, g),
            )
                .prop_map(
                    |(max_entries, starting_token, source_volume_id, snapshot_id, secrets)| {
                        csi::ListSnapshotsRequest {
                            max_entries,
                            starting_token,
                            source_volume_id,
                            snapshot_id,
                            secrets,
                        }
                    },
                )
                .boxed()
        }),
        |req| async move { c().list_snapshots(req).await },
    );
    f.run(
        "GetSnapshot",
        either(|g| {
            (text(), map_g(SECRET_KEYS, g))
                .prop_map(|(snapshot_id, secrets)| csi::GetSnapshotRequest {
                    snapshot_id,
                    secrets,
                })
                .boxed()
        }),
        |req| async move { c().get_snapshot(req).await },
    );
    f.run(
        "ControllerExpandVolume",
        either(|g| {
            (
                volume_id_g(p, g),
                range_g(g),
                map_g(SECRET_KEYS, g),
                opt_capability_g(g),
            )
                .prop_map(
                    |(volume_id, cr, secrets, cap)| csi::ControllerExpandVolumeRequest {
                        volume_id,
                        capacity_range: cr,
                        secrets,
                        volume_capability: cap,
                    },
                )
                .boxed()
        }),
        |req| async move { c().controller_expand_volume(req).await },
    );
    f.run(
        "ControllerGetVolume",
        either(|g| {
            volume_id_g(p, g)
                .prop_map(|volume_id| csi::ControllerGetVolumeRequest { volume_id })
                .boxed()
        }),
        |req| async move { c().controller_get_volume(req).await },
    );
    f.run(
        "ControllerModifyVolume",
        either(|g| {
            (
                volume_id_g(p, g),
                map_g(SECRET_KEYS, g),
                map_g(PARAM_KEYS, g),
            )
                .prop_map(|(volume_id, secrets, mutable_parameters)| {
                    csi::ControllerModifyVolumeRequest {
                        volume_id,
                        secrets,
                        mutable_parameters,
                    }
                })
                .boxed()
        }),
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
        either(|g| {
            (
                volume_id_g(p, g),
                map_g(CONTEXT_KEYS, g),
                path_g(p, g),
                opt_capability_g(g),
                map_g(SECRET_KEYS, g),
                map_g(CONTEXT_KEYS, g),
            )
                .prop_map(|(volume_id, pctx, staging, cap, secrets, vctx)| {
                    csi::NodeStageVolumeRequest {
                        volume_id,
                        publish_context: pctx,
                        staging_target_path: staging,
                        volume_capability: cap,
                        secrets,
                        volume_context: vctx,
                    }
                })
                .boxed()
        }),
        |req| {
            let pools = p.clone();
            async move {
                let pair = (req.volume_id.clone(), req.staging_target_path.clone());
                let r = n().node_stage_volume(req).await;
                if r.is_ok() {
                    pools.staged.lock().unwrap().push(pair);
                }
                r
            }
        },
    );
    f.run(
        "NodePublishVolume",
        either(|g| {
            let publish = (
                volume_id_g(p, g),
                map_g(CONTEXT_KEYS, g),
                path_g(p, g),
                path_g(p, g),
                opt_capability_g(g),
                any::<bool>(),
                map_g(SECRET_KEYS, g),
                map_g(CONTEXT_KEYS, g),
            )
                .prop_map(
                    |(volume_id, pctx, staging, target, cap, readonly, secrets, vctx)| {
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
                    },
                );
            // A plausible publish names a volume staged earlier, at its staging path.
            let pools = p.clone();
            (publish, any::<usize>())
                .prop_map(move |(mut req, i)| {
                    if let Some((id, staging)) = g.then(|| pools.staged(i)).flatten() {
                        req.volume_id = id;
                        req.staging_target_path = staging;
                    }
                    req
                })
                .boxed()
        }),
        |req| async move { n().node_publish_volume(req).await },
    );
    f.run(
        "NodeGetVolumeStats",
        either(|g| {
            (volume_id_g(p, g), path_g(p, g), path_g(p, g))
                .prop_map(
                    |(volume_id, volume_path, staging)| csi::NodeGetVolumeStatsRequest {
                        volume_id,
                        volume_path,
                        staging_target_path: staging,
                    },
                )
                .boxed()
        }),
        |req| async move { n().node_get_volume_stats(req).await },
    );
    f.run(
        "NodeExpandVolume",
        either(|g| {
            (
                volume_id_g(p, g),
                path_g(p, g),
                range_g(g),
                path_g(p, g),
                opt_capability_g(g),
                map_g(SECRET_KEYS, g),
            )
                .prop_map(|(volume_id, volume_path, cr, staging, cap, secrets)| {
                    csi::NodeExpandVolumeRequest {
                        volume_id,
                        volume_path,
                        capacity_range: cr,
                        staging_target_path: staging,
                        volume_capability: cap,
                        secrets,
                    }
                })
                .boxed()
        }),
        |req| async move { n().node_expand_volume(req).await },
    );
    f.run(
        "NodeUnpublishVolume",
        either(|g| {
            (volume_id_g(p, g), path_g(p, g))
                .prop_map(|(volume_id, target_path)| csi::NodeUnpublishVolumeRequest {
                    volume_id,
                    target_path,
                })
                .boxed()
        }),
        |req| async move { n().node_unpublish_volume(req).await },
    );
    f.run(
        "NodeUnstageVolume",
        either(|g| {
            (volume_id_g(p, g), path_g(p, g))
                .prop_map(
                    |(volume_id, staging_target_path)| csi::NodeUnstageVolumeRequest {
                        volume_id,
                        staging_target_path,
                    },
                )
                .boxed()
        }),
        |req| async move { n().node_unstage_volume(req).await },
    );
}

/// Last, so the volumes it removes served every other RPC first.
pub fn delete_volume(f: &Fuzz) {
    let c = || f.driver.controller();
    f.run(
        "DeleteVolume",
        either(|g| {
            (volume_id_g(&f.pools, g), map_g(SECRET_KEYS, g))
                .prop_map(|(volume_id, secrets)| csi::DeleteVolumeRequest { volume_id, secrets })
                .boxed()
        }),
        |req| async move { c().delete_volume(req).await },
    );
}
