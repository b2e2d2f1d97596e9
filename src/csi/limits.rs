//! Size limits on CSI requests, checked before any work: a request with thousands of map
//! entries, megabyte strings or long capability lists is refused with InvalidArgument naming
//! the field and the limit, instead of costing memory or time further down.
//!
//! The transport refuses any message over [`crate::server::MAX_REQUEST_BYTES`] (1 MiB) first;
//! these limits bound what fits under it. They are generous for every legitimate caller and
//! follow Kubernetes, the one CO that matters here:
//! - maps (parameters, contexts, secrets): at most 512 entries and 256 KiB of keys plus values,
//!   the limits the Kubernetes API puts on StorageClass parameters (and 256 KiB on annotations);
//! - keys: 317 bytes, a Kubernetes qualified name (253-byte DNS prefix, '/', 63-byte name);
//! - values: 64 KiB, far above any parameter in use (a PEM certificate is about 2 KiB);
//! - ids, names, paths and tokens: 4096 bytes, Linux PATH_MAX (semantic checks, such as CSI's
//!   128 bytes for names and ids, stay with the code that interprets the field);
//! - capabilities: 16 per request (2 access types x 7 access modes = 14 distinct ones);
//! - mount flags: 64 entries and 4096 bytes in all, the page the kernel copies mount data into;
//! - topology: 10,000 entries per list (Kubernetes supports 5,000 nodes, and without strict
//!   topology the provisioner sends one entry per node), each at most 32 segments.

use crate::proto as csi;
use std::collections::HashMap;

pub const MAX_MAP_ENTRIES: usize = 512;
pub const MAX_MAP_BYTES: usize = 256 * 1024;
pub const MAX_KEY_BYTES: usize = 317;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub const MAX_STRING_BYTES: usize = 4096;
pub const MAX_CAPABILITIES: usize = 16;
pub const MAX_MOUNT_FLAGS: usize = 64;
pub const MAX_MOUNT_FLAGS_BYTES: usize = 4096;
pub const MAX_FS_TYPE_BYTES: usize = 64;
pub const MAX_TOPOLOGIES: usize = 10_000;
pub const MAX_SEGMENTS: usize = 32;

/// A request whose fields can be checked against the limits above.
pub trait WithinLimits: Send + 'static {
    /// Err names the offending field, its size and the limit.
    fn check_limits(&self) -> Result<(), String>;

    /// The volume the request is about ("" when it names none).
    fn volume_id(&self) -> &str {
        ""
    }
}

/// Err "`says`; the limit is `max`" when `n` is over `max`.
fn at_most(n: usize, max: usize, says: impl FnOnce() -> String) -> Result<(), String> {
    if n > max {
        return Err(format!("{}; the limit is {max}", says()));
    }
    Ok(())
}

/// A string field: at most `max` bytes.
pub fn string(field: &str, value: &str, max: usize) -> Result<(), String> {
    at_most(value.len(), max, || {
        format!("{field} is {} bytes", value.len())
    })
}

/// A repeated field: at most `max` entries.
fn entries(field: &str, n: usize, max: usize) -> Result<(), String> {
    at_most(n, max, || format!("{field} has {n} entries"))
}

fn id(field: &str, value: &str) -> Result<(), String> {
    string(field, value, MAX_STRING_BYTES)
}

/// A map<string, string> field: entry count, key and value lengths, total bytes.
pub fn map(field: &str, m: &HashMap<String, String>) -> Result<(), String> {
    entries(field, m.len(), MAX_MAP_ENTRIES)?;
    for (k, v) in m {
        // Name the key by a bounded prefix: the message must stay small too.
        at_most(k.len(), MAX_KEY_BYTES, || {
            format!("{field} key {:?}... is {} bytes", prefix(k), k.len())
        })?;
        at_most(v.len(), MAX_VALUE_BYTES, || {
            format!("{field}[{k:?}] is {} bytes", v.len())
        })?;
    }
    let total = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    at_most(total, MAX_MAP_BYTES, || {
        format!("{field} holds {total} bytes of keys and values")
    })
}

