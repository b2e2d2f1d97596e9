//! The Controller service, one row per validation path of every RPC (src/csi/controller.rs and
//! the decoding in src/csi/convert.rs), over a node-local and a cluster fake backend.

use crate::fake_backend::{FakeBackend, GIB};
use crate::harness::*;
use csi::volume_capability::access_mode::Mode;
use ferrovol::backend::registry::DriverKind;
use ferrovol::proto as csi;
use tonic::Code;

const A: &str = "local/node-1/vol-a";
const B: &str = "shared/vol-b";

#[derive(Debug)]
enum Call {
    Create(csi::CreateVolumeRequest),
    Delete(csi::DeleteVolumeRequest),
    Publish(csi::ControllerPublishVolumeRequest),
    Unpublish(csi::ControllerUnpublishVolumeRequest),
    Validate(csi::ValidateVolumeCapabilitiesRequest),
    List(csi::ListVolumesRequest),
    Capacity(csi::GetCapacityRequest),
    Expand(csi::ControllerExpandVolumeRequest),
    Get(csi::ControllerGetVolumeRequest),
    Modify(csi::ControllerModifyVolumeRequest),
    CreateSnapshot(csi::CreateSnapshotRequest),
    DeleteSnapshot(csi::DeleteSnapshotRequest),
    ListSnapshots(csi::ListSnapshotsRequest),
    GetSnapshot(csi::GetSnapshotRequest),
}

async fn run(s: &mut Served, call: &Call) -> Result<(), tonic::Status> {
    let c = &mut s.controller;
    match call.clone_req() {
        Call::Create(r) => c.create_volume(r).await.map(drop),
        Call::Delete(r) => c.delete_volume(r).await.map(drop),
        Call::Publish(r) => c.controller_publish_volume(r).await.map(drop),
        Call::Unpublish(r) => c.controller_unpublish_volume(r).await.map(drop),
        Call::Validate(r) => c.validate_volume_capabilities(r).await.map(drop),
        Call::List(r) => c.list_volumes(r).await.map(drop),
        Call::Capacity(r) => c.get_capacity(r).await.map(drop),
        Call::Expand(r) => c.controller_expand_volume(r).await.map(drop),
        Call::Get(r) => c.controller_get_volume(r).await.map(drop),
        Call::Modify(r) => c.controller_modify_volume(r).await.map(drop),
        Call::CreateSnapshot(r) => c.create_snapshot(r).await.map(drop),
        Call::DeleteSnapshot(r) => c.delete_snapshot(r).await.map(drop),
        Call::ListSnapshots(r) => c.list_snapshots(r).await.map(drop),
        Call::GetSnapshot(r) => c.get_snapshot(r).await.map(drop),
    }
}

impl Call {
    fn clone_req(&self) -> Call {
        match self {
            Call::Create(r) => Call::Create(r.clone()),
            Call::Delete(r) => Call::Delete(r.clone()),
            Call::Publish(r) => Call::Publish(r.clone()),
            Call::Unpublish(r) => Call::Unpublish(r.clone()),
            Call::Validate(r) => Call::Validate(r.clone()),
            Call::List(r) => Call::List(r.clone()),
            Call::Capacity(r) => Call::Capacity(r.clone()),
            Call::Expand(r) => Call::Expand(r.clone()),
            Call::Get(r) => Call::Get(r.clone()),
            Call::Modify(r) => Call::Modify(r.clone()),
            Call::CreateSnapshot(r) => Call::CreateSnapshot(r.clone()),
            Call::DeleteSnapshot(r) => Call::DeleteSnapshot(r.clone()),
            Call::ListSnapshots(r) => Call::ListSnapshots(r.clone()),
            Call::GetSnapshot(r) => Call::GetSnapshot(r.clone()),
        }
    }
}

fn create(name: &str, backend: &str, f: impl FnOnce(&mut csi::CreateVolumeRequest)) -> Call {
    let mut r = create_req(name, backend, vec![swr()]);
    f(&mut r);
    Call::Create(r)
}

fn delete(id: &str) -> Call {
    Call::Delete(csi::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    })
}

