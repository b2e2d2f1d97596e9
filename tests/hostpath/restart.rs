//! Crash safety: the driver is killed with SIGKILL between RPCs and in the middle of them
//! (FERROVOL_CRASH_AT), then restarted on the same directories. Volumes it acknowledged must
//! survive, half-made ones must be rolled back, half-deleted ones finished, nothing leaked.

use crate::common;

use common::*;
use ferrovol::proto as csi;
use std::fs;
use std::path::Path;

/// Whether the journal holds a committed record of volume `name`.
fn recorded(d: &Driver, name: &str) -> bool {
    d.state_record(name).is_some()
}

/// Crash points of CreateVolume before its commit: the directory is made and marked (by this
/// store), no record is committed, so the next start rolls the volume back.
const CREATE_CRASH_POINTS: [&str; 2] = ["create:after-mark", "create:before-commit"];

/// A CreateVolume (or other) call that the driver cannot answer because it killed itself.
fn assert_interrupted<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    what: &str,
) {
    match r {
        Ok(resp) => panic!(
            "{what}: the driver should have crashed, but answered {:?}",
            resp.into_inner()
        ),
        Err(s) => assert!(
            matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::Cancelled
            ),
            "{what}: unexpected status from a crashed driver: {s:?}"
        ),
    }
}

