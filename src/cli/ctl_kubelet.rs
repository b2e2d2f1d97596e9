//! `ferrovol ctl publish | unpublish | node-expand`: the calls kubelet (and, for publish, the
//! external-attacher) make, chosen by what the driver advertises. A node-only endpoint (the NFS
//! node plugin) has no Controller service and no staging, so those calls are skipped there as
//! kubelet skips them; the e2e suite drives a driver's node side with these commands.

use crate::proto::{
    self as csi,
    controller_client::ControllerClient,
    node_client::NodeClient,
    volume_capability::access_mode::Mode,
    volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume},
};
use crate::server::BoxResult as Result;
use std::collections::HashMap;
use std::path::Path;
use tonic::transport::Channel;

/// What the driver behind one endpoint offers for the kubelet-side calls.
struct Offers {
    stage: bool,
    controller_publish: bool,
    get_volume: bool,
}

async fn offers(channel: &Channel) -> Result<Offers> {
    use csi::controller_service_capability::{rpc::Type as CType, Type as CKind};
    use csi::node_service_capability::{rpc::Type as NType, Type as NKind};
    let node = NodeClient::new(channel.clone())
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await?
        .into_inner();
    let stage = node.capabilities.iter().any(|c| {
        matches!(&c.r#type, Some(NKind::Rpc(r)) if r.r#type == NType::StageUnstageVolume as i32)
    });
    // A node-only process serves no Controller service: kubelet never needs one.
    let ctrl = match ControllerClient::new(channel.clone())
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
    {
        Ok(r) => r.into_inner().capabilities,
        Err(s) if s.code() == tonic::Code::Unimplemented => Vec::new(),
        Err(s) => return Err(s.into()),
    };
    let has = |t: CType| {
        ctrl.iter()
            .any(|c| matches!(&c.r#type, Some(CKind::Rpc(r)) if r.r#type == t as i32))
    };
    Ok(Offers {
        stage,
        controller_publish: has(CType::PublishUnpublishVolume),
        get_volume: has(CType::GetVolume),
    })
}

pub(super) fn capability(block: bool, readonly: bool) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
        access_mode: Some(AccessMode {
            mode: if readonly {
                Mode::SingleNodeReaderOnly
            } else {
                Mode::SingleNodeWriter
            } as i32,
        }),
    }
}

impl Offers {
    /// ctl's staging path for a volume (under the data dir, one directory per volume id), or ""
    /// when the driver does not stage.
    fn staging(&self, data_dir: &Path, volume_id: &str) -> String {
        if !self.stage {
            return String::new();
        }
        let dir = data_dir.join("pods/staging");
        dir.join(volume_id.replace('/', "_")).display().to_string()
    }
}

async fn node_id(channel: &Channel) -> Result<String> {
    Ok(NodeClient::new(channel.clone())
        .node_get_info(csi::NodeGetInfoRequest {})
        .await?
        .into_inner()
        .node_id)
}

/// ControllerPublish (if offered), NodeStage (if offered) and NodePublish of `volume_id` at
/// `target`. `context` is the PV's volumeAttributes, which kubelet passes on; the access type
/// comes from it, or from ControllerGetVolume when the driver offers that.
pub async fn publish(
    channel: Channel,
    data_dir: &Path,
    volume_id: String,
    target: &Path,
    readonly: bool,
    context: HashMap<String, String>,
) -> Result<()> {
    let offers = offers(&channel).await?;
    let mut ctrl = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel.clone());
    let access_key = "ferrovol.io/access-type";
    let mut block = context.get(access_key).map(String::as_str) == Some("block");
    if context.is_empty() && offers.get_volume {
        let vol = ctrl
            .controller_get_volume(csi::ControllerGetVolumeRequest {
                volume_id: volume_id.clone(),
            })
            .await?
            .into_inner()
            .volume
            .unwrap_or_default();
        block = vol.volume_context.get(access_key).map(String::as_str) == Some("block");
    }
    let cap = capability(block, readonly);
    let mut publish_context = HashMap::new();
    if offers.controller_publish {
        publish_context = ctrl
            .controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node_id(&channel).await?,
                volume_capability: Some(cap.clone()),
                readonly,
                volume_context: context.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .publish_context;
    }
    let staging = offers.staging(data_dir, &volume_id);
    if offers.stage {
        node.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(cap.clone()),
            publish_context: publish_context.clone(),
            volume_context: context.clone(),
            ..Default::default()
        })
        .await?;
    }
    node.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging,
        target_path: super::absolute(target).display().to_string(),
        volume_capability: Some(cap),
        readonly,
        publish_context,
        volume_context: context,
        ..Default::default()
    })
    .await?;
    println!("published {volume_id} at {}", target.display());
    Ok(())
}

/// NodeUnpublish, NodeUnstage (if offered) and ControllerUnpublish (if offered).
pub async fn unpublish(
    channel: Channel,
    data_dir: &Path,
    volume_id: String,
    target: &Path,
) -> Result<()> {
    let offers = offers(&channel).await?;
    let mut node = NodeClient::new(channel.clone());
    node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: volume_id.clone(),
        target_path: super::absolute(target).display().to_string(),
    })
    .await?;
    if offers.stage {
        node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: offers.staging(data_dir, &volume_id),
        })
        .await?;
    }
    if offers.controller_publish {
        ControllerClient::new(channel.clone())
            .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node_id(&channel).await?,
                ..Default::default()
            })
            .await?;
    }
    println!("unpublished {volume_id} from {}", target.display());
    Ok(())
}

/// kubelet's NodeExpandVolume after a resize that answered node_expansion_required: grows the
/// volume published at `path` to `size` on the node that holds it.
pub async fn node_expand(
    channel: Channel,
    data_dir: &Path,
    volume_id: String,
    size: u64,
    path: &Path,
) -> Result<()> {
    let offers = offers(&channel).await?;
    let resp = NodeClient::new(channel)
        .node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: volume_id.clone(),
            volume_path: super::absolute(path).display().to_string(),
            capacity_range: Some(super::ctl::at_least(size)),
            staging_target_path: offers.staging(data_dir, &volume_id),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("node-expanded {volume_id} to {} bytes", resp.capacity_bytes);
    Ok(())
}
