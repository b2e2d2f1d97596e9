//! What the hostpath backend persists about one volume.

use crate::volume::AccessKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Creation and deletion are recorded before they touch the disk, so a restart knows whether to
/// roll a half-made volume back (never acknowledged to the CO) or finish a deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Creating,
    Ready,
    Deleting,
}

/// How the volume's capacity is enforced, when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Enforcement {
    ProjectQuota { id: u32 },
    BtrfsQgroup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub read_only: bool,
    #[serde(default)]
    pub mount_flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub id: String,
    pub name: String,
    pub phase: Phase,
    pub kind: AccessKind,
    pub capacity_bytes: u64,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Set when the capacity is a hard limit; None when it is advisory.
    pub enforced_by: Option<Enforcement>,
    /// node id -> read-only
    #[serde(default)]
    pub controller_published: BTreeMap<String, bool>,
    #[serde(default)]
    pub staged_at: Option<PathBuf>,
    #[serde(default)]
    pub published: BTreeMap<PathBuf, Publication>,
}

impl VolumeRecord {
    pub fn in_use(&self) -> Option<String> {
        if let Some(node) = self.controller_published.keys().next() {
            return Some(format!("still published to node {node}"));
        }
        if let Some(t) = self.published.keys().next() {
            return Some(format!("still mounted at {}", t.display()));
        }
        if let Some(s) = &self.staged_at {
            return Some(format!("still staged at {}", s.display()));
        }
        None
    }
}
