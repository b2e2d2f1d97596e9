//! Idempotency, stats, conditions, listing, expansion, capability checks and identity.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn repeated_rpcs_are_idempotent() {
    for (name, cap) in [("idem-fs", mount_cap()), ("idem-blk", block_cap())] {
        let d = Driver::start().await;
        let first = d.create(name, 16 * MIB, cap.clone()).await;
        let again = d.create(name, 16 * MIB, cap.clone()).await;
        assert_eq!(
            first, again,
            "{name}: a repeated CreateVolume must return the same volume"
        );
        let id = first.volume_id;
        assert_eq!(d.base_entries(), vec![name.to_string()]);

        d.controller_publish(&id, cap.clone(), false).await;
        d.controller_publish(&id, cap.clone(), false).await;
        let staging = d.staging(name);
        let target = d.target(name, "pod");
        d.stage(&id, &staging, cap.clone()).await;
        d.stage(&id, &staging, cap.clone()).await;
        d.publish(&id, &staging, &target, cap.clone(), false).await;
        d.publish(&id, &staging, &target, cap.clone(), false).await;
        assert_eq!(
            mounts_at(&target).len(),
            1,
            "{name}: repeated NodePublish stacked mounts"
        );
        if cap == mount_cap() {
            assert_eq!(
                mounts_at(&staging).len(),
                1,
                "{name}: repeated NodeStage stacked mounts"
            );
        } else {
            assert_eq!(
                loops_of(&d, name).len(),
                1,
                "{name}: repeated NodeStage attached twice"
            );
        }

        d.unpublish(&id, &target).await;
        d.unpublish_and_unstage(&id, &target, &staging).await;
        d.unstage(&id, &staging).await;
        d.controller_unpublish(&id).await;
        d.controller_unpublish(&id).await;
        d.delete(&id).await;
        d.delete(&id).await;
        d.assert_nothing_leaked(&[]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_stats_report_bytes_and_inodes() {
    use csi::volume_usage::Unit;
    let d = Driver::start().await;
    let cap = mount_cap();
    let (id, staging, target) = d.create_published("stats", 64 * MIB, cap.clone()).await;
    write_file(&target.join("blob"), 4 << 20).unwrap();
    fs::create_dir(target.join("sub")).unwrap();
    fs::write(target.join("sub/small"), b"x").unwrap();

    let stats = d.stats(&id, &target).await;
    let bytes = usage(&stats, Unit::Bytes).expect("no byte usage");
    let inodes = usage(&stats, Unit::Inodes).expect("no inode usage");
    assert_eq!(bytes.total, 64 * MIB);
    assert!(
        bytes.used >= 4 * MIB,
        "used {} should count the 4 MiB file",
        bytes.used
    );
    assert!(bytes.available <= bytes.total - bytes.used, "{bytes:?}");
    assert!(inodes.total > 0 && inodes.used >= 3, "{inodes:?}");
    let cond = stats
        .volume_condition
        .expect("volume condition is advertised");
    assert!(!cond.abnormal, "{cond:?}");

    // The staging path answers too; a path the volume is not at does not.
    d.node()
        .node_get_volume_stats(stats_req(&id, &staging))
        .await
        .unwrap();
    let elsewhere = d.root().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    expect_code(
        d.node()
            .node_get_volume_stats(stats_req(&id, &elsewhere))
            .await,
        Code::NotFound,
        "stats at a path the volume is not published at",
    );

    d.tear_down(&id, &target, &staging).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn condition_turns_abnormal_when_directory_vanishes() {
    let d = Driver::start().await;
    let id = d.create("fragile", 16 * MIB, mount_cap()).await.volume_id;
    let healthy = d.get(&id).await.status.unwrap().volume_condition.unwrap();
    assert!(!healthy.abnormal, "{healthy:?}");

    fs::remove_dir_all(d.volume_dir("fragile")).unwrap();

    let cond = d.get(&id).await.status.unwrap().volume_condition.unwrap();
    assert!(
        cond.abnormal,
        "condition should be abnormal once the directory is gone: {cond:?}"
    );
    assert!(!cond.message.is_empty());
    let listed = d.list_all().await;
    assert_eq!(listed.len(), 1);
    let status = listed[0].status.as_ref().unwrap();
    assert!(
        status.volume_condition.as_ref().unwrap().abnormal,
        "ListVolumes: {status:?}"
    );

    // Staging a volume whose storage is gone fails instead of binding nothing.
    let err = d
        .node()
        .node_stage_volume(stage_req(&id, &d.staging("fragile"), mount_cap()))
        .await;
    assert!(
        err.is_err(),
        "staging a volume without its directory succeeded"
    );
    assert!(mounts_at(&d.staging("fragile")).is_empty());

    d.delete(&id).await;
    assert!(d.list_ids().await.is_empty());
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_volumes_paginates_and_rejects_foreign_tokens() {
    let d = Driver::start().await;
    let names = ["pv-a", "pv-b", "pv-c", "pv-d", "pv-e"];
    for n in names {
        d.create(n, 4 * MIB, mount_cap()).await;
    }
    let mut c = d.controller();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = c
            .list_volumes(csi::ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2, "page larger than max_entries");
        pages.push(page.entries.len());
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| e.volume.unwrap().volume_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "pagination does not end");
        token = page.next_token;
    }
    assert_eq!(pages, vec![2, 2, 1]);
    let expected: Vec<String> = names.iter().map(|n| d.volume_id(n)).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted, expected,
        "pages must cover every volume exactly once: {seen:?}"
    );

    // max_entries 0 means all.
    assert_eq!(d.list_all().await.len(), 5);

    // A token stays valid when the volume it points after is deleted.
    let first = c
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 2,
            starting_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let last_of_first = first
        .entries
        .last()
        .unwrap()
        .volume
        .as_ref()
        .unwrap()
        .volume_id
        .clone();
    d.delete(&last_of_first).await;
    let rest = c
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 0,
            starting_token: first.next_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.entries.len(),
        3,
        "the remaining pages should still hold 3 volumes"
    );

    for bad in ["garbage", "v1.zz", "v1.", "v1.6e6f7065"] {
        let s = expect_code(
            c.list_volumes(csi::ListVolumesRequest {
                max_entries: 1,
                starting_token: bad.to_string(),
            })
            .await,
            Code::Aborted,
            &format!("ListVolumes with token {bad:?}"),
        );
        assert!(!s.message().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_of_published_volume_is_failed_precondition() {
    for (name, cap) in [("busy-fs", mount_cap()), ("busy-blk", block_cap())] {
        let d = Driver::start().await;
        let id = d.create(name, 8 * MIB, cap.clone()).await.volume_id;
        let mut c = d.controller();

        d.controller_publish(&id, cap.clone(), false).await;
        expect_code(
            c.delete_volume(delete_req(&id)).await,
            Code::FailedPrecondition,
            "delete while attached",
        );

        let (staging, target) = d.stage_and_publish(&id, name, cap.clone()).await;
        d.controller_unpublish(&id).await;
        expect_code(
            c.delete_volume(delete_req(&id)).await,
            Code::FailedPrecondition,
            "delete while published",
        );
        d.unpublish(&id, &target).await;
        expect_code(
            c.delete_volume(delete_req(&id)).await,
            Code::FailedPrecondition,
            "delete while staged",
        );
        assert!(
            d.volume_dir(name).is_dir(),
            "{name}: a refused delete removed data"
        );
        assert_eq!(d.list_ids().await, vec![id.clone()]);

        d.unstage(&id, &staging).await;
        d.delete(&id).await;
        d.assert_nothing_leaked(&[]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expand_mount_volume() {
    let d = Driver::start().await;
    let cap = mount_cap();
    let (id, staging, target) = d.create_published("grow", 16 * MIB, cap.clone()).await;

    let mut c = d.controller();
    let r = c
        .controller_expand_volume(expand_req(&id, 40 * MIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 40 * MIB);
    assert!(
        !r.node_expansion_required,
        "a directory volume needs no node step"
    );
    assert_eq!(d.get(&id).await.volume.unwrap().capacity_bytes, 40 * MIB);
    let stats = d.stats(&id, &target).await;
    assert_eq!(stats.usage[0].total, 40 * MIB);

    // Asking for less than it has is a no-op; a limit below it is OutOfRange.
    let r = c
        .controller_expand_volume(expand_req(&id, 8 * MIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 40 * MIB);
    let mut shrink = expand_req(&id, 8 * MIB);
    shrink.capacity_range = range(8 * MIB, 8 * MIB);
    expect_code(
        c.controller_expand_volume(shrink).await,
        Code::OutOfRange,
        "shrink",
    );

    d.tear_down(&id, &target, &staging).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expand_block_volume_online() {
    let d = Driver::start().await;
    let cap = block_cap();
    let id = d.create("growblk", 16 * MIB, cap.clone()).await.volume_id;
    d.controller_publish(&id, cap.clone(), false).await;
    let (staging, target) = d.stage_and_publish(&id, "growblk", cap.clone()).await;
    assert_eq!(block_size(&target), 16 << 20);

    let r = d
        .controller()
        .controller_expand_volume(expand_req(&id, 48 * MIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 48 * MIB);
    assert!(
        r.node_expansion_required,
        "a block volume needs NodeExpandVolume"
    );
    assert_eq!(
        fs::metadata(d.volume_dir("growblk").join("disk.img"))
            .unwrap()
            .len(),
        48 << 20
    );

    let n = d
        .node()
        .node_expand_volume(node_expand_req(&id, &target, 48 * MIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.capacity_bytes, 48 * MIB);
    assert_eq!(
        block_size(&target),
        48 << 20,
        "the device at the target did not grow"
    );
    let loops = loops_of(&d, "growblk");
    let dev = device_behind(&target, &loops).unwrap();
    let sectors: u64 = fs::read_to_string(
        Path::new("/sys/block")
            .join(dev.file_name().unwrap())
            .join("size"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    assert_eq!(sectors * 512, 48 << 20);

    // The grown tail is usable.
    {
        let _open = hold_files_open();
        let mut f = fs::OpenOptions::new().write(true).open(&target).unwrap();
        f.seek(SeekFrom::Start((48 << 20) - 4096)).unwrap();
        f.write_all(&[0x5a; 4096]).unwrap();
        f.sync_all().unwrap();
    }

    // NodeExpandVolume beyond the recorded size grows the volume on its node (the cluster's
    // one resizer may have reached a ferrovol that does not hold it): image, loop device and
    // record all reach the new size.
    let r = d
        .node()
        .node_expand_volume(node_expand_req(&id, &target, 64 * MIB))
        .await
        .expect("node expansion beyond the recorded size")
        .into_inner();
    assert_eq!(r.capacity_bytes, 64 * MIB);
    assert_eq!(block_size(&target), 64 << 20, "the device did not grow");
    assert_eq!(d.get(&id).await.volume.unwrap().capacity_bytes, 64 * MIB);

    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.controller_unpublish(&id).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_volume_capabilities_confirms_only_what_the_volume_serves() {
    let d = Driver::start().await;
    let fs_id = d.create("vfs", 4 * MIB, mount_cap()).await.volume_id;
    let blk_id = d.create("vblk", 4 * MIB, block_cap()).await.volume_id;
    let mut c = d.controller();
    let ok = |r: csi::ValidateVolumeCapabilitiesResponse| r.confirmed.is_some();
    for (id, cap) in [
        (&fs_id, mount_cap()),
        (
            &fs_id,
            mount_cap_with(Mode::SingleNodeReaderOnly, &["noexec"]),
        ),
        (&blk_id, block_cap()),
    ] {
        let r = c
            .validate_volume_capabilities(validate_req(id, cap.clone()))
            .await
            .unwrap();
        assert!(ok(r.into_inner()), "{id} should confirm {cap:?}");
    }
    for (id, cap) in [
        (&fs_id, block_cap()),
        (&blk_id, mount_cap()),
        (&fs_id, mount_cap_with(Mode::MultiNodeMultiWriter, &[])),
    ] {
        let r = c
            .validate_volume_capabilities(validate_req(id, cap.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(r.confirmed.is_none(), "{id} must not confirm {cap:?}");
        assert!(!r.message.is_empty(), "an unconfirmed answer says why");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn block_volume_stats_report_capacity_without_inodes() {
    use csi::volume_usage::Unit;
    let d = Driver::start().await;
    let cap = block_cap();
    let (id, staging, target) = d.create_published("bstats", 8 * MIB, cap.clone()).await;
    let stats = d.stats(&id, &target).await;
    assert_eq!(
        stats.usage.len(),
        1,
        "a block volume has no inodes: {stats:?}"
    );
    assert_eq!(stats.usage[0].unit, Unit::Bytes as i32);
    assert_eq!(stats.usage[0].total, 8 * MIB);
    assert!(!stats.volume_condition.unwrap().abnormal);
    d.tear_down(&id, &target, &staging).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_and_roles() {
    use csi::plugin_capability::{service, Type};
    let has_controller = |caps: &[csi::PluginCapability]| {
        caps.iter().any(|c| {
            matches!(&c.r#type, Some(Type::Service(s)) if s.r#type == service::Type::ControllerService as i32)
        })
    };
    let d = Driver::start().await;
    let info = d
        .identity()
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "local.csi.ferrovol.io");
    assert!(!info.vendor_version.is_empty());
    let caps = d
        .identity()
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    assert!(has_controller(&caps), "{caps:?}");

    // A node-only driver does not claim or serve the controller service.
    let n = Driver::builder().arg("--roles").arg("node").start().await;
    let caps = n
        .identity()
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    assert!(!has_controller(&caps), "{caps:?}");
    expect_code(
        n.controller()
            .create_volume(create_req("x", 4 * MIB, mount_cap()))
            .await,
        Code::Unimplemented,
        "CreateVolume on a node-only driver",
    );
    n.node()
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .expect("node service is served");
}
