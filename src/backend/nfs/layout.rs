//! Where the NFS backend keeps things on a share, and the volume record format.
//!
//! ```text
//! <share root>/
//!   <subDir per pattern>/          the volume directories (possibly nested)
//!   archived-<dir>-<timestamp>     archived volumes, beside the directory they were
//!   .ferrovol/volumes/<key>.json   one record per volume, written with write_file_atomic
//! ```
//! NFS (this client) carries no extended attributes, so the record is the proof of ownership: a
//! directory is the volume's only when the record under its key names it (`sub_dir`) and it has
//! the file handle the record keeps (`dir_handle`). Delete and archive touch `sub_dir` only,
//! never its parents. Patterns never expand to `.ferrovol` (pattern.rs), so volumes and records
//! cannot meet.
//!
//! ## The directory's identity
//!
//! A path names whatever sits there now: after a DeleteVolume removed the directory and failed
//! to remove the record, another volume can make the same subDir again (a StatefulSet's PVC
//! made again, with a `namespace/name` pattern), and a retry acting on the path would remove
//! its data. So the record keeps the handle of the directory the driver made (MKDIR answers
//! it), and every remove, rename and copy of `sub_dir` first compares the handle found there
//! with it; another handle is another directory, never touched (a delete then only removes the
//! record). Unlike a fileid, a handle is not reused: Linux and nfs-ganesha put the inode
//! generation in it. A server that changes its handles (an export moved to another filesystem)
//! makes the driver leave directories in place, never remove others.
//!
//! A record without a handle (written before the field existed, or a crash between MKDIR and
//! the record write) is judged by its state, since only some states prove that the directory
//! at `sub_dir` is the one the driver made:
//! - `Ready`: no delete has removed the directory since it was made (a delete writes `Deleting`
//!   first), so the directory there is the volume's. DeleteVolume records its handle in the
//!   `Deleting` intent before touching it (no directory there: the empty handle, which no
//!   directory has). Blind spot: a directory removed by hand and made again by another volume
//!   while this record stayed `Ready`.
//! - `Deleting`: the directory may already be gone, and what is there now another volume's.
//!   DeleteVolume with a directory present fails with FailedPrecondition naming both (an
//!   operator removes one or the other); with none there, the record goes.
//! - `Creating`: the CO never saw the volume, so its directory holds nothing of a pod's. When
//!   another record on the share names the same subDir, the directory may be that volume's
//!   (made after this create was cut off before its MKDIR) and is left alone. Otherwise the
//!   rollback records the handle it finds (so a retry after a failed record removal never acts
//!   on a directory made since), then removes the directory with one RMDIR, which the server
//!   refuses unless it is empty. A create never removes more than an empty directory, except a
//!   restore's own copy, proven by its staging handle.
//!
//! ## Snapshots and restores
//!
//! ```text
//! <share root>/.ferrovol/
//!   snapshots/<key>.json       one record per snapshot (write_file_atomic)
//!   snapshot-data/<key>/       its content: a copy of the source volume's directory
//!   staging/<volume key>/      a volume being restored or cloned, renamed to its subDir when whole
//!   copies/<name>.json         a snapshot copy or restore in flight, showing life (alive.rs)
//! ```
//! Snapshots sit on the share of their source volume, outside every volume directory, so
//! deleting, retaining or archiving a volume never touches them (onDelete is for volumes only).
//! `.ferrovol` can never be a volume's subDir (see above), so nothing a pod mounts reaches them.
//! A snapshot's `key` is the key of its id (`nfs/snap/<key>`, crate::snapshot): the name itself
//! when it fits, else a prefix and a hash; the record names the CreateSnapshot name, which is
//! compared before a record is taken as a request's.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::params::OnDelete;
use super::pattern::ARCHIVE_PREFIX;
use crate::nfs::{SetAttr, Version};
use crate::snapshot::SnapshotId;

pub const META_DIR: &str = ".ferrovol";
pub const RECORDS_DIR: &str = ".ferrovol/volumes";
pub const RECORD_SUFFIX: &str = ".json";
pub const ID_PREFIX: &str = "nfs/";
/// CSI caps volume ids at 128 bytes.
pub const MAX_ID_LEN: usize = 128;
/// Hex digits of a share key (see `share_key`).
pub const SHARE_KEY_LEN: usize = 8;
/// Keys of ids that name no share (`nfs/<key>`, issued before ids named their share).
const MAX_LEGACY_KEY_LEN: usize = MAX_ID_LEN - ID_PREFIX.len();
/// Keys of ids that name their share (`nfs/<share key>/<key>`).
const MAX_KEY_LEN: usize = MAX_LEGACY_KEY_LEN - SHARE_KEY_LEN - 1;
const NAME_MAX: usize = 255;

