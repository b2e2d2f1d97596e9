//! The Node service, one row per validation path of every RPC (src/csi/node.rs and the decoding
//! in src/csi/convert.rs). Paths are never touched by the fake backend; the only real file
//! system look-up is the services' own "is something mounted here" for unknown volumes.

use crate::controller_table::serve_two;
use crate::harness::*;
use csi::volume_capability::access_mode::Mode;
use ferrovol::proto as csi;
use tonic::Code;

const A: &str = "local/node-1/vol-a";
const B: &str = "shared/vol-b";
const STAGING: &str = "/var/lib/kubelet/plugins/staging/vol-a";
const TARGET: &str = "/var/lib/kubelet/pods/p1/volumes/vol-a";
/// A path that is a mount point on any Linux: an unknown volume must not claim it.
const MOUNTED: &str = "/dev/shm";

#[derive(Debug, Clone)]
enum Call {
    Stage(csi::NodeStageVolumeRequest),
    Unstage(csi::NodeUnstageVolumeRequest),
    Publish(csi::NodePublishVolumeRequest),
    Unpublish(csi::NodeUnpublishVolumeRequest),
    Stats(csi::NodeGetVolumeStatsRequest),
    Expand(csi::NodeExpandVolumeRequest),
    Caps,
    Info,
}

async fn run(s: &mut Served, call: Call) -> Result<(), tonic::Status> {
    let n = &mut s.node;
    match call {
        Call::Stage(r) => n.node_stage_volume(r).await.map(drop),
        Call::Unstage(r) => n.node_unstage_volume(r).await.map(drop),
        Call::Publish(r) => n.node_publish_volume(r).await.map(drop),
        Call::Unpublish(r) => n.node_unpublish_volume(r).await.map(drop),
        Call::Stats(r) => n.node_get_volume_stats(r).await.map(drop),
        Call::Expand(r) => n.node_expand_volume(r).await.map(drop),
        Call::Caps => n
            .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
            .await
            .map(drop),
        Call::Info => n.node_get_info(csi::NodeGetInfoRequest {}).await.map(drop),
    }
}

fn stage(id: &str, staging: &str, cap: Option<csi::VolumeCapability>) -> Call {
    Call::Stage(csi::NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
        volume_capability: cap,
        ..Default::default()
    })
}

fn unstage(id: &str, staging: &str) -> Call {
    Call::Unstage(csi::NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
    })
}

fn publish(
    id: &str,
    staging: &str,
    target: &str,
    cap: Option<csi::VolumeCapability>,
    ro: bool,
) -> Call {
    Call::Publish(csi::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
        target_path: target.into(),
        volume_capability: cap,
        readonly: ro,
        ..Default::default()
    })
}

fn unpublish(id: &str, target: &str) -> Call {
    Call::Unpublish(csi::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.into(),
    })
}

fn stats(id: &str, path: &str) -> Call {
    Call::Stats(csi::NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        staging_target_path: String::new(),
    })
}

fn expand(
    id: &str,
    path: &str,
    range: Option<csi::CapacityRange>,
    cap: Option<csi::VolumeCapability>,
) -> Call {
    Call::Expand(csi::NodeExpandVolumeRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        capacity_range: range,
        volume_capability: cap,
        ..Default::default()
    })
}