fn prefix(s: &str) -> &str {
    let mut end = s.len().min(32);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One VolumeCapability: fs type, group and mount flags.
pub fn capability(field: &str, cap: &csi::VolumeCapability) -> Result<(), String> {
    use csi::volume_capability::AccessType;
    if let Some(AccessType::Mount(m)) = &cap.access_type {
        string(&format!("{field}.fs_type"), &m.fs_type, MAX_FS_TYPE_BYTES)?;
        let group = format!("{field}.volume_mount_group");
        id(&group, &m.volume_mount_group)?;
        let flags = format!("{field}.mount_flags");
        entries(&flags, m.mount_flags.len(), MAX_MOUNT_FLAGS)?;
        let total: usize = m.mount_flags.iter().map(|f| f.len() + 1).sum();
        at_most(total, MAX_MOUNT_FLAGS_BYTES, || {
            format!("{flags} hold {total} bytes")
        })?;
    }
    Ok(())
}

pub fn capabilities(field: &str, caps: &[csi::VolumeCapability]) -> Result<(), String> {
    entries(field, caps.len(), MAX_CAPABILITIES)?;
    for (i, c) in caps.iter().enumerate() {
        capability(&format!("{field}[{i}]"), c)?;
    }
    Ok(())
}

fn topology(field: &str, t: &csi::Topology) -> Result<(), String> {
    entries(&format!("{field}.segments"), t.segments.len(), MAX_SEGMENTS)?;
    map(&format!("{field}.segments"), &t.segments)
}

fn topologies(field: &str, list: &[csi::Topology]) -> Result<(), String> {
    entries(field, list.len(), MAX_TOPOLOGIES)?;
    for (i, t) in list.iter().enumerate() {
        topology(&format!("{field}[{i}]"), t)?;
    }
    Ok(())
}

impl WithinLimits for csi::CreateVolumeRequest {
    fn check_limits(&self) -> Result<(), String> {
        id("name", &self.name)?;
        capabilities("volume_capabilities", &self.volume_capabilities)?;
        map("parameters", &self.parameters)?;
        map("secrets", &self.secrets)?;
        map("mutable_parameters", &self.mutable_parameters)?;
        let source = self.volume_content_source.as_ref();
        if let Some(src) = source.and_then(|s| s.r#type.as_ref()) {
            use csi::volume_content_source::Type;
            match src {
                Type::Snapshot(s) => id("volume_content_source.snapshot_id", &s.snapshot_id)?,
                Type::Volume(v) => id("volume_content_source.volume_id", &v.volume_id)?,
            }
        }
        if let Some(t) = &self.accessibility_requirements {
            topologies("accessibility_requirements.requisite", &t.requisite)?;
            topologies("accessibility_requirements.preferred", &t.preferred)?;
        }
        Ok(())
    }
}

/// A request's `volume_id`, when it has one (always its first id field).
macro_rules! volume_id_fn {
    (volume_id $(, $id:ident)*) => {
        fn volume_id(&self) -> &str {
            &self.volume_id
        }
    };
    ($($id:ident),*) => {};
}

/// Requests whose fields are only ids, capabilities and maps: one line each. Checked in the
/// order ids, repeated capabilities, maps, the single capability.
macro_rules! ids_and_maps {
    ($($req:ty => [$($id:ident),*] [$($caps:ident),*] [$($map:ident),*] [$($cap:ident),*];)*) => {$(
        impl WithinLimits for $req {
            fn check_limits(&self) -> Result<(), String> {
                $(id(stringify!($id), &self.$id)?;)*
                $(capabilities(stringify!($caps), &self.$caps)?;)*
                $(map(stringify!($map), &self.$map)?;)*
                $(if let Some(c) = &self.$cap {
                    capability(stringify!($cap), c)?;
                })*
                Ok(())
            }

            volume_id_fn!($($id),*);
        }
    )*};
}

ids_and_maps! {
    csi::DeleteVolumeRequest => [volume_id] [] [secrets] [];
    csi::ControllerPublishVolumeRequest => [volume_id, node_id] [] [secrets, volume_context]
        [volume_capability];
    csi::ControllerUnpublishVolumeRequest => [volume_id, node_id] [] [secrets] [];
    csi::ValidateVolumeCapabilitiesRequest => [volume_id] [volume_capabilities]
        [volume_context, parameters, secrets, mutable_parameters] [];
    csi::ListVolumesRequest => [starting_token] [] [] [];
    csi::ControllerGetVolumeRequest => [volume_id] [] [] [];
    csi::ControllerModifyVolumeRequest => [volume_id] [] [secrets, mutable_parameters] [];
    csi::CreateSnapshotRequest => [source_volume_id, name] [] [secrets, parameters] [];
    csi::DeleteSnapshotRequest => [snapshot_id] [] [secrets] [];
    csi::ListSnapshotsRequest => [starting_token, source_volume_id, snapshot_id] [] [secrets] [];
    csi::GetSnapshotRequest => [snapshot_id] [] [secrets] [];
    csi::ControllerExpandVolumeRequest => [volume_id] [] [secrets] [volume_capability];
    csi::NodeStageVolumeRequest => [volume_id, staging_target_path] []
        [publish_context, secrets, volume_context] [volume_capability];
    csi::NodeUnstageVolumeRequest => [volume_id, staging_target_path] [] [] [];
    csi::NodePublishVolumeRequest => [volume_id, staging_target_path, target_path] []
        [publish_context, secrets, volume_context] [volume_capability];
    csi::NodeUnpublishVolumeRequest => [volume_id, target_path] [] [] [];
    csi::NodeGetVolumeStatsRequest => [volume_id, volume_path, staging_target_path] [] [] [];
    csi::NodeExpandVolumeRequest => [volume_id, volume_path, staging_target_path] [] [secrets]
        [volume_capability];
}

impl WithinLimits for csi::GetCapacityRequest {
    fn check_limits(&self) -> Result<(), String> {
        capabilities("volume_capabilities", &self.volume_capabilities)?;
        map("parameters", &self.parameters)?;
        self.accessible_topology
            .as_ref()
            .map_or(Ok(()), |t| topology("accessible_topology", t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi::volume_capability::{AccessType, MountVolume};

    fn mount_cap(flags: Vec<String>) -> csi::VolumeCapability {
        csi::VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                mount_flags: flags,
                volume_mount_group: String::new(),
            })),
            access_mode: None,
        }
    }

    fn entries(n: usize, value: &str) -> HashMap<String, String> {
        (0..n)
            .map(|i| (format!("k{i}"), value.to_string()))
            .collect()
    }

    #[test]
    fn a_kubernetes_sized_request_passes() {
        let mut parameters = entries(MAX_MAP_ENTRIES, "v");
        parameters.insert("csi.storage.k8s.io/pvc/name".into(), "data".into());
        parameters.remove("k0");
        let req = csi::CreateVolumeRequest {
            name: "pvc-6f1c0d6e-1e4b-4a43-9b1e-3c2f0e9d8a7b".into(),
            volume_capabilities: vec![mount_cap(vec!["noatime".into()]); 2],
            parameters,
            accessibility_requirements: Some(csi::TopologyRequirement {
                requisite: vec![
                    csi::Topology {
                        segments: entries(1, "node-name-that-is-fairly-long-0001"),
                    };
                    5000
                ],
                preferred: vec![],
            }),
            ..Default::default()
        };
        req.check_limits().unwrap();
    }

    #[test]
    fn each_limit_names_the_field_and_the_limit() {
        let cases: Vec<(Result<(), String>, &str, usize)> = vec![
            (
                csi::CreateVolumeRequest {
                    parameters: entries(MAX_MAP_ENTRIES + 1, "v"),
                    ..Default::default()
                }
                .check_limits(),
                "parameters has 513 entries",
                MAX_MAP_ENTRIES,
            ),
            (
                csi::NodePublishVolumeRequest {
                    volume_context: entries(8, &"x".repeat(MAX_VALUE_BYTES + 1)),
                    ..Default::default()
                }
                .check_limits(),
                "volume_context[",
                MAX_VALUE_BYTES,
            ),
            (
                csi::NodeStageVolumeRequest {
                    publish_context: entries(300, &"x".repeat(1000)),
                    ..Default::default()
                }
                .check_limits(),
                "publish_context holds",
                MAX_MAP_BYTES,
            ),
            (
                csi::DeleteVolumeRequest {
                    secrets: [("k".repeat(400), String::new())].into(),
                    ..Default::default()
                }
                .check_limits(),
                "secrets key",
                MAX_KEY_BYTES,
            ),
            (
                csi::NodePublishVolumeRequest {
                    target_path: "/".repeat(MAX_STRING_BYTES + 1),
                    ..Default::default()
                }
                .check_limits(),
                "target_path is 4097 bytes",
                MAX_STRING_BYTES,
            ),
            (
                csi::ValidateVolumeCapabilitiesRequest {
                    volume_capabilities: vec![mount_cap(vec![]); 17],
                    ..Default::default()
                }
                .check_limits(),
                "volume_capabilities has 17",
                MAX_CAPABILITIES,
            ),
            (
                csi::NodeStageVolumeRequest {
                    volume_capability: Some(mount_cap(vec!["ro".into(); 65])),
                    ..Default::default()
                }
                .check_limits(),
                "volume_capability.mount_flags has 65",
                MAX_MOUNT_FLAGS,
            ),
            (
                csi::CreateVolumeRequest {
                    volume_capabilities: vec![mount_cap(vec!["o".repeat(5000)])],
                    ..Default::default()
                }
                .check_limits(),
                "volume_capabilities[0].mount_flags hold",
                MAX_MOUNT_FLAGS_BYTES,
            ),
            (
                csi::GetCapacityRequest {
                    accessible_topology: Some(csi::Topology {
                        segments: entries(33, "z"),
                    }),
                    ..Default::default()
                }
                .check_limits(),
                "accessible_topology.segments has 33",
                MAX_SEGMENTS,
            ),
            (
                csi::CreateVolumeRequest {
                    accessibility_requirements: Some(csi::TopologyRequirement {
                        requisite: vec![],
                        preferred: vec![csi::Topology::default(); MAX_TOPOLOGIES + 1],
                    }),
                    ..Default::default()
                }
                .check_limits(),
                "accessibility_requirements.preferred has 10001",
                MAX_TOPOLOGIES,
            ),
        ];
        for (result, field, limit) in cases {
            let err = result.unwrap_err();
            assert!(err.contains(field), "{err:?} lacks {field:?}");
            assert!(err.contains(&format!("limit is {limit}")), "{err}");
            assert!(err.len() < 200, "message too long: {} bytes", err.len());
        }
    }
}
