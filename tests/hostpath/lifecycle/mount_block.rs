//! Mount and block volumes through their whole lifecycle, read-only publications and publish conflicts.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn mount_volume_lifecycle() {
    let d = Driver::start().await;
    let cap = mount_cap();
    let vol = d.create("data", 32 * MIB, cap.clone()).await;
    let id = vol.volume_id.clone();
    assert_eq!(id, d.volume_id("data"));
    assert_eq!(vol.capacity_bytes, 32 * MIB);
    assert_eq!(
        vol.volume_context
            .get("ferrovol.io/access-type")
            .map(String::as_str),
        Some("mount")
    );
    let dir = d.volume_dir("data");
    assert!(
        dir.is_dir(),
        "volume directory {} was not created",
        dir.display()
    );
    assert_eq!(d.state_records().len(), 1);

    d.controller_publish(&id, cap.clone(), false).await;
    let got = d.get(&id).await;
    assert_eq!(
        got.status.unwrap().published_node_ids,
        vec![NODE.to_string()]
    );

    let staging = d.staging("data");
    let target = d.target("data", "pod-a");
    d.stage(&id, &staging, cap.clone()).await;
    assert_eq!(
        mounts_at(&staging).len(),
        1,
        "staging path is not a mount point"
    );
    assert!(
        same_inode(&staging, &dir),
        "staging path does not show the volume directory"
    );

    d.publish(&id, &staging, &target, cap.clone(), false).await;
    let m = mounts_at(&target);
    assert_eq!(m.len(), 1, "target should carry exactly one mount: {m:?}");
    assert!(!m[0].read_only());
    assert!(
        same_inode(&target, &dir),
        "target does not show the volume directory"
    );

    fs::write(target.join("hello.txt"), b"hello from pod-a").unwrap();
    assert_eq!(
        fs::read(dir.join("hello.txt")).unwrap(),
        b"hello from pod-a"
    );

    d.unpublish(&id, &target).await;
    assert!(
        mounts_at(&target).is_empty(),
        "target still mounted after NodeUnpublish"
    );
    assert!(
        !target.exists(),
        "NodeUnpublish should remove the target directory"
    );

    d.publish(&id, &staging, &target, cap.clone(), false).await;
    assert_eq!(
        fs::read(target.join("hello.txt")).unwrap(),
        b"hello from pod-a"
    );

    d.unpublish_and_unstage(&id, &target, &staging).await;
    assert!(
        mounts_at(&staging).is_empty(),
        "staging still mounted after NodeUnstage"
    );
    d.controller_unpublish(&id).await;
    assert!(d
        .get(&id)
        .await
        .status
        .unwrap()
        .published_node_ids
        .is_empty());

    d.delete(&id).await;
    assert!(!dir.exists(), "volume directory survived DeleteVolume");
    assert!(d.list_ids().await.is_empty());
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn block_volume_lifecycle() {
    let d = Driver::start().await;
    let cap = block_cap();
    let vol = d.create("raw", 16 * MIB, cap.clone()).await;
    let id = vol.volume_id;
    assert_eq!(
        vol.volume_context
            .get("ferrovol.io/access-type")
            .map(String::as_str),
        Some("block")
    );
    let image = d.volume_dir("raw").join("disk.img");
    assert_eq!(fs::metadata(&image).unwrap().len(), 16 << 20);
    assert!(
        loops_of(&d, "raw").is_empty(),
        "image attached before NodeStage"
    );

    d.controller_publish(&id, cap.clone(), false).await;
    let staging = d.staging("raw");
    let target = d.target("raw", "pod-a");
    d.stage(&id, &staging, cap.clone()).await;
    let loops = loops_of(&d, "raw");
    assert_eq!(
        loops.len(),
        1,
        "NodeStage should attach one loop device: {loops:?}"
    );

    d.publish(&id, &staging, &target, cap.clone(), false).await;
    let meta = fs::metadata(&target).unwrap();
    assert!(
        meta.file_type().is_block_device(),
        "target is not a block device"
    );
    assert_eq!(
        device_behind(&target, &loops),
        Some(PathBuf::from(&loops[0]))
    );
    assert_eq!(block_size(&target), 16 << 20);

    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    {
        let _open = hold_files_open();
        let mut f = fs::OpenOptions::new().write(true).open(&target).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&pattern).unwrap();
        f.sync_all().unwrap();
    }
    // The bytes went through the loop device into the volume's image.
    let mut on_disk = vec![0u8; pattern.len()];
    let mut img = fs::File::open(&image).unwrap();
    img.seek(SeekFrom::Start(1 << 20)).unwrap();
    img.read_exact(&mut on_disk).unwrap();
    assert_eq!(on_disk, pattern, "written bytes are not in the image");

    d.unpublish(&id, &target).await;
    assert!(mounts_at(&target).is_empty());
    assert!(
        !target.exists(),
        "NodeUnpublish should remove the target device file"
    );

    d.publish(&id, &staging, &target, cap.clone(), false).await;
    let mut back = vec![0u8; pattern.len()];
    let mut f = fs::File::open(&target).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.read_exact(&mut back).unwrap();
    drop(f);
    assert_eq!(back, pattern, "bytes lost across unpublish/publish");

    d.unpublish_and_unstage(&id, &target, &staging).await;
    assert!(
        loops_of(&d, "raw").is_empty(),
        "NodeUnstage left the loop device attached"
    );
    d.controller_unpublish(&id).await;
    d.delete(&id).await;
    assert!(!d.volume_dir("raw").exists());
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_mount_publish_refuses_writes() {
    let d = Driver::start().await;
    let cap = mount_cap();
    let id = d.create("ro", 16 * MIB, cap.clone()).await.volume_id;
    let staging = d.staging("ro");
    d.stage(&id, &staging, cap.clone()).await;
    fs::write(d.volume_dir("ro").join("seed"), b"seed").unwrap();

    let rw = d.target("ro", "writer");
    let ro = d.target("ro", "reader");
    d.publish(&id, &staging, &rw, cap.clone(), false).await;
    d.publish(&id, &staging, &ro, cap.clone(), true).await;
    assert!(read_ro_option(&ro), "read-only target is not mounted ro");
    assert!(!read_ro_option(&rw), "read-write target is mounted ro");
    assert!(
        !read_ro_option(&staging),
        "staging mount must stay writable"
    );

    assert_eq!(fs::read(ro.join("seed")).unwrap(), b"seed");
    let err = fs::write(ro.join("new"), b"x").expect_err("write to read-only publish succeeded");
    assert!(
        err.raw_os_error() == Some(libc::EROFS)
            || err.kind() == std::io::ErrorKind::PermissionDenied,
        "unexpected error {err:?}"
    );
    fs::write(rw.join("new"), b"x").expect("read-write publish must accept writes");

    // A read-only access mode makes the mount read-only even without readonly=true.
    let ro_mode = d.target("ro", "ro-mode");
    d.publish(
        &id,
        &staging,
        &ro_mode,
        mount_cap_with(Mode::SingleNodeReaderOnly, &[]),
        false,
    )
    .await;
    assert!(read_ro_option(&ro_mode));

    for t in [&rw, &ro, &ro_mode] {
        d.unpublish(&id, t).await;
    }
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_block_publish_refuses_writes() {
    let d = Driver::start().await;
    let cap = block_cap();
    let id = d.create("robd", 8 * MIB, cap.clone()).await.volume_id;
    let staging = d.staging("robd");
    d.stage(&id, &staging, cap.clone()).await;
    let rw = d.target("robd", "writer");
    let ro = d.target("robd", "reader");
    d.publish(&id, &staging, &rw, cap.clone(), false).await;
    {
        let mut f = fs::OpenOptions::new().write(true).open(&rw).unwrap();
        f.write_all(b"ferrovol").unwrap();
        f.sync_all().unwrap();
    }

    d.publish(&id, &staging, &ro, cap.clone(), true).await;
    let loops = loops_of(&d, "robd");
    assert_eq!(
        loops.len(),
        2,
        "a read-only publish gets its own loop device: {loops:?}"
    );
    let ro_dev = device_behind(&ro, &loops)
        .expect("read-only target is not one of the volume's loop devices");
    let rw_dev = device_behind(&rw, &loops).unwrap();
    assert_ne!(ro_dev, rw_dev);
    let sys_ro = fs::read_to_string(
        Path::new("/sys/block")
            .join(ro_dev.file_name().unwrap())
            .join("ro"),
    )
    .unwrap();
    assert_eq!(
        sys_ro.trim(),
        "1",
        "the read-only publication's loop device is writable"
    );

    let mut head = [0u8; 8];
    fs::File::open(&ro).unwrap().read_exact(&mut head).unwrap();
    assert_eq!(
        &head, b"ferrovol",
        "read-only device does not show the volume's data"
    );
    // The kernel refuses the write either at open or at write time.
    let refused = fs::OpenOptions::new()
        .write(true)
        .open(&ro)
        .and_then(|mut f| {
            f.write_all(b"XXXXXXXX")?;
            f.sync_all()
        });
    let err = refused.expect_err("write to a read-only block publish succeeded");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::EPERM | libc::EROFS | libc::EACCES)
        ),
        "unexpected error {err:?}"
    );
    let mut head = [0u8; 8];
    fs::File::open(&rw).unwrap().read_exact(&mut head).unwrap();
    assert_eq!(
        &head, b"ferrovol",
        "data changed through the read-only device"
    );

    d.unpublish(&id, &ro).await;
    assert_eq!(
        loops_of(&d, "robd"),
        vec![rw_dev.display().to_string()],
        "read-only loop device not detached"
    );
    d.unpublish(&id, &rw).await;
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_same_target_with_other_options_is_already_exists() {
    let d = Driver::start().await;
    let cap = mount_cap();
    let (id, staging, target) = d.create_published("opts", 16 * MIB, cap.clone()).await;

    let mut node = d.node();
    let s = expect_code(
        node.node_publish_volume(publish_req(&id, &staging, &target, cap.clone(), true))
            .await,
        Code::AlreadyExists,
        "republish read-only over a read-write target",
    );
    assert!(
        s.message().contains(&path_str(&target)),
        "message should name the target: {s:?}"
    );
    expect_code(
        node.node_publish_volume(publish_req(
            &id,
            &staging,
            &target,
            mount_cap_with(Mode::SingleNodeWriter, &["noexec"]),
            false,
        ))
        .await,
        Code::AlreadyExists,
        "republish with other mount flags",
    );
    // Another volume at the same target is refused too.
    let other = d.create("other", 16 * MIB, cap.clone()).await.volume_id;
    let other_staging = d.staging("other");
    d.stage(&other, &other_staging, cap.clone()).await;
    expect_code(
        node.node_publish_volume(publish_req(
            &other,
            &other_staging,
            &target,
            cap.clone(),
            false,
        ))
        .await,
        Code::AlreadyExists,
        "publish another volume at a used target",
    );
    assert_eq!(
        mounts_at(&target).len(),
        1,
        "a refused publish must not stack mounts"
    );
    assert!(same_inode(&target, &d.volume_dir("opts")));

    // The original request still succeeds.
    d.publish(&id, &staging, &target, cap.clone(), false).await;

    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.unstage(&other, &other_staging).await;
    d.delete(&id).await;
    d.delete(&other).await;
    d.assert_nothing_leaked(&[]);
}

