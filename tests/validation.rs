//! Request validation against the real driver: missing fields, names and ids that try to leave
//! the base path, unknown ids, conflicting repeats, impossible sizes and topologies, bad
//! StorageClass parameters, and concurrent creates of one name.

mod common;

use common::*;
use ferrovol::proto as csi;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use tonic::Code;

/// Every path below `dir`, recursively, sorted (directories end in '/').
fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(format!("{name}/"));
                walk(&e.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// A driver whose base sits two directories deep, so what lies around it can be watched.
async fn nested_driver() -> Driver {
    let b = Driver::builder();
    let base = b.path().join("nest/deeper/hostpath");
    b.hostpath_base(base).start().await
}

fn topology(node: &str) -> csi::Topology {
    csi::Topology {
        segments: HashMap::from([("topology.ferrovol.io/node".to_string(), node.to_string())]),
    }
}

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
    expect_code(
        n.node_publish_volume(publish_req(&id, Path::new(""), &target, mount_cap(), false))
            .await,
        ia,
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

#[tokio::test(flavor = "multi_thread")]
async fn conflicting_and_impossible_creates() {
    let d = Driver::start().await;
    let mut c = d.controller();
    let vol = d.create("sized", 8 * MIB, mount_cap()).await;

    // Same name, other properties.
    let s = expect_code(
        c.create_volume(create_req("sized", 16 * MIB, mount_cap()))
            .await,
        Code::AlreadyExists,
        "same name, larger size",
    );
    assert!(s.message().contains("sized"), "{s:?}");
    let mut r = create_req("sized", 4 * MIB, mount_cap());
    r.capacity_range = range(4 * MIB, 4 * MIB);
    expect_code(
        c.create_volume(r).await,
        Code::AlreadyExists,
        "same name, limit below its size",
    );
    expect_code(
        c.create_volume(create_req("sized", 8 * MIB, block_cap()))
            .await,
        Code::AlreadyExists,
        "same name, block",
    );
    let mut r = create_req("sized", 8 * MIB, mount_cap());
    r.parameters.insert("quota".into(), "none".into());
    expect_code(
        c.create_volume(r).await,
        Code::AlreadyExists,
        "same name, other parameters",
    );
    // ...while the same request, and one with only sidecar metadata added, are fine.
    assert_eq!(d.create("sized", 8 * MIB, mount_cap()).await, vol);
    let mut r = create_req("sized", 8 * MIB, mount_cap());
    r.parameters
        .insert("csi.storage.k8s.io/pvc/name".into(), "claim".into());
    c.create_volume(r)
        .await
        .expect("sidecar parameters do not define a volume");

    // required > limit.
    let mut r = create_req("inverted", 8 * MIB, mount_cap());
    r.capacity_range = range(8 * MIB, 4 * MIB);
    expect_code(
        c.create_volume(r).await,
        Code::InvalidArgument,
        "required > limit",
    );
    let mut r = create_req("negative", 8 * MIB, mount_cap());
    r.capacity_range = range(-1, 0);
    expect_code(
        c.create_volume(r).await,
        Code::InvalidArgument,
        "negative size",
    );

    // Larger than the whole filesystem under the base.
    for cap in [mount_cap(), block_cap()] {
        expect_code(
            c.create_volume(create_req("huge", 1 << 60, cap)).await,
            Code::OutOfRange,
            "1 EiB volume",
        );
    }

    // Requisite topology that excludes this node.
    let mut r = create_req("elsewhere", 4 * MIB, mount_cap());
    r.accessibility_requirements = Some(csi::TopologyRequirement {
        requisite: vec![topology("other-node")],
        preferred: vec![topology("other-node")],
    });
    expect_code(
        c.create_volume(r).await,
        Code::ResourceExhausted,
        "requisite names another node",
    );
    // ...and one that includes it is served here.
    let mut r = create_req("here", 4 * MIB, mount_cap());
    r.accessibility_requirements = Some(csi::TopologyRequirement {
        requisite: vec![topology("other-node"), topology(NODE)],
        preferred: vec![],
    });
    let here = c
        .create_volume(r)
        .await
        .expect("requisite including this node")
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(here.accessible_topology, vec![topology(NODE)]);

    // StorageClass parameters.
    for (k, v) in [
        ("basePath", "/etc"),
        ("quota", "sometimes"),
        ("backend", "nfs"),
    ] {
        let mut r = create_req("params", 4 * MIB, mount_cap());
        r.parameters.insert(k.into(), v.into());
        let s = expect_code(
            c.create_volume(r).await,
            Code::InvalidArgument,
            &format!("parameter {k}={v}"),
        );
        assert!(
            s.message().contains(k) || s.message().contains(v),
            "message should name the parameter: {s:?}"
        );
    }

    // Capabilities this driver cannot serve.
    let multi = mount_cap_with(Mode::MultiNodeMultiWriter, &[]);
    expect_code(
        c.create_volume(create_req("multi", 4 * MIB, multi)).await,
        Code::InvalidArgument,
        "multi-node mode",
    );
    let mut r = create_req("mixed", 4 * MIB, mount_cap());
    r.volume_capabilities.push(block_cap());
    expect_code(
        c.create_volume(r).await,
        Code::InvalidArgument,
        "mount and block at once",
    );
    let mut r = create_req("clone", 4 * MIB, mount_cap());
    r.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: "hostpath/another-node/snap/s".into(),
            },
        )),
    });
    expect_code(
        c.create_volume(r).await,
        Code::InvalidArgument,
        "content source on another node",
    );

    let mut names = d.base_entries();
    names.sort();
    assert_eq!(
        names,
        vec!["here".to_string(), "sized".to_string()],
        "refused creates left directories"
    );
    assert_eq!(d.state_records().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_of_one_name_make_one_volume() {
    let d = Driver::start().await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let mut c = d.controller();
        set.spawn(async move {
            c.create_volume(create_req("contended", 8 * MIB, block_cap()))
                .await
        });
    }
    let (mut ok, mut aborted) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        match r.expect("task panicked") {
            Ok(resp) => ok.push(resp.into_inner().volume.unwrap()),
            Err(s) if s.code() == Code::Aborted => aborted += 1,
            Err(s) => panic!("concurrent CreateVolume answered {s:?}"),
        }
    }
    assert_eq!(ok.len() + aborted, 16);
    assert!(!ok.is_empty(), "no CreateVolume succeeded");
    assert!(
        ok.iter().all(|v| *v == ok[0]),
        "successful creates disagree: {ok:?}"
    );
    assert_eq!(ok[0].volume_id, d.volume_id("contended"));
    assert_eq!(
        d.base_entries(),
        vec!["contended".to_string()],
        "exactly one directory must exist"
    );
    assert_eq!(
        dir_names(&d.volume_dir("contended")),
        vec!["disk.img".to_string()]
    );
    assert_eq!(d.state_records().len(), 1);
    // After the storm, a retry is answered from the existing volume.
    assert_eq!(d.create("contended", 8 * MIB, block_cap()).await, ok[0]);

    // Different names in parallel all succeed.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut c = d.controller();
        set.spawn(async move {
            c.create_volume(create_req(&format!("par-{i:02}"), 4 * MIB, mount_cap()))
                .await
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task panicked")
            .expect("parallel CreateVolume of distinct names");
    }
    assert_eq!(d.base_entries().len(), 17);
    assert_eq!(d.list_ids().await.len(), 17);

    // Concurrent deletes of one volume: all OK or Aborted, and it is gone.
    let id = d.volume_id("contended");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let mut c = d.controller();
        let id = id.clone();
        set.spawn(async move { c.delete_volume(delete_req(&id)).await });
    }
    while let Some(r) = set.join_next().await {
        match r.expect("task panicked") {
            Ok(_) => {}
            Err(s) if s.code() == Code::Aborted => {}
            Err(s) => panic!("concurrent DeleteVolume answered {s:?}"),
        }
    }
    d.delete(&id).await;
    assert!(!d.volume_dir("contended").exists());
    assert_eq!(d.state_records().len(), 16);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_volumes_per_node_is_enforced() {
    let d = Driver::builder()
        .arg("--max-volumes-per-node")
        .arg("2")
        .start()
        .await;
    let info = d
        .node()
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, NODE);
    assert_eq!(info.max_volumes_per_node, 2);
    assert_eq!(info.accessible_topology, Some(topology(NODE)));
    let mut ids = Vec::new();
    for n in ["lim-a", "lim-b", "lim-c"] {
        ids.push(d.create(n, 4 * MIB, mount_cap()).await.volume_id);
    }
    d.controller_publish(&ids[0], mount_cap(), false).await;
    d.controller_publish(&ids[1], mount_cap(), false).await;
    // Republishing an attached volume does not count as another one.
    d.controller_publish(&ids[1], mount_cap(), false).await;
    expect_code(
        d.controller()
            .controller_publish_volume(controller_publish_req(&ids[2], mount_cap(), false))
            .await,
        Code::ResourceExhausted,
        "third volume on a node that takes two",
    );
    // Publishing the same volume read-only when it is attached read-write conflicts.
    expect_code(
        d.controller()
            .controller_publish_volume(controller_publish_req(&ids[0], mount_cap(), true))
            .await,
        Code::AlreadyExists,
        "republish with another readonly flag",
    );
    d.controller_unpublish(&ids[0]).await;
    d.controller_publish(&ids[2], mount_cap(), false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_is_reserved_per_volume() {
    // A 64 MiB tmpfs base: its free space changes only through this test.
    let b = Driver::builder();
    let mnt = b.path().join("tmpfs");
    fs::create_dir(&mnt).unwrap();
    run(
        "mount",
        &["-t", "tmpfs", "-o", "size=64m", "tmpfs"]
            .map(std::ffi::OsStr::new)
            .into_iter()
            .chain([mnt.as_os_str()])
            .collect::<Vec<_>>(),
    );
    let d = b.hostpath_base(mnt.join("hostpath")).start().await;
    let capacity = || async {
        d.controller()
            .get_capacity(csi::GetCapacityRequest {
                volume_capabilities: vec![mount_cap()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .available_capacity
    };
    let before = capacity().await;
    assert!(before > 48 * MIB && before <= 64 * MIB, "{before}");
    let a = d.create("res-a", 16 * MIB, mount_cap()).await.volume_id;
    assert_eq!(
        capacity().await,
        before - 16 * MIB,
        "a volume reserves its size"
    );
    // More than what is left, though less than the file system: ResourceExhausted.
    expect_code(
        d.controller()
            .create_volume(create_req("res-b", before - 8 * MIB, mount_cap()))
            .await,
        Code::ResourceExhausted,
        "volume larger than the unreserved space",
    );
    let b2 = d.create("res-c", 16 * MIB, block_cap()).await.volume_id;
    assert_eq!(capacity().await, before - 32 * MIB);
    // Growing by more than the unreserved space is refused the same way.
    expect_code(
        d.controller()
            .controller_expand_volume(expand_req(&a, before - 12 * MIB))
            .await,
        Code::ResourceExhausted,
        "expand beyond the unreserved space",
    );
    d.delete(&b2).await;
    // Another node's requisite topology has no capacity here.
    let r = d
        .controller()
        .get_capacity(csi::GetCapacityRequest {
            volume_capabilities: vec![mount_cap()],
            accessible_topology: Some(topology("other-node")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.available_capacity, 0);
    d.delete(&a).await;
    assert_eq!(
        capacity().await,
        before,
        "delete gives the reservation back"
    );
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_default_round_up_and_respect_limits() {
    let d = Driver::start().await;
    let mut c = d.controller();
    let created = |r: csi::CreateVolumeRequest| {
        let mut c = d.controller();
        async move {
            c.create_volume(r)
                .await
                .expect("CreateVolume")
                .into_inner()
                .volume
                .unwrap()
                .capacity_bytes
        }
    };
    // No range: the driver's --default-volume-size (16Mi in the harness).
    let mut r = create_req("default", 0, mount_cap());
    r.capacity_range = None;
    assert_eq!(created(r).await, 16 * MIB);
    // Rounded up to whole 4 KiB blocks.
    assert_eq!(created(create_req("tiny", 1, mount_cap())).await, 4096);
    assert_eq!(created(create_req("odd", 5000, block_cap())).await, 8192);
    assert_eq!(
        fs::metadata(d.volume_dir("odd").join("disk.img"))
            .unwrap()
            .len(),
        8192
    );
    // Only a limit: the default, capped by it.
    let mut r = create_req("capped", 0, mount_cap());
    r.capacity_range = range(0, 8 * MIB);
    assert_eq!(created(r).await, 8 * MIB);
    // No whole block between required and limit.
    let mut r = create_req("nowhere", 5000, mount_cap());
    r.capacity_range = range(5000, 6000);
    expect_code(
        c.create_volume(r).await,
        Code::OutOfRange,
        "5000..6000 bytes",
    );

    // The longest name whose id is spelled out in full: "hostpath/test-node/<name>" = 128 bytes.
    let longest = "l".repeat(128 - format!("hostpath/{NODE}/").len());
    let vol = d.create(&longest, 4 * MIB, mount_cap()).await;
    assert_eq!(vol.volume_id, d.volume_id(&longest));
    assert_eq!(vol.volume_id.len(), 128);
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

/// The publish root exists (the driver creates it at start); a refused request leaves it empty.
fn kubelet_is_empty(d: &Driver) -> bool {
    std::fs::read_dir(d.root().join("kubelet"))
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(true)
}
