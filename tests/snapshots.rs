//! Snapshots and clones of hostpath volumes on each kind of base filesystem: btrfs with quota
//! (subvolume snapshots), btrfs without quota and XFS (reflink copies), ext4 (full copies).
//! Content survives exactly (sparse files, hard links, symlinks, xattrs), restores are
//! independent of their source, and a kill -9 mid-snapshot or mid-restore leaks nothing.
//! Needs root, mkfs.btrfs/btrfs (btrfs-progs), mkfs.xfs (xfsprogs), mkfs.ext4 (e2fsprogs).

mod common;

use common::*;
use ferrovol::proto as csi;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tonic::Code;

#[derive(Clone, Copy, Debug)]
enum Base {
    BtrfsQuota,
    Btrfs,
    Xfs,
    Ext4,
}

async fn driver_on(base: Base, crash_at: Option<&str>) -> Driver {
    let mut b = Driver::builder();
    let mnt = match base {
        Base::BtrfsQuota | Base::Btrfs => {
            require_tool("mkfs.btrfs", "btrfs-progs");
            let mnt = mount_image(b.path(), "fs", &["mkfs.btrfs", "-q"], 1 << 30, "rw");
            if matches!(base, Base::BtrfsQuota) {
                run(
                    "btrfs",
                    &["quota".as_ref(), "enable".as_ref(), mnt.as_os_str()],
                );
                run(
                    "btrfs",
                    &[
                        "quota".as_ref(),
                        "rescan".as_ref(),
                        "-w".as_ref(),
                        mnt.as_os_str(),
                    ],
                );
            }
            mnt
        }
        Base::Xfs => {
            require_tool("mkfs.xfs", "xfsprogs");
            mount_image(b.path(), "fs", &["mkfs.xfs", "-q"], 1 << 30, "rw")
        }
        Base::Ext4 => {
            require_tool("mkfs.ext4", "e2fsprogs");
            mount_image(b.path(), "fs", &["mkfs.ext4", "-q"], 512 << 20, "rw")
        }
    };
    if let Some(point) = crash_at {
        b = b.crash_at(point);
    }
    b.hostpath_base(mnt.join("hostpath")).start().await
}

fn snap_req(name: &str, source: &str) -> csi::CreateSnapshotRequest {
    csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    }
}

fn from_source(
    name: &str,
    bytes: i64,
    cap: csi::VolumeCapability,
    snap: Option<&str>,
    vol: Option<&str>,
) -> csi::CreateVolumeRequest {
    use csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
    let mut req = create_req(name, bytes, cap);
    let r#type = match (snap, vol) {
        (Some(s), _) => Type::Snapshot(SnapshotSource {
            snapshot_id: s.into(),
        }),
        (_, Some(v)) => Type::Volume(VolumeSource {
            volume_id: v.into(),
        }),
        _ => unreachable!(),
    };
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(r#type),
    });
    req
}

async fn snapshot(d: &Driver, name: &str, source: &str) -> csi::Snapshot {
    d.controller()
        .create_snapshot(snap_req(name, source))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
}

