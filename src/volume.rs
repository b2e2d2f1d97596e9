//! Domain types shared by the CSI layer and the backends: ids, names, capabilities, capacity.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// CSI's limit for names, ids and node ids.
pub const MAX_ID_LEN: usize = 128;
pub const TOPOLOGY_NODE_KEY: &str = "topology.ferrovol.io/node";

/// Checks a name that becomes one path component: no separators, no NUL or control characters,
/// no leading dot (keeps `.`/`..` and the driver's temp files out of reach), bounded length.
pub fn validate_component(what: &str, value: &str) -> Result<()> {
    present_within_limit(what, value)?;
    if value.starts_with('.') {
        let why = format!("{what} {value:?} must not begin with '.'");
        return Err(Error::invalid(why));
    }
    if let Some(c) = value.chars().find(|c| *c == '/' || c.is_control()) {
        let why = format!("{what} {value:?} contains {c:?}, which is not allowed");
        return Err(Error::invalid(why));
    }
    Ok(())
}

/// Not empty, and within CSI's 128 bytes.
fn present_within_limit(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} is required")));
    }
    if value.len() > MAX_ID_LEN {
        let n = value.len();
        let why = format!("{what} is {n} bytes; at most {MAX_ID_LEN} are allowed");
        return Err(Error::invalid(why));
    }
    Ok(())
}

/// The checks every id from a request passes before it is parsed: present, within CSI's 128
/// bytes, no NUL and no `.`/`..` component (which could reach outside a base path).
pub fn check_raw_id(field: &str, raw: &str) -> Result<()> {
    present_within_limit(field, raw)?;
    if raw.contains('\0') || raw.split('/').any(|p| p == "." || p == "..") {
        return Err(Error::invalid(format!("{field} {raw:?} is not a valid id")));
    }
    Ok(())
}

/// A volume id: `<backend>/<node>/<key>` for node-local volumes, `<backend>/<key>` for volumes
/// any node can reach (NFS). It names the backend that owns the volume and the node it lives on,
/// and `key` is the volume name itself whenever the whole id fits CSI's 128 bytes, so operators
/// see the PVC name in the PV. A longer name (or node name) is shortened to a prefix plus a
/// 64-bit hash; the backend's persisted index maps ids back to names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId {
    pub backend: String,
    pub node: Option<String>,
    pub key: String,
}

