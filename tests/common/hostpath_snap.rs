//! Helpers shared by the hostpath snapshot tests (`snapshots`, `snapshots_crash`, `copy`): base
//! filesystems of each kind, snapshot requests, and the content every test writes and checks.

#![allow(dead_code)]

use super::*;
use ferrovol::proto as csi;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug)]
pub enum Base {
    BtrfsQuota,
    Btrfs,
    Xfs,
    Ext4,
}

/// A loop filesystem of `base`'s kind under the builder's scratch dir: (device, mount point).
pub fn make_base_fs(b: &Builder, base: Base, size: u64) -> (String, PathBuf) {
    let mkfs: &[&str] = match base {
        Base::BtrfsQuota | Base::Btrfs => {
            require_tool("mkfs.btrfs", "btrfs-progs");
            &["mkfs.btrfs", "-q"]
        }
        Base::Xfs => {
            require_tool("mkfs.xfs", "xfsprogs");
            &["mkfs.xfs", "-q", "-m", "reflink=1"]
        }
        Base::Ext4 => {
            require_tool("mkfs.ext4", "e2fsprogs");
            &["mkfs.ext4", "-q"]
        }
    };
    let dev = make_fs(b.path(), "fs", mkfs, size);
    let mnt = try_mount(b.path(), "fs", &dev, "rw").unwrap_or_else(|e| panic!("{e}"));
    if matches!(base, Base::BtrfsQuota) {
        for args in [&["quota", "enable"][..], &["quota", "rescan", "-w"]] {
            let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            argv.push(mnt.as_os_str());
            run("btrfs", &argv);
        }
    }
    (dev, mnt)
}

/// The default image size of each kind (XFS needs 300 MB at least).
pub fn default_size(base: Base) -> u64 {
    match base {
        Base::Ext4 => 512 << 20,
        _ => 1 << 30,
    }
}

/// A driver whose hostpath base is on a fresh filesystem of `size` bytes; also returns the
/// filesystem's device and mount point (for tests that remount it).
pub async fn driver_on_fs(
    base: Base,
    size: u64,
    crash_at: Option<&str>,
) -> (Driver, String, PathBuf) {
    let mut b = Driver::builder();
    let (dev, mnt) = make_base_fs(&b, base, size);
    if let Some(point) = crash_at {
        b = b.crash_at(point);
    }
    let d = b.hostpath_base(mnt.join("hostpath")).start().await;
    (d, dev, mnt)
}

pub async fn driver_on(base: Base, crash_at: Option<&str>) -> Driver {
    driver_on_fs(base, default_size(base), crash_at).await.0
}

pub fn snap_req(name: &str, source: &str) -> csi::CreateSnapshotRequest {
    csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    }
}

pub fn from_source(
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

pub async fn snapshot(d: &Driver, name: &str, source: &str) -> csi::Snapshot {
    d.controller()
        .create_snapshot(snap_req(name, source))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
}

pub async fn delete_snapshot(d: &Driver, id: &str) {
    d.controller()
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

pub async fn list_snapshots(d: &Driver, snapshot_id: &str, source: &str) -> Vec<String> {
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

/// Writes the old content: a file with an xattr, a hard link to it, a symlink pointing outside
/// the volume, a 100 MiB sparse file with data at both ends.
pub fn write_old_content(dir: &Path) {
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

pub fn assert_old_content(dir: &Path) {
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
pub fn assert_clean(d: &Driver) {
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

/// GetCapacity of a mount volume on this node.
pub async fn capacity(d: &Driver) -> i64 {
    d.controller()
        .get_capacity(csi::GetCapacityRequest {
            volume_capabilities: vec![mount_cap()],
            ..Default::default()
        })
        .await
        .expect("GetCapacity")
        .into_inner()
        .available_capacity
}

/// syncfs(2) of the filesystem holding `dir`.
pub fn syncfs(dir: &Path) {
    let f = fs::File::open(dir).unwrap();
    // SAFETY: plain syscall on a live descriptor.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    assert_eq!(
        rc,
        0,
        "syncfs {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

/// Writes `count` files of `each` bytes of non-zero data (no holes) under `dir`.
pub fn write_files(dir: &Path, count: usize, each: usize) {
    let chunk: Vec<u8> = (0..each).map(|i| (i % 251 + 1) as u8).collect();
    for i in 0..count {
        fs::write(dir.join(format!("f-{i:05}")), &chunk).unwrap();
    }
}
