//! Two NFS controllers on one share, as a rollout overlaps the old pod and the new one: the
//! second starts (and runs recovery) while the first is in the middle of a clone or a snapshot
//! copy, and is asked about what is being made. Only the holder of the share's lease recovers,
//! rolls back or resumes, so the first one's work finishes whole. Real gRPC, real binaries,
//! real nfs-ganesha (root only).

use crate::common;
use crate::common::ganesha;
use crate::common::nfs;
use crate::common::nfs_snap;

use common::*;
use ferrovol::proto as csi;
use ganesha::Ganesha;
use nfs::*;
use nfs_snap::{list, snapshot};
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) const FILES: usize = 4000;

pub(crate) async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lease_names(export: &Path, state_dir: &Path) -> bool {
    fs::read_to_string(export.join(".ferrovol/controller-lease.json"))
        .is_ok_and(|l| l.contains(&format!("{}\"", state_dir.display())))
}

/// The first controller, sharing registry file `reg`, once it holds the share's lease, and a
/// volume of class `p` on it holding FILES files.
pub(crate) async fn first_with_source(
    g: &Ganesha,
    reg: &str,
    p: &HashMap<String, String>,
) -> (Driver, csi::Volume) {
    let first = nfs_driver(g, &["--nfs-registry-file", reg]).await;
    let src = create(&first, "src", p).await;
    let src_dir = g.export.join(sub_dir(&src));
    for i in 0..FILES {
        fs::write(src_dir.join(format!("f{i}")), i.to_string()).unwrap();
    }
    wait_for(
        "the first controller's lease",
        Duration::from_secs(20),
        || lease_names(&g.export, &first.state_dir()),
    )
    .await;
    (first, src)
}

/// Asks `d` for snapshot `snap` of `src` until it is ready (60 s at most), and returns it.
pub(crate) async fn ready_snapshot(d: &Driver, src: &str) -> csi::Snapshot {
    let t0 = Instant::now();
    loop {
        let s = snapshot(d, "snap", src).await;
        if s.ready_to_use {
            return s;
        }
        let waited = t0.elapsed() < Duration::from_secs(60);
        assert!(waited, "the snapshot never became ready\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One share, the registry file its controllers share, and the class of its volumes.
pub(crate) struct Share {
    pub g: Ganesha,
    pub reg: String,
    pub p: HashMap<String, String>,
    _keep: tempfile::TempDir,
}

/// A share, and the first controller on it (holding its lease) with its source volume.
pub(crate) async fn share_with_source() -> (Share, Driver, csi::Volume) {
    let g = Ganesha::start();
    let keep = tempfile::tempdir().unwrap();
    let reg = keep.path().join("nfs-shares.json");
    let reg = reg.to_str().unwrap().to_string();
    let p = class(&g, &[]);
    let (first, src) = first_with_source(&g, &reg, &p).await;
    let share = Share {
        g,
        reg,
        p,
        _keep: keep,
    };
    (share, first, src)
}

#[tokio::test]
async fn a_second_controller_never_rolls_back_the_first_ones_create() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, first, src) = share_with_source().await;
    let (g, reg, p) = (&share.g, share.reg.as_str(), &share.p);

    let mut clone = req("clone", p);
    clone.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Volume(
            csi::volume_content_source::VolumeSource {
                volume_id: src.volume_id.clone(),
            },
        )),
    });
    let mut ctl = first.controller();
    let making = tokio::spawn(async move { ctl.create_volume(clone).await });
    let content = g.export.join(".ferrovol/staging/clone/content");
    wait_for("the clone's copy to begin", Duration::from_secs(20), || {
        content.is_dir()
    })
    .await;

    // The new pod's controller: recovery at its start, then a call about the volume in flight.
    let second = nfs_driver(g, &["--nfs-registry-file", reg]).await;
    let id = nfs_id(g, "clone");
    let got = second
        .controller()
        .controller_get_volume(get_req(&id))
        .await;
    assert!(got.is_err(), "the volume is not made yet: {got:?}");

    let made = making
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "the first controller's clone failed: {e}\n--- second controller ---\n{}",
                second.log()
            )
        })
        .into_inner()
        .volume
        .unwrap();
    let dir = g.export.join(sub_dir(&made));
    assert_eq!(
        dir_names(&dir).len(),
        FILES,
        "the clone has every file\n--- second controller ---\n{}",
        second.log()
    );
    assert!(
        lease_names(&g.export, &first.state_dir()),
        "the first controller keeps the lease while it lives"
    );
    assert_eq!(
        second.get(&made.volume_id).await.volume.unwrap().volume_id,
        id
    );

    // The first controller goes away: the second takes the lease over once it has seen it
    // unrenewed for its whole term.
    drop(first);
    wait_for(
        "the second controller to take the lease",
        Duration::from_secs(40),
        || lease_names(&g.export, &second.state_dir()),
    )
    .await;
    second.delete(&made.volume_id).await;
    second.delete(&src.volume_id).await;
    assert!(records(g).is_empty());
}

