//! Helpers of the NFS snapshot tests (tests/nfs): a tree holding what a snapshot must keep,
//! its manifest (what a copy must reproduce), and snapshot requests.

#![allow(dead_code)]

use super::ganesha::Ganesha;
use super::nfs::*;
use super::*;
use ferrovol::proto as csi;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { len: u64, hash: u64 },
    Link(PathBuf),
}

/// What a copy must keep of one entry: kind, content or link text, mode, owner, and the
/// modification time of files and directories.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Option<(i64, i64)>,
}

/// Every entry below `root` (not `root` itself, whose mode is the volume's), special files
/// left out, and the groups of paths that are hard links of one file.
pub fn manifest(root: &Path) -> Manifest {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                Kind::Dir
            } else if ft.is_file() {
                let data = fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                data.hash(&mut h);
                if md.nlink() > 1 {
                    inodes.entry(md.ino()).or_default().push(rel.clone());
                }
                Kind::File {
                    len: data.len() as u64,
                    hash: h.finish(),
                }
            } else if ft.is_symlink() {
                Kind::Link(fs::read_link(&p).unwrap())
            } else {
                continue;
            };
            let mtime = (!ft.is_symlink()).then(|| (md.mtime(), md.mtime_nsec()));
            out.insert(
                rel,
                Node {
                    kind,
                    mode: md.permissions().mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime,
                },
            );
        }
    }
    let links = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    (out, links)
}

pub type Manifest = (BTreeMap<String, Node>, BTreeSet<Vec<String>>);

/// Asserts two manifests are equal, naming only the entries that differ.
#[track_caller]
pub fn assert_same(have: &Manifest, want: &Manifest, what: &str) {
    let keys: BTreeSet<&String> = have.0.keys().chain(want.0.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| have.0.get(*k) != want.0.get(*k))
        .map(|k| format!("{k}: have {:?}, want {:?}", have.0.get(k), want.0.get(k)))
        .collect();
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
    assert_eq!(have.1, want.1, "{what}: hard links");
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// A tree with what a snapshot must keep: modes (setuid too), owners, a hard link across
/// directories, symlinks pointing outside and inside (never followed), a sparse file, nested
/// and empty directories, and a FIFO (which an NFSv3 copy cannot recreate).
pub fn fill(dir: &Path) {
    fs::write(dir.join("a.txt"), "hello\n").unwrap();
    fs::set_permissions(dir.join("a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    chown(&dir.join("a.txt"), 1234, 5678);
    fs::create_dir(dir.join("dir")).unwrap();
    let big: Vec<u8> = (0..(MIB as u32 + 123))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(dir.join("dir/b.bin"), &big).unwrap();
    fs::hard_link(dir.join("dir/b.bin"), dir.join("dir/b-link")).unwrap();
    fs::hard_link(dir.join("dir/b.bin"), dir.join("top-link")).unwrap();
    symlink("/etc/passwd", dir.join("out")).unwrap();
    symlink("a.txt", dir.join("rel")).unwrap();
    chown(&dir.join("rel"), 77, 88);
    let f = fs::File::create(dir.join("sparse")).unwrap();
    f.set_len(8 * MIB as u64).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"x", 4 * MIB as u64).unwrap();
    fs::write(dir.join("setuid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(dir.join("deep/1/2/3")).unwrap();
    fs::write(dir.join("deep/1/2/3/f"), "deep").unwrap();
    fs::create_dir(dir.join("empty")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    fs::set_permissions(dir.join("dir"), fs::Permissions::from_mode(0o750)).unwrap();
    chown(&dir.join("dir"), 42, 43);
}

pub fn snap_req(name: &str, source: &str) -> csi::CreateSnapshotRequest {
    csi::CreateSnapshotRequest {
        source_volume_id: source.into(),
        name: name.into(),
        ..Default::default()
    }
}

pub async fn snapshot(d: &Driver, name: &str, source: &str) -> csi::Snapshot {
    d.controller()
        .create_snapshot(snap_req(name, source))
        .await
        .unwrap_or_else(|e| panic!("CreateSnapshot {name}: {e}\n{}", d.log()))
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
        .unwrap_or_else(|e| panic!("DeleteSnapshot {id}: {e}\n{}", d.log()));
}

pub fn from(
    name: &str,
    p: &HashMap<String, String>,
    src: csi::volume_content_source::Type,
) -> csi::CreateVolumeRequest {
    let mut r = req(name, p);
    r.volume_content_source = Some(csi::VolumeContentSource { r#type: Some(src) });
    r
}

pub fn of_snapshot(id: &str) -> csi::volume_content_source::Type {
    csi::volume_content_source::Type::Snapshot(csi::volume_content_source::SnapshotSource {
        snapshot_id: id.into(),
    })
}

pub fn of_volume(id: &str) -> csi::volume_content_source::Type {
    csi::volume_content_source::Type::Volume(csi::volume_content_source::VolumeSource {
        volume_id: id.into(),
    })
}

pub async fn create_from(
    d: &Driver,
    name: &str,
    p: &HashMap<String, String>,
    src: csi::volume_content_source::Type,
) -> csi::Volume {
    d.controller()
        .create_volume(from(name, p, src))
        .await
        .unwrap_or_else(|e| panic!("CreateVolume {name} from a source: {e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap()
}

pub async fn list(d: &Driver, snapshot_id: &str, source: &str) -> Vec<csi::Snapshot> {
    d.controller()
        .list_snapshots(csi::ListSnapshotsRequest {
            snapshot_id: snapshot_id.into(),
            source_volume_id: source.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.snapshot.unwrap())
        .collect()
}

/// Nothing of snapshots or restores is left on the share.
pub fn assert_no_leftovers(g: &Ganesha) {
    let meta = g.export.join(".ferrovol");
    for dir in ["snapshot-data", "staging", "snapshots", "volumes"] {
        let left: Vec<_> = dir_names(&meta.join(dir))
            .into_iter()
            .filter(|n| !n.starts_with(".ferrovol-tmp"))
            .collect();
        assert!(left.is_empty(), ".ferrovol/{dir} still holds {left:?}");
    }
}
