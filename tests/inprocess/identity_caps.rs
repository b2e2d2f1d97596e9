//! The Identity service, and the capability answers of all three services: the union of what
//! the backends a process serves can do.

use crate::controller_table::serve_two;
use crate::fake_backend::FakeBackend;
use crate::harness::*;
use csi::controller_service_capability::rpc::Type as CCap;
use csi::node_service_capability::rpc::Type as NCap;
use csi::plugin_capability::service::Type as Svc;
use csi::plugin_capability::volume_expansion::Type as Exp;
use csi::plugin_capability::Type as PType;
use ferrovol::backend::registry::DriverKind;
use ferrovol::backend::Expansion;
use ferrovol::proto as csi;
use tonic::Code;

#[derive(Debug, Clone)]
enum Call {
    Info,
    Caps,
    /// Probe after telling the "shared" backend whether it is ready.
    Probe {
        shared_ready: bool,
    },
}

// One row per line: the table reads as a table.
#[rustfmt::skip]
fn table() -> Vec<Row<Call>> {
    vec![
        row("plugin info", Call::Info, Code::Ok, ""),
        row("plugin capabilities", Call::Caps, Code::Ok, ""),
        row("probe, all ready", Call::Probe { shared_ready: true }, Code::Ok, ""),
        row("probe, one backend not ready", Call::Probe { shared_ready: false, }, Code::Unavailable, "server shared: unavailable"),
        row("probe, ready again", Call::Probe { shared_ready: true }, Code::Ok, ""),
    ]
}

#[tokio::test]
async fn identity_rows() {
    let mut s = serve_two().await;
    let rows = table();
    let mut failures = Vec::new();
    for r in &rows {
        let got = match r.call {
            Call::Info => s
                .identity
                .get_plugin_info(csi::GetPluginInfoRequest {})
                .await
                .map(drop),
            Call::Caps => s
                .identity
                .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
                .await
                .map(drop),
            Call::Probe { shared_ready } => {
                s.backend("shared").set_ready(shared_ready);
                s.identity.probe(csi::ProbeRequest {}).await.map(drop)
            }
        };
        if let Some(f) = check("Identity", r, got) {
            failures.push(f);
        }
    }
    report("Identity", failures, rows.len());
    let info = s
        .identity
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "local.csi.ferrovol.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
}

/// What one process answers to the three capability RPCs and NodeGetInfo.
#[derive(Debug)]
struct Answers {
    controller: Vec<CCap>,
    node: Vec<NCap>,
    services: Vec<Svc>,
    expansion: Option<Exp>,
    topology: Option<std::collections::HashMap<String, String>>,
    max_volumes: i64,
}