// One row per line: the table reads as a table.
#[rustfmt::skip]
fn table() -> Vec<Row<Call>> {
    use Code::*;
    let cap = || Some(swr());
    let no_mode = || {
        Some(csi::VolumeCapability {
            access_mode: None,
            ..swr()
        })
    };
    let no_type = || {
        Some(csi::VolumeCapability {
            access_type: None,
            ..swr()
        })
    };
    vec![
        // NodeStageVolume
        row("stage: empty id", stage("", STAGING, cap()), InvalidArgument, "volume_id is required"),
        row("stage: id with '..'", stage("local/../x", STAGING, cap()), InvalidArgument, "is not a valid id"),
        row("stage: empty staging path", stage(A, "", cap()), InvalidArgument, "staging_target_path is required"),
        row("stage: relative staging path", stage(A, "staging/a", cap()), InvalidArgument, "must be an absolute path"),
        row("stage: staging path with '..'", stage(A, "/var/../etc", cap()), InvalidArgument, "without '..'"),
        row("stage: staging path with NUL", stage(A, "/var/a\0b", cap()), InvalidArgument, "must be an absolute path"),
        row("stage: no capability", stage(A, STAGING, None), InvalidArgument, "volume_capability is required"),
        row("stage: capability without access mode", stage(A, STAGING, no_mode()), InvalidArgument, "access_mode is required"),
        row("stage: access mode out of the enum", stage(A, STAGING, Some(raw_mode_cap(77))), InvalidArgument, "access_mode 77 is unknown"),
        row("stage: unknown volume", stage("local/node-1/nope", STAGING, cap()), NotFound, "local/node-1/nope: not found"),
        row("stage: foreign id", stage("fake-vol-id", STAGING, cap()), NotFound, "fake-vol-id: not found"),
        row("stage: unserved backend", stage("ghost/node-1/x", STAGING, cap()), NotFound, "backend ghost is not served"),
        row("stage: multi-node mode on a node-local backend", stage(A, STAGING, Some(mount_cap(Mode::MultiNodeMultiWriter))), FailedPrecondition, "needs several nodes"),
        row("stage: ok", stage(A, STAGING, cap()), Ok, ""),
        // NodePublishVolume
        row("publish: empty id", publish("", STAGING, TARGET, cap(), false), InvalidArgument, "volume_id is required"),
        row("publish: relative staging path", publish(A, "rel", TARGET, cap(), false), InvalidArgument, "staging_target_path \"rel\" must be an absolute path"),
        row("publish: empty target", publish(A, STAGING, "", cap(), false), InvalidArgument, "target_path is required"),
        row("publish: relative target", publish(A, STAGING, "pods/x", cap(), false), InvalidArgument, "target_path \"pods/x\" must be an absolute path"),
        row("publish: target with '..'", publish(A, STAGING, "/var/lib/../../etc", cap(), false), InvalidArgument, "without '..'"),
        row("publish: no capability", publish(A, STAGING, TARGET, None, false), InvalidArgument, "volume_capability is required"),
        row("publish: capability without access type", publish(A, STAGING, TARGET, no_type(), false), InvalidArgument, "access_type (mount or block) is required"),
        row("publish: unknown volume", publish("local/node-1/nope", STAGING, TARGET, cap(), false), NotFound, "not found"),
        row("publish: unserved backend", publish("ghost/x", STAGING, TARGET, cap(), false), NotFound, "backend ghost is not served"),
        row("publish: not staged there", publish(A, "/pods/elsewhere", TARGET, cap(), false), FailedPrecondition, "not staged"),
        row("publish: target outside the publish roots", publish(A, STAGING, "/etc/cron.d/x", cap(), false), InvalidArgument, "publish root"),
        row("stage: staging path outside the publish roots", stage(A, "/tmp/staging", cap()), InvalidArgument, "publish root"),
        row("publish: multi-node mode on a node-local backend", publish(A, STAGING, TARGET, Some(mount_cap(Mode::MultiNodeMultiWriter)), false), FailedPrecondition, "needs several nodes"),
        row("publish: staged backend, no staging path", publish(A, "", TARGET, cap(), false), FailedPrecondition, "staging_target_path is required"),
        row("publish: ok", publish(A, STAGING, TARGET, cap(), false), Ok, ""),
        row("publish: again, same", publish(A, STAGING, TARGET, cap(), false), Ok, ""),
        row("publish: again, readonly", publish(A, STAGING, TARGET, cap(), true), AlreadyExists, "readonly=false"),
        row("publish: unstaged backend, no staging path", publish(B, "", "/pods/p2/vol-b", Some(mount_cap(Mode::MultiNodeMultiWriter)), false), Ok, ""),
        // NodeGetVolumeStats
        row("stats: empty id", stats("", TARGET), InvalidArgument, "volume_id is required"),
        row("stats: empty path", stats(A, ""), InvalidArgument, "volume_path is required"),
        row("stats: unknown volume", stats("local/node-1/nope", TARGET), NotFound, "not found"),
        row("stats: unserved backend", stats("ghost/x", TARGET), NotFound, "backend ghost is not served"),
        row("stats: relative path", stats(A, "pods/x"), NotFound, "not published at \"pods/x\""),
        row("stats: path not published", stats(A, "/pods/other"), NotFound, "not published at /pods/other"),
        row("stats: ok", stats(A, TARGET), Ok, ""),
        // NodeExpandVolume
        row("expand: empty id", expand("", TARGET, None, None), InvalidArgument, "volume_id is required"),
        row("expand: empty path", expand(A, "", None, None), InvalidArgument, "volume_path is required"),
        row("expand: negative range", expand(A, TARGET, range(-1, 0), None), InvalidArgument, "must not be negative"),
        row("expand: capability without access mode", expand(A, TARGET, None, no_mode()), InvalidArgument, "access_mode is required"),
        row("expand: unknown volume", expand("local/node-1/nope", TARGET, None, None), NotFound, "not found"),
        row("expand: unserved backend", expand("ghost/x", TARGET, None, None), NotFound, "backend ghost is not served"),
        row("expand: relative path", expand(A, "pods/x", None, None), NotFound, "not published at"),
        row("expand: ok", expand(A, TARGET, range(4096, 0), cap()), Ok, ""),
        // NodeUnpublishVolume
        row("unpublish: empty id", unpublish("", TARGET), InvalidArgument, "volume_id is required"),
        row("unpublish: empty target", unpublish(A, ""), InvalidArgument, "target_path is required"),
        row("unpublish: relative target", unpublish(A, "pods/x"), InvalidArgument, "must be an absolute path"),
        row("unpublish: unknown volume, nothing there", unpublish("local/node-1/nope", "/no/such/target"), Ok, ""),
        row("unpublish: unknown volume, a mount there", unpublish("local/node-1/nope", MOUNTED), NotFound, "/dev/shm is mounted, but not by this volume"),
        row("unpublish: unserved backend, nothing there", unpublish("ghost/x", "/no/such/target"), Ok, ""),
        row("unpublish: unserved backend, a mount there", unpublish("ghost/x", MOUNTED), NotFound, "ghost/x: not found (/dev/shm is mounted"),
        row("unpublish: ok", unpublish(A, TARGET), Ok, ""),
        row("unpublish: again", unpublish(A, TARGET), Ok, ""),
        // NodeUnstageVolume
        row("unstage: empty id", unstage("", STAGING), InvalidArgument, "volume_id is required"),
        row("unstage: empty path", unstage(A, ""), InvalidArgument, "staging_target_path is required"),
        row("unstage: relative path", unstage(A, "st"), InvalidArgument, "must be an absolute path"),
        row("unstage: unknown volume, nothing there", unstage("local/node-1/nope", "/no/such/staging"), Ok, ""),
        row("unstage: unknown volume, a mount there", unstage("local/node-1/nope", MOUNTED), NotFound, "is mounted, but not by this volume"),
        row("unstage: foreign id, a mount there", unstage("fake-vol-id", MOUNTED), NotFound, "fake-vol-id: not found (/dev/shm is mounted"),
        row("unstage: ok", unstage(A, STAGING), Ok, ""),
        // Capabilities and info
        row("get capabilities", Call::Caps, Ok, ""),
        row("get info", Call::Info, Ok, ""),
    ]
}

