//! A snapshot or volume is never deleted while a copy reads it: a restore, a clone or a
//! snapshot holds its source until it ends, and a delete of that source answers Aborted
//! (retried by the CO) instead of removing the tree under the copy, which would leave the new
//! volume or snapshot answered ready with part of the content.

use crate::common;
use crate::common::hostpath_snap::*;

use common::*;
use ferrovol::proto as csi;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

/// A driver on ext4 (full copies) that holds every call reaching `point` while its pause
/// file exists, with volume `src` holding one file.
async fn paused_at(point: &str) -> (Driver, PathBuf, String) {
    let mut d = driver_on(Base::Ext4, None).await;
    let paused = d.root().join("paused");
    d.set_env("FERROVOL_PAUSE_AT", point);
    d.set_env("FERROVOL_PAUSE_FILE", paused.to_str().unwrap());
    d.restart().await;
    let src = d.create("src", 16 * MIB, mount_cap()).await.volume_id;
    fs::write(d.volume_dir("src").join("content"), b"source").unwrap();
    (d, paused, src)
}

async fn wait_paused(d: &Driver, paused: &Path) {
    let t0 = Instant::now();
    while !paused.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never paused\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

async fn delete_volume(d: &Driver, id: &str) -> Answer<csi::DeleteVolumeResponse> {
    let req = csi::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    };
    d.controller().delete_volume(req).await
}

async fn delete_snap(d: &Driver, id: &str) -> Answer<csi::DeleteSnapshotResponse> {
    let req = csi::DeleteSnapshotRequest {
        snapshot_id: id.into(),
        ..Default::default()
    };
    d.controller().delete_snapshot(req).await
}

/// Runs CreateVolume `name` from a source in the background, until it pauses in its copy.
async fn restore_until_paused(
    d: &Driver,
    paused: &Path,
    snap: Option<&str>,
    vol: Option<&str>,
) -> tokio::task::JoinHandle<Answer<csi::CreateVolumeResponse>> {
    let req = from_source("copy", 16 * MIB, mount_cap(), snap, vol);
    let mut ctl = d.controller();
    let call = tokio::spawn(async move { ctl.create_volume(req).await });
    wait_paused(d, paused).await;
    call
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_being_restored_is_not_deleted() {
    let (d, paused, src) = paused_at("restore:after-copy").await;
    let snap = snapshot(&d, "s1", &src).await.snapshot_id;
    let call = restore_until_paused(&d, &paused, Some(&snap), None).await;
    let r = delete_snap(&d, &snap).await;
    expect_code(r, Code::Aborted, "DeleteSnapshot while a restore reads it");
    assert!(
        d.base().join(".snapshots/s1/data/content").exists(),
        "the snapshot's content went"
    );
    fs::remove_file(&paused).unwrap();
    call.await
        .unwrap()
        .unwrap_or_else(|e| panic!("restore: {e}\n{}", d.log()));
    assert_eq!(
        fs::read(d.volume_dir("copy").join("content")).unwrap(),
        b"source"
    );
    delete_snap(&d, &snap).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_being_cloned_is_not_deleted() {
    let (d, paused, src) = paused_at("restore:after-copy").await;
    let call = restore_until_paused(&d, &paused, None, Some(&src)).await;
    let r = delete_volume(&d, &src).await;
    expect_code(r, Code::Aborted, "DeleteVolume while a clone reads it");
    assert!(
        d.volume_dir("src").join("content").exists(),
        "the source's content went"
    );
    fs::remove_file(&paused).unwrap();
    call.await
        .unwrap()
        .unwrap_or_else(|e| panic!("clone: {e}\n{}", d.log()));
    delete_volume(&d, &src).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_being_snapshotted_is_not_deleted() {
    let (d, paused, src) = paused_at("snapshot:before-commit").await;
    let mut ctl = d.controller();
    let req = snap_req("s1", &src);
    let call = tokio::spawn(async move { ctl.create_snapshot(req).await });
    wait_paused(&d, &paused).await;
    let r = delete_volume(&d, &src).await;
    expect_code(r, Code::Aborted, "DeleteVolume while a snapshot reads it");
    assert!(
        d.volume_dir("src").join("content").exists(),
        "the source's content went"
    );
    fs::remove_file(&paused).unwrap();
    let snap = call
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("snapshot: {e}\n{}", d.log()));
    assert!(snap.into_inner().snapshot.unwrap().ready_to_use);
    delete_volume(&d, &src).await.unwrap();
}
