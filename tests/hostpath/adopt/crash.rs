//! kill -9 at every step of an adoption (FERROVOL_CRASH_AT), then a start: the directory is
//! either untouched where it was (no marker, no record) or a complete volume, never lost.

use super::*;

/// Steps before the rename: rolled back. After it: finished.
const ROLLED_BACK: [&str; 2] = ["adopt:after-intent", "adopt:after-mark"];
const FINISHED: [&str; 2] = ["adopt:after-rename", "adopt:after-commit"];

async fn crash_at(point: &str, src_in_base: bool) {
    let mut d = Driver::builder().crash_at(point).start().await;
    // The base exists (and is this store's) once a volume was made on it.
    d.create("other", 16 * MIB, mount_cap()).await;
    let src = if src_in_base {
        // local-path-provisioner's layout: the directory already lies in the base.
        let src = d.base().join("pvc-1_default_data");
        make_data_dir(&src, "crash");
        src
    } else {
        outside_dir(&d, "crash")
    };
    let before = inode(&src);
    let r = adopt(&d, &src, "adopted", 64 * MIB).await;
    assert!(
        r.is_err(),
        "{point}: the driver should have died, answered {r:?}"
    );
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;

    let id = d.volume_id("adopted");
    if ROLLED_BACK.contains(&point) {
        assert_untouched(&src, "crash");
        assert_eq!(inode(&src), before);
        assert!(!d.volume_dir("adopted").exists(), "{point}");
        assert_eq!(d.state_records(), vec!["other".to_string()], "{point}");
        // The operator runs it again, and it works.
        adopt(&d, &src, "adopted", 64 * MIB)
            .await
            .expect("adopt after the rollback");
    } else {
        assert!(!src.exists(), "{point}: the source is still there");
        assert_eq!(inode(&d.volume_dir("adopted")), before, "{point}");
        assert_data(&d.volume_dir("adopted"), "crash");
        assert!(d.state_record("adopted").is_some(), "{point}: no record");
        // Repeating the call answers the finished volume.
        let again = adopt(&d, &src, "adopted", 64 * MIB).await.expect("repeat");
        assert_eq!(again.volume_id, id);
    }
    assert!(d.list_ids().await.contains(&id), "{point}");
    let live = ferrovol::state::journal::peek(&d.state_dir().join("journal")).unwrap();
    assert!(
        !live.keys().any(|k| k.starts_with("hostpath-adopt/")),
        "{point}: an adoption intent is left: {:?}",
        live.keys().collect::<Vec<_>>()
    );
    let (staging, target) = d.stage_and_publish(&id, "adopted", mount_cap()).await;
    assert_data(&target, "crash");
    d.unpublish_and_unstage(&id, &target, &staging).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_during_adoption_leaves_the_directory_or_a_volume() {
    for point in ROLLED_BACK.iter().chain(&FINISHED) {
        crash_at(point, false).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_during_adoption_inside_the_base_never_sweeps_the_directory() {
    // A marked directory in the base without a record is what the start-up sweep removes: the
    // intent must settle it first.
    for point in ROLLED_BACK.iter().chain(&FINISHED) {
        crash_at(point, true).await;
    }
}

/// The record is committed, then dropping the intent fails (the state dir full, a write error):
/// the adoption is done. It is answered as done, the directory stays the volume's, and the next
/// start drops the intent and serves the volume with its data.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_intent_removal_after_the_commit_undoes_nothing() {
    let mut d = Driver::builder()
        .env("FERROVOL_FAIL_AT", "adopt:remove-intent")
        .start()
        .await;
    let src = outside_dir(&d, "committed");
    let before = inode(&src);
    let r = adopt(&d, &src, "adopted", 64 * MIB).await;
    let id = d.volume_id("adopted");
    let dir = d.volume_dir("adopted");
    assert!(
        d.state_record("adopted").is_some(),
        "the fail point comes after the record's commit: the test proves nothing"
    );
    let r = r.unwrap_or_else(|e| {
        panic!(
            "a committed adoption was not answered as done: {e:?}\n--- driver log ---\n{}",
            d.log()
        )
    });
    assert_eq!(r.volume_id, id);
    assert!(!src.exists(), "the directory went back to its source");
    assert_eq!(inode(&dir), before);
    assert_data(&dir, "committed");
    let markers = get_xattr(&dir, "trusted.ferrovol.markers").expect("marked");
    assert!(markers.contains(&id), "{markers:?}");

    d.remove_env("FERROVOL_FAIL_AT");
    d.restart().await;
    assert!(!src.exists());
    assert_eq!(inode(&dir), before, "the volume's directory was made anew");
    assert_data(&dir, "committed");
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    let live = ferrovol::state::journal::peek(&d.state_dir().join("journal")).unwrap();
    assert!(
        !live.keys().any(|k| k.starts_with("hostpath-adopt/")),
        "the adoption intent is left: {:?}",
        live.keys().collect::<Vec<_>>()
    );
    let again = adopt(&d, &src, "adopted", 64 * MIB).await.expect("repeat");
    assert_eq!(again.volume_id, id);
}
