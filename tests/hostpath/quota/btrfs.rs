//! btrfs with quota enabled: a subvolume per volume with a qgroup limit on its referenced bytes.

use super::*;

/// The btrfs image: sparse, so it costs only what btrfs writes; 1 GiB keeps mkfs.btrfs in its
/// ordinary (not mixed block group) layout.
const BTRFS_IMAGE_BYTES: u64 = 1 << 30;
/// Inode number of the root directory of every btrfs subvolume.
const BTRFS_SUBVOLUME_INO: u64 = 256;

/// Runs `btrfs <args> <path>`; returns its stdout.
#[track_caller]
fn btrfs(args: &[&str], path: &Path) -> String {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.push(path.as_os_str());
    run("btrfs", &all)
}

/// A driver whose hostpath base lies on a fresh btrfs: a sparse 1 GiB image made with
/// `mkfs.btrfs -q`, attached with `losetup --find --show` and mounted under the scratch dir,
/// with `btrfs quota enable` when `quota`. Returns the driver and the mount point. The image is
/// inside the scratch dir, so dropping the driver (or the builder, if this panics half-way)
/// unmounts it and detaches its loop device, also while a failed test unwinds.
async fn btrfs_driver(quota: bool) -> (Driver, PathBuf) {
    require_tool("mkfs.btrfs", "btrfs-progs");
    require_tool("btrfs", "btrfs-progs");
    let b = Driver::builder();
    let mnt = mount_image(
        b.path(),
        "btrfs",
        &["mkfs.btrfs", "-q"],
        BTRFS_IMAGE_BYTES,
        "rw",
    );
    assert_eq!(mounts_at(&mnt)[0].fs_type, "btrfs");
    if quota {
        btrfs(&["quota", "enable"], &mnt);
        // Enabling starts a rescan; wait for it so the accounting is consistent from the start.
        btrfs(&["quota", "rescan", "-w"], &mnt);
    }
    let d = b.hostpath_base(mnt.join("hostpath")).start().await;
    (d, mnt)
}

/// Whether `dir` is the root of a btrfs subvolume (every subvolume root is inode 256).
fn is_subvolume(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(dir)
        .unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()))
        .ino()
        == BTRFS_SUBVOLUME_INO
}

/// Paths (relative to the top of the file system) of the subvolumes `btrfs subvolume list`
/// shows; subvolumes that were deleted are not listed.
fn subvolumes(mnt: &Path) -> Vec<String> {
    btrfs(&["subvolume", "list"], mnt)
        .lines()
        .filter_map(|l| l.split_once(" path ").map(|(_, p)| p.trim().to_string()))
        .collect()
}

/// The "max referenced" limit of the qgroup of the subvolume at `dir` (None: no limit).
fn qgroup_limit(dir: &Path) -> Option<u64> {
    let out = btrfs(&["qgroup", "show", "--raw", "-re", "-f"], dir);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("0/"))
        .unwrap_or_else(|| panic!("no level-0 qgroup for {}:\n{out}", dir.display()));
    let max = line
        .split_whitespace()
        .nth(3)
        .expect("a max referenced column");
    (max != "none").then(|| max.parse().expect("max referenced is a number"))
}

/// Commits the current btrfs transaction. Qgroup usage (what NodeGetVolumeStats reports as used
/// bytes, from /sys/fs/btrfs/<fsid>/qgroups) is only accounted at a transaction commit, and an
/// fsync does not commit one (it writes the log tree), so run this before asserting on usage.
fn btrfs_commit(mnt: &Path) {
    btrfs(&["filesystem", "sync"], mnt);
}

