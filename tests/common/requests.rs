//! Request builders and status checks.

use super::*;

pub fn mount_cap() -> csi::VolumeCapability {
    mount_cap_with(Mode::SingleNodeWriter, &[])
}

pub fn mount_cap_with(mode: Mode, flags: &[&str]) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Mount(
            csi::volume_capability::MountVolume {
                fs_type: String::new(),
                mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                volume_mount_group: String::new(),
            },
        )),
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

pub fn block_cap() -> csi::VolumeCapability {
    block_cap_with(Mode::SingleNodeWriter)
}

pub fn block_cap_with(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Block(
            csi::volume_capability::BlockVolume {},
        )),
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

pub fn range(required: i64, limit: i64) -> Option<csi::CapacityRange> {
    Some(csi::CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}

pub fn create_req(name: &str, bytes: i64, cap: csi::VolumeCapability) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: range(bytes, 0),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

pub fn delete_req(id: &str) -> csi::DeleteVolumeRequest {
    csi::DeleteVolumeRequest {
        volume_id: id.to_string(),
        ..Default::default()
    }
}

pub fn get_req(id: &str) -> csi::ControllerGetVolumeRequest {
    csi::ControllerGetVolumeRequest {
        volume_id: id.to_string(),
    }
}

pub fn controller_publish_req(
    id: &str,
    cap: csi::VolumeCapability,
    readonly: bool,
) -> csi::ControllerPublishVolumeRequest {
    csi::ControllerPublishVolumeRequest {
        volume_id: id.to_string(),
        node_id: NODE.to_string(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

pub fn controller_unpublish_req(id: &str) -> csi::ControllerUnpublishVolumeRequest {
    csi::ControllerUnpublishVolumeRequest {
        volume_id: id.to_string(),
        node_id: NODE.to_string(),
        ..Default::default()
    }
}

pub fn expand_req(id: &str, bytes: i64) -> csi::ControllerExpandVolumeRequest {
    csi::ControllerExpandVolumeRequest {
        volume_id: id.to_string(),
        capacity_range: range(bytes, 0),
        ..Default::default()
    }
}

pub fn node_expand_req(id: &str, path: &Path, bytes: i64) -> csi::NodeExpandVolumeRequest {
    csi::NodeExpandVolumeRequest {
        volume_id: id.to_string(),
        volume_path: path_str(path),
        capacity_range: range(bytes, 0),
        ..Default::default()
    }
}

pub fn validate_req(
    id: &str,
    cap: csi::VolumeCapability,
) -> csi::ValidateVolumeCapabilitiesRequest {
    csi::ValidateVolumeCapabilitiesRequest {
        volume_id: id.to_string(),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

pub fn stage_req(
    id: &str,
    staging: &Path,
    cap: csi::VolumeCapability,
) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: path_str(staging),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

pub fn unstage_req(id: &str, staging: &Path) -> csi::NodeUnstageVolumeRequest {
    csi::NodeUnstageVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: path_str(staging),
    }
}

pub fn publish_req(
    id: &str,
    staging: &Path,
    target: &Path,
    cap: csi::VolumeCapability,
    readonly: bool,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: path_str(staging),
        target_path: path_str(target),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

pub fn unpublish_req(id: &str, target: &Path) -> csi::NodeUnpublishVolumeRequest {
    csi::NodeUnpublishVolumeRequest {
        volume_id: id.to_string(),
        target_path: path_str(target),
    }
}

pub fn stats_req(id: &str, path: &Path) -> csi::NodeGetVolumeStatsRequest {
    csi::NodeGetVolumeStatsRequest {
        volume_id: id.to_string(),
        volume_path: path_str(path),
        ..Default::default()
    }
}

pub fn path_str(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_string()
}

/// Asserts that an RPC failed with `code`; returns the status for further checks.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    what: &str,
) -> tonic::Status {
    match result {
        Ok(r) => panic!("{what}: expected {code:?}, got OK: {:?}", r.into_inner()),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: wrong code, status: {s:?}");
            s
        }
    }
}
