//! Where NFS snapshots and restores live on a share, and the snapshot record format.
//!
//! ```text
//! <share root>/.ferrovol/
//!   snapshots/<key>.json       one record per snapshot (write_file_atomic)
//!   snapshot-data/<key>/       its content: a copy of the source volume's directory
//!   staging/<volume key>/      a volume being restored or cloned, renamed to its subDir when whole
//! ```
//! Snapshots sit on the share of their source volume, outside every volume directory, so
//! deleting, retaining or archiving a volume never touches them (onDelete is for volumes only).
//! `.ferrovol` can never be a volume's subDir (see layout.rs), so nothing a pod mounts reaches them.
//! A snapshot's `key` is the key of its id (`nfs/snap/<key>`, crate::snapshot): the name itself
//! when it fits, else a prefix and a hash; the record names the CreateSnapshot name, which is
//! compared before a record is taken as a request's.

use serde::{Deserialize, Serialize};

use super::layout::{RecordState, RECORD_SUFFIX};
use crate::snapshot::SnapshotId;

pub const SNAP_RECORDS_DIR: &str = ".ferrovol/snapshots";
pub const SNAP_DATA_DIR: &str = ".ferrovol/snapshot-data";
pub const STAGING_DIR: &str = ".ferrovol/staging";
pub const SNAP_RECORD_VERSION: u32 = 1;

pub fn snap_record_path(key: &str) -> String {
    format!("{SNAP_RECORDS_DIR}/{key}{RECORD_SUFFIX}")
}

pub fn snap_data_path(key: &str) -> String {
    format!("{SNAP_DATA_DIR}/{key}")
}

pub fn staging_path(volume_key: &str) -> String {
    format!("{STAGING_DIR}/{volume_key}")
}

/// The snapshot id whose key is `key`, if `key` is a well-formed snapshot key.
pub fn snapshot_id(key: &str) -> Option<SnapshotId> {
    let (backend, snap) = (super::BACKEND, crate::snapshot::SNAP_SEGMENT);
    let id = SnapshotId::parse(&format!("{backend}/{snap}/{key}"))
        .ok()
        .flatten();
    id.filter(|id| id.key == key && id.node.is_none())
}

/// The key a file in the snapshot records directory belongs to; `None` for temporary files.
pub fn key_of_snap_record(file_name: &str) -> Option<&str> {
    let key = file_name.strip_suffix(RECORD_SUFFIX)?;
    snapshot_id(key).map(|_| key)
}

/// `.ferrovol/snapshots/<key>.json`. `Creating` until the copy is whole (CreateSnapshot answers
/// ready_to_use=false meanwhile), `Deleting` while DeleteSnapshot removes the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub version: u32,
    pub id: String,
    /// The CreateSnapshot name (a repeated CreateSnapshot with it is this snapshot).
    pub name: String,
    pub state: RecordState,
    pub source_volume_id: String,
    /// The source volume's directory when the snapshot was taken (the copy reads it).
    pub source_sub_dir: String,
    pub server: String,
    pub share: String,
    /// The source volume's capacity: the least a volume restored from it can have.
    pub size_bytes: u64,
    /// Milliseconds since the epoch (CSI creation_time).
    pub created_at_ms: u64,
    /// Bytes of file content copied (informative; set when Ready).
    #[serde(default)]
    pub content_bytes: u64,
    /// The file handle of the source volume's directory (layout.rs): a copy, resumed after a
    /// restart too, reads `source_sub_dir` only while it is still that directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_handle: Option<String>,
    /// The NFS version of `source_handle` (absent: `3`; see `VolumeRecord::nfs_vers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_vers: Option<String>,
}

impl SnapshotRecord {
    pub fn version(&self) -> crate::nfs::Version {
        super::layout::record_version(self.nfs_vers.as_deref())
    }

    pub fn key(&self) -> String {
        let id = SnapshotId::parse(&self.id).ok().flatten();
        id.expect("snapshot records carry our ids").key
    }

    pub fn data_path(&self) -> String {
        snap_data_path(&self.key())
    }

    /// Decodes the record read from `snap_record_path(key)`, refusing one that claims another
    /// key or a newer format.
    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<SnapshotRecord, String> {
        let path = snap_record_path(key);
        let r: SnapshotRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("snapshot record {path}: {e}"))?;
        if r.version > SNAP_RECORD_VERSION {
            return Err(format!(
                "snapshot record {path} has format version {}, this driver reads up to {SNAP_RECORD_VERSION}",
                r.version
            ));
        }
        match SnapshotId::parse(&r.id).ok().flatten() {
            Some(id) if id.key == key && id.backend == super::BACKEND => Ok(r),
            _ => Err(format!("snapshot record {path} names snapshot {:?}", r.id)),
        }
    }
}

/// VolumeSnapshotClass parameters: none of its own yet; unknown keys are InvalidArgument
/// (`csi.storage.k8s.io/*` keys from the snapshotter are skipped).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapParams {}

#[cfg(test)]
mod tests {
    use super::super::layout::to_bytes;
    use super::*;

    #[test]
    fn keys_paths_and_records() {
        let id = SnapshotId::new(super::super::BACKEND, None, "snap-1").unwrap();
        assert_eq!(id.to_string(), "nfs/snap/snap-1");
        assert_eq!(snapshot_id("snap-1"), Some(id.clone()));
        assert_eq!(snapshot_id(".x"), None);
        assert_eq!(key_of_snap_record("snap-1.json"), Some("snap-1"));
        assert_eq!(key_of_snap_record(".ferrovol-tmp-1-2-3"), None);
        assert_eq!(snap_data_path("a"), ".ferrovol/snapshot-data/a");
        let r = SnapshotRecord {
            version: 1,
            id: id.to_string(),
            name: "snap-1".into(),
            state: RecordState::Creating,
            source_volume_id: "nfs/pvc-1".into(),
            source_sub_dir: "pvc-1".into(),
            server: "s".into(),
            share: "/x".into(),
            size_bytes: 1,
            created_at_ms: 2,
            content_bytes: 0,
            source_handle: None,
            nfs_vers: None,
        };
        assert_eq!(r.key(), "snap-1");
        assert_eq!(
            SnapshotRecord::from_bytes("snap-1", &to_bytes(&r)).unwrap(),
            r
        );
        assert!(SnapshotRecord::from_bytes("snap-2", &to_bytes(&r)).is_err());
    }
}
