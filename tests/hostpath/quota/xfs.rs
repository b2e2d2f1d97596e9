//! XFS mounted with prjquota: every volume directory is a quota project with a block limit.

use super::*;

/// A driver whose hostpath base lies on a fresh XFS mounted with prjquota. The tests that use it
/// are `#[ignore]`d because CI's kernel is built without XFS quota; scripts/test.sh runs them with
/// `--ignored` wherever /proc/fs/xfs/xqmstat shows the kernel has it. Run by hand on a kernel
/// without it, they fail and say why.
async fn xfs_driver() -> (Driver, PathBuf) {
    require_tool("mkfs.xfs", "xfsprogs");
    let b = Driver::builder();
    let dev = make_fs(b.path(), "xfs", &["mkfs.xfs", "-q"], XFS_IMAGE_BYTES);
    let mnt = try_mount(b.path(), "xfs", &dev, "prjquota").unwrap_or_else(|e| {
        panic!(
            "mounting XFS with prjquota failed: {}{}",
            e.lines().next().unwrap_or("").trim(),
            if Path::new("/proc/fs/xfs/xqmstat").exists() {
                ""
            } else {
                " (this kernel lacks XFS quota support: /proc/fs/xfs/xqmstat is missing)"
            }
        )
    });
    assert_eq!(mounts_at(&mnt)[0].fs_type, "xfs");
    let d = b.hostpath_base(mnt.join("hostpath")).start().await;
    (d, mnt)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kernel with XFS quota (CONFIG_XFS_QUOTA); scripts/test.sh runs it where there is one"]
async fn xfs_project_quota_limits_and_grows_a_mount_volume() {
    let (d, mnt) = xfs_driver().await;
    let cap = mount_cap();
    let vol = create_enforced(&d, "limited", cap.clone()).await;
    let id = vol.volume_id;
    let (staging, target) = publish_limited(&d, &id, cap.clone()).await;
    overflow_then_grow(&d, &id, &target).await;

    grown_limit_holds(&d, &id, &target).await;

    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.controller_unpublish(&id).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kernel with XFS quota (CONFIG_XFS_QUOTA); scripts/test.sh runs it where there is one"]
async fn xfs_block_volume_is_fully_writable_under_its_quota() {
    let (d, mnt) = xfs_driver().await;
    let cap = block_cap();
    let vol = create_enforced(&d, "blk", cap.clone()).await;
    let id = vol.volume_id;
    let (staging, target) = d.stage_and_publish(&id, "blk", cap.clone()).await;
    assert_eq!(block_size(&target), 16 << 20);
    // Writing every byte of the device allocates the whole image: the quota must allow it.
    let fill = |len: usize| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().write(true).open(&target)?;
        let chunk = vec![0x3cu8; 1 << 20];
        for _ in 0..len >> 20 {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    };
    fill(16 << 20).expect("filling a 16 MiB block volume");

    d.controller()
        .controller_expand_volume(expand_req(&id, 32 * MIB))
        .await
        .unwrap();
    d.node()
        .node_expand_volume(node_expand_req(&id, &target, 32 * MIB))
        .await
        .unwrap();
    assert_eq!(block_size(&target), 32 << 20);
    fill(32 << 20).expect("filling the grown 32 MiB block volume");

    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kernel with XFS quota (CONFIG_XFS_QUOTA); scripts/test.sh runs it where there is one"]
async fn xfs_quota_none_is_advisory() {
    let (d, mnt) = xfs_driver().await;
    let vol = create_with(&d, "loose", 4 * MIB, "none").await;
    assert_eq!(enforced(&vol), Some("false"));
    // Advisory: more than the size can be written.
    write_file(&d.volume_dir("loose").join("blob"), 8 << 20).expect("quota=none must not limit");

    // quota=enforce is accepted on this base.
    let vol = create_with(&d, "strict", 4 * MIB, "enforce").await;
    assert_eq!(enforced(&vol), Some("true"));
    let err = write_file(&d.volume_dir("strict").join("blob"), 8 << 20)
        .expect_err("quota=enforce did not limit");
    assert!(is_quota_error(&err), "{err:?}");

    d.delete(&d.volume_id("loose")).await;
    d.delete(&d.volume_id("strict")).await;
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kernel with XFS quota (CONFIG_XFS_QUOTA); scripts/test.sh runs it where there is one"]
async fn xfs_a_delete_whose_commit_fails_keeps_the_limit() {
    // The delete's commit fails (a dying disk): the volume stays, and so does its limit. (Lifting
    // the limit before the commit would leave a volume that can fill the filesystem.)
    let (mut d, mnt) = xfs_driver().await;
    let vol = create_with(&d, "kept", 16 * MIB, "enforce").await;
    assert_eq!(enforced(&vol), Some("true"));
    let id = vol.volume_id;
    d.restart_failing_commits().await;
    let status = d.delete_refused(&id).await;
    assert!(status.message().contains("kept"), "{status:?}");
    d.restart_healthy().await;
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    let blob = d.volume_dir("kept").join("blob");
    let err = write_file(&blob, 24 << 20).expect_err("the volume lost its limit");
    assert!(is_quota_error(&err), "{err:?}");
    fs::remove_file(&blob).unwrap();

    d.delete(&id).await;
    d.assert_nothing_leaked(&[&mnt]);
}
