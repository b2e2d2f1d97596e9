//! `ferrovol ctl`: a small CSI client for watching a driver work.

use super::ctl_kubelet::capability;
use super::{size::parse_size, DEFAULT_DATA_DIR};
use crate::proto::{
    self as csi, controller_client::ControllerClient, identity_client::IdentityClient,
    node_client::NodeClient,
};
use crate::server::{BoxResult as Result, Endpoint};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Driver endpoint (unix:///path or tcp://IP:PORT). Default: the standalone socket.
    #[arg(long, env = "CSI_ENDPOINT")]
    pub endpoint: Option<Endpoint>,
    /// Data directory of the standalone driver (for its socket and the staging paths ctl uses).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Plugin name, version, node, capabilities and free capacity.
    Info,
    /// Create a volume (idempotent by name).
    Create {
        name: String,
        /// Capacity, e.g. 512Mi or 10Gi.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// A raw block volume instead of a directory.
        #[arg(long)]
        block: bool,
        /// StorageClass parameter KEY=VALUE (repeatable), e.g. quota=enforce.
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
    },
    /// List volumes with their capacity, nodes and condition.
    List,
    /// Delete a volume by id.
    Delete { volume_id: String },
    /// Stage and publish a volume at TARGET (a directory, or a device file for block volumes),
    /// as kubelet does: ControllerPublish and NodeStage only where the driver offers them.
    Publish {
        volume_id: String,
        target: PathBuf,
        #[arg(long)]
        readonly: bool,
        /// Volume context KEY=VALUE (repeatable): the PV's volumeAttributes, which kubelet
        /// passes on (the NFS node plugin needs server, share and subDir from them).
        #[arg(long = "context", value_parser = parse_kv)]
        context: Vec<(String, String)>,
    },
    /// Unpublish TARGET and unstage the volume.
    Unpublish { volume_id: String, target: PathBuf },
    /// Usage of a published volume.
    Stats { volume_id: String, path: PathBuf },
    /// The device inventory of the driver using this data dir (or --state-dir): every device
    /// seen, Active or Inactive, its claim and volume, and why an excluded one is excluded.
    /// Reads the inventory file; needs no running driver.
    Devices {
        /// The driver's --state-dir, if it was not <data-dir>/state.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Grow a volume to SIZE: ControllerExpandVolume, as external-resizer calls it. When it
    /// answers that the node must do it, run `node-expand` on the volume's node.
    Expand {
        volume_id: String,
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Bring existing data under the driver without copying it, and print the
    /// PersistentVolume to apply (docs/adoption.md).
    Adopt(super::ctl_adopt::AdoptArgs),
    /// Clear the Released claim a delete left on the device with BlockDevice uid UID (see
    /// `ferrovol ctl devices`), so that it is Unclaimed again. A delete leaves a device Released
    /// when it cannot prove what is on it: check the disk and wipe it by hand first (`wipefs
    /// -a`), since the driver writes nothing here, and a cleared device with no signature is
    /// given to the next volume, which may format it (docs/adoption.md, "A Released device").
    /// Run it against the driver of the device's node. Repeating it is harmless.
    ClearReleased {
        /// The device's BlockDevice uid, as `ferrovol ctl devices` lists it.
        uid: String,
        /// The volume id the Released claim names (the VOLUME column of `ferrovol ctl
        /// devices`, without its node): confirms which release was checked; another volume is
        /// refused.
        #[arg(long)]
        volume: String,
    },
    /// kubelet's NodeExpandVolume: grow the volume published at PATH to SIZE on this node.
    NodeExpand {
        volume_id: String,
        #[arg(value_parser = parse_size)]
        size: u64,
        /// Where the volume is published (kubelet's volume_path).
        path: PathBuf,
    },
}

/// A capacity range of at least `bytes`, with no limit.
pub(super) fn at_least(bytes: u64) -> csi::CapacityRange {
    csi::CapacityRange {
        required_bytes: bytes as i64,
        limit_bytes: 0,
    }
}

fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

pub fn run(args: CtlArgs) -> Result<()> {
    if let CtlCommand::Devices { state_dir, json } = &args.command {
        let dir = state_dir.as_deref().map_or_else(
            || super::absolute(&args.data_dir).join("state"),
            super::absolute,
        );
        let entries = super::devices::read_inventory(&dir)?;
        if *json {
            println!("{}", serde_json::to_string_pretty(&entries)?);
        } else {
            print!("{}", super::devices::inventory_table(&entries));
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: CtlArgs) -> Result<()> {
    let data_dir = super::absolute(&args.data_dir);
    let endpoint = super::endpoint_or_default(&args.endpoint, &data_dir);
    let channel = crate::client::connect(&endpoint).await.map_err(|e| {
        format!("cannot reach the driver at {endpoint}: {e} (is `ferrovol serve` running?)")
    })?;
    let mut ctrl = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel.clone());
    match args.command {
        CtlCommand::Info => {
            let mut id = IdentityClient::new(channel);
            let plugin = id
                .get_plugin_info(csi::GetPluginInfoRequest {})
                .await?
                .into_inner();
            println!("driver: {} {}", plugin.name, plugin.vendor_version);
            let ready = id
                .probe(csi::ProbeRequest {})
                .await?
                .into_inner()
                .ready
                .unwrap_or(false);
            println!("ready: {ready}");
            if let Ok(n) = node.node_get_info(csi::NodeGetInfoRequest {}).await {
                let n = n.into_inner();
                println!(
                    "node: {} (max volumes {})",
                    n.node_id, n.max_volumes_per_node
                );
            }
            if let Ok(c) = ctrl.get_capacity(csi::GetCapacityRequest::default()).await {
                let available = c.into_inner().available_capacity;
                println!("available capacity: {available} bytes");
            }
        }
        CtlCommand::Create {
            name,
            size,
            block,
            params,
        } => {
            let resp = ctrl
                .create_volume(csi::CreateVolumeRequest {
                    name,
                    capacity_range: size.map(at_least),
                    volume_capabilities: vec![capability(block, false)],
                    parameters: params.into_iter().collect(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let v = resp.volume.unwrap_or_default();
            println!("created {} ({} bytes)", v.volume_id, v.capacity_bytes);
            for (k, val) in v.volume_context {
                println!("  {k}={val}");
            }
        }
        CtlCommand::List => {
            let mut token = String::new();
            loop {
                let resp = ctrl
                    .list_volumes(csi::ListVolumesRequest {
                        max_entries: 500,
                        starting_token: token,
                    })
                    .await?
                    .into_inner();
                for e in resp.entries {
                    let v = e.volume.unwrap_or_default();
                    let st = e.status.unwrap_or_default();
                    let cond = st.volume_condition.unwrap_or_default();
                    let health = if cond.abnormal {
                        format!("ABNORMAL: {}", cond.message)
                    } else {
                        "healthy".into()
                    };
                    let (id, size, nodes) = (v.volume_id, v.capacity_bytes, st.published_node_ids);
                    println!("{id}\t{size} bytes\tpublished={nodes:?}\t{health}");
                }
                if resp.next_token.is_empty() {
                    break;
                }
                token = resp.next_token;
            }
        }
        CtlCommand::Delete { volume_id } => {
            ctrl.delete_volume(csi::DeleteVolumeRequest {
                volume_id: volume_id.clone(),
                ..Default::default()
            })
            .await?;
            println!("deleted {volume_id}");
        }
        CtlCommand::Publish {
            volume_id,
            target,
            readonly,
            context,
        } => {
            let context = context.into_iter().collect();
            super::ctl_kubelet::publish(channel, &data_dir, volume_id, &target, readonly, context)
                .await?
        }
        CtlCommand::Unpublish { volume_id, target } => {
            super::ctl_kubelet::unpublish(channel, &data_dir, volume_id, &target).await?
        }
        CtlCommand::NodeExpand {
            volume_id,
            size,
            path,
        } => super::ctl_kubelet::node_expand(channel, &data_dir, volume_id, size, &path).await?,
        CtlCommand::Stats { volume_id, path } => {
            let resp = node
                .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                    volume_id,
                    volume_path: super::absolute(&path).display().to_string(),
                    staging_target_path: String::new(),
                })
                .await?
                .into_inner();
            for u in resp.usage {
                let inodes = u.unit == csi::volume_usage::Unit::Inodes as i32;
                let unit = if inodes { "inodes" } else { "bytes" };
                println!(
                    "{unit}: total={} used={} available={}",
                    u.total, u.used, u.available
                );
            }
            if let Some(c) = resp.volume_condition {
                let abnormal = if c.abnormal { "ABNORMAL " } else { "" };
                println!("condition: {abnormal}{}", c.message);
            }
        }
        CtlCommand::Expand { volume_id, size } => {
            let resp = ctrl
                .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                    volume_id: volume_id.clone(),
                    capacity_range: Some(at_least(size)),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let (size, node) = (resp.capacity_bytes, resp.node_expansion_required);
            println!("expanded {volume_id} to {size} bytes (node step needed: {node})");
        }
        CtlCommand::Adopt(adopt) => super::ctl_adopt::run(channel, adopt).await?,
        CtlCommand::ClearReleased { uid, volume } => {
            super::ctl_release::clear_released(channel, uid, volume).await?
        }
        CtlCommand::Devices { .. } => unreachable!("answered from the inventory file in run()"),
    }
    Ok(())
}