/// 64-bit FNV-1a: stable across builds and platforms (std's hasher is not), so ids computed
/// today match ids computed after an upgrade.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn safe_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
}

/// The short stable key of export `server:share` that volume ids carry: 8 hex digits of a
/// 64-bit FNV-1a of `server:share`, folded. Short, so ids keep room for the PVC name; the share
/// registry refuses a second share whose key collides with a registered one.
pub fn share_key(server: &str, share: &str) -> String {
    let h = fnv1a(&format!("{server}:{share}"));
    format!("{:08x}", (h ^ (h >> 32)) as u32)
}

pub fn is_share_key(s: &str) -> bool {
    s.len() == SHARE_KEY_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The record key of the volume CreateVolume calls `name`. The name itself when it is made of
/// `[a-z0-9.-]`, does not start with '.', and fits; otherwise the safe characters of a prefix,
/// `~`, and a 64-bit hash of the whole name. A verbatim key never contains `~`, so hashed and
/// verbatim keys cannot collide; a hash collision between two long names is detected by the
/// caller, which compares the record's `name` before treating a record as this volume's.
pub fn volume_key(name: &str) -> String {
    if valid_key(name, MAX_KEY_LEN) && !name.contains('~') {
        return name.to_string();
    }
    let prefix: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|&c| safe_char(c))
        .skip_while(|&c| c == '.')
        .take(MAX_KEY_LEN - 17)
        .collect();
    format!("{prefix}~{:016x}", fnv1a(name))
}

/// The volumeHandle prefix of a static PersistentVolume of an existing directory, written by
/// hand (docs/adoption.md): `nfs/static/<name>`. `static` is no share key (8 hex digits), so
/// `parse_id` never reads such a handle as a provisioned volume's, and no CreateVolume issues it.
pub const STATIC_ID_PREFIX: &str = "nfs/static/";

