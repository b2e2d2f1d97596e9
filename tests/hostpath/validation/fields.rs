//! Requests with missing or malformed fields: InvalidArgument, before anything is touched.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn missing_fields_are_invalid_argument() {
    let d = Driver::start().await;
    let id = d.create("present", 4 * MIB, mount_cap()).await.volume_id;
    let staging = d.staging("present");
    let target = d.target("present", "pod");
    let mut c = d.controller();
    let mut n = d.node();
    let ia = Code::InvalidArgument;
    let no_type = csi::VolumeCapability {
        access_type: None,
        ..mount_cap()
    };
    let no_mode = csi::VolumeCapability {
        access_mode: None,
        ..mount_cap()
    };

    // CreateVolume
    expect_code(
        c.create_volume(create_req("", 4 * MIB, mount_cap())).await,
        ia,
        "create without name",
    );
    let mut r = create_req("nocaps", 4 * MIB, mount_cap());
    r.volume_capabilities.clear();
    expect_code(c.create_volume(r).await, ia, "create without capabilities");
    expect_code(
        c.create_volume(create_req("notype", 4 * MIB, no_type.clone()))
            .await,
        ia,
        "create, capability without access type",
    );
    expect_code(
        c.create_volume(create_req("nomode", 4 * MIB, no_mode.clone()))
            .await,
        ia,
        "create, capability without access mode",
    );
    let bad_mode = csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: 0 }),
        ..mount_cap()
    };
    expect_code(
        c.create_volume(create_req("unknownmode", 4 * MIB, bad_mode))
            .await,
        ia,
        "create with UNKNOWN mode",
    );

    // DeleteVolume, ControllerGetVolume
    expect_code(
        c.delete_volume(delete_req("")).await,
        ia,
        "delete without id",
    );
    expect_code(
        c.controller_get_volume(get_req("")).await,
        ia,
        "get without id",
    );

    // ControllerPublish / Unpublish
    expect_code(
        c.controller_publish_volume(controller_publish_req("", mount_cap(), false))
            .await,
        ia,
        "cpublish without id",
    );
    let mut r = controller_publish_req(&id, mount_cap(), false);
    r.node_id.clear();
    expect_code(
        c.controller_publish_volume(r).await,
        ia,
        "cpublish without node id",
    );
    let mut r = controller_publish_req(&id, mount_cap(), false);
    r.volume_capability = None;
    expect_code(
        c.controller_publish_volume(r).await,
        ia,
        "cpublish without capability",
    );
    expect_code(
        c.controller_unpublish_volume(controller_unpublish_req(""))
            .await,
        ia,
        "cunpublish without id",
    );

    // ValidateVolumeCapabilities
    expect_code(
        c.validate_volume_capabilities(validate_req("", mount_cap()))
            .await,
        ia,
        "validate without id",
    );
    let mut r = validate_req(&id, mount_cap());
    r.volume_capabilities.clear();
    expect_code(
        c.validate_volume_capabilities(r).await,
        ia,
        "validate without capabilities",
    );
    expect_code(
        c.validate_volume_capabilities(validate_req(&id, no_mode.clone()))
            .await,
        ia,
        "validate with capability without mode",
    );

    // ListVolumes
    expect_code(
        c.list_volumes(csi::ListVolumesRequest {
            max_entries: -1,
            starting_token: String::new(),
        })
        .await,
        ia,
        "list with negative max_entries",
    );

    // ControllerExpandVolume
    expect_code(
        c.controller_expand_volume(expand_req("", 8 * MIB)).await,
        ia,
        "expand without id",
    );
    let mut r = expand_req(&id, 8 * MIB);
    r.capacity_range = None;
    expect_code(
        c.controller_expand_volume(r).await,
        ia,
        "expand without capacity range",
    );
    expect_code(
        c.controller_expand_volume(expand_req(&id, -5)).await,
        ia,
        "expand to negative size",
    );

    // NodeStage / Unstage
    expect_code(
        n.node_stage_volume(stage_req("", &staging, mount_cap()))
            .await,
        ia,
        "stage without id",
    );
    expect_code(
        n.node_stage_volume(stage_req(&id, Path::new(""), mount_cap()))
            .await,
        ia,
        "stage without staging path",
    );
    let mut r = stage_req(&id, &staging, mount_cap());
    r.volume_capability = None;
    expect_code(n.node_stage_volume(r).await, ia, "stage without capability");
    expect_code(
        n.node_stage_volume(stage_req(&id, &staging, no_type.clone()))
            .await,
        ia,
        "stage, capability without access type",
    );
    expect_code(
        n.node_unstage_volume(unstage_req("", &staging)).await,
        ia,
        "unstage without id",
    );
    expect_code(
        n.node_unstage_volume(unstage_req(&id, Path::new(""))).await,
        ia,
        "unstage without staging path",
    );

    // NodePublish / Unpublish
    expect_code(
        n.node_publish_volume(publish_req("", &staging, &target, mount_cap(), false))
            .await,
        ia,
        "publish without id",
    );
    expect_code(
        n.node_publish_volume(publish_req(
            &id,
            &staging,
            Path::new(""),
            mount_cap(),
            false,
        ))
        .await,
        ia,
        "publish without target",
    );
    // The spec's own row: STAGE_UNSTAGE_VOLUME is set but no staging_target_path was.
    expect_code(
        n.node_publish_volume(publish_req(&id, Path::new(""), &target, mount_cap(), false))
            .await,
        Code::FailedPrecondition,
        "publish without staging path",
    );
    let mut r = publish_req(&id, &staging, &target, mount_cap(), false);
    r.volume_capability = None;
    expect_code(
        n.node_publish_volume(r).await,
        ia,
        "publish without capability",
    );
    expect_code(
        n.node_unpublish_volume(unpublish_req("", &target)).await,
        ia,
        "unpublish without id",
    );
    expect_code(
        n.node_unpublish_volume(unpublish_req(&id, Path::new("")))
            .await,
        ia,
        "unpublish without target",
    );

    // NodeGetVolumeStats / NodeExpandVolume
    expect_code(
        n.node_get_volume_stats(stats_req("", &target)).await,
        ia,
        "stats without id",
    );
    expect_code(
        n.node_get_volume_stats(stats_req(&id, Path::new(""))).await,
        ia,
        "stats without path",
    );
    expect_code(
        n.node_expand_volume(node_expand_req("", &target, 8 * MIB))
            .await,
        ia,
        "node expand without id",
    );
    expect_code(
        n.node_expand_volume(node_expand_req(&id, Path::new(""), 8 * MIB))
            .await,
        ia,
        "node expand without path",
    );

    // Relative paths and '..' are refused like missing ones.
    for bad in ["relative/staging", "/abs/../escape"] {
        expect_code(
            n.node_stage_volume(stage_req(&id, Path::new(bad), mount_cap()))
                .await,
            ia,
            bad,
        );
        expect_code(
            n.node_publish_volume(publish_req(
                &id,
                &staging,
                Path::new(bad),
                mount_cap(),
                false,
            ))
            .await,
            ia,
            bad,
        );
    }

    // None of that created anything: one volume, nothing staged or mounted.
    assert_eq!(d.base_entries(), vec!["present".to_string()]);
    assert_eq!(d.state_records().len(), 1);
    assert!(
        kubelet_is_empty(&d),
        "a refused request created kubelet paths"
    );
    assert!(mounts_under(d.root()).is_empty());
}