/// Writes `len` bytes at `offset` of an existing file or device in 1 MiB chunks, then fsyncs.
fn write_at(path: &Path, offset: u64, len: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let _open = hold_files_open();
    let f = fs::OpenOptions::new().write(true).open(path)?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len());
        f.write_all_at(&chunk[..n], offset + done as u64)?;
        done += n;
    }
    f.sync_all()
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_qgroup_limits_and_grows_a_mount_volume() {
    let (d, mnt) = btrfs_driver(true).await;
    let cap = mount_cap();
    let vol = create_enforced(&d, "limited", cap.clone()).await;
    let dir = d.volume_dir("limited");
    assert!(is_subvolume(&dir), "{} is not a subvolume", dir.display());
    assert!(
        subvolumes(&mnt).contains(&"hostpath/limited".to_string()),
        "{:?}",
        subvolumes(&mnt)
    );
    assert_eq!(qgroup_limit(&dir), Some(16 << 20));

    let id = vol.volume_id;
    let (staging, target) = publish_limited(&d, &id, cap.clone()).await;
    let r = overflow_then_grow(&d, &id, &target).await;
    assert!(!r.node_expansion_required, "{r:?}");
    assert_eq!(qgroup_limit(&dir), Some(48 << 20));

    // Used bytes come from the qgroup, which is only updated at a transaction commit.
    btrfs_commit(&mnt);
    grown_limit_holds(&d, &id, &target).await;

    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.controller_unpublish(&id).await;
    d.delete(&id).await;
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(
        !subvolumes(&mnt).iter().any(|p| p.ends_with("limited")),
        "subvolume still listed: {:?}",
        subvolumes(&mnt)
    );
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_block_volume_is_fully_writable_under_its_qgroup() {
    let (d, mnt) = btrfs_driver(true).await;
    let cap = block_cap();
    let vol = create_enforced(&d, "blk", cap.clone()).await;
    let dir = d.volume_dir("blk");
    assert!(is_subvolume(&dir), "{} is not a subvolume", dir.display());
    // The limit leaves room beside the image for the directory's own metadata.
    let limit = qgroup_limit(&dir).expect("block volume without a qgroup limit");
    assert!(
        limit > 16 << 20,
        "limit {limit} leaves no slack beside the image"
    );

    let id = vol.volume_id;
    let staging = d.staging("blk");
    let target = d.target("blk", "pod");
    d.controller_publish(&id, cap.clone(), false).await;
    d.stage(&id, &staging, cap.clone()).await;
    d.publish(&id, &staging, &target, cap.clone(), false).await;
    assert_eq!(block_size(&target), 16 << 20);
    // Writing every byte of the device allocates the whole sparse image: the qgroup must allow
    // it (the sync surfaces a refused write-back of the loop device as EIO).
    write_at(&target, 0, 16 << 20).expect("filling a 16 MiB block volume");

    let r = d
        .controller()
        .controller_expand_volume(expand_req(&id, 32 * MIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 32 * MIB);
    assert!(r.node_expansion_required, "{r:?}");
    assert!(qgroup_limit(&dir).unwrap() > 32 << 20);
    let r = d
        .node()
        .node_expand_volume(node_expand_req(&id, &target, 32 * MIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 32 * MIB);
    assert_eq!(block_size(&target), 32 << 20);
    write_at(&target, 16 << 20, 16 << 20).expect("filling the grown half of the block volume");
    assert_eq!(bytes_usage(&d, &id, &target).await.total, 32 * MIB);

    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.controller_unpublish(&id).await;
    d.delete(&id).await;
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(
        !subvolumes(&mnt).iter().any(|p| p.ends_with("blk")),
        "{:?}",
        subvolumes(&mnt)
    );
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_without_quota_does_not_enforce_capacity() {
    let (d, mnt) = btrfs_driver(false).await;
    check_plain_base(&d, "btrfs without quota").await;
    // Without qgroups there is nothing a subvolume would buy: volumes are plain directories.
    d.create("dir", 8 * MIB, mount_cap()).await;
    assert!(
        d.log().contains("volume sizes are advisory"),
        "the driver should warn that sizes are advisory:\n{}",
        d.log()
    );
    assert!(!is_subvolume(&d.volume_dir("dir")));
    assert_eq!(subvolumes(&mnt), Vec::<String>::new());
    d.delete(&d.volume_id("dir")).await;
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_quota_none_is_a_plain_advisory_directory() {
    let (d, mnt) = btrfs_driver(true).await;
    let vol = create_with(&d, "loose", 4 * MIB, "none").await;
    assert_eq!(enforced(&vol), Some("false"), "{:?}", vol.volume_context);
    let loose = d.volume_dir("loose");
    assert!(loose.is_dir());
    assert!(
        !is_subvolume(&loose),
        "quota=none made {} a subvolume",
        loose.display()
    );
    assert!(
        !subvolumes(&mnt).iter().any(|p| p.ends_with("loose")),
        "{:?}",
        subvolumes(&mnt)
    );
    // Advisory: more than the size can be written.
    write_file(&loose.join("blob"), 8 << 20).expect("quota=none must not limit");

    // On the same base quota=enforce is accepted and enforced.
    let vol = create_with(&d, "strict", 4 * MIB, "enforce").await;
    assert_eq!(enforced(&vol), Some("true"), "{:?}", vol.volume_context);
    let strict = d.volume_dir("strict");
    assert!(is_subvolume(&strict));
    let err = write_file(&strict.join("blob"), 8 << 20).expect_err("quota=enforce did not limit");
    assert!(is_quota_error(&err), "{err:?}");

    d.delete(&d.volume_id("loose")).await;
    d.delete(&d.volume_id("strict")).await;
    assert_eq!(subvolumes(&mnt), Vec::<String>::new());
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_limit_survives_kill9_and_restart() {
    let (mut d, mnt) = btrfs_driver(true).await;
    let cap = mount_cap();
    let id = d.create("durable", 16 * MIB, cap.clone()).await.volume_id;
    let staging = d.staging("durable");
    let target = d.target("durable", "pod");
    d.controller_publish(&id, cap.clone(), false).await;
    d.stage(&id, &staging, cap.clone()).await;
    d.publish(&id, &staging, &target, cap.clone(), false).await;

    d.kill9();
    assert!(!d.is_running());
    d.restart().await;

    let vol = d
        .get(&id)
        .await
        .volume
        .expect("ControllerGetVolume without volume");
    assert_eq!(
        enforced(&vol),
        Some("true"),
        "after restart: {:?}",
        vol.volume_context
    );
    assert!(is_subvolume(&d.volume_dir("durable")));
    let err = write_file(&target.join("blob"), 24 << 20)
        .expect_err("24 MiB fit into a 16 MiB volume after a restart");
    assert!(
        is_quota_error(&err),
        "expected EDQUOT or ENOSPC, got {err:?}"
    );
    fs::remove_file(target.join("blob")).unwrap();

    // The restarted driver still controls the limit: growing the volume raises it.
    d.controller()
        .controller_expand_volume(expand_req(&id, 48 * MIB))
        .await
        .unwrap();
    write_file(&target.join("blob"), 24 << 20).expect("24 MiB must fit after growing to 48 MiB");

    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.controller_unpublish(&id).await;
    d.delete(&id).await;
    assert_eq!(subvolumes(&mnt), Vec::<String>::new());
    d.assert_nothing_leaked(&[&mnt]);
}

/// Rewriting blocks in place (what a filesystem or database on the device does all day) must not
/// pin old copy-on-write extents against the qgroup: the image is created NOCOW.
#[tokio::test(flavor = "multi_thread")]
async fn btrfs_block_volume_takes_overwrites_within_its_size() {
    let (d, mnt) = btrfs_driver(true).await;
    let cap = block_cap();
    let (id, staging, target) = d.create_published("blk", 16 * MIB, cap.clone()).await;
    write_at(&target, 0, 16 << 20).expect("filling a 16 MiB block volume");
    // What a file system or database on the device does all day: rewrite blocks in place.
    {
        use std::os::unix::fs::FileExt;
        let _open = hold_files_open();
        let f = fs::OpenOptions::new().write(true).open(&target).unwrap();
        let block = vec![0x77u8; 4096];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset = (x % 4096) * 4096;
            f.write_all_at(&block, offset)
                .and_then(|()| f.sync_data())
                .unwrap_or_else(|e| {
                    panic!("overwrite #{i} of 4 KiB at {offset} within the 16 MiB device: {e}")
                });
        }
    }
    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[&mnt]);
}

/// A pod may create btrfs subvolumes inside its volume (no capability needed). Deleting the volume
/// must take them along: they are part of the volume's tree, not mounts.
#[tokio::test(flavor = "multi_thread")]
async fn btrfs_nested_subvolume_does_not_block_delete() {
    let (d, mnt) = btrfs_driver(true).await;
    let id = d.create("nest", 16 * MIB, mount_cap()).await.volume_id;
    let nested = d.volume_dir("nest").join("nested");
    btrfs(&["subvolume", "create"], &nested);
    write_file(&nested.join("small"), 1 << 20).expect("write into the nested subvolume");
    d.controller()
        .delete_volume(delete_req(&id))
        .await
        .expect("DeleteVolume of a volume holding a nested subvolume");
    assert_eq!(subvolumes(&mnt), Vec::<String>::new());
    d.assert_nothing_leaked(&[&mnt]);
}

/// Known limitation (docs/architecture.md): a subvolume created inside a volume gets a qgroup of
/// its own, outside the volume's limit. Kept as a runnable reproduction.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "known btrfs limitation: nested subvolumes are not charged to the volume's qgroup"]
async fn btrfs_nested_subvolume_escapes_the_limit() {
    let (d, mnt) = btrfs_driver(true).await;
    let id = d.create("nest", 16 * MIB, mount_cap()).await.volume_id;
    let nested = d.volume_dir("nest").join("nested");
    btrfs(&["subvolume", "create"], &nested);
    let err = write_file(&nested.join("blob"), 24 << 20).err();
    d.delete(&id).await;
    d.assert_nothing_leaked(&[&mnt]);
    let err = err.expect("24 MiB written into a 16 MiB volume through a nested subvolume");
    assert!(is_quota_error(&err), "{err}");
}
