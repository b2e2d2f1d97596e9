//! A delete whose directory cannot be removed after its commit (here: the directory made
//! immutable, so neither rmdir nor the rename to trash works). The delete is acknowledged (its
//! record's removal is durable); what it leaves under the volume's name is never served as a
//! later volume of the same name, and the next start removes it.

use crate::common;

use common::*;
use std::fs;

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
