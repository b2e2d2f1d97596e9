//! Snapshots and clones of hostpath volumes on each kind of base filesystem: btrfs with quota
//! (subvolume snapshots), btrfs without quota and XFS (reflink copies), ext4 (full copies).
//! Content survives exactly (sparse files, hard links, symlinks, xattrs), restores are
//! independent of their source, and a snapshot costs GetCapacity only what it really holds.
//! Crashes and power cuts: `snapshots_crash`.
//! Needs root, mkfs.btrfs/btrfs (btrfs-progs), mkfs.xfs (xfsprogs), mkfs.ext4 (e2fsprogs).

use crate::common;
use crate::common::hostpath_snap as support;

use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use support::*;
use tonic::Code;

async fn content_round_trip(base: Base) {
    let d = driver_on(base, None).await;
    let method = match base {
        Base::BtrfsQuota => "method=Btrfs",
        Base::Btrfs | Base::Xfs => "method=Reflink",
        Base::Ext4 => "method=Copy",
    };
    // The base is probed when a volume first needs it.
    let src = d.create("src", 64 * MIB, mount_cap()).await;
    assert!(
        d.log().contains(method),
        "expected {method} in the log:\n{}",
        d.log()
    );
    let dir = d.volume_dir("src");
    write_old_content(&dir);
    let snap = snapshot(&d, "snap-1", &src.volume_id).await;
    assert!(snap.ready_to_use && snap.creation_time.is_some());
    assert_eq!(snap.size_bytes, 64 * MIB);
    assert_eq!(snap.snapshot_id, format!("hostpath/{NODE}/snap/snap-1"));
    // Idempotent with the same source; AlreadyExists for another one.
    assert_eq!(
        snapshot(&d, "snap-1", &src.volume_id).await.snapshot_id,
        snap.snapshot_id
    );
    let other = d.create("other", 16 * MIB, mount_cap()).await;
    let err = d
        .controller()
        .create_snapshot(snap_req("snap-1", &other.volume_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Change the source after the snapshot.
    fs::write(dir.join("sub/a"), b"new").unwrap();
    fs::write(dir.join("new-file"), b"after").unwrap();

    // Smaller than the source: OutOfRange. Larger: the new size is the limit.
    let err = d
        .controller()
        .create_volume(from_source(
            "small",
            16 * MIB,
            mount_cap(),
            Some(&snap.snapshot_id),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let restored = d
        .controller()
        .create_volume(from_source(
            "restored",
            128 * MIB,
            mount_cap(),
            Some(&snap.snapshot_id),
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(restored.capacity_bytes, 128 * MIB);
    assert!(restored.content_source.is_some());
    assert_old_content(&d.volume_dir("restored"));
    assert_eq!(
        fs::read(dir.join("sub/a")).unwrap(),
        b"new",
        "source keeps its new content"
    );
    if matches!(base, Base::BtrfsQuota) {
        let st = d
            .stats(&restored.volume_id, &d.volume_dir("restored"))
            .await;
        let total = st
            .usage
            .iter()
            .find(|u| u.unit == 1)
            .map(|u| u.total)
            .unwrap_or(0);
        assert_eq!(total, 128 * MIB, "the qgroup limit is the new size: {st:?}");
    }
    // A clone of the restored volume, then the sources go away: the copies stay intact.
    let clone = d
        .controller()
        .create_volume(from_source(
            "clone",
            128 * MIB,
            mount_cap(),
            None,
            Some(&restored.volume_id),
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        list_snapshots(&d, "", &src.volume_id).await,
        std::slice::from_ref(&snap.snapshot_id)
    );
    assert_eq!(
        list_snapshots(&d, &snap.snapshot_id, "").await,
        std::slice::from_ref(&snap.snapshot_id)
    );
    assert!(list_snapshots(&d, "", &other.volume_id).await.is_empty());
    // A snapshot id used as a volume id names no volume.
    let err = d
        .controller()
        .controller_get_volume(get_req(&snap.snapshot_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    d.delete(&src.volume_id).await;
    assert!(
        d.base().join(".snapshots/snap-1/data/sub/a").exists(),
        "snapshot outlives its source"
    );
    delete_snapshot(&d, &snap.snapshot_id).await;
    delete_snapshot(&d, &snap.snapshot_id).await;
    d.delete(&restored.volume_id).await;
    assert_old_content(&d.volume_dir("clone"));
    for id in [clone.volume_id, other.volume_id] {
        d.delete(&id).await;
    }
    assert_clean(&d);
}

#[tokio::test]
async fn content_round_trip_btrfs_quota() {
    content_round_trip(Base::BtrfsQuota).await;
}

#[tokio::test]
async fn content_round_trip_btrfs_reflink() {
    content_round_trip(Base::Btrfs).await;
}

#[tokio::test]
async fn content_round_trip_xfs_reflink() {
    content_round_trip(Base::Xfs).await;
}

#[tokio::test]
async fn content_round_trip_ext4_copy() {
    content_round_trip(Base::Ext4).await;
}

/// A block volume written through its loop device (page cache, no fsync): the snapshot holds
/// what the pod wrote last, and a restore into a larger volume has it at the same offset.
async fn block_snapshot_holds_unflushed_writes(base: Base) {
    let d = driver_on(base, None).await;
    let vol = d.create("blk", 32 * MIB, block_cap()).await;
    d.controller_publish(&vol.volume_id, block_cap(), false)
        .await;
    let (staging, target) = d
        .stage_and_publish(&vol.volume_id, "blk", block_cap())
        .await;
    {
        // No child may inherit the device while it is open, or its detach is deferred.
        let _open = hold_files_open();
        let mut dev = fs::OpenOptions::new().write(true).open(&target).unwrap();
        dev.seek(SeekFrom::Start(5 << 20)).unwrap();
        dev.write_all(b"written-by-the-pod").unwrap();
    }
    let snap = snapshot(&d, "blk-snap", &vol.volume_id).await;
    let restored = d
        .controller()
        .create_volume(from_source(
            "blk-restored",
            48 * MIB,
            block_cap(),
            Some(&snap.snapshot_id),
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let image = d.volume_dir("blk-restored").join("disk.img");
    assert_eq!(fs::metadata(&image).unwrap().len(), 48 << 20);
    let mut f = fs::File::open(&image).unwrap();
    f.seek(SeekFrom::Start(5 << 20)).unwrap();
    let mut buf = [0u8; 18];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"written-by-the-pod");
    d.unpublish_and_unstage(&vol.volume_id, &target, &staging)
        .await;
    d.controller_unpublish(&vol.volume_id).await;
    delete_snapshot(&d, &snap.snapshot_id).await;
    d.delete(&vol.volume_id).await;
    d.delete(&restored.volume_id).await;
    assert_clean(&d);
}

#[tokio::test]
async fn block_snapshot_btrfs_quota() {
    block_snapshot_holds_unflushed_writes(Base::BtrfsQuota).await;
}

#[tokio::test]
async fn block_snapshot_xfs_reflink() {
    block_snapshot_holds_unflushed_writes(Base::Xfs).await;
}

#[tokio::test]
async fn block_snapshot_ext4_copy() {
    block_snapshot_holds_unflushed_writes(Base::Ext4).await;
}

#[tokio::test]
async fn bad_sources_are_refused_per_spec() {
    let d = driver_on(Base::Ext4, None).await;
    let mut ctl = d.controller();
    let missing = format!("hostpath/{NODE}/snap/missing");
    let err = ctl
        .create_volume(from_source("a", MIB, mount_cap(), Some(&missing), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = ctl
        .create_volume(from_source(
            "a",
            MIB,
            mount_cap(),
            None,
            Some(&d.volume_id("missing")),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let elsewhere = "hostpath/other-node/snap/x";
    let err = ctl
        .create_volume(from_source("a", MIB, mount_cap(), Some(elsewhere), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = ctl
        .create_snapshot(snap_req("s", &d.volume_id("missing")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let v = d.create("v", MIB, mount_cap()).await;
    let mut req = snap_req("s", &v.volume_id);
    req.parameters.insert("bogus".into(), "1".into());
    let err = ctl.create_snapshot(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = ctl
        .create_volume(from_source("b", MIB, block_cap(), None, Some(&v.volume_id)))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "block from a mount volume: {err:?}"
    );
    d.delete(&v.volume_id).await;
    assert_clean(&d);
}

/// GetCapacity after a snapshot of a volume holding 32 MiB: copy-on-write snapshots (btrfs
/// subvolume, XFS reflink) take nothing from it; a full copy (ext4) takes what it copied.
async fn snapshot_counts_in_capacity_by_what_it_holds(base: Base) {
    const DATA: i64 = 32 * MIB;
    let d = driver_on(base, None).await;
    let v = d.create("v", 64 * MIB, mount_cap()).await;
    write_files(&d.volume_dir("v"), 1, DATA as usize);
    syncfs(d.base());
    let before = capacity(&d).await;
    let snap = snapshot(&d, "s", &v.volume_id).await;
    syncfs(d.base());
    let taken = before - capacity(&d).await;
    match base {
        Base::Ext4 => assert!(
            (DATA..DATA + 2 * MIB).contains(&taken),
            "a full copy of {DATA} bytes took {taken} bytes of capacity"
        ),
        _ => assert!(
            taken < MIB,
            "a copy-on-write snapshot of {DATA} bytes took {taken} bytes of capacity ({base:?})"
        ),
    }
    delete_snapshot(&d, &snap.snapshot_id).await;
    d.delete(&v.volume_id).await;
    assert_clean(&d);
}

#[tokio::test]
async fn capacity_after_snapshot_btrfs_quota() {
    snapshot_counts_in_capacity_by_what_it_holds(Base::BtrfsQuota).await;
}

#[tokio::test]
async fn capacity_after_snapshot_xfs_reflink() {
    snapshot_counts_in_capacity_by_what_it_holds(Base::Xfs).await;
}

#[tokio::test]
async fn capacity_after_snapshot_ext4_copy() {
    snapshot_counts_in_capacity_by_what_it_holds(Base::Ext4).await;
}