#[tokio::test]
async fn a_second_controller_never_copies_over_the_first_ones_snapshot() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, first, src) = share_with_source().await;
    let (g, reg) = (&share.g, share.reg.as_str());

    let s = snapshot(&first, "snap", &src.volume_id).await;
    assert!(!s.ready_to_use, "{FILES} files take longer than the wait");
    // The new pod's controller lists and asks for the snapshot while the first one copies it.
    let second = nfs_driver(g, &["--nfs-registry-file", reg]).await;
    assert!(!list(&second, &s.snapshot_id, "").await[0].ready_to_use);
    assert!(!snapshot(&second, "snap", &src.volume_id).await.ready_to_use);

    ready_snapshot(&first, &src.volume_id).await;
    assert_eq!(
        dir_names(&g.export.join(".ferrovol/snapshot-data/snap")).len(),
        FILES,
        "the snapshot has every file"
    );
    assert!(
        !second.log().contains("resuming") && !first.log().contains("snapshot copy failed"),
        "one copy, never restarted\n--- first ---\n{}\n--- second ---\n{}",
        first.log(),
        second.log()
    );
}

/// A controller on `g` whose calls reaching `point` wait while the returned file exists.
pub(crate) async fn paused_driver(
    g: &Ganesha,
    reg: &str,
    point: &str,
) -> (Driver, std::path::PathBuf) {
    let mut d = nfs_driver(g, &["--nfs-registry-file", reg]).await;
    let paused = d.root().join("paused");
    d.set_env("FERROVOL_PAUSE_AT", point);
    d.set_env("FERROVOL_PAUSE_FILE", paused.to_str().unwrap());
    d.restart().await;
    (d, paused)
}

/// How many recovery passes `d` has logged.
fn recoveries(d: &Driver) -> usize {
    d.log()
        .matches("NFS snapshots and restores recovered")
        .count()
}

/// Restarts `holder` (which holds the share's lease, so it takes it back at once and recovers
/// the share) and waits for its recovery pass to end.
async fn restart_and_recover(holder: &mut Driver) {
    let before = recoveries(holder);
    holder.restart().await;
    wait_for(
        "the restarted holder's recovery",
        Duration::from_secs(30),
        || recoveries(holder) > before,
    )
    .await;
}

pub(crate) fn clone_req(
    name: &str,
    p: &HashMap<String, String>,
    src: &str,
) -> csi::CreateVolumeRequest {
    let mut r = req(name, p);
    r.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Volume(
            csi::volume_content_source::VolumeSource {
                volume_id: src.to_string(),
            },
        )),
    });
    r
}

#[tokio::test]
async fn a_lease_holder_restarting_never_rolls_back_a_clone_another_controller_copies() {
    if !usable("nfs_two_controllers") {
        return;
    }
    // The first controller holds the lease; the second (the sidecars' leader) makes the clone.
    let (share, mut holder, src) = share_with_source().await;
    let (g, reg, p) = (&share.g, share.reg.as_str(), &share.p);
    let (leader, paused) = paused_driver(g, reg, "nfs-restore:before-rename").await;
    let mut ctl = leader.controller();
    let clone = clone_req("clone", p, &src.volume_id);
    let making = tokio::spawn(async move { ctl.create_volume(clone).await });
    wait_for("the clone's copy to end", Duration::from_secs(60), || {
        paused.exists()
    })
    .await;

    restart_and_recover(&mut holder).await;
    fs::remove_file(&paused).unwrap();
    let made = making
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "the clone failed: {e}\n--- lease holder ---\n{}",
                holder.log()
            )
        })
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        dir_names(&g.export.join(sub_dir(&made))).len(),
        FILES,
        "the clone has every file\n--- lease holder ---\n{}",
        holder.log()
    );
    assert!(
        !holder.log().contains("rolling back a restore"),
        "{}",
        holder.log()
    );
}