fn publish(id: &str, node: &str, cap: Option<csi::VolumeCapability>, readonly: bool) -> Call {
    Call::Publish(csi::ControllerPublishVolumeRequest {
        volume_id: id.into(),
        node_id: node.into(),
        volume_capability: cap,
        readonly,
        ..Default::default()
    })
}

fn unpublish(id: &str, node: &str) -> Call {
    Call::Unpublish(csi::ControllerUnpublishVolumeRequest {
        volume_id: id.into(),
        node_id: node.into(),
        ..Default::default()
    })
}

fn validate(id: &str, caps: Vec<csi::VolumeCapability>) -> Call {
    Call::Validate(csi::ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    })
}

fn list(max_entries: i32, token: &str) -> Call {
    Call::List(csi::ListVolumesRequest {
        max_entries,
        starting_token: token.into(),
    })
}

/// A ListVolumes token as the driver encodes them ("v1." + hex), around arbitrary text.
fn token_of(text: &str) -> String {
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    format!("v1.{hex}")
}

fn capacity(pairs: &[(&str, &str)], caps: Vec<csi::VolumeCapability>) -> Call {
    Call::Capacity(csi::GetCapacityRequest {
        volume_capabilities: caps,
        parameters: params(pairs),
        accessible_topology: None,
    })
}

fn expand(id: &str, range: Option<csi::CapacityRange>, cap: Option<csi::VolumeCapability>) -> Call {
    Call::Expand(csi::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: range,
        volume_capability: cap,
        ..Default::default()
    })
}

fn get(id: &str) -> Call {
    Call::Get(csi::ControllerGetVolumeRequest {
        volume_id: id.into(),
    })
}

fn no_type() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: None,
        ..swr()
    }
}

fn no_mode() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: None,
        ..swr()
    }
}

fn requisite_node(node: &str) -> Option<csi::TopologyRequirement> {
    Some(csi::TopologyRequirement {
        requisite: vec![csi::Topology {
            segments: params(&[("topology.ferrovol.io/node", node)]),
        }],
        preferred: vec![],
    })
}

