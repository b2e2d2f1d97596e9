//! A delete on one controller racing a copy that begins on another, at the worst moment: the
//! copier has read its source ready and pauses before showing life; the deleter passes its own
//! look for readers, writes its intent and pauses before removing anything; then the copy goes
//! on. Each side writes, then reads the other's state, so the copy must stop (the delete then
//! finishes), never end up `Ready` with part of what was removed. Real gRPC, real binaries, real
//! nfs-ganesha (root only).

use super::two_controllers::{
    clone_req, paused_driver, ready_snapshot, share_with_source, wait_for,
};
use crate::common;
use crate::common::nfs;
use crate::common::nfs_snap;

use common::*;
use ferrovol::proto as csi;
use nfs::*;
use nfs_snap::{assert_no_leftovers, from, list, of_snapshot, snap_req, snapshot};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;

type Call = JoinHandle<Result<(), tonic::Status>>;

/// A controller paused at `point`, and the file that holds it there.
type Paused = (Driver, PathBuf);

const PAUSE: Duration = Duration::from_secs(60);

/// Runs the race: `copy` on `copier` until it pauses, `delete` on `deleter` until it pauses,
/// then the copy to its answer (asserted to be Aborted, naming `source`), then the delete to its
/// answer (asserted OK).
async fn race(
    source: &str,
    (copier, copy_paused): &Paused,
    copy: impl FnOnce(&Driver) -> Call,
    (deleter, delete_paused): &Paused,
    delete: impl FnOnce(&Driver) -> Call,
) {
    let copying = copy(copier);
    wait_for("the copier to pause before showing life", PAUSE, || {
        copy_paused.exists()
    })
    .await;
    let deleting = delete(deleter);
    wait_for("the deleter to pause after its intent", PAUSE, || {
        delete_paused.exists()
    })
    .await;

    fs::remove_file(copy_paused).unwrap();
    let copied = copying.await.unwrap();
    let log = || format!("--- copier ---\n{}", copier.log());
    let e = copied.expect_err(&format!(
        "a copy of {source}, which is being deleted\n{}",
        log()
    ));
    assert_eq!(e.code(), tonic::Code::Aborted, "{e}\n{}", log());
    let msg = e.message();
    assert!(
        msg.contains(source) && msg.contains("being deleted"),
        "{msg}"
    );

    fs::remove_file(delete_paused).unwrap();
    let deleted = deleting.await.unwrap();
    deleted.unwrap_or_else(|e| panic!("the delete of {source}: {e}\n{}", deleter.log()));
}

fn delete_volume(id: &str) -> impl FnOnce(&Driver) -> Call {
    let id = id.to_string();
    move |d| {
        let mut ctl = d.controller();
        tokio::spawn(async move { ctl.delete_volume(delete_req(&id)).await.map(|_| ()) })
    }
}

fn create_volume(r: csi::CreateVolumeRequest) -> impl FnOnce(&Driver) -> Call {
    move |d| {
        let mut ctl = d.controller();
        tokio::spawn(async move { ctl.create_volume(r).await.map(|_| ()) })
    }
}

#[tokio::test]
async fn a_snapshot_begun_as_its_volume_is_deleted_elsewhere_stops_and_the_delete_finishes() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, first, src) = share_with_source().await;
    let (g, reg) = (&share.g, share.reg.as_str());
    let copier = paused_driver(g, reg, "nfs-snapshot:before-show").await;
    let deleter = paused_driver(g, reg, "nfs-delete:after-intent").await;
    let r = snap_req("snap", &src.volume_id);
    let snap = move |d: &Driver| {
        let mut ctl = d.controller();
        tokio::spawn(async move { ctl.create_snapshot(r).await.map(|_| ()) })
    };
    let del = delete_volume(&src.volume_id);
    race(&src.volume_id, &copier, snap, &deleter, del).await;

    assert!(list(&first, "", "").await.is_empty(), "no snapshot is left");
    assert_no_leftovers(g);
}

#[tokio::test]
async fn a_clone_begun_as_its_volume_is_deleted_elsewhere_stops_and_the_delete_finishes() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, _first, src) = share_with_source().await;
    let (g, reg) = (&share.g, share.reg.as_str());
    let copier = paused_driver(g, reg, "nfs-restore:before-show").await;
    let deleter = paused_driver(g, reg, "nfs-delete:after-intent").await;
    let clone = create_volume(clone_req("clone", &class(g, &[]), &src.volume_id));
    let del = delete_volume(&src.volume_id);
    race(&src.volume_id, &copier, clone, &deleter, del).await;

    assert_no_leftovers(g);
}