async fn kill_between_rpcs(name: &str, cap: csi::VolumeCapability) {
    let mut d = Driver::start().await;
    let block = matches!(
        cap.access_type,
        Some(csi::volume_capability::AccessType::Block(_))
    );
    let id = d.create(name, 16 * MIB, cap.clone()).await.volume_id;
    d.controller_publish(&id, cap.clone(), false).await;
    let (staging, target) = d.stage_and_publish(&id, name, cap.clone()).await;
    if block {
        let _open = hold_files_open();
        let mut f = fs::OpenOptions::new().write(true).open(&target).unwrap();
        std::io::Write::write_all(&mut f, b"survives").unwrap();
        f.sync_all().unwrap();
    } else {
        fs::write(target.join("file"), b"survives").unwrap();
    }
    let mounts_before = mounts_under(d.root());

    d.kill9();
    assert!(!d.is_running());
    assert!(
        d.socket().exists(),
        "kill -9 leaves the socket file: the restart must replace it"
    );
    // The kernel state outlives the process.
    assert_eq!(mounts_under(d.root()), mounts_before);
    d.restart().await;

    assert_eq!(
        d.list_ids().await,
        vec![id.clone()],
        "the volume was forgotten across kill -9"
    );
    let entry = &d.list_all().await[0];
    assert_eq!(
        entry.status.as_ref().unwrap().published_node_ids,
        vec![NODE.to_string()]
    );
    assert_eq!(entry.volume.as_ref().unwrap().capacity_bytes, 16 * MIB);

    // Every step the CO may repeat after a restart is still idempotent.
    d.controller_publish(&id, cap.clone(), false).await;
    d.stage(&id, &staging, cap.clone()).await;
    d.publish(&id, &staging, &target, cap.clone(), false).await;
    assert_eq!(
        mounts_at(&target).len(),
        1,
        "repeating NodePublish after restart stacked a mount"
    );
    assert_eq!(
        mounts_under(d.root()),
        mounts_before,
        "restart changed the mounts"
    );
    if block {
        assert_eq!(
            loop_devices_under(&d.volume_dir(name)).len(),
            1,
            "restart attached the image again"
        );
        let mut head = [0u8; 8];
        std::io::Read::read_exact(&mut fs::File::open(&target).unwrap(), &mut head).unwrap();
        assert_eq!(&head, b"survives");
    } else {
        assert_eq!(fs::read(target.join("file")).unwrap(), b"survives");
    }

    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.controller_unpublish(&id).await;
    d.delete(&id).await;
    assert!(d.list_ids().await.is_empty());
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_between_rpcs_keeps_mount_volume() {
    kill_between_rpcs("keep-fs", mount_cap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_between_rpcs_keeps_block_volume() {
    kill_between_rpcs("keep-blk", block_cap()).await;
}

/// Restarts a driver that was started with FERROVOL_CRASH_AT, without it.
async fn restart_clean(d: &mut Driver) {
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
}

/// Starts a driver that dies at `point`, and runs CreateVolume into it.
async fn crash_during_create(point: &str, name: &str, cap: csi::VolumeCapability) -> Driver {
    let mut d = Driver::builder().crash_at(point).start().await;
    let r = d
        .controller()
        .create_volume(create_req(name, 16 * MIB, cap))
        .await;
    assert_interrupted(r, &format!("CreateVolume with crash at {point}"));
    d.expect_crash().await;
    // The crash happened where it should: the directory is made, nothing is committed, except
    // at journal:before-sync, where the record was written but the process died before its sync
    // (the page cache keeps it across a kill -9, never acknowledged).
    assert!(d.volume_dir(name).is_dir(), "{point}: directory missing");
    assert_eq!(
        recorded(&d, name),
        point == "journal:before-sync",
        "{point}: record after crash"
    );
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_mid_create_then_repeated_create_succeeds() {
    for point in CREATE_CRASH_POINTS.iter().chain(&["journal:before-sync"]) {
        for (name, cap) in [("mid-fs", mount_cap()), ("mid-blk", block_cap())] {
            let mut d = crash_during_create(point, name, cap.clone()).await;
            restart_clean(&mut d).await;

            let vol = d.create(name, 16 * MIB, cap.clone()).await;
            assert_eq!(vol.volume_id, d.volume_id(name), "{point}");
            assert_eq!(vol.capacity_bytes, 16 * MIB, "{point}");
            assert!(recorded(&d, name), "{point}");
            assert_eq!(d.list_ids().await, vec![vol.volume_id.clone()], "{point}");
            if cap == block_cap() {
                let img = d.volume_dir(name).join("disk.img");
                assert_eq!(fs::metadata(&img).unwrap().len(), 16 << 20, "{point}");
            }
            // A second repeat is answered from the existing volume.
            assert_eq!(d.create(name, 16 * MIB, cap.clone()).await, vol, "{point}");

            d.delete(&vol.volume_id).await;
            d.assert_nothing_leaked(&[]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_mid_create_is_rolled_back_at_start() {
    for point in CREATE_CRASH_POINTS {
        for (name, cap) in [("half-fs", mount_cap()), ("half-blk", block_cap())] {
            let mut d = crash_during_create(point, name, cap).await;
            restart_clean(&mut d).await;
            // Without any further RPC, the start alone rolled the half-made volume back.
            assert!(
                !d.volume_dir(name).exists(),
                "{point}: half-made directory survived the restart"
            );
            assert!(
                !recorded(&d, name),
                "{point}: half-made record survived the restart"
            );
            assert!(
                d.list_ids().await.is_empty(),
                "{point}: ListVolumes shows a never-acknowledged volume"
            );
            let r = d
                .controller()
                .controller_get_volume(get_req(&d.volume_id(name)))
                .await;
            expect_code(r, tonic::Code::NotFound, point);
            d.assert_nothing_leaked(&[]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_mid_delete_leaves_the_volume_whole_or_gone() {
    for point in ["delete:before-commit", "delete:after-commit"] {
        let committed = point == "delete:after-commit";
        for (name, cap) in [("del-fs", mount_cap()), ("del-blk", block_cap())] {
            let mut d = Driver::builder().crash_at(point).start().await;
            // A neighbour that must come through untouched.
            let keep = d.create("neighbour", 4 * MIB, mount_cap()).await.volume_id;
            fs::write(d.volume_dir("neighbour").join("data"), b"mine").unwrap();
            let id = d.create(name, 16 * MIB, cap.clone()).await.volume_id;
            // Use the volume first, so the delete follows a real teardown.
            let (staging, target) = d.stage_and_publish(&id, name, cap.clone()).await;
            d.unpublish_and_unstage(&id, &target, &staging).await;

            let r = d.controller().delete_volume(delete_req(&id)).await;
            assert_interrupted(r, &format!("DeleteVolume with crash at {point}"));
            d.expect_crash().await;
            // Nothing moves before the commit: the directory is in place either way, and
            // only the record tells whether the delete happened.
            assert_eq!(
                recorded(&d, name),
                !committed,
                "{point}: record after crash"
            );
            assert!(
                d.volume_dir(name).is_dir(),
                "{point}: directory moved before the removal was durable"
            );
            assert!(
                !d.base().join(format!(".trash-{name}")).exists(),
                "{point}: a trash directory"
            );

            restart_clean(&mut d).await;
            if !committed {
                // Never acknowledged, never committed: the volume is whole.
                let mut listed = d.list_ids().await;
                listed.sort();
                let mut both = vec![keep.clone(), id.clone()];
                both.sort();
                assert_eq!(listed, both, "{point}: the volume did not survive");
                assert!(d.volume_dir(name).is_dir(), "{point}: directory lost");
            } else {
                // Committed: the start removed what the crash left.
                assert_eq!(d.list_ids().await, vec![keep.clone()], "{point}: listed");
                assert!(
                    !d.volume_dir(name).exists(),
                    "{point}: the start kept a deleted volume's directory"
                );
            }
            d.delete(&id).await; // repeating the interrupted DeleteVolume is OK
            assert_eq!(
                d.list_ids().await,
                vec![keep.clone()],
                "{point}: deletion not finished"
            );
            assert!(!d.volume_dir(name).exists(), "{point}: directory survived");
            assert!(!recorded(&d, name), "{point}: record survived");
            assert_eq!(
                fs::read(d.volume_dir("neighbour").join("data")).unwrap(),
                b"mine"
            );

            d.delete(&keep).await;
            d.assert_nothing_leaked(&[]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_forgets_mounts_removed_while_down() {
    // A node reboot (or an admin) unmounts everything while the driver is down: on start the
    // driver drops those publications, so the volume can be torn down and deleted normally.
    let mut d = Driver::start().await;
    let cap = mount_cap();
    let (id, staging, target) = d.create_published("rebooted", 8 * MIB, cap.clone()).await;
    d.kill9();
    for p in [&target, &staging] {
        run("umount", &[p.as_os_str()]);
    }
    assert!(mounts_under(d.root()).is_empty());
    d.restart().await;

    // NodeUnpublish / NodeUnstage of what is no longer mounted succeed; then delete works.
    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.delete(&id).await;
    assert!(!Path::new(&d.volume_dir("rebooted")).exists());
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_state_survives() {
    let mut d = Driver::start().await;
    let id = d.create("term", 4 * MIB, mount_cap()).await.volume_id;
    let pid = d.pid().expect("driver runs");
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let status = d.wait_exit(std::time::Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM should end the driver normally: {status:?}"
    );
    assert!(!d.socket().exists(), "a clean shutdown removes its socket");
    d.restart().await;
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_state_leaves_an_orphan_that_delete_still_removes() {
    // A short name, and the longest name CSI allows (its id cannot spell the name out).
    let long = "o".repeat(128);
    for name in ["orphan", long.as_str()] {
        let mut d = Driver::start().await;
        let vol = match d
            .controller()
            .create_volume(create_req(name, 4 * MIB, mount_cap()))
            .await
        {
            Ok(r) => r.into_inner().volume.unwrap(),
            // A driver that refuses names too long for a plain id has nothing to clean up.
            Err(s) if name.len() > 100 && s.code() == tonic::Code::InvalidArgument => continue,
            Err(s) => panic!("CreateVolume {name}: {s:?}"),
        };
        let id = vol.volume_id.clone();
        let dir = std::path::PathBuf::from(&vol.volume_context["ferrovol.io/path"]);
        fs::write(dir.join("data"), b"x").unwrap();
        d.kill9();
        fs::remove_dir_all(d.state_dir()).unwrap();
        d.restart().await;
        // Without its record the volume is unknown...
        assert!(d.list_ids().await.is_empty());
        expect_code(
            d.controller().controller_get_volume(get_req(&id)).await,
            tonic::Code::NotFound,
            "ControllerGetVolume without a record",
        );
        // ...the restarted driver names it in its log...
        assert!(
            d.log().contains("volume directory without a state record") && d.log().contains(&id),
            "the orphan {id} was not reported at start:\n{}",
            d.log()
        );
        // ...and its directory carries the driver's marker, so DeleteVolume cleans it up.
        assert!(dir.is_dir());
        d.delete(&id).await;
        assert!(
            !dir.exists(),
            "DeleteVolume of {id} left its orphaned directory {}",
            dir.display()
        );
        d.assert_nothing_leaked(&[]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_commit_acknowledges_nothing() {
    // The journal's sync fails (a dying disk): CreateVolume fails with the cause, the half-made
    // directory is removed, later changes are refused until a restart, and the restarted
    // driver knows nothing of the volume.
    let mut d = Driver::builder()
        .env("FERROVOL_FAIL_AT", "journal:sync")
        .start()
        .await;
    let r = d
        .controller()
        .create_volume(create_req("doomed", 4 * MIB, mount_cap()))
        .await;
    let status = r.expect_err("CreateVolume must fail when its commit fails");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("doomed") && status.message().contains("journal:sync"),
        "the error names the volume and the cause: {}",
        status.message()
    );
    let again = d
        .controller()
        .create_volume(create_req("later", 4 * MIB, mount_cap()))
        .await
        .expect_err("a journal whose sync failed takes no more commits");
    assert!(again.message().contains("restart the driver"), "{again:?}");
    d.restart_healthy().await;
    assert!(d.list_ids().await.is_empty());
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_whose_commit_fails_leaves_the_volume_whole() {
    // The delete's commit fails (a dying disk): DeleteVolume fails naming the volume and the
    // cause, and the restarted driver still has the volume with its data.
    let mut d = Driver::start().await;
    let id = d.create("survivor", 4 * MIB, mount_cap()).await.volume_id;
    fs::write(d.volume_dir("survivor").join("data"), b"kept").unwrap();
    d.restart_failing_commits().await;
    let status = d.delete_refused(&id).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("survivor") && status.message().contains("journal:sync"),
        "the error names the volume and the cause: {}",
        status.message()
    );
    d.restart_healthy().await;
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    assert_eq!(
        fs::read(d.volume_dir("survivor").join("data")).unwrap(),
        b"kept"
    );
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_of_the_previous_release_is_adopted() {
    // ferrovol 0.1 kept one JSON file per volume in <state>/hostpath/. A new binary started on
    // such a directory adopts the ready volumes, rolls back a half-made one and finishes a
    // half-done delete, then removes the old files.
    let mut d = Driver::start().await;
    let id = d.create("old-ready", 4 * MIB, mount_cap()).await.volume_id;
    fs::write(d.volume_dir("old-ready").join("data"), b"kept").unwrap();
    let half = d.create("old-half", 4 * MIB, mount_cap()).await.volume_id;
    d.kill9();
    // Rewrite the state as 0.1 wrote it (the fields of its VolumeRecord).
    let old_dir = d.state_dir().join("hostpath");
    fs::create_dir_all(&old_dir).unwrap();
    for (name, vid, phase) in [("old-ready", &id, "ready"), ("old-half", &half, "creating")] {
        let record = serde_json::json!({
            "id": vid, "name": name, "phase": phase, "kind": "mount",
            "capacity_bytes": 4 * MIB, "parameters": {}, "enforced_by": null,
            "controller_published": {}, "staged_at": null, "published": {}
        });
        fs::write(
            old_dir.join(format!("{name}.json")),
            serde_json::to_vec_pretty(&record).unwrap(),
        )
        .unwrap();
    }
    fs::remove_dir_all(d.state_dir().join("journal")).unwrap();
    // 0.1 gave the base no identity.
    remove_xattr(d.base(), "trusted.ferrovol.base");
    // And the directories as 0.1 marked them: the volume id alone.
    for name in ["old-ready", "old-half"] {
        let dir = d.volume_dir(name);
        let combined = get_xattr(&dir, "trusted.ferrovol.markers").expect("markers");
        let volume = combined
            .split('\0')
            .nth(1)
            .expect("volume field")
            .to_string();
        remove_xattr(&dir, "trusted.ferrovol.markers");
        set_xattr(&dir, "trusted.ferrovol.volume", &volume);
    }
    d.restart().await;
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    assert_eq!(
        fs::read(d.volume_dir("old-ready").join("data")).unwrap(),
        b"kept"
    );
    assert!(
        !d.volume_dir("old-half").exists(),
        "half-made 0.1 volume kept"
    );
    assert!(!old_dir.exists(), "0.1 records left behind after adoption");
    assert!(d.log().contains("adopted the state of ferrovol 0.1"));
    // Adopted volumes are owned by the new store: a later restart keeps them.
    d.restart().await;
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_committed_volume_whose_directory_was_lost_is_recreated() {
    // What a power cut can do on a filesystem that had not committed the mkdir when the
    // journal's record reached the disk: the record survives, the directory does not. The
    // acknowledged (empty) volume is back after the restart.
    let mut d = Driver::start().await;
    let id = d.create("lost-dir", 4 * MIB, mount_cap()).await.volume_id;
    d.kill9();
    fs::remove_dir(d.volume_dir("lost-dir")).unwrap();
    d.restart().await;
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    assert!(d.volume_dir("lost-dir").is_dir());
    let (staging, target) = d.stage_and_publish(&id, "lost-dir", mount_cap()).await;
    fs::write(target.join("f"), b"x").unwrap();
    d.unpublish_and_unstage(&id, &target, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}