async fn delete_snapshot(d: &Driver, id: &str) {
    d.controller()
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn list_snapshots(d: &Driver, snapshot_id: &str, source: &str) -> Vec<String> {
    let resp = d
        .controller()
        .list_snapshots(csi::ListSnapshotsRequest {
            snapshot_id: snapshot_id.into(),
            source_volume_id: source.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    resp.entries
        .into_iter()
        .map(|e| e.snapshot.unwrap().snapshot_id)
        .collect()
}

fn set_xattr(path: &Path, name: &str, value: &str) {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings; the buffer is valid for its length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

/// Writes the old content: a file with an xattr, a hard link to it, a symlink pointing outside
/// the volume, a 100 MiB sparse file with data at both ends.
fn write_old_content(dir: &Path) {
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/a"), b"old").unwrap();
    set_xattr(&dir.join("sub/a"), "user.color", "blue");
    fs::hard_link(dir.join("sub/a"), dir.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("outside")).unwrap();
    let mut f = fs::File::create(dir.join("sparse")).unwrap();
    f.write_all(b"head").unwrap();
    f.seek(SeekFrom::Start(100 << 20)).unwrap();
    f.write_all(b"tail").unwrap();
}

fn assert_old_content(dir: &Path) {
    assert_eq!(
        fs::read(dir.join("sub/a")).unwrap(),
        b"old",
        "{}",
        dir.display()
    );
    assert_eq!(
        get_xattr(&dir.join("sub/a"), "user.color").as_deref(),
        Some("blue")
    );
    let (a, l) = (
        fs::metadata(dir.join("sub/a")).unwrap(),
        fs::metadata(dir.join("link")).unwrap(),
    );
    assert_eq!(a.ino(), l.ino(), "hard link kept");
    let link = fs::symlink_metadata(dir.join("outside")).unwrap();
    assert!(link.file_type().is_symlink(), "symlink copied as a link");
    assert_eq!(
        fs::read_link(dir.join("outside")).unwrap(),
        Path::new("/etc/hostname")
    );
    let sparse = fs::metadata(dir.join("sparse")).unwrap();
    assert_eq!(sparse.len(), (100 << 20) + 4);
    assert!(
        sparse.blocks() * 512 < 4 << 20,
        "hole kept: {} bytes allocated",
        sparse.blocks() * 512
    );
    let mut f = fs::File::open(dir.join("sparse")).unwrap();
    let mut head = [0u8; 4];
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"head");
    assert!(
        !dir.join("new-file").exists(),
        "data written after the snapshot leaked into it"
    );
}

/// Removes the (empty) snapshots directory, then checks nothing of any volume is left.
fn assert_clean(d: &Driver) {
    let snaps = d.base().join(".snapshots");
    if snaps.exists() {
        assert_eq!(
            dir_names(&snaps),
            Vec::<String>::new(),
            "snapshot directories leaked"
        );
        fs::remove_dir(&snaps).unwrap();
    }
    d.assert_nothing_leaked(
        &mounts_under(d.root())
            .iter()
            .map(|m| m.mount_point.as_path())
            .collect::<Vec<_>>(),
    );
}

async fn content_round_trip(base: Base) {
    let d = driver_on(base, None).await;
    let method = match base {
        Base::BtrfsQuota => "method=Btrfs",
        Base::Btrfs | Base::Xfs => "method=Reflink",
        Base::Ext4 => "method=Copy",
    };
    assert!(
        d.log().contains(method),
        "expected {method} in the log:\n{}",
        d.log()
    );
    let src = d.create("src", 64 * MIB, mount_cap()).await;
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

/// kill -9 at `point` during CreateSnapshot (or the restore after it), then restart: nothing
/// half-made is listed and nothing is left on disk.
async fn crash_leaves_nothing(base: Base, point: &str, restore: bool) {
    let mut d = driver_on(base, if restore { None } else { Some(point) }).await;
    let src = d.create("src", 32 * MIB, mount_cap()).await;
    write_old_content(&d.volume_dir("src"));
    let mut ctl = d.controller();
    if restore {
        let snap = snapshot(&d, "s", &src.volume_id).await;
        d.set_env("FERROVOL_CRASH_AT", point);
        d.restart().await;
        let mut ctl = d.controller();
        let err = ctl
            .create_volume(from_source(
                "r",
                32 * MIB,
                mount_cap(),
                Some(&snap.snapshot_id),
                None,
            ))
            .await;
        assert!(err.is_err(), "the driver should have died at {point}");
        d.expect_crash().await;
        d.remove_env("FERROVOL_CRASH_AT");
        d.restart().await;
        assert_eq!(
            d.list_ids().await,
            std::slice::from_ref(&src.volume_id),
            "no half-restored volume listed"
        );
        assert!(
            !d.volume_dir("r").exists(),
            "half-restored volume left under its final name"
        );
        delete_snapshot(&d, &snap.snapshot_id).await;
    } else {
        assert!(ctl
            .create_snapshot(snap_req("s", &src.volume_id))
            .await
            .is_err());
        d.expect_crash().await;
        d.remove_env("FERROVOL_CRASH_AT");
        d.restart().await;
        assert!(
            list_snapshots(&d, "", "").await.is_empty(),
            "a half snapshot is listed"
        );
    }
    let snaps = d.base().join(".snapshots");
    assert!(
        !snaps.exists() || dir_names(&snaps).is_empty(),
        "leaked: {:?}",
        dir_names(&snaps)
    );
    d.delete(&src.volume_id).await;
    assert_clean(&d);
}

#[tokio::test]
async fn crash_mid_snapshot_btrfs_quota() {
    crash_leaves_nothing(Base::BtrfsQuota, "snapshot:before-commit", false).await;
}

#[tokio::test]
async fn crash_mid_snapshot_xfs() {
    crash_leaves_nothing(Base::Xfs, "snapshot:before-commit", false).await;
}

#[tokio::test]
async fn crash_after_marking_snapshot_ext4() {
    crash_leaves_nothing(Base::Ext4, "snapshot:after-mark", false).await;
}

#[tokio::test]
async fn crash_mid_restore_btrfs_quota() {
    crash_leaves_nothing(Base::BtrfsQuota, "restore:after-snapshot", true).await;
}

#[tokio::test]
async fn crash_mid_restore_ext4() {
    crash_leaves_nothing(Base::Ext4, "restore:after-copy", true).await;
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