// One row per line: the table reads as a table.
#[rustfmt::skip]
fn table() -> Vec<Row<Call>> {
    use Code::*;
    let long = "x".repeat(129);
    let mnmw = || mount_cap(Mode::MultiNodeMultiWriter);
    vec![
        // CreateVolume
        row("create: empty name", create("", "local", |_| {}), InvalidArgument, "name is required"),
        row("create: name with '/'", create("a/b", "local", |_| {}), InvalidArgument, "contains '/'"),
        row("create: name with leading dot", create(".hidden", "local", |_| {}), InvalidArgument, "must not begin with '.'"),
        row("create: name over 128 bytes", create(&long, "local", |_| {}), InvalidArgument, "at most 128"),
        row("create: content source", create("c1", "local", |r| { r.volume_content_source = Some(Default::default()) }), InvalidArgument, "names neither a snapshot nor a volume"),
        row("create: no capabilities", create("c1", "local", |r| r.volume_capabilities.clear()), InvalidArgument, "volume_capabilities are required"),
        row("create: capability without access type", create("c1", "local", |r| r.volume_capabilities = vec![no_type()]), InvalidArgument, "access_type (mount or block) is required"),
        row("create: capability without access mode", create("c1", "local", |r| r.volume_capabilities = vec![no_mode()]), InvalidArgument, "access_mode is required"),
        row("create: access mode UNKNOWN", create("c1", "local", |r| { r.volume_capabilities = vec![raw_mode_cap(0)] }), InvalidArgument, "access_mode 0 is unknown"),
        row("create: access mode out of the enum", create("c1", "local", |r| { r.volume_capabilities = vec![raw_mode_cap(99)] }), InvalidArgument, "access_mode 99 is unknown"),
        row("create: one bad capability among good", create("c1", "local", |r| r.volume_capabilities.push(no_mode())), InvalidArgument, "access_mode is required"),
        row("create: negative required_bytes", create("c1", "local", |r| r.capacity_range = range(-1, 0)), InvalidArgument, "must not be negative"),
        row("create: negative limit_bytes", create("c1", "local", |r| r.capacity_range = range(0, -1)), InvalidArgument, "must not be negative"),
        row("create: required above limit", create("c1", "local", |r| r.capacity_range = range(9000, 8192)), InvalidArgument, "exceeds limit_bytes"),
        row("create: no aligned size in range", create("c1", "local", |r| r.capacity_range = range(5000, 6000)), OutOfRange, "no size in 4096-byte units"),
        row("create: larger than the largest volume", create("c1", "local", |r| { r.capacity_range = range(11 * GIB as i64, 0) }), OutOfRange, "exceed the largest volume"),
        row("create: backend not served", create("c1", "ghost", |_| {}), InvalidArgument, "backend \"ghost\" is not served here"),
        row("create: unknown parameter", create("c1", "local", |r| { r.parameters.insert("colour".into(), "red".into()); }), InvalidArgument, "unknown field `colour`"),
        row("create: multi-node mode on node-local backend", create("c1", "local", |r| r.volume_capabilities = vec![mnmw()]), InvalidArgument, "needs several nodes"),
        row("create: block on a mount-only backend", create("c1", "shared", |r| { r.volume_capabilities = vec![block_cap(Mode::MultiNodeMultiWriter)] }), InvalidArgument, "no raw block access"),
        row("create: mount and block together", create("c1", "local", |r| { r.volume_capabilities .push(block_cap(Mode::SingleNodeWriter)) }), InvalidArgument, "does not match"),
        row("create: requisite topology excludes this node", create("c1", "local", |r| { r.accessibility_requirements = requisite_node("node-9") }), ResourceExhausted, "excludes node node-1"),
        row("create: existing name, same request", create("vol-a", "local", |_| {}), Ok, ""),
        row("create: existing name, other size", create("vol-a", "local", |r| { r.capacity_range = range(2 * GIB as i64, 0) }), AlreadyExists, "exists with another size"),
        row("create: existing name, other parameters", create("vol-a", "local", |r| { r.parameters.insert("tier".into(), "gold".into()); }), AlreadyExists, "exists with another"),
        row("create: multi-node mode on cluster backend", create("c2", "shared", |r| r.volume_capabilities = vec![mnmw()]), Ok, ""),
        // DeleteVolume
        row("delete: empty id", delete(""), InvalidArgument, "volume_id is required"),
        row("delete: id with '..'", delete("local/node-1/.."), InvalidArgument, "is not a valid id"),
        row("delete: id over 128 bytes", delete(&format!("{long}/a")), InvalidArgument, "at most 128"),
        row("delete: unknown volume", delete("local/node-1/nope"), Ok, ""),
        row("delete: backend of another driver", delete("ghost/node-1/x"), Ok, ""),
        row("delete: this driver's backend, not served here", delete("device/node-1/x"), FailedPrecondition, "backend device is not served by this process"),
        row("delete: foreign id", delete("fake-vol-id"), Ok, ""),
        row("delete: created and gone", delete("shared/c2"), Ok, ""),
        // ControllerPublishVolume
        row("publish: empty id", publish("", NODE, Some(swr()), false), InvalidArgument, "volume_id is required"),
        row("publish: empty node id", publish(A, "", Some(swr()), false), InvalidArgument, "node_id is required"),
        row("publish: no capability", publish(A, NODE, None, false), InvalidArgument, "volume_capability is required"),
        row("publish: bad access mode", publish(A, NODE, Some(raw_mode_cap(42)), false), InvalidArgument, "access_mode 42 is unknown"),
        row("publish: unknown volume", publish("local/node-1/nope", NODE, Some(swr()), false), NotFound, "local/node-1/nope: not found"),
        row("publish: foreign id", publish("fake-vol-id", NODE, Some(swr()), false), NotFound, "fake-vol-id: not found"),
        row("publish: unserved backend", publish("ghost/node-1/x", NODE, Some(swr()), false), NotFound, "backend ghost is not served by this process"),
        row("publish: another node", publish(A, "node-9", Some(swr()), false), NotFound, "node node-9 not found"),
        row("publish: multi-node mode on node-local volume", publish(A, NODE, Some(mnmw()), false), InvalidArgument, "needs several nodes"),
        row("publish: ok", publish(A, NODE, Some(swr()), false), Ok, ""),
        row("publish: again, same", publish(A, NODE, Some(swr()), false), Ok, ""),
        row("publish: again, other readonly", publish(A, NODE, Some(swr()), true), AlreadyExists, "readonly=false"),
        row("publish: no attach step (cluster backend)", publish(B, "node-7", Some(mnmw()), false), Ok, ""),
        row("publish: no attach step, unknown volume", publish("shared/nope", NODE, Some(swr()), false), NotFound, "shared/nope: not found"),
        // ControllerUnpublishVolume
        row("unpublish: empty id", unpublish("", NODE), InvalidArgument, "volume_id is required"),
        row("unpublish: id with '..'", unpublish("../x", NODE), InvalidArgument, "is not a valid id"),
        row("unpublish: unknown volume", unpublish("local/node-1/nope", NODE), Ok, ""),
        row("unpublish: unserved backend", unpublish("ghost/x", NODE), Ok, ""),
        row("unpublish: from every node", unpublish(A, ""), Ok, ""),
        // ValidateVolumeCapabilities
        row("validate: empty id", validate("", vec![swr()]), InvalidArgument, "volume_id is required"),
        row("validate: no capabilities", validate(A, vec![]), InvalidArgument, "volume_capabilities are required"),
        row("validate: capability without access type", validate(A, vec![no_type()]), InvalidArgument, "access_type"),
        row("validate: unknown volume", validate("local/node-1/nope", vec![swr()]), NotFound, "not found"),
        row("validate: unserved backend", validate("ghost/x", vec![swr()]), NotFound, "backend ghost is not served"),
        row("validate: unsupported mode answers, not fails", validate(A, vec![mnmw()]), Ok, ""),
        // ListVolumes
        row("list: negative max_entries", list(-1, ""), InvalidArgument, "max_entries must not be negative"),
        row("list: foreign token", list(0, "invalid-token"), Aborted, "invalid starting_token"),
        row("list: token of odd hex", list(0, "v1.abc"), Aborted, "invalid starting_token"),
        row("list: token without backend", list(0, &token_of("vol-a")), Aborted, "invalid starting_token"),
        row("list: token of unserved backend", list(0, &token_of("ghost/vol-a")), Aborted, "invalid starting_token"),
        row("list: all", list(0, ""), Ok, ""),
        // GetCapacity
        row("capacity: backend not served", capacity(&[("backend", "ghost")], vec![]), InvalidArgument, "backend \"ghost\" is not served here"),
        row("capacity: bad capability", capacity(&[], vec![no_mode()]), InvalidArgument, "access_mode is required"),
        row("capacity: unknown parameter", capacity(&[("backend", "shared"), ("size", "big")], vec![]), InvalidArgument, "unknown field `size`"),
        row("capacity: default backend", capacity(&[], vec![swr()]), Ok, ""),
        // ControllerExpandVolume
        row("expand: empty id", expand("", range(GIB as i64, 0), None), InvalidArgument, "volume_id is required"),
        row("expand: no capacity range", expand(A, None, None), InvalidArgument, "capacity_range is required"),
        row("expand: negative range", expand(A, range(-5, 0), None), InvalidArgument, "must not be negative"),
        row("expand: bad capability", expand(A, range(GIB as i64, 0), Some(no_type())), InvalidArgument, "access_type"),
        row("expand: unknown volume", expand("local/node-1/nope", range(GIB as i64, 0), None), NotFound, "not found"),
        row("expand: unserved backend", expand("ghost/x", range(GIB as i64, 0), None), NotFound, "backend ghost is not served"),
        row("expand: shrink", expand(A, range(0, 4096), None), OutOfRange, "do not shrink"),
        row("expand: backend that cannot grow", expand(B, range(2 * GIB as i64, 0), None), Unimplemented, "cannot grow"),
        row("expand: ok", expand(A, range(2 * GIB as i64, 0), None), Ok, ""),
        // ControllerGetVolume
        row("get: empty id", get(""), InvalidArgument, "volume_id is required"),
        row("get: id over 128 bytes", get(&format!("local/node-1/{long}")), InvalidArgument, "at most 128"),
        row("get: unknown volume", get("shared/nope"), NotFound, "shared/nope: not found"),
        row("get: unserved backend", get("ghost/node-1/x"), NotFound, "backend ghost is not served"),
        row("get: ok", get(B), Ok, ""),
        // Not offered
        row("modify volume", Call::Modify(Default::default()), Unimplemented, "ControllerModifyVolume"),
        row("create snapshot", Call::CreateSnapshot(Default::default()), Unimplemented, "snapshots"),
        row("delete snapshot", Call::DeleteSnapshot(Default::default()), Unimplemented, "snapshots"),
        row("list snapshots", Call::ListSnapshots(Default::default()), Unimplemented, "snapshots"),
        row("get snapshot", Call::GetSnapshot(Default::default()), Unimplemented, "snapshots"),
    ]
}

