//! The cluster-scoped `BlockDevice` custom resource (ferrovol.io/v1alpha1): one object per
//! device per node, named by the device's uid. The spec holds discovered facts; the status
//! holds the claim and state, which the node plugin also owns.

use super::inventory::{Claim, Entry, State};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label carrying the node name, so a node plugin lists only its own objects.
pub const NODE_LABEL: &str = "ferrovol.io/node";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrovol.io",
    version = "v1alpha1",
    kind = "BlockDevice",
    plural = "blockdevices",
    shortname = "bd",
    status = "BlockDeviceStatus",
    printcolumn = r#"{"name":"NODE","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"PATH","type":"string","jsonPath":".spec.path"}"#,
    printcolumn = r#"{"name":"SIZE","type":"integer","format":"int64","jsonPath":".spec.capacity.storage"}"#,
    printcolumn = r#"{"name":"CLAIM","type":"string","jsonPath":".status.claimState"}"#,
    printcolumn = r#"{"name":"STATE","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceSpec {
    pub node_name: String,
    /// /dev path when last seen (may change; the object name, the uid, does not).
    pub path: String,
    /// by-id and by-path links.
    #[serde(default)]
    pub links: Vec<String>,
    pub capacity: Capacity,
    pub details: Details,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemInfo>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    // The schemas say int64/int32: the API server knows no unsigned formats and warns about
    // uint64/uint32 on every apply of the CRD.
    /// Bytes.
    #[schemars(with = "i64", range(min = 0))]
    pub storage: u64,
    #[schemars(with = "i32", range(min = 0))]
    pub logical_sector_size: u32,
    #[schemars(with = "i32", range(min = 0))]
    pub physical_sector_size: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    /// disk, partition, loop, dm, md, ...
    pub device_type: String,
    /// HDD or SSD, from the rotational flag.
    pub drive_type: String,
    pub removable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemInfo {
    pub fs_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceStatus {
    /// Unclaimed, Claimed or Released.
    pub claim_state: String,
    /// The volume holding (or last holding) the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The node holding (or last holding) the claim. Every other node that sees the device
    /// leaves it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_node: Option<String>,
    /// Active or Inactive.
    pub state: String,
    /// Whether the filters admit it for new volumes.
    pub candidate: bool,
    /// Why it is not a candidate, or why it was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Other devices on the node that present this device's identity: until they are gone,
    /// the node neither gives the device out nor writes to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
}

/// The object for one inventory entry on `node`, named by the uid, labelled with the node.
pub fn from_entry(node: &str, e: &Entry) -> BlockDevice {
    let d = &e.device;
    let spec = BlockDeviceSpec {
        node_name: node.to_string(),
        path: d.dev_path.display().to_string(),
        links: d.names().skip(1).map(|l| l.display().to_string()).collect(),
        capacity: Capacity {
            storage: d.size_bytes,
            logical_sector_size: d.logical_sector_size,
            physical_sector_size: d.physical_sector_size,
        },
        details: Details {
            device_type: d.device_type.as_str().into(),
            drive_type: if d.rotational { "HDD" } else { "SSD" }.into(),
            removable: d.removable,
            model: d.model.clone(),
            vendor: d.vendor.clone(),
            serial: d.serial.clone(),
            wwn: d.wwn.clone(),
        },
        filesystem: d.filesystem.as_ref().map(|f| FilesystemInfo {
            fs_type: f.fs_type.clone(),
            uuid: f.uuid.clone(),
            mount_point: d.mount_points.first().map(|m| m.display().to_string()),
        }),
    };
    let (volume, released) = match &e.claim {
        Claim::Unclaimed => (None, None),
        Claim::Claimed { volume, .. } => (Some(volume.clone()), None),
        Claim::Released { volume, reason, .. } => (Some(volume.clone()), Some(reason.clone())),
    };
    let also = e.conflict.join(", /dev/");
    let conflict = format!("identity also presented by /dev/{also}; not used while they coexist");
    let mut obj = BlockDevice::new(&d.uid, spec);
    obj.metadata.labels = Some([(NODE_LABEL.to_string(), node.to_string())].into());
    obj.status = Some(BlockDeviceStatus {
        claim_state: e.claim.kind().into(),
        volume,
        claim_node: e.claim.node().map(str::to_string),
        state: e.state.as_str().into(),
        candidate: d.candidate && e.state == State::Active && e.conflict.is_empty(),
        reason: released.or_else(|| d.excluded_reason.clone()),
        conflict: (!e.conflict.is_empty()).then_some(conflict),
    });
    obj
}

/// The CRD manifest as YAML: what `ferrovol crd` prints and the chart ships.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = serde_yaml::to_string(&BlockDevice::crd()).expect("a CRD always serializes");
    format!("# Generated by `ferrovol crd`; do not edit.\n---\n{crd}")
}
