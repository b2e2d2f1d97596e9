//! Capacity of an adopted directory. This kernel has no CONFIG_QUOTA, so a limit is proven in
//! parts: the decision (a unit test in src/backend/hostpath/adopt.rs), the project ids the
//! whole tree gets (here, on a real XFS, which keeps project ids without quota), and the whole
//! path through the driver on XFS mounted prjquota (`#[ignore]`d: it needs a kernel with XFS
//! quota; scripts/test.sh runs the ignored quota tests where there is one). On btrfs a plain
//! directory stays advisory (`btrfs_plain_directory_stays_advisory`).

use super::*;

fn project_of(p: &Path) -> u32 {
    let out = run("xfs_io", &["-c".as_ref(), "lsproj".as_ref(), p.as_os_str()]);
    out.trim()
        .strip_prefix("projid = ")
        .unwrap_or_else(|| panic!("xfs_io lsproj printed {out:?}"))
        .parse()
        .unwrap()
}

#[test]
fn every_directory_and_file_of_an_adopted_tree_joins_the_project() {
    require_tool("mkfs.xfs", "xfsprogs");
    let scratch = Scratch::new();
    let mnt = mount_image(
        scratch.path(),
        "xfs",
        &["mkfs.xfs", "-q"],
        XFS_IMAGE_BYTES,
        "defaults",
    );
    let dir = mnt.join("tree");
    make_data_dir(&dir, "tree");
    let mut deep = dir.clone();
    for i in 0..50 {
        deep.push(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("leaf"), b"leaf").unwrap();
    std::os::unix::fs::symlink("data.txt", dir.join("link")).unwrap();

    ferrovol::os::quota::assign_project_tree(&dir, 4242).unwrap();
    for p in [
        dir.clone(),
        dir.join("data.txt"),
        dir.join("sub"),
        dir.join("sub/more.bin"),
        deep.clone(),
        deep.join("leaf"),
    ] {
        assert_eq!(project_of(&p), 4242, "{}", p.display());
    }
    // New files inherit it from their directory.
    fs::write(deep.join("new"), b"x").unwrap();
    assert_eq!(project_of(&deep.join("new")), 4242);
    assert_data(&dir, "tree");
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_plain_directory_stays_advisory() {
    require_tool("mkfs.btrfs", "btrfs-progs");
    let b = Driver::builder();
    let mnt = mount_image(
        b.path(),
        "btrfs",
        &["mkfs.btrfs", "-q"],
        256 << 20,
        "defaults",
    );
    run(
        "btrfs",
        &["quota".as_ref(), "enable".as_ref(), mnt.as_os_str()],
    );
    let src = mnt.join("old-data");
    make_data_dir(&src, "btrfs");
    let d = b.hostpath_base(mnt.join("hostpath")).start().await;
    // The base's own qgroups work: a created volume is enforced.
    let v = d.create("made", 16 * MIB, mount_cap()).await;
    assert_eq!(v.volume_context["ferrovol.io/capacity-enforced"], "true");
    let resp = adopt(&d, &src, "adopted", 64 * MIB).await.expect("adopt");
    assert!(!resp.capacity_enforced, "a plain directory has no qgroup");
    assert_eq!(
        resp.volume_context["ferrovol.io/capacity-enforced"],
        "false"
    );
    assert!(
        d.log().contains("its capacity stays advisory"),
        "the driver logs why"
    );
    assert_data(&d.volume_dir("adopted"), "btrfs");
}

/// Named `quota::xfs::` so scripts/test.sh runs it with the other XFS quota tests.
mod xfs {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "needs a kernel with XFS quota (CONFIG_XFS_QUOTA); scripts/test.sh runs it where there is one"]
    async fn prjquota_limits_an_adopted_directory() {
        require_tool("mkfs.xfs", "xfsprogs");
        let b = Driver::builder();
        let dev = make_fs(b.path(), "xfs", &["mkfs.xfs", "-q"], XFS_IMAGE_BYTES);
        let mnt = try_mount(b.path(), "xfs", &dev, "prjquota").unwrap_or_else(|e| panic!("{e}"));
        let src = mnt.join("old-data");
        make_data_dir(&src, "xfs");
        let d = b.hostpath_base(mnt.join("hostpath")).start().await;
        let resp = adopt(&d, &src, "adopted", 8 * MIB).await.expect("adopt");
        assert!(resp.capacity_enforced);
        let dir = d.volume_dir("adopted");
        assert_ne!(project_of(&dir.join("sub/more.bin")), 0, "old files count");
        let over = write_file(&dir.join("big"), 16 << 20);
        assert!(over.is_err(), "writing past the adopted capacity must fail");
    }
}
