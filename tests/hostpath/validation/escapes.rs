//! Names and ids that try to leave the base path, unknown ids, and directories that are not ours.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn names_that_would_escape_the_base_are_invalid() {
    let d = nested_driver().await;
    let nest = d.root().join("nest");
    let before = tree(&nest);
    assert_eq!(before, vec!["deeper/", "deeper/hostpath/"]);
    let long = "n".repeat(200);
    let marker = format!("ferrovol-escape-{}", std::process::id());
    let escape_up = format!("../{marker}");
    let escape_far = format!("../../../../{marker}");
    let names: Vec<&str> = vec![
        "..",
        ".",
        "a/b",
        "../x",
        &escape_up,
        &escape_far,
        "/abs",
        "nul\0byte",
        "new\nline",
        ".hidden",
        &long,
    ];
    let mut c = d.controller();
    for name in &names {
        for cap in [mount_cap(), block_cap()] {
            expect_code(
                c.create_volume(create_req(name, 4 * MIB, cap)).await,
                Code::InvalidArgument,
                &format!("create {name:?}"),
            );
        }
    }
    assert_eq!(tree(&nest), before, "something was created around the base");
    assert!(
        d.state_records().is_empty(),
        "a refused create left a record"
    );
    assert!(!Path::new("/tmp").join(&marker).exists());
    assert!(!d.root().join(&marker).exists());
    assert!(d.list_ids().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_that_would_escape_the_base_are_invalid() {
    let d = nested_driver().await;
    // A volume of ours and a directory beside the base that an escape could reach.
    d.create("victim", 4 * MIB, mount_cap()).await;
    fs::write(d.root().join("nest/deeper/precious"), b"keep").unwrap();
    let nest = d.root().join("nest");
    let before = tree(&nest);
    let long = format!("hostpath/{NODE}/{}", "x".repeat(200));
    let ids = [
        format!("hostpath/{NODE}/.."),
        format!("hostpath/{NODE}/."),
        format!("hostpath/{NODE}/../.."),
        format!("hostpath/{NODE}/../deeper"),
        format!("hostpath/{NODE}/victim/../.."),
        "hostpath/../deeper".to_string(),
        "../../etc/passwd".to_string(),
        format!("hostpath/{NODE}/vic\0tim"),
        long,
    ];
    let mut c = d.controller();
    let mut n = d.node();
    let ia = Code::InvalidArgument;
    let staging = d.staging("escape");
    let target = d.target("escape", "pod");
    for id in &ids {
        let what = |rpc: &str| format!("{rpc} {id:?}");
        expect_code(
            c.delete_volume(delete_req(id)).await,
            ia,
            &what("DeleteVolume"),
        );
        expect_code(
            c.controller_get_volume(get_req(id)).await,
            ia,
            &what("ControllerGetVolume"),
        );
        expect_code(
            c.controller_publish_volume(controller_publish_req(id, mount_cap(), false))
                .await,
            ia,
            &what("ControllerPublish"),
        );
        expect_code(
            c.controller_unpublish_volume(controller_unpublish_req(id))
                .await,
            ia,
            &what("ControllerUnpublish"),
        );
        expect_code(
            c.validate_volume_capabilities(validate_req(id, mount_cap()))
                .await,
            ia,
            &what("Validate"),
        );
        expect_code(
            c.controller_expand_volume(expand_req(id, 8 * MIB)).await,
            ia,
            &what("ControllerExpand"),
        );
        expect_code(
            n.node_stage_volume(stage_req(id, &staging, mount_cap()))
                .await,
            ia,
            &what("NodeStage"),
        );
        expect_code(
            n.node_unstage_volume(unstage_req(id, &staging)).await,
            ia,
            &what("NodeUnstage"),
        );
        expect_code(
            n.node_publish_volume(publish_req(id, &staging, &target, mount_cap(), false))
                .await,
            ia,
            &what("NodePublish"),
        );
        expect_code(
            n.node_unpublish_volume(unpublish_req(id, &target)).await,
            ia,
            &what("NodeUnpublish"),
        );
        expect_code(
            n.node_get_volume_stats(stats_req(id, &target)).await,
            ia,
            &what("NodeGetVolumeStats"),
        );
        expect_code(
            n.node_expand_volume(node_expand_req(id, &target, 8 * MIB))
                .await,
            ia,
            &what("NodeExpand"),
        );
    }
    assert_eq!(
        tree(&nest),
        before,
        "an escaping id changed what lies around the base"
    );
    assert_eq!(
        fs::read(d.root().join("nest/deeper/precious")).unwrap(),
        b"keep"
    );
    assert!(
        kubelet_is_empty(&d),
        "a refused request created kubelet paths"
    );
    assert!(mounts_under(d.root()).is_empty());
    assert_eq!(d.list_ids().await, vec![d.volume_id("victim")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_are_not_found_and_delete_of_unknown_is_ok() {
    let d = Driver::start().await;
    // A real volume, so "unknown" is not just "empty driver".
    let real = d.create("real", 4 * MIB, mount_cap()).await.volume_id;
    let unknown = [
        d.volume_id("never-created"),
        "fake-vol-id".to_string(),
        "nfs/test-node/vol".to_string(),
        "hostpath/other-node/real".to_string(),
    ];
    let mut c = d.controller();
    let mut n = d.node();
    let nf = Code::NotFound;
    for id in &unknown {
        let what = |rpc: &str| format!("{rpc} {id:?}");
        expect_code(
            c.validate_volume_capabilities(validate_req(id, mount_cap()))
                .await,
            nf,
            &what("Validate"),
        );
        expect_code(
            c.controller_publish_volume(controller_publish_req(id, mount_cap(), false))
                .await,
            nf,
            &what("ControllerPublish"),
        );
        expect_code(
            n.node_stage_volume(stage_req(id, &d.staging("unknown"), mount_cap()))
                .await,
            nf,
            &what("NodeStage"),
        );
        expect_code(
            c.controller_get_volume(get_req(id)).await,
            nf,
            &what("ControllerGetVolume"),
        );
        if id.starts_with("hostpath/other-node/") {
            // Another node's volume: the one cluster-wide resizer may ask any ferrovol, so the
            // answer defers the growth to the volume's own node (NodeExpandVolume there).
            let r = c
                .controller_expand_volume(expand_req(id, 8 * MIB))
                .await
                .expect("ControllerExpand of another node's volume defers to that node")
                .into_inner();
            assert!(r.node_expansion_required, "{}", what("ControllerExpand"));
        } else {
            expect_code(
                c.controller_expand_volume(expand_req(id, 8 * MIB)).await,
                nf,
                &what("ControllerExpand"),
            );
        }
        expect_code(
            n.node_publish_volume(publish_req(
                id,
                &d.staging("unknown"),
                &d.target("unknown", "pod"),
                mount_cap(),
                false,
            ))
            .await,
            nf,
            &what("NodePublish"),
        );
    }
    // ControllerPublish to a node that is not this one: the node is not found.
    let mut r = controller_publish_req(&real, mount_cap(), false);
    r.node_id = "other-node".to_string();
    expect_code(
        c.controller_publish_volume(r).await,
        nf,
        "ControllerPublish to another node",
    );

    for id in [
        d.volume_id("never-created"),
        "fake-vol-id".to_string(),
        "nfs/test-node/vol".to_string(),
    ] {
        c.delete_volume(delete_req(&id))
            .await
            .unwrap_or_else(|e| panic!("DeleteVolume of unknown {id:?} must succeed: {e}"));
    }
    assert!(kubelet_is_empty(&d));
    assert_eq!(d.list_ids().await, vec![real]);
    assert_eq!(d.base_entries(), vec!["real".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_directories_in_the_base_are_never_taken_or_removed() {
    let d = Driver::start().await;
    let foreign = d.volume_dir("squatter");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("theirs"), b"not yours").unwrap();
    // Creating a volume over a non-empty directory that is not ours fails and leaves it alone.
    let r = d
        .controller()
        .create_volume(create_req("squatter", 4 * MIB, mount_cap()))
        .await;
    assert!(r.is_err(), "CreateVolume took over a foreign directory");
    // Deleting the id that would name it succeeds (no such volume) without touching it.
    d.delete(&d.volume_id("squatter")).await;
    assert_eq!(fs::read(foreign.join("theirs")).unwrap(), b"not yours");
    assert!(
        d.state_records().is_empty(),
        "a failed create left a record"
    );
    assert!(d.list_ids().await.is_empty());
}

/// Names CSI allows (up to 128 bytes) whose plain id would pass 128 bytes: the driver either
/// refuses them as InvalidArgument, or gives them an id of at most 128 bytes that then works
/// for every RPC. Either way it never answers with an id a CO must reject.
#[tokio::test(flavor = "multi_thread")]
async fn names_too_long_for_a_plain_id() {
    let d = Driver::start().await;
    let mut c = d.controller();
    let names = [
        format!("{}x", "l".repeat(128 - format!("hostpath/{NODE}/").len())),
        format!("{}a", "p".repeat(127)),
        format!("{}b", "p".repeat(127)),
    ];
    let mut ids = Vec::new();
    for name in &names {
        match c
            .create_volume(create_req(name, 4 * MIB, mount_cap()))
            .await
        {
            Err(s) => {
                assert_eq!(s.code(), Code::InvalidArgument, "{name}: {s:?}");
                assert!(d.base_entries().is_empty() && d.state_records().is_empty());
            }
            Ok(r) => {
                let vol = r.into_inner().volume.unwrap();
                let id = vol.volume_id.clone();
                assert!(id.len() <= 128, "id of {} bytes: {id}", id.len());
                assert!(id.starts_with(&format!("hostpath/{NODE}/")), "{id}");
                // Repeating the create answers the same id.
                assert_eq!(d.create(name, 4 * MIB, mount_cap()).await, vol);
                // The id works: get, validate, stage, publish, unpublish, unstage.
                assert_eq!(d.get(&id).await.volume.unwrap().volume_id, id);
                let staging = d.root().join("kubelet/staging").join(&name[..8]);
                let target = d.root().join("kubelet/pods/p").join(&name[..8]);
                d.stage(&id, &staging, mount_cap()).await;
                d.publish(&id, &staging, &target, mount_cap(), false).await;
                fs::write(target.join("f"), b"long").unwrap();
                let dir = PathBuf::from(&vol.volume_context["ferrovol.io/path"]);
                assert_eq!(fs::read(dir.join("f")).unwrap(), b"long");
                d.unpublish_and_unstage(&id, &target, &staging).await;
                ids.push((id, dir));
            }
        }
    }
    // Names that differ only in their last byte get different ids.
    let mut distinct: Vec<&String> = ids.iter().map(|(id, _)| id).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    let mut listed = d.list_ids().await;
    listed.sort();
    let mut want: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    want.sort();
    assert_eq!(listed, want);
    for (id, dir) in &ids {
        d.delete(id).await;
        assert!(!dir.exists(), "{id}: directory survived DeleteVolume");
    }
    d.assert_nothing_leaked(&[]);
}
