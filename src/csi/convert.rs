//! Decoding CSI request fields into domain types (validation lives here), and encoding replies.

use crate::error::{Error, Result};
use crate::proto as csi;
use crate::volume::{
    AccessKind, AccessMode, Capability, CapacityRange, TopologyRequirement, VolumeInfo,
    TOPOLOGY_NODE_KEY,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, PathBuf};

use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::AccessType;

pub fn require<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    match value {
        "" => Err(Error::invalid(format!("{field} is required"))),
        value => Ok(value),
    }
}

/// An absolute path from a request: no NUL, no `..`, not empty.
pub fn abs_path(field: &str, value: &str) -> Result<PathBuf> {
    require(field, value)?;
    let path = PathBuf::from(value);
    let up = path.components().any(|c| c == Component::ParentDir);
    if value.contains('\0') || !path.is_absolute() || up {
        return Err(Error::invalid(format!(
            "{field} {value:?} must be an absolute path without '..'"
        )));
    }
    Ok(path)
}

/// The volume_path of NodeGetVolumeStats / NodeExpandVolume: a path that is not absolute cannot
/// hold the volume, so it is NotFound rather than malformed.
pub fn volume_path(volume_id: &str, value: &str) -> Result<PathBuf> {
    abs_path("volume_path", value).map_err(|_| {
        Error::not_found_because(volume_id, format!("it is not published at {value:?}"))
    })
}

pub fn capability(cap: &csi::VolumeCapability) -> Result<Capability> {
    let (kind, fs_type, mount_flags) = match &cap.access_type {
        Some(AccessType::Mount(m)) => (AccessKind::Mount, m.fs_type.clone(), m.mount_flags.clone()),
        Some(AccessType::Block(_)) => (AccessKind::Block, String::new(), Vec::new()),
        None => {
            return Err(Error::invalid(
                "volume_capability.access_type (mount or block) is required",
            ))
        }
    };
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| Error::invalid("volume_capability.access_mode is required"))?;
    let mode = match Mode::try_from(mode.mode) {
        Ok(Mode::SingleNodeWriter) => AccessMode::SingleNodeWriter,
        Ok(Mode::SingleNodeReaderOnly) => AccessMode::SingleNodeReaderOnly,
        Ok(Mode::SingleNodeSingleWriter) => AccessMode::SingleNodeSingleWriter,
        Ok(Mode::SingleNodeMultiWriter) => AccessMode::SingleNodeMultiWriter,
        Ok(Mode::MultiNodeReaderOnly) => AccessMode::MultiNodeReaderOnly,
        Ok(Mode::MultiNodeSingleWriter) => AccessMode::MultiNodeSingleWriter,
        Ok(Mode::MultiNodeMultiWriter) => AccessMode::MultiNodeMultiWriter,
        _ => {
            return Err(Error::invalid(format!(
                "volume_capability.access_mode {} is unknown",
                mode.mode
            )))
        }
    };
    Ok(Capability {
        kind,
        mode,
        fs_type,
        mount_flags,
    })
}

pub fn capabilities(caps: &[csi::VolumeCapability]) -> Result<Vec<Capability>> {
    if caps.is_empty() {
        return Err(Error::invalid("volume_capabilities are required"));
    }
    caps.iter().map(capability).collect()
}

pub fn required_capability(cap: Option<&csi::VolumeCapability>) -> Result<Capability> {
    capability(cap.ok_or_else(|| Error::invalid("volume_capability is required"))?)
}

pub fn capacity_range(range: Option<&csi::CapacityRange>) -> Result<CapacityRange> {
    let Some(r) = range else {
        return Ok(CapacityRange::default());
    };
    if r.required_bytes < 0 || r.limit_bytes < 0 {
        return Err(Error::invalid("capacity_range values must not be negative"));
    }
    Ok(CapacityRange {
        required: r.required_bytes as u64,
        limit: r.limit_bytes as u64,
    })
}

fn segments(topologies: &[csi::Topology]) -> Vec<BTreeMap<String, String>> {
    topologies.iter().map(|t| parameters(&t.segments)).collect()
}

pub fn topology_requirement(t: Option<&csi::TopologyRequirement>) -> Option<TopologyRequirement> {
    t.map(|t| TopologyRequirement {
        requisite: segments(&t.requisite),
        preferred: segments(&t.preferred),
    })
}

pub fn parameters(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn node_topology(node: &str) -> csi::Topology {
    csi::Topology {
        segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_string(), node.to_string())]),
    }
}

pub fn volume(info: &VolumeInfo) -> csi::Volume {
    csi::Volume {
        capacity_bytes: info.capacity_bytes as i64,
        volume_id: info.id.clone(),
        volume_context: info.context.clone().into_iter().collect(),
        content_source: None,
        accessible_topology: info.node.iter().map(|n| node_topology(n)).collect(),
    }
}

pub fn condition(c: &crate::volume::VolumeCondition) -> csi::VolumeCondition {
    csi::VolumeCondition {
        abnormal: c.abnormal,
        message: c.message.clone(),
    }
}

/// ListVolumes tokens are opaque to the CO: "v1." + the hex of the last name returned, so a
/// token keeps working when volumes come and go between pages, and a foreign one is detected.
pub fn encode_token(after: &str) -> String {
    format!("v1.{}", crate::os::fsutil::hex(after.as_bytes()))
}

pub fn decode_token(token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::BadToken(token.to_string());
    let hex = token.strip_prefix("v1.").ok_or_else(bad)?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map(Some).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_foreign() {
        assert_eq!(
            decode_token(&encode_token("pvc-1")).unwrap().as_deref(),
            Some("pvc-1")
        );
        assert_eq!(decode_token("").unwrap(), None);
        for bad in ["invalid-token", "v1.", "v1.zz", "v1.abc"] {
            assert!(
                matches!(decode_token(bad), Err(Error::BadToken(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn paths_must_be_absolute_and_stay_put() {
        assert!(abs_path("target_path", "/var/lib/x").is_ok());
        for bad in ["", "relative", "/a/../b", "/a\0b"] {
            assert!(abs_path("target_path", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capability_requires_type_and_mode() {
        let mut cap = csi::VolumeCapability {
            access_type: Some(AccessType::Block(csi::volume_capability::BlockVolume {})),
            access_mode: None,
        };
        assert!(capability(&cap).is_err());
        cap.access_mode = Some(csi::volume_capability::AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        });
        assert_eq!(capability(&cap).unwrap().kind, AccessKind::Block);
        cap.access_type = None;
        assert!(capability(&cap).is_err());
    }
}
