//! NFS snapshots and clones through real gRPC against the real binary and a real nfs-ganesha:
//! content kept exactly (what NFSv3 can carry), restores and clones independent of their
//! source, snapshots outliving their volume, and kill -9 during a snapshot copy, a restore and a
//! delete. Every outcome is checked on the exported directory's disk.
//! Needs root, nfs-ganesha (VFS) and rpcbind: skipped, saying so, without them.

mod common;
#[path = "support/ganesha.rs"]
mod ganesha;
#[path = "support/nfs.rs"]
mod nfs;

use common::*;
use ferrovol::proto as csi;
use ganesha::Ganesha;
use nfs::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File { len: u64, hash: u64 },
    Link(PathBuf),
}

/// What a copy must keep of one entry: kind, content or link text, mode, owner, and the
/// modification time of files and directories.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<(i64, i64)>,
}

/// Every entry below `root` (not `root` itself, whose mode is the volume's), special files
/// left out, and the groups of paths that are hard links of one file.
fn manifest(root: &Path) -> Manifest {
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

type Manifest = (BTreeMap<String, Node>, BTreeSet<Vec<String>>);

/// Asserts two manifests are equal, naming only the entries that differ.
#[track_caller]
fn assert_same(have: &Manifest, want: &Manifest, what: &str) {
    let keys: BTreeSet<&String> = have.0.keys().chain(want.0.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| have.0.get(*k) != want.0.get(*k))
        .map(|k| format!("{k}: have {:?}, want {:?}", have.0.get(k), want.0.get(k)))
        .collect();
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
    assert_eq!(have.1, want.1, "{what}: hard links");
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// A tree with what a snapshot must keep: modes (setuid too), owners, a hard link across
/// directories, symlinks pointing outside and inside (never followed), a sparse file, nested
/// and empty directories, and a FIFO (which an NFSv3 copy cannot recreate).
fn fill(dir: &Path) {
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

fn snap_req(name: &str, source: &str) -> csi::CreateSnapshotRequest {
    csi::CreateSnapshotRequest {
        source_volume_id: source.into(),
        name: name.into(),
        ..Default::default()
    }
}

async fn snapshot(d: &Driver, name: &str, source: &str) -> csi::Snapshot {
    d.controller()
        .create_snapshot(snap_req(name, source))
        .await
        .unwrap_or_else(|e| panic!("CreateSnapshot {name}: {e}\n{}", d.log()))
        .into_inner()
        .snapshot
        .unwrap()
}

fn from(
    name: &str,
    p: &HashMap<String, String>,
    src: csi::volume_content_source::Type,
) -> csi::CreateVolumeRequest {
    let mut r = req(name, p);
    r.volume_content_source = Some(csi::VolumeContentSource { r#type: Some(src) });
    r
}

fn of_snapshot(id: &str) -> csi::volume_content_source::Type {
    csi::volume_content_source::Type::Snapshot(csi::volume_content_source::SnapshotSource {
        snapshot_id: id.into(),
    })
}

fn of_volume(id: &str) -> csi::volume_content_source::Type {
    csi::volume_content_source::Type::Volume(csi::volume_content_source::VolumeSource {
        volume_id: id.into(),
    })
}

async fn create_from(
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

async fn list(d: &Driver, snapshot_id: &str, source: &str) -> Vec<csi::Snapshot> {
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
fn assert_no_leftovers(g: &Ganesha) {
    let meta = g.export.join(".ferrovol");
    for dir in ["snapshot-data", "staging", "snapshots", "volumes"] {
        let left: Vec<_> = dir_names(&meta.join(dir))
            .into_iter()
            .filter(|n| !n.starts_with(".ferrovol-tmp"))
            .collect();
        assert!(left.is_empty(), ".ferrovol/{dir} still holds {left:?}");
    }
}

#[tokio::test]
async fn snapshot_restore_and_clone_keep_the_content_exactly() {
    if !usable("nfs_snapshots") {
        return;
    }
    let g = Ganesha::start();
    let d = nfs_driver(&g, &[]).await;
    let p = class(&g, &[]);
    let src = create(&d, "src", &p).await;
    let src_dir = g.export.join(sub_dir(&src));
    fill(&src_dir);
    let before = manifest(&src_dir);
    assert!(before.1.contains(&vec![
        "dir/b-link".to_string(),
        "dir/b.bin".into(),
        "top-link".into()
    ]));

    let s = snapshot(&d, "snap-1", &src.volume_id).await;
    assert_eq!(s.snapshot_id, "nfs/snap/snap-1");
    assert!(s.ready_to_use, "a small copy is ready within the wait");
    assert_eq!(
        (s.size_bytes, s.source_volume_id.as_str()),
        (64 * MIB, "nfs/src")
    );
    let again = snapshot(&d, "snap-1", &src.volume_id).await;
    assert_eq!(again.creation_time, s.creation_time);
    let data = g.export.join(".ferrovol/snapshot-data/snap-1");
    assert_same(
        &manifest(&data),
        &before,
        "the snapshot holds the source as it was",
    );

    // Change the source, as a pod would: through NFS (ganesha caches what it has served, so
    // writes behind its back would not be seen). The snapshot and its restores do not move.
    let nc = ferrovol::nfs::NfsClient::new("127.0.0.1", &g.share(), Default::default()).unwrap();
    let sd = sub_dir(&src);
    nc.write_file_atomic(&format!("{sd}/a.txt"), b"changed\n")
        .unwrap();
    assert!(nc.remove_file(&format!("{sd}/dir/b.bin")).unwrap());
    nc.write_file_atomic(&format!("{sd}/new.txt"), b"new")
        .unwrap();
    let after = manifest(&src_dir);

    let r = create_from(&d, "restored", &p, of_snapshot(&s.snapshot_id)).await;
    assert_eq!(
        r.content_source.as_ref().and_then(|c| c.r#type.clone()),
        Some(of_snapshot(&s.snapshot_id))
    );
    let r_dir = g.export.join(sub_dir(&r));
    assert_same(
        &manifest(&r_dir),
        &before,
        "restore has the old content exactly",
    );
    assert_same(
        &manifest(&src_dir),
        &after,
        "the source keeps its new content",
    );
    assert_eq!(
        fs::read_link(r_dir.join("out")).unwrap(),
        Path::new("/etc/passwd"),
        "the symlink is copied as a link, not followed"
    );
    assert!(
        !r_dir.join("fifo").exists(),
        "FIFOs are not carried by NFSv3 copies"
    );
    let root = fs::metadata(&r_dir).unwrap();
    assert_eq!(
        root.permissions().mode() & 0o7777,
        0o777,
        "the volume root gets the class mode"
    );
    let c = create_from(&d, "clone", &p, of_volume(&src.volume_id)).await;
    assert_same(
        &manifest(&g.export.join(sub_dir(&c))),
        &after,
        "a clone is the source now",
    );

    // Restores are independent: writing one changes neither the snapshot nor the source.
    fs::write(r_dir.join("a.txt"), "mine").unwrap();
    assert_same(&manifest(&data), &before, "content");

    // Sizes, names, parameters and sources are checked like volumes'.
    let mut small = from("small", &p, of_snapshot(&s.snapshot_id));
    small.capacity_range = range(MIB, MIB);
    let st = d.controller().create_volume(small).await;
    expect_code(st, Code::OutOfRange, "restore smaller than the snapshot");
    let st = d
        .controller()
        .create_volume(from("ghost", &p, of_snapshot("nfs/snap/none")))
        .await;
    expect_code(st, Code::NotFound, "restore of an unknown snapshot");
    let st = d
        .controller()
        .create_volume(from("restored", &p, of_volume(&src.volume_id)))
        .await;
    expect_code(st, Code::AlreadyExists, "same name, another source");
    let mut odd = snap_req("snap-odd", &src.volume_id);
    odd.parameters.insert("compress".into(), "yes".into());
    let st = d.controller().create_snapshot(odd).await;
    let st = expect_code(st, Code::InvalidArgument, "unknown VolumeSnapshotClass key");
    assert!(st.message().contains("compress"), "{st:?}");
    let st = d
        .controller()
        .create_snapshot(snap_req("snap-1", &c.volume_id))
        .await;
    expect_code(
        st,
        Code::AlreadyExists,
        "snapshot name taken by another source",
    );
    let st = d
        .controller()
        .create_snapshot(snap_req(".hidden", &src.volume_id))
        .await;
    expect_code(
        st,
        Code::InvalidArgument,
        "snapshot name beginning with '.'",
    );

    // Listing: by id, by source, paged.
    snapshot(&d, "snap-2", &c.volume_id).await;
    assert_eq!(list(&d, "nfs/snap/snap-1", "").await.len(), 1);
    let by_src = list(&d, "", &c.volume_id).await;
    assert_eq!(by_src.len(), 1);
    assert_eq!(by_src[0].snapshot_id, "nfs/snap/snap-2");
    assert!(list(&d, "nfs/snap/snap-1", &c.volume_id).await.is_empty());
    let page = d
        .controller()
        .list_snapshots(csi::ListSnapshotsRequest {
            max_entries: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 1);
    assert!(!page.next_token.is_empty());

    // The source goes, with onDelete=delete; its snapshot stays and still restores.
    d.delete(&src.volume_id).await;
    assert!(!src_dir.exists());
    assert_eq!(list(&d, "", "").await.len(), 2);
    let r2 = create_from(&d, "restored-2", &p, of_snapshot(&s.snapshot_id)).await;
    assert_same(&manifest(&g.export.join(sub_dir(&r2))), &before, "content");

    for id in ["nfs/snap/snap-1", "nfs/snap/snap-2", "nfs/snap/snap-1"] {
        d.controller()
            .delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(list(&d, "", "").await.is_empty());
    for v in [&r, &c, &r2] {
        d.delete(&v.volume_id).await;
    }
    assert_no_leftovers(&g);
}

/// Polls ListSnapshots until `id` is ready; every answer before says not ready.
async fn wait_ready(d: &Driver, id: &str) -> csi::Snapshot {
    let t0 = Instant::now();
    loop {
        let l = list(d, id, "").await;
        assert_eq!(l.len(), 1, "{id} listed once: {l:?}");
        if l[0].ready_to_use {
            return l[0].clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{id} never became ready\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_gone(p: &Path) {
    let t0 = Instant::now();
    while p.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} still there",
            p.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kill9_during_copies_leaves_nothing_half_made() {
    if !usable("nfs_snapshots") {
        return;
    }
    let g = Ganesha::start();
    let mut d = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .env("FERROVOL_NFS_SNAPSHOT_WAIT_MS", "0")
        .start()
        .await;
    let p = class(&g, &[]);
    let src = create(&d, "src", &p).await;
    let src_dir = g.export.join(sub_dir(&src));
    fill(&src_dir);
    for i in 0..100 {
        fs::write(src_dir.join(format!("f{i:03}")), format!("file {i}")).unwrap();
    }
    let whole = manifest(&src_dir);
    let meta = g.export.join(".ferrovol");

    // A copy that outlasts the wait answers not ready; asked again, it reports its progress.
    let first = snapshot(&d, "quick", &src.volume_id).await;
    assert!(!first.ready_to_use, "wait 0: the first answer is not ready");
    let t0 = Instant::now();
    while !snapshot(&d, "quick", &src.volume_id).await.ready_to_use {
        assert!(t0.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_same(
        &manifest(&meta.join("snapshot-data/quick")),
        &whole,
        "content",
    );

    // kill -9 after the first file of a snapshot copy: listed only as not ready, then resumed
    // at start and whole.
    d.set_env("FERROVOL_CRASH_AT", "nfs-copy:after-file");
    d.restart().await;
    let _ = d
        .controller()
        .create_snapshot(snap_req("cut", &src.volume_id))
        .await;
    d.expect_crash().await;
    let rec = fs::read_to_string(meta.join("snapshots/cut.json")).unwrap();
    assert!(rec.contains("\"state\": \"creating\""), "{rec}");
    assert_ne!(
        manifest(&meta.join("snapshot-data/cut")),
        whole,
        "the copy was cut off"
    );
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    wait_ready(&d, "nfs/snap/cut").await;
    assert_same(
        &manifest(&meta.join("snapshot-data/cut")),
        &whole,
        "content",
    );

    // kill -9 in the middle of a restore: its subDir never appears; recovery removes the rest.
    d.set_env("FERROVOL_CRASH_AT", "nfs-copy:after-file");
    d.restart().await;
    let _ = d
        .controller()
        .create_volume(from("back", &p, of_snapshot("nfs/snap/cut")))
        .await;
    d.expect_crash().await;
    assert!(
        !g.export.join("back").exists(),
        "a half restore is never under its name"
    );
    assert!(meta.join("staging/back").is_dir());
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    wait_gone(&meta.join("staging/back")).await;
    wait_gone(&meta.join("volumes/back.json")).await;
    assert!(!d.list_ids().await.contains(&"nfs/back".to_string()));

    // kill -9 after the RENAME, before Ready: the subDir is the restore's (its fileid says so)
    // and goes with the rollback; the retried CreateVolume makes it whole.
    d.set_env("FERROVOL_CRASH_AT", "nfs-restore:before-ready");
    d.restart().await;
    let _ = d
        .controller()
        .create_volume(from("back", &p, of_snapshot("nfs/snap/cut")))
        .await;
    d.expect_crash().await;
    assert!(g.export.join("back").is_dir());
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    wait_gone(&g.export.join("back")).await;
    let back = create_from(&d, "back", &p, of_snapshot("nfs/snap/cut")).await;
    assert_same(&manifest(&g.export.join(sub_dir(&back))), &whole, "content");

    // kill -9 after a delete's intent: recovery finishes it.
    d.set_env("FERROVOL_CRASH_AT", "nfs-snapshot-delete:after-intent");
    d.restart().await;
    let _ = d
        .controller()
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: "nfs/snap/cut".into(),
            ..Default::default()
        })
        .await;
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    wait_gone(&meta.join("snapshot-data/cut")).await;
    wait_gone(&meta.join("snapshots/cut.json")).await;

    d.controller()
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: "nfs/snap/quick".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    d.delete(&back.volume_id).await;
    d.delete(&src.volume_id).await;
    assert_no_leftovers(&g);
}
