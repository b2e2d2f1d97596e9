//! Conflicting, impossible and concurrent creates; per-node limits, reservations and sizes.

use super::*;

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
    // A create reuses a statfs of the last second only with room to spare: one that needs more
    // than half of what that statfs left free looks again, and sees the space a writer took.
    let filler = mnt.join("filler");
    fs::write(&filler, vec![1u8; 32 * MIB as usize]).unwrap();
    expect_code(
        d.controller()
            .create_volume(create_req(
                "res-d",
                before - 16 * MIB - 8 * MIB,
                mount_cap(),
            ))
            .await,
        Code::ResourceExhausted,
        "volume that fitted the free space before a writer filled it",
    );
    fs::remove_file(&filler).unwrap();
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
