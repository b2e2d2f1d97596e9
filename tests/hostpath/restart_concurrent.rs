//! Crash safety under concurrency: creates and deletes in flight together share a journal
//! batch, and their tasks await its sync without a thread each. The driver is SIGKILLed
//! (FERROVOL_CRASH_AT) while several are in flight; after a restart every volume is either whole
//! or gone, unacknowledged work is rolled back or finished, and repeating the RPCs succeeds.

use crate::common;

use common::*;
use std::fs;

const VOLUMES: usize = 8;

fn names(prefix: &str) -> Vec<String> {
    (0..VOLUMES).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_with_creates_in_flight_rolls_every_unacknowledged_one_back() {
    let mut d = Driver::builder()
        .crash_at("create:before-commit")
        .start()
        .await;
    let calls: Vec<_> = names("cc")
        .into_iter()
        .map(|name| {
            let mut c = d.controller();
            tokio::spawn(async move {
                c.create_volume(create_req(&name, 4 * MIB, mount_cap()))
                    .await
            })
        })
        .collect();
    for call in calls {
        assert!(
            call.await.unwrap().is_err(),
            "a create was answered by a driver that crashed before any commit"
        );
    }
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    assert!(
        d.list_ids().await.is_empty(),
        "the restart kept an unacknowledged create"
    );
    // A body the kill caught between its mkdir and its marker leaves an empty, unmarked
    // directory: not provably ours, so recovery leaves it (a repeated create adopts it). Any
    // directory that was marked is gone.
    for name in names("cc") {
        let dir = d.volume_dir(&name);
        if dir.exists() {
            assert_eq!(
                ferrovol::os::markers::owner_marker(&dir).unwrap(),
                None,
                "{name}: a marked half-made directory survived"
            );
            assert!(
                fs::read_dir(&dir).unwrap().next().is_none(),
                "{name}: a half-made directory with content survived"
            );
        }
    }
    // Repeating every create succeeds, and deleting them leaves nothing behind.
    for name in names("cc") {
        let id = d.create(&name, 4 * MIB, mount_cap()).await.volume_id;
        d.delete(&id).await;
    }
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_with_deletes_awaiting_their_batch_finishes_every_delete() {
    let mut d = Driver::builder()
        .crash_at("delete:after-commit")
        .start()
        .await;
    let keep = d.create("neighbour", 4 * MIB, mount_cap()).await.volume_id;
    fs::write(d.volume_dir("neighbour").join("data"), b"mine").unwrap();
    let mut ids = Vec::new();
    for name in names("cd") {
        ids.push(d.create(&name, 4 * MIB, mount_cap()).await.volume_id);
        fs::write(d.volume_dir(&name).join("data"), b"x").unwrap();
    }
    // The first delete whose commit is durable kills the driver in the step after it; the
    // others are queued, in the same batch or the next, or not yet renamed.
    let calls: Vec<_> = ids
        .iter()
        .map(|id| {
            let (mut c, id) = (d.controller(), id.clone());
            tokio::spawn(async move { c.delete_volume(delete_req(&id)).await })
        })
        .collect();
    for call in calls {
        assert!(
            call.await.unwrap().is_err(),
            "a delete was answered by a driver that crashed in the first commit's step"
        );
    }
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    // No delete was acknowledged, so each may be finished or not, but never half done: every
    // volume is listed with its directory and data, or gone without a trace.
    let listed = d.list_ids().await;
    assert!(listed.contains(&keep), "the neighbour was lost");
    for (name, id) in names("cd").iter().zip(&ids) {
        let trash = d.base().join(format!(".trash-{name}"));
        assert!(!trash.exists(), "{name}: trash survived the restart");
        if listed.contains(id) {
            assert_eq!(
                fs::read(d.volume_dir(name).join("data")).unwrap(),
                b"x",
                "{name}"
            );
        } else {
            assert!(
                !d.volume_dir(name).exists(),
                "{name}: deleted, but its directory is back"
            );
        }
        d.delete(id).await; // repeating the interrupted DeleteVolume succeeds
    }
    assert_eq!(
        fs::read(d.volume_dir("neighbour").join("data")).unwrap(),
        b"mine"
    );
    d.delete(&keep).await;
    d.assert_nothing_leaked(&[]);
}
