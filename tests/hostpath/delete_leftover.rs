//! A delete whose directory cannot be removed after its commit (here: the directory made
//! immutable, so neither rmdir nor the rename to trash works). The delete is acknowledged (its
//! record's removal is durable); what it leaves under the volume's name is never served as a
//! later volume of the same name, and the next start removes it.
//!
//! And what is under a volume's name without being its directory (no marker: restored from a
//! backup without its trusted.* xattrs, put there by hand; another volume's or another store's
//! marker): DeleteVolume refuses rather than remove it, and a trash name it did not mark stays.

use crate::common;

use common::*;
use std::fs;
use std::path::Path;

const NAME: &str = "stuck";

/// Creates `NAME` with a file in it, makes its directory immutable and deletes it.
async fn delete_that_cannot_remove(d: &Driver) -> String {
    let id = d.create(NAME, 4 * MIB, mount_cap()).await.volume_id;
    fs::write(d.volume_dir(NAME).join("old"), b"deleted content").unwrap();
    chattr("+i", &d.volume_dir(NAME));
    d.delete(&id).await;
    assert!(d.list_ids().await.is_empty(), "a deleted volume is listed");
    assert!(
        d.state_record(NAME).is_none(),
        "the removal was not committed"
    );
    assert!(
        d.volume_dir(NAME).join("old").exists(),
        "the immutable directory went after all: the test proves nothing"
    );
    assert!(
        d.log()
            .contains("could not remove a deleted volume's directory"),
        "the failed removal was not logged:\n{}",
        d.log()
    );
    chattr("-i", &d.volume_dir(NAME));
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_volume_never_serves_what_a_failed_removal_left() {
    let d = Driver::start().await;
    let id = delete_that_cannot_remove(&d).await;
    let again = d.create(NAME, 4 * MIB, mount_cap()).await.volume_id;
    assert_eq!(again, id, "a name maps to one id");
    let dir = d.volume_dir(NAME);
    assert!(
        !dir.join("old").exists(),
        "the deleted volume's content is served as the new volume"
    );
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "the new volume is not empty"
    );
    assert!(
        d.log()
            .contains("earlier, deleted volume of this name left behind"),
        "the leftover's removal was not logged:\n{}",
        d.log()
    );
    d.delete(&again).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_start_removes_what_a_failed_removal_left() {
    let mut d = Driver::start().await;
    delete_that_cannot_remove(&d).await;
    d.restart().await;
    assert!(d.list_ids().await.is_empty());
    assert!(
        !d.volume_dir(NAME).exists(),
        "the start kept a deleted volume's directory:\n{}",
        d.log()
    );
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_another_store_marked_is_refused_not_removed() {
    // The same id, but not made by this driver's state (restored from elsewhere, or a state
    // directory replaced): not provably ours, so a create refuses rather than delete it.
    let d = Driver::start().await;
    delete_that_cannot_remove(&d).await;
    let dir = d.volume_dir(NAME);
    let combined = get_xattr(&dir, "trusted.ferrovol.markers").unwrap();
    let mut fields: Vec<&str> = combined.split('\0').collect();
    fields[2] = "another-store";
    set_xattr(&dir, "trusted.ferrovol.markers", &fields.join("\0"));
    let r = d
        .controller()
        .create_volume(create_req(NAME, 4 * MIB, mount_cap()))
        .await;
    expect_code(
        r,
        tonic::Code::FailedPrecondition,
        "create over a foreign leftover",
    );
    assert_eq!(fs::read(dir.join("old")).unwrap(), b"deleted content");
}

/// DeleteVolume of `id` is refused, naming the volume and `dir`; nothing is removed and the
/// volume is still there.
async fn assert_delete_refused(d: &Driver, id: &str, dir: &Path) {
    let st = d.controller().delete_volume(delete_req(id)).await;
    let s = expect_code(
        st,
        tonic::Code::FailedPrecondition,
        "delete over a directory that is not the volume's",
    );
    for what in [id.to_string(), dir.display().to_string()] {
        assert!(s.message().contains(&what), "{what} not named: {s:?}");
    }
    assert_eq!(fs::read(dir.join("restored")).unwrap(), b"backup");
    assert_eq!(d.list_ids().await, vec![id.to_string()], "the record went");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_restored_without_markers_is_not_removed_by_delete() {
    let mut d = Driver::start().await;
    let id = d.create(NAME, 4 * MIB, mount_cap()).await.volume_id;
    let dir = d.volume_dir(NAME);
    d.kill9();
    // The original is lost; a copy from a backup that kept no trusted.* xattrs takes its place.
    fs::remove_dir_all(&dir).unwrap();
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("restored"), b"backup").unwrap();
    d.restart().await;
    assert_delete_refused(&d, &id, &dir).await;
    // As the answer says: moved out of the base, the directory is kept and the delete goes on.
    let kept = d.root().join("restored-copy");
    fs::rename(&dir, &kept).unwrap();
    d.delete(&id).await;
    assert!(d.list_ids().await.is_empty());
    assert_eq!(fs::read(kept.join("restored")).unwrap(), b"backup");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_marked_as_another_volume_or_by_another_store_is_not_removed_by_delete() {
    for (field, value) in [(1, "hostpath/test-node/another"), (2, "another-store")] {
        let d = Driver::start().await;
        let id = d.create(NAME, 4 * MIB, mount_cap()).await.volume_id;
        let dir = d.volume_dir(NAME);
        fs::write(dir.join("restored"), b"backup").unwrap();
        let combined = get_xattr(&dir, "trusted.ferrovol.markers").unwrap();
        let mut fields: Vec<&str> = combined.split('\0').collect();
        fields[field] = value;
        set_xattr(&dir, "trusted.ferrovol.markers", &fields.join("\0"));
        assert_delete_refused(&d, &id, &dir).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trash_name_this_driver_did_not_mark_is_left_by_delete() {
    // The volume's directory is gone; something unmarked sits under its trash name.
    let d = Driver::start().await;
    let id = d.create(NAME, 4 * MIB, mount_cap()).await.volume_id;
    fs::remove_dir(d.volume_dir(NAME)).unwrap();
    let trash = d.base().join(format!(".trash-{NAME}"));
    fs::create_dir(&trash).unwrap();
    fs::write(trash.join("restored"), b"backup").unwrap();
    d.delete(&id).await;
    assert!(d.list_ids().await.is_empty());
    assert_eq!(fs::read(trash.join("restored")).unwrap(), b"backup");
}