/// Whether `id` is a static volume's handle: the node publishes it from its volume context;
/// the controller owns nothing of it.
pub fn is_static_id(id: &str) -> bool {
    id.strip_prefix(STATIC_ID_PREFIX)
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// The id of volume `key` on the share whose key is `share_key`: `nfs/<share key>/<key>`.
pub fn share_volume_id(share_key: &str, key: &str) -> String {
    format!("{ID_PREFIX}{share_key}/{key}")
}

/// An id of the form issued before ids named their share: `nfs/<key>`.
pub fn volume_id(key: &str) -> String {
    format!("{ID_PREFIX}{key}")
}

fn valid_key(key: &str, max: usize) -> bool {
    !key.is_empty()
        && key.len() <= max
        && !key.starts_with('.')
        && key.chars().all(|c| safe_char(c) || c == '~')
}

/// The share key and the key of a volume id, when the id is one of ours and well formed: the
/// share key is `None` for an id that names no share (`nfs/<key>`). Anything else (other
/// backends' ids, snapshot ids, ids that could reach outside the records directory) is `None`.
pub fn parse_id(id: &str) -> Option<(Option<&str>, &str)> {
    let rest = id.strip_prefix(ID_PREFIX)?;
    if id.len() > MAX_ID_LEN {
        return None;
    }
    match rest.split_once('/') {
        Some((share, key)) => {
            (is_share_key(share) && valid_key(key, MAX_KEY_LEN)).then_some((Some(share), key))
        }
        None => valid_key(rest, MAX_LEGACY_KEY_LEN).then_some((None, rest)),
    }
}

/// The key inside a volume id of either form (see `parse_id`).
pub fn parse_volume_id(id: &str) -> Option<&str> {
    parse_id(id).map(|(_, key)| key)
}

/// The share key a volume id names; `None` for ids of the older form and for ids not ours.
pub fn share_key_of(id: &str) -> Option<&str> {
    parse_id(id).and_then(|(share, _)| share)
}

/// Path of the volume's record, relative to the share root.
pub fn record_path(key: &str) -> String {
    format!("{RECORDS_DIR}/{key}{RECORD_SUFFIX}")
}

/// The key a file in the records directory belongs to; `None` for temporary files and strays.
pub fn key_of_record_file(file_name: &str) -> Option<&str> {
    let key = file_name.strip_suffix(RECORD_SUFFIX)?;
    parse_volume_id(&volume_id(key)).map(|_| key)
}

/// Where an archived volume goes: `archived-<dir>-<UTC timestamp>` beside `sub_dir`. A name
/// that would pass 255 bytes keeps a shortened `<dir>`. Callers that find the name taken (two
/// archives in one second) add `attempt` > 0, which appends `-<attempt>`.
pub fn archive_path(sub_dir: &str, at: SystemTime, attempt: u32) -> String {
    // `parent` keeps its trailing '/' (empty for a top-level directory).
    let dir = sub_dir.rsplit('/').next().unwrap_or(sub_dir);
    let parent = &sub_dir[..sub_dir.len() - dir.len()];
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut suffix = format!("-{}", utc_timestamp(secs));
    if attempt > 0 {
        suffix.push_str(&format!("-{attempt}"));
    }
    let room = NAME_MAX - ARCHIVE_PREFIX.len() - suffix.len();
    let mut cut = dir.len().min(room);
    while !dir.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{parent}{ARCHIVE_PREFIX}{}{suffix}", &dir[..cut])
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC).
pub fn utc_timestamp(secs: u64) -> String {
    let at = k8s_openapi::chrono::DateTime::from_timestamp(secs as i64, 0).unwrap_or_default();
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Lifecycle of a record: written `Creating` before the directory is made and `Deleting` before
/// it is removed, so a controller restarted halfway knows what to finish or roll back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    #[default]
    Creating,
    Ready,
    Deleting,
}

/// `.ferrovol/volumes/<key>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Format version, for readers after an upgrade.
    pub version: u32,
    pub id: String,
    /// The CreateVolume name (idempotency: a retried CreateVolume with the same name is this volume).
    pub name: String,
    pub state: RecordState,
    pub server: String,
    pub share: String,
    /// The volume's directory, relative to the share root: the only path delete or archive touch.
    pub sub_dir: String,
    pub on_delete: OnDelete,
    pub capacity_bytes: u64,
    pub mount_permissions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// The snapshot or volume id the content came from (CreateVolume with a content source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The file handle (hex) of the directory made for the volume (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_handle: Option<String>,
    /// While a restore copies: its staging directory, and the handle of the `content`
    /// directory the copy goes to (RENAME keeps it, so it proves a subDir that has it is this
    /// restore's copy; see restore.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_handle: Option<String>,
    /// Records of earlier versions kept the staging directory's fileid instead; fileids are
    /// reused once freed, so it is read but proves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_fileid: Option<u64>,
    /// The NFS version the handles above were taken with, `3` or `4.1` (absent: `3`). An NFSv3
    /// handle and an NFSv4.1 handle of one directory differ, so every proof is made with a
    /// client of this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_vers: Option<String>,
}

impl VolumeRecord {
    /// Decodes a record read from `record_path(key)`, refusing one that claims another key
    /// (a copied or tampered file) or a newer format.
    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<VolumeRecord, String> {
        let path = record_path(key);
        let r: VolumeRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("volume record {path}: {e}"))?;
        if r.version > RECORD_VERSION {
            return Err(format!(
                "volume record {path} has format version {}, this driver reads up to {RECORD_VERSION}",
                r.version
            ));
        }
        if parse_volume_id(&r.id) != Some(key) {
            let want = volume_id(key);
            return Err(format!(
                "volume record {path} names volume {:?}, not {want:?}",
                r.id
            ));
        }
        Ok(r)
    }

    pub fn version(&self) -> Version {
        record_version(self.nfs_vers.as_deref())
    }

    /// The mode and owner of the volume's root directory.
    pub fn root_attr(&self) -> SetAttr {
        SetAttr {
            mode: Some(self.mount_permissions),
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// The key of the record's id (records carry ids of this backend: `from_bytes` checks).
    pub fn key(&self) -> &str {
        parse_volume_id(&self.id).expect("records carry our ids")
    }
}

/// The NFS version a record's handles belong to: `nfs_vers`, or NFSv3 for records written
/// before the field existed (the driver then spoke NFSv3 only).
pub fn record_version(nfs_vers: Option<&str>) -> Version {
    match nfs_vers {
        Some("4.1") => Version::V41,
        _ => Version::V3,
    }
}

pub const RECORD_VERSION: u32 = 1;

/// A record as written on the share: pretty JSON and a newline.
pub fn to_bytes(rec: &impl Serialize) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(rec).expect("a record always serialises");
    v.push(b'\n');
    v
}

/// Seconds since the epoch, for `created_at` (0 on a clock before 1970).
pub(super) fn now_secs() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map_or(0, |d| d.as_secs())
}

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
        record_version(self.nfs_vers.as_deref())
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
#[path = "layout_tests.rs"]
mod tests;
