//! Path confinement on the node side: staging and target paths must lie under a publish root and are
//! mounted without following symlinks; a local volume is found from the driver's own records,
//! never from a path in the request's context; DeleteVolume that meets something it must not
//! remove answers FailedPrecondition and loses nothing.

use crate::common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;

#[tokio::test(flavor = "multi_thread")]
async fn targets_outside_the_publish_roots_are_refused() {
    let d = Driver::start().await;
    let id = d.create("roots", 4 * MIB, mount_cap()).await.volume_id;
    let outside = d.root().join("elsewhere/staging");
    let r = d
        .node()
        .node_stage_volume(stage_req(&id, &outside, mount_cap()))
        .await;
    let status = r.expect_err("a staging path outside the roots must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(&outside.display().to_string())
            && status.message().contains("kubelet"),
        "the error names the path and the roots: {}",
        status.message()
    );
    assert!(!outside.exists(), "a refused stage created its path");
    // `..` cannot climb out of a root either.
    let sneaky = d.root().join("kubelet/../elsewhere/t");
    let r = d
        .node()
        .node_stage_volume(stage_req(&id, &sneaky, mount_cap()))
        .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument);
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_parent_never_redirects_a_mount_outside_the_root() {
    let d = Driver::start().await;
    let id = d.create("links", 4 * MIB, mount_cap()).await.volume_id;
    let outside = d.root().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let pods = d.root().join("kubelet/pods");
    fs::create_dir_all(&pods).unwrap();
    // kubelet/pods/evil -> <root>/outside : the target kubelet/pods/evil/vol would land outside.
    symlink(&outside, pods.join("evil")).unwrap();
    let staging = d.staging("links");
    d.stage(&id, &staging, mount_cap()).await;
    let target = pods.join("evil/vol");
    let r = d
        .node()
        .node_publish_volume(publish_req(&id, &staging, &target, mount_cap(), false))
        .await;
    assert!(
        r.is_err(),
        "publishing through a symlinked parent must fail"
    );
    assert!(
        mounts_under(&outside).is_empty() && fs::read_dir(&outside).unwrap().next().is_none(),
        "something was created or mounted outside the publish root"
    );
    d.unstage(&id, &staging).await;
    fs::remove_file(pods.join("evil")).unwrap();
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_context_naming_another_path_is_ignored() {
    let d = Driver::start().await;
    let id = d.create("ctx", 4 * MIB, mount_cap()).await.volume_id;
    let decoy = d.root().join("decoy");
    fs::create_dir_all(&decoy).unwrap();
    fs::write(decoy.join("secret"), b"not yours").unwrap();
    let staging = d.staging("ctx");
    let mut req = stage_req(&id, &staging, mount_cap());
    req.volume_context
        .insert("ferrovol.io/path".into(), path_str(&decoy));
    d.node().node_stage_volume(req).await.unwrap();
    // The staged directory is the volume's own, not the decoy the context named.
    assert!(!staging.join("secret").exists());
    fs::write(staging.join("mine"), b"x").unwrap();
    assert!(d.volume_dir("ctx").join("mine").exists());
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_over_a_nested_mount_is_failed_precondition_and_loses_nothing() {
    let d = Driver::start().await;
    let id = d.create("nested", 4 * MIB, mount_cap()).await.volume_id;
    let dir = d.volume_dir("nested");
    fs::write(dir.join("data"), b"keep me").unwrap();
    let inner = dir.join("inner");
    fs::create_dir(&inner).unwrap();
    let elsewhere = d.root().join("precious");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("file"), b"precious").unwrap();
    run(
        "mount",
        &["--bind".as_ref(), elsewhere.as_os_str(), inner.as_os_str()],
    );
    let r = d.controller().delete_volume(delete_req(&id)).await;
    let status = r.expect_err("delete over a nested mount must be refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains(&inner.display().to_string()),
        "the error names what is in the way: {}",
        status.message()
    );
    assert_eq!(
        d.list_ids().await,
        vec![id.clone()],
        "the volume must stay listed"
    );
    assert_eq!(fs::read(dir.join("data")).unwrap(), b"keep me");
    assert_eq!(fs::read(elsewhere.join("file")).unwrap(), b"precious");
    run("umount", &[inner.as_os_str()]);
    d.delete(&id).await;
    assert_eq!(fs::read(elsewhere.join("file")).unwrap(), b"precious");
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_staging_path_whose_parent_became_a_symlink_is_never_bound() {
    let d = Driver::start().await;
    let id = d.create("staged", 4 * MIB, mount_cap()).await.volume_id;
    let outside = d.root().join("outside");
    fs::create_dir_all(outside.join("vol")).unwrap();
    fs::write(outside.join("vol/secret"), b"host data").unwrap();
    let parent = d.root().join("kubelet/st");
    let staging = parent.join("vol");
    d.stage(&id, &staging, mount_cap()).await;
    // The staging mount moves away with its parent; the parent's name now leads outside.
    fs::rename(&parent, d.root().join("kubelet/st-old")).unwrap();
    symlink(&outside, &parent).unwrap();
    let target = d.target("staged", "pod");
    let r = d
        .node()
        .node_publish_volume(publish_req(&id, &staging, &target, mount_cap(), false))
        .await;
    assert!(
        r.is_err(),
        "published from a staging path through a symlink"
    );
    assert!(
        mounts_at(&target).is_empty() && !target.join("secret").exists(),
        "the directory outside the publish root was bound"
    );
    fs::remove_file(&parent).unwrap();
    fs::rename(d.root().join("kubelet/st-old"), &parent).unwrap();
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}