/// A process serving a node-local backend "local" and a cluster backend "shared", with one
/// volume on each: vol-a (A) and vol-b (B).
pub async fn serve_two() -> Served {
    serve_two_on(false).await
}

/// `serve_two`; `exclusive`: the caller already holds the process lock for writing.
pub async fn serve_two_on(exclusive: bool) -> Served {
    let backends = vec![
        FakeBackend::node_local("local", NODE),
        FakeBackend::cluster("shared"),
    ];
    let mut s = if exclusive {
        Served::start_locked(DriverKind::Local, 0, backends).await
    } else {
        Served::start(DriverKind::Local, 0, backends).await
    };
    assert_eq!(s.create("local", "vol-a").await, A);
    assert_eq!(s.create("shared", "vol-b").await, B);
    s
}

#[tokio::test]
async fn controller_rows() {
    let mut s = serve_two().await;
    let rows = table();
    let mut failures = Vec::new();
    for r in &rows {
        if let Some(f) = check("Controller", r, run(&mut s, &r.call).await) {
            failures.push(f);
        }
    }
    report("Controller", failures, rows.len());
    // A backend without an attach step was never asked to attach.
    assert!(s
        .backend("shared")
        .calls_of("controller_publish")
        .is_empty());
}

#[tokio::test]
async fn validate_answers_confirmed_or_why_not() {
    let mut s = serve_two().await;
    let ask = |caps| csi::ValidateVolumeCapabilitiesRequest {
        volume_id: A.into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let ok = s
        .controller
        .validate_volume_capabilities(ask(vec![swr()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.confirmed.unwrap().volume_capabilities, vec![swr()]);
    let no = s
        .controller
        .validate_volume_capabilities(ask(vec![mount_cap(Mode::MultiNodeReaderOnly)]))
        .await
        .unwrap()
        .into_inner();
    assert!(no.confirmed.is_none());
    assert!(no.message.contains("needs several nodes"), "{}", no.message);
    let block = s
        .controller
        .validate_volume_capabilities(ask(vec![block_cap(Mode::SingleNodeWriter)]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        block.confirmed.is_none() && block.message.contains("does not match"),
        "{}",
        block.message
    );
}

#[tokio::test]
async fn create_answers_topology_and_capacity_per_backend() {
    let mut s = serve_two().await;
    let get = |id: &str| csi::ControllerGetVolumeRequest {
        volume_id: id.into(),
    };
    let a = s
        .controller
        .controller_get_volume(get(A))
        .await
        .unwrap()
        .into_inner();
    let va = a.volume.unwrap();
    assert_eq!(
        va.accessible_topology.len(),
        1,
        "node-local volumes carry the node"
    );
    assert_eq!(
        va.accessible_topology[0].segments["topology.ferrovol.io/node"],
        NODE
    );
    let vb = s
        .controller
        .controller_get_volume(get(B))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(
        vb.accessible_topology.is_empty(),
        "cluster volumes are reachable anywhere"
    );
    let cap = s
        .controller
        .get_capacity(csi::GetCapacityRequest {
            parameters: params(&[("backend", "shared")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // 100 GiB pool, one 1 GiB volume in it, at most 10 GiB per volume.
    assert_eq!(cap.available_capacity, 99 * GIB as i64);
    assert_eq!(cap.maximum_volume_size, Some(10 * GIB as i64));
    let block = s
        .controller
        .get_capacity(csi::GetCapacityRequest {
            parameters: params(&[("backend", "shared")]),
            volume_capabilities: vec![block_cap(Mode::SingleNodeWriter)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        block.available_capacity, 0,
        "no capacity for what the backend cannot serve"
    );
}
