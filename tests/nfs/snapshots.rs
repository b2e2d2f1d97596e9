//! NFS snapshots and clones through real gRPC against the real binary and a real nfs-ganesha:
//! content kept exactly (what NFSv3 can carry), restores and clones independent of their
//! source, snapshots outliving their volume, and kill -9 during a snapshot copy, a restore and a
//! delete. Every outcome is checked on the exported directory's disk.
//! Needs root, nfs-ganesha (VFS) and rpcbind: skipped, saying so, without them.

use crate::common;
use crate::common::ganesha;
use crate::common::nfs;
use crate::common::nfs_snap;
use crate::ownership::{resume, wait_paused};

use common::*;
use ferrovol::proto as csi;
use ganesha::Ganesha;
use nfs::*;
use nfs_snap::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

both_versions_async!(
    snapshot_restore_and_clone_keep_the_content_exactly,
    kill9_during_copies_leaves_nothing_half_made,
    a_copy_that_ends_while_a_call_holds_its_record_is_not_made_again,
);

async fn snapshot_restore_and_clone_keep_the_content_exactly(proto: Proto) {
    if !usable("nfs_snapshots") {
        return;
    }
    let g = proto.start();
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
        (64 * MIB, src.volume_id.as_str())
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
    // A CreateVolume retried after its source snapshot is gone answers with the volume it made.
    let again = create_from(&d, "restored-2", &p, of_snapshot(&s.snapshot_id)).await;
    assert_eq!(again.volume_id, r2.volume_id);
    assert_eq!(again.capacity_bytes, r2.capacity_bytes);
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

/// Volume `src` holding `fill`'s tree and `files` small files: the volume, its directory and
/// its manifest.
async fn filled_source(d: &Driver, g: &Ganesha, files: usize) -> (csi::Volume, PathBuf, Manifest) {
    let src = create(d, "src", &class(g, &[])).await;
    let dir = g.export.join(sub_dir(&src));
    fill(&dir);
    for i in 0..files {
        fs::write(dir.join(format!("f{i:03}")), format!("file {i}")).unwrap();
    }
    let whole = manifest(&dir);
    (src, dir, whole)
}

async fn kill9_during_copies_leaves_nothing_half_made(proto: Proto) {
    if !usable("nfs_snapshots") {
        return;
    }
    let g = proto.start();
    let mut d = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .env("FERROVOL_NFS_SNAPSHOT_WAIT_MS", "0")
        .start()
        .await;
    let p = class(&g, &[]);
    let (src, _, whole) = filled_source(&d, &g, 100).await;
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

    // kill -9 in the middle of a restore: its subDir holds only the empty claim, never a half
    // copy; recovery removes the claim and the rest.
    d.set_env("FERROVOL_CRASH_AT", "nfs-copy:after-file");
    d.restart().await;
    let _ = d
        .controller()
        .create_volume(from("back", &p, of_snapshot("nfs/snap/cut")))
        .await;
    d.expect_crash().await;
    assert!(
        dir_names(&g.export.join("back")).is_empty(),
        "a half restore is never under its name"
    );
    assert!(meta.join("staging/back").is_dir());
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    wait_gone(&meta.join("staging/back")).await;
    wait_gone(&meta.join("volumes/back.json")).await;
    wait_gone(&g.export.join("back")).await;
    assert!(!d.list_ids().await.contains(&nfs_id(&g, "back")));

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

/// A clone cut off after its intent, retried once its source is gone: NotFound, and the cut-off
/// create leaves no record behind.
#[tokio::test]
async fn a_clone_retried_after_its_source_went_leaves_no_record() {
    if !usable("nfs_snapshots") {
        return;
    }
    let g = ganesha::Ganesha::start();
    let mut d = nfs_driver(&g, &[]).await;
    let p = class(&g, &[]);
    let src = create(&d, "src", &p).await;
    d.set_env("FERROVOL_CRASH_AT", "nfs-restore:after-intent");
    d.restart().await;
    let _ = d
        .controller()
        .create_volume(from("clone", &p, of_volume(&src.volume_id)))
        .await;
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    d.delete(&src.volume_id).await;
    let st = d
        .controller()
        .create_volume(from("clone", &p, of_volume(&src.volume_id)))
        .await;
    expect_code(st, Code::NotFound, "the source is gone");
    assert_no_leftovers(&g);
}

/// A CreateSnapshot that read the `Creating` record while the copy still ran, and finds no copy
/// running once the copy has ended, answers the snapshot as it is now (ready) and starts no
/// second copy: a second copy would replace the ready content with the source's current one.
async fn a_copy_that_ends_while_a_call_holds_its_record_is_not_made_again(proto: Proto) {
    if !usable("nfs_snapshots") {
        return;
    }
    let g = proto.start();
    let b = Driver::builder();
    let paused = b.path().join("paused");
    let d = b
        .arg("--driver")
        .arg("nfs")
        .env("FERROVOL_NFS_SNAPSHOT_WAIT_MS", "0")
        .env("FERROVOL_PAUSE_AT", "nfs-snapshot:before-resume")
        .env("FERROVOL_PAUSE_FILE", paused)
        .start()
        .await;
    let (src, src_dir, whole) = filled_source(&d, &g, 200).await;
    let meta = g.export.join(".ferrovol");

    let first = snapshot(&d, "s", &src.volume_id).await;
    assert!(!first.ready_to_use, "wait 0: the first answer is not ready");
    // The second call reads the record while the copy runs and is held before it looks for
    // the copy; the copy ends meanwhile.
    let ctl = d.controller();
    let source = src.volume_id.clone();
    let second = tokio::spawn(async move {
        let mut ctl = ctl;
        ctl.create_snapshot(snap_req("s", &source)).await
    });
    wait_paused(&d).await;
    let t0 = Instant::now();
    while !fs::read_to_string(meta.join("snapshots/s.json"))
        .unwrap()
        .contains("\"state\": \"ready\"")
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_same(&manifest(&meta.join("snapshot-data/s")), &whole, "content");
    fs::write(src_dir.join("late"), "written after the snapshot").unwrap();
    resume(&d);

    let answer = second
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("CreateSnapshot s: {e}\n{}", d.log()))
        .into_inner()
        .snapshot
        .unwrap();
    assert!(answer.ready_to_use, "the copy had ended: {answer:?}");
    let again = snapshot(&d, "s", &src.volume_id).await;
    assert!(again.ready_to_use);
    assert_same(
        &manifest(&meta.join("snapshot-data/s")),
        &whole,
        "content after the second call",
    );
    let copied = d.log().matches("snapshot copied").count();
    assert_eq!(copied, 1, "one copy only\n{}", d.log());
}

#[tokio::test]
async fn a_recovery_that_cannot_remove_orphaned_content_blocks_no_snapshot_call() {
    if !usable("nfs_snapshots") {
        return;
    }
    let g = Ganesha::start();
    let mut d = nfs_driver(&g, &[]).await;
    // A volume makes the share known, so the next start recovers it.
    create(&d, "pvc-known", &class(&g, &[])).await;
    // Content under a snapshot's name with no record (left by hand), that cannot be removed.
    let orphan = g.export.join(".ferrovol/snapshot-data/orphan");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join("f"), "x").unwrap();
    chattr("+i", &orphan.join("f"));
    d.restart().await;
    let t0 = Instant::now();
    while !d
        .log()
        .contains("recovery of snapshots and restores not finished")
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let req = csi::DeleteSnapshotRequest {
        snapshot_id: "nfs/snap/orphan".into(),
        ..Default::default()
    };
    let mut ctl = d.controller();
    let answered = tokio::time::timeout(Duration::from_secs(15), ctl.delete_snapshot(req)).await;
    chattr("-i", &orphan.join("f"));
    assert!(
        answered.is_ok(),
        "DeleteSnapshot never answered\n{}",
        d.log()
    );
}
