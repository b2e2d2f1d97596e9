//! End-to-end volume lifecycles against the real driver: mount and block volumes through
//! create, attach, stage, publish, unpublish, republish, teardown and delete, plus read-only
//! publications, idempotency, stats, conditions, pagination and expansion.

mod common;

use common::*;
use ferrovol::proto as csi;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tonic::Code;

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The loop devices attached to a volume's image.
fn loops_of(d: &Driver, name: &str) -> Vec<String> {
    loop_devices_under(&d.volume_dir(name))
        .into_iter()
        .map(|(dev, _)| dev)
        .collect()
}

/// The loop device (one of `candidates`) that the device node at `path` is.
fn device_behind(path: &Path, candidates: &[String]) -> Option<PathBuf> {
    let rdev = fs::metadata(path).ok()?.rdev();
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|c| fs::metadata(c).is_ok_and(|m| m.rdev() == rdev))
}

fn read_ro_option(path: &Path) -> bool {
    let m = mounts_at(path);
    m.last()
        .unwrap_or_else(|| panic!("{} is not mounted", path.display()))
        .read_only()
}

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
