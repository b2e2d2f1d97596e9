//! A snapshot delete whose content cannot be removed after its commit (a file in it made
//! immutable): the delete is acknowledged and leaves `.trash-<key>` behind. A later snapshot of
//! the same name (so the same id) must survive the start that removes that leftover.

use crate::common;
use crate::common::hostpath_snap::*;

use common::*;
use std::fs;

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_made_again_survives_the_start_that_removes_its_namesakes_leftover() {
    let mut d = driver_on(Base::Ext4, None).await;
    let src = d.create("src", 16 * MIB, mount_cap()).await.volume_id;
    fs::write(d.volume_dir("src").join("first"), b"first").unwrap();
    let first = snapshot(&d, "s1", &src).await.snapshot_id;
    let snapshots = d.base().join(".snapshots");
    let pinned = snapshots.join("s1/data/first");
    chattr("+i", &pinned);
    delete_snapshot(&d, &first).await;
    let trash = snapshots.join(".trash-s1");
    let pinned = trash.join("data/first");
    assert!(
        pinned.exists(),
        "the immutable file went after all: the test proves nothing"
    );
    chattr("-i", &pinned);

    fs::write(d.volume_dir("src").join("second"), b"second").unwrap();
    let again = snapshot(&d, "s1", &src).await.snapshot_id;
    assert_eq!(again, first, "a name maps to one id");
    for _ in 0..2 {
        d.restart().await;
        assert_eq!(
            list_snapshots(&d, "", "").await,
            std::slice::from_ref(&again),
            "the start took the acknowledged snapshot's record:\n{}",
            d.log()
        );
        assert_eq!(
            fs::read(snapshots.join("s1/data/second")).unwrap(),
            b"second",
            "the start removed the acknowledged snapshot's content:\n{}",
            d.log()
        );
    }
    assert!(
        !trash.exists(),
        "the leftover was not removed:\n{}",
        d.log()
    );
}
