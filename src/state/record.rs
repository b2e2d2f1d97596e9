//! What every backend persists about a volume: identity, size, parameters and where it is
//! published. Backend-specific fields ride along in `backend` (flattened into the same JSON).

use crate::volume::AccessKind;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::{fmt, io};

/// Decodes the stored record `what`; one that does not decode is InvalidData naming it.
pub fn decode<T: DeserializeOwned>(what: impl fmt::Display, raw: &[u8]) -> io::Result<T> {
    serde_json::from_slice(raw).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("state record {what}: {e}"),
        )
    })
}

/// A volume is Ready once its record is committed. Backends whose work spans several steps that
/// cannot be undone from markers alone (wiping a device) commit an intent first: Creating or
/// Deleting, which recovery rolls back or finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Creating,
    #[default]
    Ready,
    Deleting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub read_only: bool,
    #[serde(default)]
    pub mount_flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord<E> {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub phase: Phase,
    pub kind: AccessKind,
    pub capacity_bytes: u64,
    /// The StorageClass parameters that define the volume (compared on a repeated create).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// node id -> read-only
    #[serde(default)]
    pub controller_published: BTreeMap<String, bool>,
    #[serde(default)]
    pub staged_at: Option<PathBuf>,
    #[serde(default)]
    pub published: BTreeMap<PathBuf, Publication>,
    #[serde(flatten)]
    pub backend: E,
}

/// What a ledger indexes a record by: its name (the journal key), its id, the bytes it
/// promises, and the nodes it is ControllerPublished to.
pub trait Record: Clone + Serialize + DeserializeOwned {
    fn name(&self) -> &str;
    fn id(&self) -> &str;
    fn capacity_bytes(&self) -> u64;
    fn published_nodes(&self) -> Vec<&str> {
        Vec::new()
    }
}

impl<E: Clone + Serialize + DeserializeOwned> Record for VolumeRecord<E> {
    fn name(&self) -> &str {
        &self.name
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    fn published_nodes(&self) -> Vec<&str> {
        self.controller_published
            .keys()
            .map(String::as_str)
            .collect()
    }
}

impl<E> VolumeRecord<E> {
    pub fn new(
        id: String,
        name: String,
        kind: AccessKind,
        capacity_bytes: u64,
        backend: E,
    ) -> Self {
        VolumeRecord {
            id,
            name,
            phase: Phase::Ready,
            kind,
            capacity_bytes,
            parameters: BTreeMap::new(),
            controller_published: BTreeMap::new(),
            staged_at: None,
            published: BTreeMap::new(),
            backend,
        }
    }

    /// Why the volume cannot be deleted now, if it cannot.
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
