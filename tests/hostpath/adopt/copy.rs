//! `--reflink-copy` on btrfs: the tree is reflink-copied into a new subvolume that a qgroup
//! limits, the original renamed aside and kept; a kill -9 at each step leaves the original
//! untouched or the complete volume.

use super::*;
use tonic::Code;

/// A driver whose base lies on a fresh btrfs with quota, and a directory with data beside it.
async fn btrfs_driver(crash_at: Option<&str>) -> (Driver, PathBuf) {
    require_tool("mkfs.btrfs", "btrfs-progs");
    let mut b = Driver::builder();
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
    make_data_dir(&src, "copied");
    if let Some(p) = crash_at {
        b = b.crash_at(p);
    }
    (b.hostpath_base(mnt.join("hostpath")).start().await, src)
}

async fn adopt_copy(d: &Driver, dir: &Path, name: &str) -> Result<AdoptResponse, tonic::Status> {
    admin(d)
        .await
        .adopt_directory(AdoptDirectoryRequest {
            path: dir.display().to_string(),
            name: name.to_string(),
            capacity_bytes: 8 * MIB,
            reflink_copy: true,
        })
        .await
        .map(|r| r.into_inner())
}

/// The original, renamed aside: `<dir>.adopted-<token>`.
fn asides(src: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.adopted-", src.file_name().unwrap().to_str().unwrap());
    dir_names(src.parent().unwrap())
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .map(|n| src.with_file_name(n))
        .collect()
}

fn no_intents(d: &Driver) {
    let live = ferrovol::state::journal::peek(&d.state_dir().join("journal")).unwrap();
    assert!(
        !live.keys().any(|k| k.starts_with("hostpath-adopt")),
        "intents left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reflink_copy_becomes_a_limited_subvolume_and_the_original_is_kept_aside() {
    let (d, src) = btrfs_driver(None).await;
    let resp = adopt_copy(&d, &src, "copied").await.expect("adopt by copy");
    assert!(resp.capacity_enforced, "a subvolume gets a qgroup");
    let dir = d.volume_dir("copied");
    assert_eq!(
        fs::metadata(&dir).unwrap().ino(),
        256,
        "the volume is a subvolume"
    );
    assert_data(&dir, "copied");
    assert!(!src.exists());
    let aside = asides(&src);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_data(&aside[0], "copied");
    assert_eq!(
        get_xattr(&aside[0], "trusted.ferrovol.markers"),
        None,
        "the original is not marked"
    );
    no_intents(&d);
    // The limit holds for the adopted volume.
    let (staging, target) = d
        .stage_and_publish(&resp.volume_id, "copied", mount_cap())
        .await;
    assert!(
        write_file(&target.join("big"), 16 << 20).is_err(),
        "the qgroup limits it"
    );
    d.unpublish_and_unstage(&resp.volume_id, &target, &staging)
        .await;
    // A repeat answers the same volume.
    assert_eq!(
        adopt_copy(&d, &src, "copied").await.unwrap().volume_id,
        resp.volume_id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reflink_copy_needs_a_btrfs_base_with_quota() {
    let d = Driver::start().await;
    let src = outside_dir(&d, "plain");
    let s = adopt_copy(&d, &src, "v").await.expect_err("ext4 base");
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("without btrfs quota"), "{s:?}");
    assert_untouched(&src, "plain");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_during_a_reflink_copy_keeps_the_original_or_finishes() {
    for (point, finished) in [
        ("adopt:after-intent", false),
        ("adopt:copy:after-subvolume", false),
        ("adopt:copy:after-copy", false),
        ("adopt:copy:after-place", true),
        ("adopt:after-commit", true),
    ] {
        let (mut d, src) = btrfs_driver(Some(point)).await;
        assert!(
            adopt_copy(&d, &src, "v").await.is_err(),
            "{point}: no crash"
        );
        d.expect_crash().await;
        d.remove_env("FERROVOL_CRASH_AT");
        d.restart().await;
        no_intents(&d);
        if finished {
            assert!(d.state_record("v").is_some(), "{point}: no record");
            assert_data(&d.volume_dir("v"), "copied");
            assert!(!src.exists(), "{point}: the original is still in place");
            assert_eq!(asides(&src).len(), 1, "{point}");
            assert_data(&asides(&src)[0], "copied");
        } else {
            assert!(d.state_record("v").is_none(), "{point}: a record");
            assert_untouched(&src, "copied");
            assert!(asides(&src).is_empty(), "{point}");
            let base = d.base_entries();
            assert!(
                !base.iter().any(|n| n == "v" || n.starts_with(".adopt-")),
                "{point}: the copy is left: {base:?}"
            );
            adopt_copy(&d, &src, "v")
                .await
                .expect("adopt after the rollback");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_intent_removal_after_the_commit_keeps_the_copy() {
    // The record is committed, then dropping the intent fails: the copy stays the volume, the
    // original stays aside, and the next start drops the intent.
    let (mut d, src) = btrfs_driver(None).await;
    d.set_env("FERROVOL_FAIL_AT", "adopt:remove-intent");
    d.restart().await;
    let resp = adopt_copy(&d, &src, "v").await.unwrap_or_else(|e| {
        panic!(
            "a committed adoption was not answered as done: {e:?}\n--- driver log ---\n{}",
            d.log()
        )
    });
    assert!(d.state_record("v").is_some());
    assert_data(&d.volume_dir("v"), "copied");
    assert!(!src.exists(), "the original is back in place");
    assert_eq!(asides(&src).len(), 1);

    d.remove_env("FERROVOL_FAIL_AT");
    d.restart().await;
    no_intents(&d);
    assert_eq!(d.list_ids().await, vec![resp.volume_id.clone()]);
    assert_data(&d.volume_dir("v"), "copied");
    assert_eq!(asides(&src).len(), 1);
    assert_data(&asides(&src)[0], "copied");
}