/// FNV-1a, 64 bit: stable across releases and platforms (ids are persisted).
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl VolumeId {
    /// The id of the volume `name` created by `backend` on `node`.
    pub fn for_volume(backend: &str, node: &str, name: &str) -> Result<Self> {
        Self::new(backend, Some(Self::node_tag(node)), name)
    }

    /// The id of the cluster-wide volume `name` created by `backend`.
    pub fn cluster(backend: &str, name: &str) -> Result<Self> {
        Self::new(backend, None, name)
    }

    fn new(backend: &str, node: Option<String>, name: &str) -> Result<Self> {
        let room = MAX_ID_LEN - backend.len() - node.as_ref().map_or(0, |n| n.len() + 1) - 1;
        let key = Self::key_within("name", name, room)?;
        let backend = backend.to_string();
        Ok(VolumeId { backend, node, key })
    }

    /// `name` (checked as `what`) itself when it fits `room` bytes, else a prefix of it plus
    /// its hash.
    pub(crate) fn key_within(what: &str, name: &str, room: usize) -> Result<String> {
        validate_component(what, name)?;
        Ok(if name.len() <= room {
            name.to_string()
        } else {
            let suffix = format!("~{:016x}", stable_hash(name));
            let mut cut = room - suffix.len();
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}{suffix}", &name[..cut])
        })
    }

    /// How a node appears in ids: its name, or a hash of a name too long to leave room.
    pub fn node_tag(node: &str) -> String {
        if node.len() <= 63 {
            node.to_string()
        } else {
            format!("{:016x}", stable_hash(node))
        }
    }

    /// Parses an id from a request. `Err` only for ids that are malformed in a way that could
    /// reach outside a base path (InvalidArgument); `Ok(None)` for well-formed strings that are
    /// simply not ours (the caller answers NotFound once the other fields are validated).
    pub fn parse(raw: &str) -> Result<Option<Self>> {
        check_raw_id("volume_id", raw)?;
        let parts: Vec<&str> = raw.split('/').collect();
        let (backend, node, key) = match parts.as_slice() {
            [backend, node, key] if !node.is_empty() => (backend, Some(node.to_string()), key),
            [backend, key] => (backend, None, key),
            _ => return Ok(None),
        };
        let ok = !backend.is_empty() && validate_component("name", key).is_ok();
        let (backend, key) = (backend.to_string(), key.to_string());
        Ok(ok.then_some(VolumeId { backend, node, key }))
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{}/{}/{}", self.backend, node, self.key),
            None => write!(f, "{}/{}", self.backend, self.key),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessKind {
    Mount,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    SingleNodeWriter,
    SingleNodeReaderOnly,
    SingleNodeSingleWriter,
    SingleNodeMultiWriter,
    MultiNodeReaderOnly,
    MultiNodeSingleWriter,
    MultiNodeMultiWriter,
}

impl AccessMode {
    pub fn single_node(self) -> bool {
        matches!(
            self,
            AccessMode::SingleNodeWriter
                | AccessMode::SingleNodeReaderOnly
                | AccessMode::SingleNodeSingleWriter
                | AccessMode::SingleNodeMultiWriter
        )
    }

    pub fn read_only(self) -> bool {
        matches!(
            self,
            AccessMode::SingleNodeReaderOnly | AccessMode::MultiNodeReaderOnly
        )
    }
}

/// A decoded VolumeCapability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub kind: AccessKind,
    pub mode: AccessMode,
    pub fs_type: String,
    pub mount_flags: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityRange {
    pub required: u64,
    pub limit: u64,
}

impl CapacityRange {
    /// The size to give a volume: `required` rounded up to `align`, or `default` when nothing is
    /// asked, always within `limit`.
    pub fn resolve(&self, default: u64, align: u64, volume: &str) -> Result<u64> {
        if self.limit != 0 && self.required > self.limit {
            return Err(Error::invalid(format!(
                "volume {volume}: required_bytes {} exceeds limit_bytes {}",
                self.required, self.limit
            )));
        }
        let want = match (self.required, self.limit) {
            (0, 0) => default,
            (0, limit) => default.min(limit),
            (required, _) => required,
        };
        let aligned = want.div_ceil(align) * align;
        if self.limit != 0 && aligned > self.limit {
            // limit is not aligned: take the largest aligned size within it, if any is enough
            let down = self.limit / align * align;
            if down >= self.required && down > 0 {
                return Ok(down);
            }
            let why = format!(
                "no size in {align}-byte units lies between required_bytes {} and limit_bytes {}",
                self.required, self.limit
            );
            return Err(Error::out_of_range(volume, why));
        }
        Ok(aligned)
    }

    /// Whether an existing volume of `capacity` bytes satisfies this range.
    pub fn admits(&self, capacity: u64) -> bool {
        capacity >= self.required && (self.limit == 0 || capacity <= self.limit)
    }
}

/// Topology a CO asks for: lists of segments, each a key/value map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyRequirement {
    pub requisite: Vec<BTreeMap<String, String>>,
    pub preferred: Vec<BTreeMap<String, String>>,
}

impl TopologyRequirement {
    /// Whether a volume on `node` would satisfy the requirement.
    pub fn allows_node(&self, node: &str) -> bool {
        let fits =
            |seg: &BTreeMap<String, String>| seg.get(TOPOLOGY_NODE_KEY).is_none_or(|v| v == node);
        // Without requisite, preferred is a hint only.
        self.requisite.is_empty() || self.requisite.iter().any(fits)
    }
}

#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: String,
    pub capacity: CapacityRange,
    pub capabilities: Vec<Capability>,
    pub parameters: BTreeMap<String, String>,
    pub topology: Option<TopologyRequirement>,
    /// The snapshot or volume whose content the new volume starts with.
    pub content_source: Option<crate::snapshot::ContentSource>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCondition {
    pub abnormal: bool,
    pub message: String,
}

impl VolumeCondition {
    pub fn healthy() -> Self {
        VolumeCondition {
            abnormal: false,
            message: "volume is healthy".into(),
        }
    }
}

/// What the controller side reports about a volume.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub id: String,
    /// The node a node-local volume lives on (its accessible topology); None: any node.
    pub node: Option<String>,
    pub capacity_bytes: u64,
    pub context: BTreeMap<String, String>,
    pub published_nodes: Vec<String>,
    pub condition: VolumeCondition,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeStats {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    /// (total, used, free) inodes; None for block volumes, which have none of their own.
    pub inodes: Option<(u64, u64, u64)>,
    pub condition: Option<VolumeCondition>,
}