#[tokio::test]
async fn a_restore_begun_as_its_snapshot_is_deleted_elsewhere_stops_and_the_delete_finishes() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, first, src) = share_with_source().await;
    let (g, reg) = (&share.g, share.reg.as_str());
    let s = snapshot(&first, "snap", &src.volume_id).await;
    ready_snapshot(&first, &src.volume_id).await;
    let copier = paused_driver(g, reg, "nfs-restore:before-show").await;
    let deleter = paused_driver(g, reg, "nfs-snapshot-delete:after-intent").await;
    let p = class(g, &[]);
    let restore = create_volume(from("restored", &p, of_snapshot(&s.snapshot_id)));
    let id = s.snapshot_id.clone();
    let del = move |d: &Driver| {
        let mut ctl = d.controller();
        let r = csi::DeleteSnapshotRequest {
            snapshot_id: id,
            ..Default::default()
        };
        tokio::spawn(async move { ctl.delete_snapshot(r).await.map(|_| ()) })
    };
    race(&s.snapshot_id, &copier, restore, &deleter, del).await;

    first.delete(&src.volume_id).await;
    assert_no_leftovers(g);
}

#[tokio::test]
async fn a_delete_whose_intent_comes_after_a_snapshot_began_elsewhere_backs_off() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, first, src) = share_with_source().await;
    let (g, reg) = (&share.g, share.reg.as_str());
    // The deleter has looked for readers (none yet) and pauses before its intent; the copier
    // shows life, finds the volume `Ready` and pauses before copying.
    let (deleter, delete_paused) = paused_driver(g, reg, "nfs-delete:before-intent").await;
    let (copier, copy_paused) = paused_driver(g, reg, "nfs-snapshot:before-copy").await;
    let deleting = delete_volume(&src.volume_id)(&deleter);
    wait_for("the deleter to pause before its intent", PAUSE, || {
        delete_paused.exists()
    })
    .await;
    let s = snapshot(&copier, "snap", &src.volume_id).await;
    wait_for("the copier to pause before copying", PAUSE, || {
        copy_paused.exists()
    })
    .await;

    fs::remove_file(&delete_paused).unwrap();
    let deleted = deleting.await.unwrap();
    let e = deleted.expect_err(&format!(
        "a delete of a volume another controller copies\n{}",
        deleter.log()
    ));
    assert_eq!(e.code(), tonic::Code::Aborted, "{e}");
    let got = first.get(&src.volume_id).await.volume.unwrap();
    assert_eq!(got.volume_id, src.volume_id, "the volume is back as it was");

    fs::remove_file(&copy_paused).unwrap();
    ready_snapshot(&copier, &src.volume_id).await;
    assert_eq!(
        dir_names(&g.export.join(".ferrovol/snapshot-data/snap")).len(),
        super::two_controllers::FILES,
        "the snapshot has every file"
    );
    nfs_snap::delete_snapshot(&first, &s.snapshot_id).await;
    first.delete(&src.volume_id).await;
    assert_no_leftovers(g);
}

#[tokio::test]
async fn a_snapshot_delete_whose_intent_comes_after_a_restore_began_elsewhere_backs_off() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let (share, first, src) = share_with_source().await;
    let (g, reg) = (&share.g, share.reg.as_str());
    let s = snapshot(&first, "snap", &src.volume_id).await;
    ready_snapshot(&first, &src.volume_id).await;
    let (deleter, delete_paused) = paused_driver(g, reg, "nfs-snapshot-delete:before-intent").await;
    let (copier, copy_paused) = paused_driver(g, reg, "nfs-restore:after-intent").await;
    let id = s.snapshot_id.clone();
    let mut ctl = deleter.controller();
    let deleting = tokio::spawn(async move {
        let r = csi::DeleteSnapshotRequest {
            snapshot_id: id,
            ..Default::default()
        };
        ctl.delete_snapshot(r).await
    });
    wait_for("the deleter to pause before its intent", PAUSE, || {
        delete_paused.exists()
    })
    .await;
    let p = class(g, &[]);
    let mut ctl = copier.controller();
    let r = from("restored", &p, of_snapshot(&s.snapshot_id));
    let restoring = tokio::spawn(async move { ctl.create_volume(r).await });
    wait_for("the restore to pause after its intent", PAUSE, || {
        copy_paused.exists()
    })
    .await;

    fs::remove_file(&delete_paused).unwrap();
    let e = deleting.await.unwrap().expect_err(&format!(
        "a delete of a snapshot another controller restores from\n{}",
        deleter.log()
    ));
    assert_eq!(e.code(), tonic::Code::Aborted, "{e}");
    assert!(
        list(&first, &s.snapshot_id, "").await[0].ready_to_use,
        "the snapshot is back as it was"
    );

    fs::remove_file(&copy_paused).unwrap();
    let made = restoring.await.unwrap();
    let made = made.unwrap_or_else(|e| panic!("the restore: {e}\n{}", copier.log()));
    let made = made.into_inner().volume.unwrap();
    let restored = g.export.join(sub_dir(&made));
    assert_eq!(
        dir_names(&restored).len(),
        super::two_controllers::FILES,
        "the restored volume has every file"
    );
    nfs_snap::delete_snapshot(&first, &s.snapshot_id).await;
}