/// A staging mount that disappeared behind the driver's back must not be published: the pod would
/// otherwise write into an empty directory on the node's root filesystem.
#[tokio::test(flavor = "multi_thread")]
async fn publish_refuses_a_staging_path_that_lost_its_mount() {
    let d = Driver::start().await;
    let cap = mount_cap();
    let id = d.create("lost-stage", 8 * MIB, cap.clone()).await.volume_id;
    let staging = d.staging("lost-stage");
    let target = d.target("lost-stage", "pod");
    d.stage(&id, &staging, cap.clone()).await;
    let status = std::process::Command::new("umount")
        .arg(&staging)
        .status()
        .expect("run umount");
    assert!(status.success(), "umount of the staging path failed");

    expect_code(
        d.node()
            .node_publish_volume(publish_req(&id, &staging, &target, cap.clone(), false))
            .await,
        Code::FailedPrecondition,
        "publish from a staging path that lost its mount",
    );
    assert!(mounts_at(&target).is_empty(), "target was mounted anyway");

    // Staging again repairs it, and the publish then goes through.
    d.stage(&id, &staging, cap.clone()).await;
    d.publish(&id, &staging, &target, cap, false).await;
    assert_eq!(mounts_at(&target).len(), 1);
    d.tear_down(&id, &target, &staging).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unpublish_leaves_foreign_mounts_alone() {
    let d = Driver::start().await;
    let cap = mount_cap();
    let id = d.create("mine", 4 * MIB, cap.clone()).await.volume_id;
    // Something else is mounted where the CO (wrongly) says our volume is.
    let target = d.target("mine", "pod");
    fs::create_dir_all(&target).unwrap();
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "foreign".as_ref(),
            target.as_os_str(),
        ],
    );
    fs::write(target.join("theirs"), b"x").unwrap();
    let r = d
        .node()
        .node_unpublish_volume(unpublish_req(&id, &target))
        .await;
    assert!(
        r.is_err(),
        "NodeUnpublish unmounted a mount that is not the volume's"
    );
    assert_eq!(mounts_at(&target).len(), 1, "the foreign mount was removed");
    assert_eq!(fs::read(target.join("theirs")).unwrap(), b"x");
    // Publishing over it is refused too.
    let staging = d.staging("mine");
    d.stage(&id, &staging, cap.clone()).await;
    expect_code(
        d.node()
            .node_publish_volume(publish_req(&id, &staging, &target, cap.clone(), false))
            .await,
        Code::AlreadyExists,
        "publish over a foreign mount",
    );
    assert_eq!(mounts_at(&target).len(), 1);
    run("umount", &[target.as_os_str()]);
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_and_paths_the_mount_table_escapes() {
    // mountinfo escapes space and backslash as octal: the driver must still recognise its
    // own mounts, or repeated calls would stack mounts and unpublish would leave them.
    let name = r"my vol\one";
    for cap in [mount_cap(), block_cap()] {
        let d = Driver::start().await;
        let id = d.create(name, 8 * MIB, cap.clone()).await.volume_id;
        assert_eq!(id, format!("hostpath/{NODE}/{name}"));
        let staging = d.root().join("kubelet/stage dir\\x").join(name);
        let target = d.root().join("kubelet/pod dir\\y").join(name);
        for _ in 0..2 {
            d.stage(&id, &staging, cap.clone()).await;
            d.publish(&id, &staging, &target, cap.clone(), false).await;
        }
        assert_eq!(
            mounts_at(&target).len(),
            1,
            "{cap:?}: repeated publish stacked mounts"
        );
        d.node()
            .node_get_volume_stats(stats_req(&id, &target))
            .await
            .unwrap();
        for _ in 0..2 {
            d.unpublish(&id, &target).await;
        }
        assert!(
            mounts_at(&target).is_empty(),
            "{cap:?}: target still mounted"
        );
        for _ in 0..2 {
            d.unstage(&id, &staging).await;
        }
        d.delete(&id).await;
        d.assert_nothing_leaked(&[]);
    }
}
