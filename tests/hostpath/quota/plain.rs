//! Bases without project quota or qgroups: sizes are advisory, `quota=enforce` is refused.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn tmpfs_base_does_not_enforce_capacity() {
    let b = Driver::builder();
    let mnt = b.path().join("tmpfs");
    fs::create_dir(&mnt).unwrap();
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            "size=64m".as_ref(),
            "tmpfs".as_ref(),
            mnt.as_os_str(),
        ],
    );
    let d = b.hostpath_base(mnt.join("hostpath")).start().await;
    check_plain_base(&d, "tmpfs").await;
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ext4_base_without_project_quota_does_not_enforce_capacity() {
    require_tool("mkfs.ext4", "e2fsprogs");
    let b = Driver::builder();
    let mnt = mount_image(
        b.path(),
        "ext4",
        &["mkfs.ext4", "-q", "-F"],
        128 << 20,
        "rw",
    );
    assert_eq!(mounts_at(&mnt)[0].fs_type, "ext4");
    let d = b.hostpath_base(mnt.join("hostpath")).start().await;
    check_plain_base(&d, "ext4").await;
    d.assert_nothing_leaked(&[&mnt]);
}

#[tokio::test(flavor = "multi_thread")]
async fn xfs_base_mounted_without_prjquota_does_not_enforce_capacity() {
    require_tool("mkfs.xfs", "xfsprogs");
    let b = Driver::builder();
    let mnt = mount_image(b.path(), "xfs", &["mkfs.xfs", "-q"], XFS_IMAGE_BYTES, "rw");
    assert_eq!(mounts_at(&mnt)[0].fs_type, "xfs");
    let d = b.hostpath_base(mnt.join("hostpath")).start().await;
    check_plain_base(&d, "xfs without prjquota").await;
    d.assert_nothing_leaked(&[&mnt]);
}