async fn answers(kind: DriverKind, backends: Vec<FakeBackend>) -> Answers {
    let mut s = Served::start(kind, 7, backends).await;
    let controller = s
        .controller
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .map(|c| match c.r#type {
            Some(csi::controller_service_capability::Type::Rpc(r)) => {
                CCap::try_from(r.r#type).unwrap()
            }
            other => panic!("not an rpc capability: {other:?}"),
        })
        .collect();
    let node = s
        .node
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .map(|c| match c.r#type {
            Some(csi::node_service_capability::Type::Rpc(r)) => NCap::try_from(r.r#type).unwrap(),
            other => panic!("not an rpc capability: {other:?}"),
        })
        .collect();
    let plugin = s
        .identity
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let mut services = Vec::new();
    let mut expansion = None;
    for c in plugin {
        match c.r#type {
            Some(PType::Service(x)) => services.push(Svc::try_from(x.r#type).unwrap()),
            Some(PType::VolumeExpansion(x)) => expansion = Some(Exp::try_from(x.r#type).unwrap()),
            other => panic!("unexpected plugin capability {other:?}"),
        }
    }
    let info = s
        .node
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, NODE);
    Answers {
        controller,
        node,
        services,
        expansion,
        topology: info.accessible_topology.map(|t| t.segments),
        max_volumes: info.max_volumes_per_node,
    }
}

#[tokio::test]
async fn cluster_backend_alone_has_no_topology_attach_or_staging() {
    let a = answers(DriverKind::Nfs, vec![FakeBackend::cluster("nfs")]).await;
    assert_eq!(a.services, vec![Svc::ControllerService], "{a:?}");
    assert_eq!(a.expansion, None, "{a:?}");
    assert!(a.topology.is_none(), "{a:?}");
    for absent in [
        CCap::PublishUnpublishVolume,
        CCap::PublishReadonly,
        CCap::ExpandVolume,
    ] {
        assert!(!a.controller.contains(&absent), "{absent:?} in {a:?}");
    }
    for present in [
        CCap::CreateDeleteVolume,
        CCap::ListVolumes,
        CCap::GetCapacity,
        CCap::GetVolume,
    ] {
        assert!(
            a.controller.contains(&present),
            "{present:?} missing in {a:?}"
        );
    }
    assert!(!a.node.contains(&NCap::StageUnstageVolume), "{a:?}");
    assert!(!a.node.contains(&NCap::ExpandVolume), "{a:?}");
    assert!(a.node.contains(&NCap::GetVolumeStats), "{a:?}");
    assert_eq!(a.max_volumes, 7);
}

#[tokio::test]
async fn node_local_backend_has_topology_attach_staging_and_online_expansion() {
    let a = answers(DriverKind::Local, vec![FakeBackend::node_local("hp", NODE)]).await;
    assert!(
        a.services.contains(&Svc::VolumeAccessibilityConstraints),
        "{a:?}"
    );
    assert_eq!(a.expansion, Some(Exp::Online), "{a:?}");
    let topo = a
        .topology
        .as_ref()
        .expect("node-local volumes need the node's topology");
    assert_eq!(
        topo.get("topology.ferrovol.io/node").map(String::as_str),
        Some(NODE)
    );
    for present in [
        CCap::PublishUnpublishVolume,
        CCap::PublishReadonly,
        CCap::ExpandVolume,
    ] {
        assert!(
            a.controller.contains(&present),
            "{present:?} missing in {a:?}"
        );
    }
    assert!(a.node.contains(&NCap::StageUnstageVolume), "{a:?}");
    assert!(a.node.contains(&NCap::ExpandVolume), "{a:?}");
}

#[tokio::test]
async fn two_backends_answer_the_union() {
    let a = answers(
        DriverKind::Local,
        vec![
            FakeBackend::cluster("plain"),
            FakeBackend::node_local("disk", NODE).caps_mut(|c| {
                c.controller_publish = false;
                c.stage = false;
                c.expansion = Expansion::UpToDevice;
                c.node_expansion = false;
            }),
        ],
    )
    .await;
    // Topology from the node-local one, expansion (offline, as only a whole device grows).
    assert!(
        a.services.contains(&Svc::VolumeAccessibilityConstraints),
        "{a:?}"
    );
    assert_eq!(a.expansion, Some(Exp::Offline), "{a:?}");
    assert!(a.controller.contains(&CCap::ExpandVolume), "{a:?}");
    assert!(a.topology.is_some(), "{a:?}");
    // Neither attaches, stages or grows on the node.
    assert!(
        !a.controller.contains(&CCap::PublishUnpublishVolume),
        "{a:?}"
    );
    assert!(!a.node.contains(&NCap::StageUnstageVolume), "{a:?}");
    assert!(!a.node.contains(&NCap::ExpandVolume), "{a:?}");
}

#[tokio::test]
async fn controller_publish_without_attach_step_is_a_no_op() {
    let mut s = Served::start(DriverKind::Nfs, 1, vec![FakeBackend::cluster("nfs")]).await;
    let id = s.create("nfs", "v1").await;
    let id2 = s.create("nfs", "v2").await;
    for (vol, node) in [(&id, "node-a"), (&id2, "node-a"), (&id, "node-b")] {
        let r = s
            .controller
            .controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id: vol.clone(),
                node_id: node.into(),
                volume_capability: Some(swr()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| {
                panic!("publishing {vol} to {node} (limit 1 must not apply): {e:?}")
            })
            .into_inner();
        assert!(r.publish_context.is_empty());
    }
    assert!(s.backend("nfs").calls_of("controller_publish").is_empty());
}
