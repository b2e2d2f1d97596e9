//! The hostpath base's identity: a base whose filesystem is not mounted at start (the path then
//! shows the directory below the mount point, or nothing) is refused, never filled with empty
//! volumes; a base written before identities existed is adopted when its volumes are there.
//! Needs root and mkfs.ext4 (e2fsprogs).

use crate::common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use tonic::Code;

const BASE_MARKER: &str = "trusted.ferrovol.base";

/// A driver whose base is `sub` below the root of a fresh ext4 filesystem ("" for the root
/// itself); returns it with the filesystem's device and mount point.
async fn driver_on_ext4(sub: &str) -> (Driver, String, PathBuf) {
    require_tool("mkfs.ext4", "e2fsprogs");
    let b = Driver::builder();
    let dev = make_fs(b.path(), "fs", &["mkfs.ext4", "-q"], 64 << 20);
    let mnt = try_mount(b.path(), "fs", &dev, "rw").unwrap_or_else(|e| panic!("{e}"));
    let base = if sub.is_empty() {
        mnt.clone()
    } else {
        mnt.join(sub)
    };
    (b.hostpath_base(base).start().await, dev, mnt)
}

fn umount(mnt: &Path) {
    run("umount", &[mnt.as_os_str()]);
}

fn entries_below(mnt: &Path) -> Vec<String> {
    dir_names(mnt)
        .into_iter()
        .filter(|n| n != "lost+found")
        .collect()
}

/// No record and nothing in the base but ext4's own lost+found (when the base is its root).
fn assert_no_volume_left(d: &Driver) {
    assert_eq!(d.state_records(), Vec::<String>::new());
    assert_eq!(entries_below(d.base()), Vec::<String>::new());
}

/// The condition ControllerGetVolume reports for volume `id`.
async fn volume_condition(d: &Driver, id: &str) -> ferrovol::proto::VolumeCondition {
    d.get(id).await.status.unwrap().volume_condition.unwrap()
}

async fn unmounted_base_is_refused(sub: &str) {
    let (mut d, dev, mnt) = driver_on_ext4(sub).await;
    let vol = d.create("data", 16 * MIB, mount_cap()).await;
    fs::write(d.volume_dir("data").join("f"), b"kept").unwrap();
    d.kill9();
    umount(&mnt);

    let probe = d.restart_unready().await;
    assert_eq!(probe.code(), Code::FailedPrecondition, "{probe:?}");
    assert!(
        probe.message().contains(&d.base().display().to_string()),
        "Probe names the base: {probe:?}"
    );
    assert_eq!(
        entries_below(&mnt),
        Vec::<String>::new(),
        "something was made on the filesystem below the mount point"
    );
    let condition = volume_condition(&d, &vol.volume_id).await;
    assert!(condition.abnormal, "{condition:?}");
    let staging = d.staging("data");
    let err = d
        .node()
        .node_stage_volume(stage_req(&vol.volume_id, &staging, mount_cap()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let target = d.target("data", "pod");
    let err = d
        .node()
        .node_publish_volume(publish_req(
            &vol.volume_id,
            &staging,
            &target,
            mount_cap(),
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = d.delete_refused(&vol.volume_id).await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = d
        .controller()
        .create_volume(create_req("new", 16 * MIB, mount_cap()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(entries_below(&mnt), Vec::<String>::new());

    // The filesystem is back: the volume is there with its data, and goes on working.
    try_mount(d.root(), "fs", &dev, "rw").unwrap_or_else(|e| panic!("{e}"));
    d.restart().await;
    assert_eq!(fs::read(d.volume_dir("data").join("f")).unwrap(), b"kept");
    let condition = volume_condition(&d, &vol.volume_id).await;
    assert!(!condition.abnormal, "{condition:?}");
    d.delete(&vol.volume_id).await;
    assert_no_volume_left(&d);
}

#[tokio::test]
async fn a_base_at_an_unmounted_filesystem_root_is_refused_not_refilled() {
    unmounted_base_is_refused("").await;
}

#[tokio::test]
async fn a_base_below_an_unmounted_filesystem_is_refused_not_recreated() {
    unmounted_base_is_refused("hostpath").await;
}

#[tokio::test]
async fn a_base_recorded_before_identities_is_adopted_when_its_volumes_are_there() {
    let (mut d, _dev, mnt) = driver_on_ext4("").await;
    let vol = d.create("data", 16 * MIB, mount_cap()).await;
    fs::write(d.volume_dir("data").join("f"), b"kept").unwrap();
    assert!(
        get_xattr(d.base(), BASE_MARKER).is_some(),
        "a fresh base is adopted"
    );
    // As the previous version left it: volumes recorded, no identity on the base.
    d.kill9();
    remove_xattr(d.base(), BASE_MARKER);
    d.restart().await;
    assert!(
        get_xattr(d.base(), BASE_MARKER).is_some(),
        "identity recorded"
    );
    let condition = volume_condition(&d, &vol.volume_id).await;
    assert!(!condition.abnormal, "{condition:?}");
    // Without the identity and without its volumes' directories, it is refused instead.
    d.kill9();
    remove_xattr(d.base(), BASE_MARKER);
    fs::rename(d.volume_dir("data"), mnt.join("elsewhere")).unwrap();
    let probe = d.restart_unready().await;
    assert_eq!(probe.code(), Code::FailedPrecondition, "{probe:?}");
    assert!(!d.volume_dir("data").exists(), "recreated");
    fs::rename(mnt.join("elsewhere"), d.volume_dir("data")).unwrap();
    d.restart().await;
    assert_eq!(fs::read(d.volume_dir("data").join("f")).unwrap(), b"kept");
    d.delete(&vol.volume_id).await;
    assert_no_volume_left(&d);
}