#[tokio::test]
async fn node_rows() {
    let mut s = serve_two().await;
    let rows = table();
    let mut failures = Vec::new();
    for r in &rows {
        if let Some(f) = check("Node", r, run(&mut s, r.call.clone()).await) {
            failures.push(f);
        }
    }
    report("Node", failures, rows.len());
    // Requests the service refused never reached a backend: the local backend saw exactly the
    // rows that got past validation, in order.
    let (nope, st, t) = ("local/node-1/nope", STAGING, TARGET);
    let want: Vec<String> = [
        "create vol-a".to_string(),
        format!("stage {nope} {st}"),
        format!("stage {A} {st}"),
        format!("publish {nope} {t}"),
        format!("publish {A} {t}"), // not staged there
        format!("publish {A} {t}"),
        format!("publish {A} {t}"),
        format!("publish {A} {t}"), // readonly conflict
        format!("stats {nope} {t}"),
        format!("stats {A} /pods/other"),
        format!("stats {A} {t}"),
        format!("node_expand {nope} {t}"),
        format!("node_expand {A} {t}"),
        format!("unpublish {nope} /no/such/target"),
        format!("unpublish {nope} {MOUNTED}"),
        format!("unpublish {A} {t}"),
        format!("unpublish {A} {t}"),
        format!("unstage {nope} /no/such/staging"),
        format!("unstage {nope} {MOUNTED}"),
        format!("unstage {A} {st}"),
    ]
    .into();
    assert_eq!(s.backend("local").calls(), want);
}

#[tokio::test]
async fn stats_report_bytes_and_inodes() {
    let mut s = serve_two().await;
    let Call::Stage(st) = stage(A, STAGING, Some(swr())) else {
        unreachable!()
    };
    s.node.node_stage_volume(st).await.unwrap();
    let Call::Publish(p) = publish(A, STAGING, TARGET, Some(swr()), false) else {
        unreachable!()
    };
    s.node.node_publish_volume(p).await.unwrap();
    let Call::Stats(q) = stats(A, TARGET) else {
        unreachable!()
    };
    let got = s.node.node_get_volume_stats(q).await.unwrap().into_inner();
    assert_eq!(got.usage.len(), 2, "bytes and inodes: {got:?}");
    assert_eq!(got.usage[0].total, 1 << 30);
    assert_eq!(got.usage[1].total, 1000);
    assert!(!got.volume_condition.unwrap().abnormal);
}