/// NodeStageVolume, decoded. The contexts are what CreateVolume and ControllerPublishVolume
/// returned; a backend that provisions elsewhere (NFS) finds its volume from them, a local one
/// from its own records (never trusting a path in them).
#[derive(Debug, Clone)]
pub struct StageRequest {
    pub id: VolumeId,
    pub staging: crate::node::Target,
    pub capability: Capability,
    pub volume_context: BTreeMap<String, String>,
    pub publish_context: BTreeMap<String, String>,
}

/// NodePublishVolume, decoded.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub id: VolumeId,
    /// None when the driver does not stage (the CO sends no staging path then).
    pub staging: Option<crate::node::Target>,
    pub target: crate::node::Target,
    pub read_only: bool,
    pub capability: Capability,
    pub volume_context: BTreeMap<String, String>,
    pub publish_context: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trip_and_rejections() {
        let id = VolumeId::for_volume("hostpath", "node-1", "pvc-1").unwrap();
        assert_eq!(id.to_string(), "hostpath/node-1/pvc-1");
        assert_eq!(VolumeId::parse("hostpath/node-1/pvc-1").unwrap(), Some(id));
        assert_eq!(VolumeId::parse("fake-vol-id").unwrap(), None);
        assert!(matches!(
            VolumeId::parse("hostpath/n/.."),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            VolumeId::parse("hostpath/n/a\0b"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            VolumeId::parse(&"x".repeat(200)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(VolumeId::for_volume("hostpath", "n", "../etc").is_err());
        assert!(VolumeId::for_volume("hostpath", "n", ".hidden").is_err());
        assert!(VolumeId::for_volume("hostpath", "n", &"a".repeat(129)).is_err());
        assert!(VolumeId::for_volume("hostpath", "n", "sanity-max-attach-limit-vol+1").is_ok());
        let nfs = VolumeId::cluster("nfs", "pvc-9").unwrap();
        assert_eq!(nfs.to_string(), "nfs/pvc-9");
        assert_eq!(VolumeId::parse("nfs/pvc-9").unwrap(), Some(nfs));
        assert!(
            VolumeId::cluster("nfs", &"x".repeat(128))
                .unwrap()
                .to_string()
                .len()
                <= MAX_ID_LEN
        );
    }

    #[test]
    fn long_names_and_nodes_get_short_stable_ids() {
        let name = "a".repeat(128);
        let id = VolumeId::for_volume("hostpath", &"n".repeat(200), &name).unwrap();
        let s = id.to_string();
        assert!(s.len() <= MAX_ID_LEN, "{s}");
        assert_eq!(VolumeId::parse(&s).unwrap(), Some(id.clone()));
        assert_eq!(
            VolumeId::for_volume("hostpath", &"n".repeat(200), &name).unwrap(),
            id
        );
        let other = VolumeId::for_volume(
            "hostpath",
            &"n".repeat(200),
            &format!("{}b", "a".repeat(127)),
        )
        .unwrap();
        assert_ne!(other, id);
    }

    #[test]
    fn capacity_resolution() {
        let r = |required, limit| CapacityRange { required, limit };
        assert_eq!(r(0, 0).resolve(1 << 30, 4096, "v").unwrap(), 1 << 30);
        assert_eq!(r(1, 0).resolve(1 << 30, 4096, "v").unwrap(), 4096);
        assert_eq!(r(0, 8192).resolve(1 << 30, 4096, "v").unwrap(), 8192);
        assert_eq!(
            r(5000, 6000).resolve(0, 4096, "v").unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            r(9, 8).resolve(0, 4096, "v").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(r(10, 20).admits(15) && !r(10, 20).admits(25) && !r(10, 0).admits(5));
    }

    #[test]
    fn topology_requisite_must_name_this_node() {
        let seg = |n: &str| BTreeMap::from([(TOPOLOGY_NODE_KEY.to_string(), n.to_string())]);
        let t = TopologyRequirement {
            requisite: vec![seg("a"), seg("b")],
            preferred: vec![],
        };
        assert!(t.allows_node("b"));
        assert!(!t.allows_node("c"));
        assert!(TopologyRequirement::default().allows_node("c"));
    }
}