#[tokio::test]
async fn a_lease_holder_restarting_never_copies_over_a_snapshot_another_controller_copies() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, mut holder, src) = share_with_source().await;
    let (g, reg) = (&share.g, share.reg.as_str());
    let (leader, paused) = paused_driver(g, reg, "nfs-snapshot:before-ready").await;
    let s = snapshot(&leader, "snap", &src.volume_id).await;
    assert!(!s.ready_to_use);
    wait_for(
        "the snapshot's copy to end",
        Duration::from_secs(60),
        || paused.exists(),
    )
    .await;

    restart_and_recover(&mut holder).await;
    // The restarted holder is asked about the snapshot meanwhile.
    assert!(!list(&holder, &s.snapshot_id, "").await[0].ready_to_use);
    fs::remove_file(&paused).unwrap();
    ready_snapshot(&leader, &src.volume_id).await;
    assert_eq!(
        dir_names(&g.export.join(".ferrovol/snapshot-data/snap")).len(),
        FILES,
        "the snapshot has every file"
    );
    assert!(
        !holder.log().contains("resuming") && !leader.log().contains("snapshot copy failed"),
        "one copy, never restarted\n--- holder ---\n{}\n--- leader ---\n{}",
        holder.log(),
        leader.log()
    );
}

#[tokio::test]
async fn a_clone_whose_controller_died_is_rolled_back_once_it_stops_showing_life() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, holder, src) = share_with_source().await;
    let (g, reg, p) = (&share.g, share.reg.as_str(), &share.p);
    let (mut leader, paused) = paused_driver(g, reg, "nfs-restore:before-rename").await;
    let mut ctl = leader.controller();
    let clone = clone_req("clone", p, &src.volume_id);
    let making = tokio::spawn(async move { ctl.create_volume(clone).await });
    wait_for("the clone's copy to end", Duration::from_secs(60), || {
        paused.exists()
    })
    .await;
    leader.kill9();
    let _ = making.await;

    // The CO sends the create to the remaining controller, which holds the lease: it rolls the
    // dead one's restore back once its liveness record has stood still, then makes it whole.
    let t0 = Instant::now();
    let made = loop {
        match holder
            .controller()
            .create_volume(clone_req("clone", p, &src.volume_id))
            .await
        {
            Ok(r) => break r.into_inner().volume.unwrap(),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Aborted, "{e}");
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "never rolled back\n{}",
                    holder.log()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(dir_names(&g.export.join(sub_dir(&made))).len(), FILES);
}

#[tokio::test]
async fn what_another_controller_copies_or_reads_is_not_deleted_under_it() {
    if !usable("nfs_two_controllers") {
        return;
    }
    // The old pod copies a snapshot; the new one (the sidecars' leader now) gets the deletes.
    let (share, new_pod, src) = share_with_source().await;
    let (g, reg) = (&share.g, share.reg.as_str());
    let (old_pod, paused) = paused_driver(g, reg, "nfs-snapshot:before-copy").await;
    let s = snapshot(&old_pod, "snap", &src.volume_id).await;
    wait_for(
        "the snapshot's copy to begin",
        Duration::from_secs(60),
        || paused.exists(),
    )
    .await;

    let mut ctl = new_pod.controller();
    let gone = ctl
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: s.snapshot_id.clone(),
            ..Default::default()
        })
        .await;
    let code = gone.map(|_| tonic::Code::Ok).unwrap_or_else(|e| e.code());
    assert_eq!(
        code,
        tonic::Code::Aborted,
        "DeleteSnapshot of a snapshot copied elsewhere"
    );
    let gone = ctl
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: src.volume_id.clone(),
            ..Default::default()
        })
        .await;
    let code = gone.map(|_| tonic::Code::Ok).unwrap_or_else(|e| e.code());
    assert_eq!(
        code,
        tonic::Code::Aborted,
        "DeleteVolume of a volume copied elsewhere"
    );

    fs::remove_file(&paused).unwrap();
    let t0 = Instant::now();
    while !snapshot(&old_pod, "snap", &src.volume_id)
        .await
        .ready_to_use
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", old_pod.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        dir_names(&g.export.join(".ferrovol/snapshot-data/snap")).len(),
        FILES
    );
    // Once the copy ended, both deletes go through.
    nfs_snap::delete_snapshot(&new_pod, &s.snapshot_id).await;
    new_pod.delete(&src.volume_id).await;
}
