//! Crash windows on the node side: the driver SIGKILLs itself (FERROVOL_CRASH_AT) between a
//! kernel step of NodeStage, NodeUnstage, NodePublish or NodeUnpublish (a bind, a loop attach,
//! an unmount, a detach) and the record change that makes that step known. After a restart the
//! CO's retry finishes idempotently, the CO's teardown (or DeleteVolume) takes down exactly what
//! the killed call made and nothing foreign, and no mount or loop device is left behind.

use crate::common;

use common::*;
use ferrovol::proto as csi;
use std::path::Path;

/// Restarts the driver so that it kills itself at `point`.
async fn arm(d: &mut Driver, point: &str) {
    d.set_env("FERROVOL_CRASH_AT", point);
    d.restart().await;
}

/// Waits for the armed driver to have killed itself, then restarts it without the crash point.
async fn restart_after_crash(d: &mut Driver, what: &str, answer: Result<(), tonic::Status>) {
    assert!(
        answer.is_err(),
        "{what}: the driver answered instead of dying"
    );
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
}

fn is_block(cap: &csi::VolumeCapability) -> bool {
    matches!(
        cap.access_type,
        Some(csi::volume_capability::AccessType::Block(_))
    )
}

fn loops_of(d: &Driver, name: &str) -> usize {
    loop_devices_under(&d.volume_dir(name)).len()
}

/// The volume is staged exactly once: one staging mount, or one loop device on its image.
fn assert_staged_once(d: &Driver, name: &str, staging: &Path, block: bool, what: &str) {
    if block {
        assert_eq!(loops_of(d, name), 1, "{what}: loop devices on the image");
    } else {
        assert_eq!(mounts_at(staging).len(), 1, "{what}: staging mounts");
    }
}

