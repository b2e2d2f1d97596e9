//! Snapshot domain types shared by the CSI layer and the backends: snapshot ids, the content
//! source of a new volume, and what a backend reports about a snapshot.
//!
//! A snapshot id is `<backend>/<node>/snap/<key>` (node-local backends) or `<backend>/snap/<key>`:
//! it names the backend and node that hold the snapshot. Volume ids have at most three parts
//! and never contain a `snap` node segment for node-local backends, so a snapshot id given as a
//! volume id parses to no volume (NotFound) and a volume id given as a snapshot id likewise.

use crate::error::Result;
use crate::volume::{VolumeId, MAX_ID_LEN};
use std::fmt;
use std::time::SystemTime;

/// The segment that marks an id as a snapshot's.
pub const SNAP_SEGMENT: &str = "snap";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId {
    pub backend: String,
    pub node: Option<String>,
    pub key: String,
}

impl SnapshotId {
    /// The id of snapshot `name` taken by `backend` on `node` (None: a cluster-wide backend).
    /// `key` is the name itself when the id fits 128 bytes, else a prefix plus its hash.
    pub fn new(backend: &str, node: Option<&str>, name: &str) -> Result<Self> {
        let node = node.map(VolumeId::node_tag);
        let fixed =
            backend.len() + SNAP_SEGMENT.len() + 2 + node.as_ref().map_or(0, |n| n.len() + 1);
        let key = VolumeId::key_within("snapshot name", name, MAX_ID_LEN - fixed)?;
        let backend = backend.to_string();
        Ok(SnapshotId { backend, node, key })
    }

    /// Parses a snapshot id from a request: `Err` (InvalidArgument) for an empty, oversized or
    /// path-escaping id; `Ok(None)` for a well-formed string that names no snapshot of ours.
    pub fn parse(raw: &str) -> Result<Option<Self>> {
        crate::volume::check_raw_id("snapshot_id", raw)?;
        // Parsed as the volume id it is without its snapshot segment.
        let Some(as_volume) = raw.rsplit_once('/').and_then(|(head, key)| {
            let head = head.strip_suffix(SNAP_SEGMENT)?.strip_suffix('/')?;
            Some(format!("{head}/{key}"))
        }) else {
            return Ok(None);
        };
        let parts = VolumeId::parse(&as_volume).ok().flatten();
        Ok(parts.map(|VolumeId { backend, node, key }| SnapshotId { backend, node, key }))
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{}/{}/{SNAP_SEGMENT}/{}", self.backend, node, self.key),
            None => write!(f, "{}/{SNAP_SEGMENT}/{}", self.backend, self.key),
        }
    }
}

/// Where a new volume's content comes from (CreateVolume's `volume_content_source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentSource {
    Snapshot(SnapshotId),
    Volume(VolumeId),
}

impl ContentSource {
    /// The id as the CO sent it.
    pub fn id(&self) -> String {
        match self {
            ContentSource::Snapshot(s) => s.to_string(),
            ContentSource::Volume(v) => v.to_string(),
        }
    }

    pub fn backend(&self) -> &str {
        match self {
            ContentSource::Snapshot(s) => &s.backend,
            ContentSource::Volume(v) => &v.backend,
        }
    }
}

/// CreateSnapshot, decoded.
#[derive(Debug, Clone)]
pub struct SnapshotRequest {
    pub name: String,
    pub source: VolumeId,
    pub parameters: std::collections::BTreeMap<String, String>,
}

/// What a backend reports about a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub id: String,
    pub source_volume_id: String,
    /// The source volume's capacity: the least a volume restored from it can have.
    pub size_bytes: u64,
    pub created: SystemTime,
    pub ready: bool,
}

/// ListSnapshots filters, decoded (both None: every snapshot).
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub snapshot: Option<SnapshotId>,
    pub source: Option<VolumeId>,
}

pub type SnapshotPage = crate::backend::Page<SnapshotInfo>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_volume_ids_never_parse_as_each_other() {
        let s = SnapshotId::new("hostpath", Some("node-1"), "snap-1").unwrap();
        assert_eq!(s.to_string(), "hostpath/node-1/snap/snap-1");
        assert_eq!(SnapshotId::parse(&s.to_string()).unwrap(), Some(s.clone()));
        assert_eq!(VolumeId::parse(&s.to_string()).unwrap(), None);
        let v = VolumeId::for_volume("hostpath", "node-1", "snap").unwrap();
        assert_eq!(SnapshotId::parse(&v.to_string()).unwrap(), None);
        assert!(SnapshotId::parse("").is_err());
        assert!(SnapshotId::parse("hostpath/n/snap/..").is_err());
        assert_eq!(SnapshotId::parse("some-id").unwrap(), None);
        let c = SnapshotId::new("nfs", None, "s").unwrap();
        assert_eq!(SnapshotId::parse(&c.to_string()).unwrap(), Some(c));
    }

    #[test]
    fn long_names_are_hashed_within_128_bytes() {
        let name = "x".repeat(128);
        let s = SnapshotId::new("hostpath", Some(&"n".repeat(63)), &name).unwrap();
        assert!(s.to_string().len() <= MAX_ID_LEN, "{s}");
        assert_eq!(SnapshotId::parse(&s.to_string()).unwrap(), Some(s.clone()));
        let other = SnapshotId::new(
            "hostpath",
            Some(&"n".repeat(63)),
            &format!("{}y", "x".repeat(127)),
        );
        assert_ne!(other.unwrap(), s);
        assert!(SnapshotId::new("hostpath", Some("n"), ".hidden").is_err());
    }
}
