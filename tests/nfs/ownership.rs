//! The NFS driver never touches a directory it cannot prove is the volume's own, through real
//! gRPC against the real binary and a real nfs-ganesha: a retried DeleteVolume or rollback after
//! the directory was made again by another volume, a restore racing a CreateVolume for its
//! subDir, and read-only RPCs meeting a create in flight. Every outcome is checked on the
//! exported directory's disk. Needs root, nfs-ganesha (VFS) and rpcbind: skipped without them.

use crate::common;
use crate::common::ganesha;
use crate::common::nfs;
use crate::common::nfs_snap;

use common::*;
use ganesha::Ganesha;
use nfs::*;
use nfs_snap::*;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::Code;

both_versions_async!(
    a_retried_delete_never_removes_the_directory_made_since,
    a_retried_rollback_never_removes_the_directory_made_since,
    a_restore_claims_its_subdir_before_it_copies,
    read_only_rpcs_never_roll_back_a_create_in_flight,
    a_rollback_never_removes_another_volumes_empty_directory,
    a_volume_is_never_made_inside_another_volumes_directory,
);

const PATTERN: (&str, &str) = ("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}");

pub(crate) fn pause_file(d: &Driver) -> PathBuf {
    d.root().join("paused")
}

/// Waits until the driver holds a call at its pause point.
pub(crate) async fn wait_paused(d: &Driver) {
    let t0 = Instant::now();
    while !pause_file(d).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never paused\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn resume(d: &Driver) {
    fs::remove_file(pause_file(d)).unwrap();
}

fn record(g: &Ganesha, key: &str) -> String {
    fs::read_to_string(g.export.join(format!(".ferrovol/volumes/{key}.json"))).unwrap()
}

/// DeleteVolume removes the tree, then the record removal fails; the PVC is made again under a
/// new volume whose pod writes into the same subDir; the retried DeleteVolume answers OK and
/// leaves the new volume's data alone.
async fn a_retried_delete_never_removes_the_directory_made_since(proto: Proto) {
    if !usable("nfs_ownership") {
        return;
    }
    let g = proto.start();
    let mut d = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .env("FERROVOL_FAIL_AT", "nfs-record:remove")
        .start()
        .await;
    let p = pvc(&class(&g, &[PATTERN]), "team", "data", "pvc-a");
    let a = create(&d, "pvc-a", &p).await;
    let dir = g.export.join(sub_dir(&a));
    fs::write(dir.join("a"), "a's").unwrap();
    let st = d.controller().delete_volume(delete_req(&a.volume_id)).await;
    expect_code(st, Code::Unavailable, "the record removal fails");
    assert!(!dir.exists(), "the tree went before the record");
    assert!(record(&g, "pvc-a").contains("\"state\": \"deleting\""));

    d.remove_env("FERROVOL_FAIL_AT");
    d.restart().await;
    let p = pvc(&class(&g, &[PATTERN]), "team", "data", "pvc-b");
    let b = create(&d, "pvc-b", &p).await;
    assert_eq!(sub_dir(&b), sub_dir(&a));
    fs::write(dir.join("b"), "b's").unwrap();

    d.delete(&a.volume_id).await;
    assert_eq!(fs::read_to_string(dir.join("b")).unwrap(), "b's");
    assert_eq!(records(&g), vec!["pvc-b.json"]);
    d.delete(&b.volume_id).await;
    assert!(!dir.exists(), "b's own delete removes it");
    assert!(records(&g).is_empty());
}

/// A create rolled back (its directory removed) whose record removal failed; the subDir is made
/// again, empty, by another volume; the retried rollback leaves it.
async fn a_retried_rollback_never_removes_the_directory_made_since(proto: Proto) {
    if !usable("nfs_ownership") {
        return;
    }
    let g = proto.start();
    let p = pvc(&class(&g, &[PATTERN]), "team", "data", "pvc-a");
    let mut d = crashed_in_create("nfs-create:before-ready", "pvc-a", &p).await;
    let dir = g.export.join("team/data");
    assert!(dir.is_dir(), "the crash came after MKDIR");

    d.set_env("FERROVOL_FAIL_AT", "nfs-record:remove");
    d.restart().await;
    let st = d
        .controller()
        .delete_volume(delete_req(&nfs_id(&g, "pvc-a")))
        .await;
    expect_code(st, Code::Unavailable, "the record removal fails");
    assert!(!dir.exists(), "the rollback removed the empty directory");

    d.remove_env("FERROVOL_FAIL_AT");
    d.restart().await;
    let pb = pvc(&class(&g, &[PATTERN]), "team", "data", "pvc-b");
    let b = create(&d, "pvc-b", &pb).await;
    assert_eq!(g.export.join(sub_dir(&b)), dir);
    d.delete(&nfs_id(&g, "pvc-a")).await;
    assert!(dir.is_dir(), "b's directory stays, though empty");
    assert_eq!(records(&g), vec!["pvc-b.json"]);
    d.get(&b.volume_id).await;
    d.delete(&b.volume_id).await;
    assert!(!dir.exists());
}

/// While a restore copies, a CreateVolume for the same subDir must not get it: the restore
/// claimed the name before copying, and never renames onto a directory it did not make.
async fn a_restore_claims_its_subdir_before_it_copies(proto: Proto) {
    if !usable("nfs_ownership") {
        return;
    }
    let g = proto.start();
    let mut d = nfs_driver(&g, &[]).await;
    let p = class(&g, &[PATTERN]);
    let src = create(&d, "src", &pvc(&p, "team", "src", "src")).await;
    let src_dir = g.export.join(sub_dir(&src));
    fs::write(src_dir.join("content"), "from the snapshot").unwrap();
    let s = snapshot(&d, "snap", &src.volume_id).await;
    assert!(s.ready_to_use);

    let paused = pause_file(&d);
    d.set_env("FERROVOL_PAUSE_AT", "nfs-restore:before-rename");
    d.set_env("FERROVOL_PAUSE_FILE", paused.to_str().unwrap());
    d.restart().await;
    let ctl = d.controller();
    let restore = tokio::spawn(async move {
        let mut ctl = ctl;
        ctl.create_volume(from(
            "pvc-r",
            &pvc(&p, "team", "data", "pvc-r"),
            of_snapshot("nfs/snap/snap"),
        ))
        .await
    });
    wait_paused(&d).await;
    let dir = g.export.join("team/data");
    assert!(dir.is_dir(), "the restore holds its subDir while it copies");
    let pb = pvc(&class(&g, &[PATTERN]), "team", "data", "pvc-b");
    let st = d.controller().create_volume(req("pvc-b", &pb)).await;
    let st = expect_code(st, Code::FailedPrecondition, "the subDir is the restore's");
    assert!(st.message().contains("team/data"), "{st:?}");
    resume(&d);
    let r = restore
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("restore: {e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(g.export.join(sub_dir(&r)), dir);
    assert_eq!(
        fs::read_to_string(dir.join("content")).unwrap(),
        "from the snapshot"
    );
    assert_eq!(records(&g), vec!["pvc-r.json", "src.json"]);
    d.delete(&r.volume_id).await;
    assert!(!dir.exists());
    delete_snapshot(&d, &s.snapshot_id).await;
    d.delete(&src.volume_id).await;
    assert_no_leftovers(&g);
}

/// ControllerGetVolume, ValidateVolumeCapabilities, ControllerPublishVolume, CreateSnapshot and
/// a clone of a volume whose create is still in flight answer NotFound and roll nothing back:
/// the create then completes with its directory in place.
async fn read_only_rpcs_never_roll_back_a_create_in_flight(proto: Proto) {
    if !usable("nfs_ownership") {
        return;
    }
    let g = proto.start();
    let b = Driver::builder();
    let paused = b.path().join("paused");
    let d = b
        .arg("--driver")
        .arg("nfs")
        .env("FERROVOL_PAUSE_AT", "nfs-create:before-ready")
        .env("FERROVOL_PAUSE_FILE", paused)
        .start()
        .await;
    let p = class(&g, &[]);
    let ctl = d.controller();
    let held = {
        let p = p.clone();
        tokio::spawn(async move {
            let mut ctl = ctl;
            ctl.create_volume(req("pvc-held", &p)).await
        })
    };
    wait_paused(&d).await;
    let dir = g.export.join("pvc-held");
    assert!(dir.is_dir(), "held after MKDIR");
    let id = &nfs_id(&g, "pvc-held");
    let st = d.controller().controller_get_volume(get_req(id)).await;
    expect_code(
        st,
        Code::NotFound,
        "ControllerGetVolume of a create in flight",
    );
    let st = d
        .controller()
        .validate_volume_capabilities(validate_req(id, mount_cap()))
        .await;
    expect_code(st, Code::NotFound, "ValidateVolumeCapabilities");
    let st = d
        .controller()
        .controller_publish_volume(controller_publish_req(id, mount_cap(), false))
        .await;
    expect_code(st, Code::NotFound, "ControllerPublishVolume");
    let st = d.controller().create_snapshot(snap_req("s", id)).await;
    expect_code(st, Code::NotFound, "CreateSnapshot of a create in flight");
    let st = d
        .controller()
        .create_volume(from("clone", &p, of_volume(id)))
        .await;
    expect_code(st, Code::NotFound, "a clone of a create in flight");
    assert!(dir.is_dir(), "nothing rolled back");
    assert!(record(&g, "pvc-held").contains("\"state\": \"creating\""));

    resume(&d);
    let v = held
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("held create: {e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap();
    assert!(dir.is_dir(), "the create completed with its directory");
    assert!(record(&g, "pvc-held").contains("\"state\": \"ready\""));
    let got = d.get(&v.volume_id).await;
    assert!(
        !got.status.unwrap().volume_condition.unwrap().abnormal,
        "healthy"
    );
    d.delete(&v.volume_id).await;
    assert!(!dir.exists());
    assert!(records(&g).is_empty());
}

/// Rewrites a volume's record through NFS (as a driver of an earlier version wrote it): no
/// `dir_handle`, and `state` when given.
fn make_legacy(g: &Ganesha, key: &str, state: Option<&str>) {
    let c = ferrovol::nfs::NfsClient::new("127.0.0.1", &g.share(), Default::default()).unwrap();
    let path = format!(".ferrovol/volumes/{key}.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&c.read_file(&path).unwrap().unwrap()).unwrap();
    let obj = rec.as_object_mut().unwrap();
    assert!(obj.remove("dir_handle").is_some(), "{obj:?}");
    if let Some(s) = state {
        obj.insert("state".into(), s.into());
    }
    c.write_file_atomic(&path, &serde_json::to_vec(&rec).unwrap())
        .unwrap();
}

/// Records written before the handle was kept: a Ready one is deleted (its handle taken into the
/// Deleting intent, so a retry after a failed record removal spares a directory made since); a
/// Deleting one whose directory exists cannot prove it is its own and answers
/// FailedPrecondition until an operator removes the directory.
#[tokio::test]
async fn records_without_a_handle_are_handled_by_their_state() {
    if !usable("nfs_ownership") {
        return;
    }
    let g = Ganesha::start();
    let mut d = nfs_driver(&g, &[]).await;
    let p = class(&g, &[PATTERN]);
    let a = create(&d, "pvc-a", &pvc(&p, "team", "data", "pvc-a")).await;
    let dir = g.export.join(sub_dir(&a));
    fs::write(dir.join("a"), "a's").unwrap();
    make_legacy(&g, "pvc-a", None);

    d.set_env("FERROVOL_FAIL_AT", "nfs-record:remove");
    d.restart().await;
    let st = d.controller().delete_volume(delete_req(&a.volume_id)).await;
    expect_code(st, Code::Unavailable, "the record removal fails");
    assert!(!dir.exists(), "a Ready record's directory is the volume's");
    d.remove_env("FERROVOL_FAIL_AT");
    d.restart().await;
    let b = create(&d, "pvc-b", &pvc(&p, "team", "data", "pvc-b")).await;
    fs::write(dir.join("b"), "b's").unwrap();
    d.delete(&a.volume_id).await;
    assert_eq!(fs::read_to_string(dir.join("b")).unwrap(), "b's");

    make_legacy(&g, "pvc-b", Some("deleting"));
    let st = d.delete_refused(&b.volume_id).await;
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert!(
        st.message().contains(&b.volume_id) && st.message().contains("team/data"),
        "{st:?}"
    );
    assert_eq!(fs::read_to_string(dir.join("b")).unwrap(), "b's");
    let c = ferrovol::nfs::NfsClient::new("127.0.0.1", &g.share(), Default::default()).unwrap();
    assert!(c.remove_tree("team/data").unwrap(), "the operator's choice");
    d.delete(&b.volume_id).await;
    assert!(records(&g).is_empty());
}

/// A create cut off before its MKDIR; another volume then makes the same subDir and is
/// acknowledged; the first create's retry rolls back its own record only: the other volume's
/// directory, empty as it is, stays, and the retry answers FailedPrecondition.
async fn a_rollback_never_removes_another_volumes_empty_directory(proto: Proto) {
    if !usable("nfs_ownership") {
        return;
    }
    let g = proto.start();
    let pa = pvc(&class(&g, &[PATTERN]), "team", "data", "pvc-a");
    let mut d = crashed_in_create("nfs-create:after-intent", "pvc-a", &pa).await;
    d.restart().await;
    let b = create(
        &d,
        "pvc-b",
        &pvc(&class(&g, &[PATTERN]), "team", "data", "pvc-b"),
    )
    .await;
    let dir = g.export.join(sub_dir(&b));
    let st = d.controller().create_volume(req("pvc-a", &pa)).await;
    expect_code(st, Code::FailedPrecondition, "the subDir is pvc-b's");
    assert!(dir.is_dir(), "pvc-b's directory stays");
    assert_eq!(records(&g), vec!["pvc-b.json"]);
    d.delete(&b.volume_id).await;
    assert!(!dir.exists());
}

/// A class whose pattern puts a volume below another volume's directory: refused with nothing
/// made, so deleting (or archiving) the outer volume can never take the inner one with it.
async fn a_volume_is_never_made_inside_another_volumes_directory(proto: Proto) {
    if !usable("nfs_ownership") {
        return;
    }
    let g = proto.start();
    let d = nfs_driver(&g, &[]).await;
    let p = pvc(&class(&g, &[PATTERN]), "team", "outer", "pvc-outer");
    let outer = create(&d, "pvc-outer", &p).await;
    let dir = g.export.join("team/outer");
    fs::write(dir.join("data"), "outer's").unwrap();
    let inner = (
        "subDir",
        "${pvc.metadata.namespace}/outer/${pv.metadata.name}",
    );
    let p = pvc(&class(&g, &[inner]), "team", "inner", "pvc-in");
    let st = d.controller().create_volume(req("pvc-in", &p)).await;
    let st = expect_code(
        st,
        Code::FailedPrecondition,
        "a volume inside another's directory",
    );
    assert!(st.message().contains(&outer.volume_id), "{st:?}");
    assert!(
        !dir.join("pvc-in").exists(),
        "something was made in the outer volume"
    );
    assert_eq!(
        records(&g),
        vec!["pvc-outer.json"],
        "the refused create left its record"
    );
    d.delete(&outer.volume_id).await;
}