async fn stage_killed(name: &str, cap: csi::VolumeCapability, point: &str) {
    let block = is_block(&cap);
    let mut d = Driver::start().await;
    let id = d.create(name, 16 * MIB, cap.clone()).await.volume_id;
    let (staging, target) = (d.staging(name), d.target(name, "pod"));

    // The CO repeats the stage: it finishes without a second bind or attach.
    arm(&mut d, point).await;
    let r = d
        .node()
        .node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await;
    restart_after_crash(&mut d, point, r.map(|_| ())).await;
    d.stage(&id, &staging, cap.clone()).await;
    assert_staged_once(&d, name, &staging, block, "repeated stage");
    d.publish(&id, &staging, &target, cap.clone(), false).await;
    d.unpublish_and_unstage(&id, &target, &staging).await;

    // The CO gives up and unstages: what the killed stage made is taken down.
    arm(&mut d, point).await;
    let r = d
        .node()
        .node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await;
    restart_after_crash(&mut d, point, r.map(|_| ())).await;
    d.unstage(&id, &staging).await;
    assert!(
        mounts_at(&staging).is_empty(),
        "{point}: staging mount left"
    );
    assert_eq!(loops_of(&d, name), 0, "{point}: loop device left");
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_killed_after_its_bind_is_repeated_or_unstaged() {
    stage_killed("stg-fs", mount_cap(), "stage:after-bind").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_killed_after_its_loop_attach_is_repeated_or_unstaged() {
    stage_killed("stg-blk", block_cap(), "stage:after-attach").await;
}

/// NodePublish killed at `point`; `read_only` publications of block volumes get their own
/// read-only loop device.
async fn publish_killed(name: &str, cap: csi::VolumeCapability, read_only: bool, point: &str) {
    let block = is_block(&cap);
    let mut d = Driver::start().await;
    let id = d.create(name, 16 * MIB, cap.clone()).await.volume_id;
    let (staging, target) = (d.staging(name), d.target(name, "pod"));
    d.stage(&id, &staging, cap.clone()).await;
    let publish = publish_req(&id, &staging, &target, cap.clone(), read_only);
    let staged_loops = usize::from(block);

    // The CO repeats the publish: it finishes with one mount (and one device) at the target.
    arm(&mut d, point).await;
    let r = d.node().node_publish_volume(publish.clone()).await;
    restart_after_crash(&mut d, point, r.map(|_| ())).await;
    d.publish(&id, &staging, &target, cap.clone(), read_only)
        .await;
    assert_eq!(mounts_at(&target).len(), 1, "{point}: mounts at the target");
    assert_eq!(
        mounts_at(&target)[0].read_only(),
        read_only,
        "{point}: the target's mount is read-only exactly when asked"
    );
    let published_loops = staged_loops + usize::from(block && read_only);
    assert_eq!(
        loops_of(&d, name),
        published_loops,
        "{point}: after the repeat"
    );
    d.unpublish(&id, &target).await;
    assert!(
        mounts_at(&target).is_empty(),
        "{point}: target left mounted"
    );
    assert_eq!(loops_of(&d, name), staged_loops, "{point}: after unpublish");

    // The CO gives up and unpublishes: what the killed publish made is taken down.
    arm(&mut d, point).await;
    let r = d.node().node_publish_volume(publish).await;
    restart_after_crash(&mut d, point, r.map(|_| ())).await;
    if block && point == "publish:after-bind" {
        // Detaching a device a bind still shows would let that bind show the next image the
        // kernel attaches to it: NodeUnstage waits for the unpublish.
        let r = d
            .node()
            .node_unstage_volume(unstage_req(&id, &staging))
            .await;
        let s = expect_code(r, tonic::Code::FailedPrecondition, "unstage under a bind");
        assert!(s.message().contains("unpublish it first"), "{s:?}");
        assert_eq!(mounts_at(&target).len(), 1, "{point}: the bind stays");
        assert_eq!(loops_of(&d, name), published_loops, "{point}: devices stay");
    }
    d.unpublish(&id, &target).await;
    assert!(
        mounts_at(&target).is_empty(),
        "{point}: the killed publish's mount is left at the target"
    );
    assert_eq!(loops_of(&d, name), staged_loops, "{point}: after unpublish");
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_killed_after_its_bind_is_repeated_or_unpublished() {
    publish_killed("pub-fs", mount_cap(), false, "publish:after-bind").await;
    publish_killed("pub-fs-ro", mount_cap(), true, "publish:after-bind").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_publish_killed_after_its_bind_is_repeated_or_unpublished() {
    publish_killed("pub-blk", block_cap(), false, "publish:after-bind").await;
    publish_killed("pub-blk-ro", block_cap(), true, "publish:after-bind").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_raw_publish_killed_after_its_loop_attach_leaks_no_device() {
    publish_killed("pub-att", block_cap(), true, "publish:after-attach").await;
}

/// NodeUnpublish killed after its unmount, before it detached the publication's read-only
/// loop device and forgot the publication: the repeated unpublish finishes both.
async fn unpublish_killed(name: &str, cap: csi::VolumeCapability, read_only: bool) {
    let point = "unpublish:after-unmount";
    let block = is_block(&cap);
    let mut d = Driver::start().await;
    let id = d.create(name, 16 * MIB, cap.clone()).await.volume_id;
    let (staging, target) = (d.staging(name), d.target(name, "pod"));
    d.stage(&id, &staging, cap.clone()).await;
    d.publish(&id, &staging, &target, cap.clone(), read_only)
        .await;
    arm(&mut d, point).await;
    let r = d
        .node()
        .node_unpublish_volume(unpublish_req(&id, &target))
        .await;
    restart_after_crash(&mut d, point, r.map(|_| ())).await;
    d.unpublish(&id, &target).await;
    assert!(
        mounts_at(&target).is_empty(),
        "{point}: target left mounted"
    );
    assert_eq!(loops_of(&d, name), usize::from(block), "{point}: devices");
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unpublish_killed_after_its_unmount_is_repeated() {
    unpublish_killed("unp-fs", mount_cap(), false).await;
    unpublish_killed("unp-blk", block_cap(), false).await;
    unpublish_killed("unp-blk-ro", block_cap(), true).await;
}

/// A read-only raw publish killed after its bind leaves a device only that (unrecorded) bind
/// shows: the sweeps of later publishes and unpublishes at other targets keep it, and the
/// bind keeps showing the volume until its own unpublish.
#[tokio::test(flavor = "multi_thread")]
async fn the_stray_device_sweep_keeps_a_device_an_unrecorded_bind_shows() {
    let (name, cap) = ("keep-ro", block_cap());
    let mut d = Driver::start().await;
    let id = d.create(name, 16 * MIB, cap.clone()).await.volume_id;
    let staging = d.staging(name);
    let (first, second) = (d.target(name, "pod-a"), d.target(name, "pod-b"));
    d.stage(&id, &staging, cap.clone()).await;
    {
        let _open = hold_files_open();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(staging_device(&d, name))
            .unwrap();
        std::io::Write::write_all(&mut f, b"volume's").unwrap();
        f.sync_all().unwrap();
    }
    arm(&mut d, "publish:after-bind").await;
    let r = d
        .node()
        .node_publish_volume(publish_req(&id, &staging, &first, cap.clone(), true))
        .await;
    restart_after_crash(&mut d, "publish:after-bind", r.map(|_| ())).await;
    d.publish(&id, &staging, &second, cap.clone(), true).await;
    assert_eq!(loops_of(&d, name), 3, "staged, first and second devices");
    d.unpublish(&id, &second).await;
    assert_eq!(loops_of(&d, name), 2, "the first target's device is kept");
    let mut head = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open(&first).unwrap(), &mut head).unwrap();
    assert_eq!(
        &head, b"volume's",
        "the unrecorded bind still shows the volume"
    );
    d.unpublish(&id, &first).await;
    assert_eq!(loops_of(&d, name), 1);
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    d.assert_nothing_leaked(&[]);
}

/// The read-write loop device of a staged block volume, from the kernel's list.
fn staging_device(d: &Driver, name: &str) -> String {
    let loops = loop_devices_under(&d.volume_dir(name));
    assert_eq!(loops.len(), 1, "one staged device");
    loops[0].0.clone()
}

/// Another block volume's bind at a target the CO names for this volume is never taken down,
/// published over, or swept, and this volume's unstage does not touch its devices.
#[tokio::test(flavor = "multi_thread")]
async fn another_raw_volumes_bind_is_left_alone() {
    let cap = block_cap();
    let d = Driver::start().await;
    let mine = d.create("mine", 16 * MIB, cap.clone()).await.volume_id;
    let theirs = d.create("theirs", 16 * MIB, cap.clone()).await.volume_id;
    let (my_staging, their_staging) = (d.staging("mine"), d.staging("theirs"));
    d.stage(&mine, &my_staging, cap.clone()).await;
    d.stage(&theirs, &their_staging, cap.clone()).await;
    for read_only in [false, true] {
        let target = d.target("mine", "pod");
        d.publish(&theirs, &their_staging, &target, cap.clone(), read_only)
            .await;
        let before = loop_devices_under(d.base());
        let r = d
            .node()
            .node_unpublish_volume(unpublish_req(&mine, &target))
            .await;
        expect_code(r, tonic::Code::NotFound, "unpublish another volume's bind");
        let r = d
            .node()
            .node_publish_volume(publish_req(&mine, &my_staging, &target, cap.clone(), true))
            .await;
        expect_code(r, tonic::Code::AlreadyExists, "publish over another's bind");
        assert_eq!(mounts_at(&target).len(), 1, "the other volume's bind stays");
        assert_eq!(
            loop_devices_under(d.base()),
            before,
            "no device was touched"
        );
        d.unpublish(&theirs, &target).await;
    }
    d.unstage(&mine, &my_staging).await;
    assert_eq!(loops_of(&d, "theirs"), 1, "the other volume stays staged");
    d.unstage(&theirs, &their_staging).await;
    d.delete(&mine).await;
    d.delete(&theirs).await;
    d.assert_nothing_leaked(&[]);
}

/// A stage killed before its record, and then DeleteVolume without NodeUnstage: the image's
/// unbound loop device is detached and the volume goes; a bind of the volume's directory makes
/// the delete refuse (the data stays) until NodeUnstage takes the bind down.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_whose_stage_was_killed_is_deleted_or_refused() {
    for (name, cap, point) in [
        ("del-blk", block_cap(), "stage:after-attach"),
        ("del-fs", mount_cap(), "stage:after-bind"),
    ] {
        let block = is_block(&cap);
        let mut d = Driver::start().await;
        let id = d.create(name, 16 * MIB, cap.clone()).await.volume_id;
        let staging = d.staging(name);
        arm(&mut d, point).await;
        let r = d
            .node()
            .node_stage_volume(stage_req(&id, &staging, cap.clone()))
            .await;
        restart_after_crash(&mut d, point, r.map(|_| ())).await;
        if !block {
            std::fs::write(staging.join("data"), b"kept").unwrap();
            let r = d.controller().delete_volume(delete_req(&id)).await;
            let s = expect_code(r, tonic::Code::FailedPrecondition, "delete under a bind");
            assert!(
                s.message().contains(&staging.display().to_string()),
                "{s:?}"
            );
            assert_eq!(std::fs::read(staging.join("data")).unwrap(), b"kept");
            d.unstage(&id, &staging).await;
        }
        d.delete(&id).await;
        d.assert_nothing_leaked(&[]);
    }
}

/// NodeUnstage killed after its unmount or detach, before it forgot the stage: the repeated
/// unstage finishes, and the volume stages and publishes again as if nothing happened.
#[tokio::test(flavor = "multi_thread")]
async fn an_unstage_killed_after_its_kernel_step_is_repeated() {
    for (name, cap, point) in [
        ("uns-fs", mount_cap(), "unstage:after-unmount"),
        ("uns-blk", block_cap(), "unstage:after-detach"),
    ] {
        let mut d = Driver::start().await;
        let id = d.create(name, 16 * MIB, cap.clone()).await.volume_id;
        let (staging, target) = (d.staging(name), d.target(name, "pod"));
        d.stage(&id, &staging, cap.clone()).await;
        arm(&mut d, point).await;
        let r = d
            .node()
            .node_unstage_volume(unstage_req(&id, &staging))
            .await;
        restart_after_crash(&mut d, point, r.map(|_| ())).await;
        d.unstage(&id, &staging).await;
        assert!(
            mounts_at(&staging).is_empty(),
            "{point}: staging mount left"
        );
        assert_eq!(loops_of(&d, name), 0, "{point}: loop device left");
        d.stage(&id, &staging, cap.clone()).await;
        d.publish(&id, &staging, &target, cap.clone(), false).await;
        d.tear_down(&id, &target, &staging).await;
    }
}

/// NodeUnstage of a volume at a staging path that holds another volume's bind (a CO mixing up
/// paths after a restart) takes nothing down: neither the bind nor the other's loop device.
#[tokio::test(flavor = "multi_thread")]
async fn unstage_leaves_another_volumes_staging_alone() {
    for cap in [mount_cap(), block_cap()] {
        let block = is_block(&cap);
        let d = Driver::start().await;
        let mine = d.create("mine", 16 * MIB, cap.clone()).await.volume_id;
        let theirs = d.create("theirs", 16 * MIB, cap.clone()).await.volume_id;
        let their_staging = d.staging("theirs");
        d.stage(&theirs, &their_staging, cap.clone()).await;
        let r = d
            .node()
            .node_unstage_volume(unstage_req(&mine, &their_staging))
            .await;
        if block {
            // A block stage mounts nothing at the staging path: there is nothing of ours to do.
            assert!(r.is_ok(), "{r:?}");
            assert_eq!(loops_of(&d, "theirs"), 1, "the other's device stays");
        } else {
            expect_code(r, tonic::Code::NotFound, "unstage at another's staging");
            assert_eq!(mounts_at(&their_staging).len(), 1, "the other's bind stays");
        }
        d.unstage(&theirs, &their_staging).await;
        d.delete(&mine).await;
        d.delete(&theirs).await;
        d.assert_nothing_leaked(&[]);
    }
}
