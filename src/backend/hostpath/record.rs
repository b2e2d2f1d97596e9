//! What the hostpath backend persists about one volume, beside the shared record fields.

use serde::{Deserialize, Serialize};

/// How the volume's capacity is enforced, when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Enforcement {
    ProjectQuota { id: u32 },
    BtrfsQgroup,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostpathData {
    /// Set when the capacity is a hard limit; None when it is advisory.
    #[serde(default)]
    pub enforced_by: Option<Enforcement>,
    /// The snapshot or volume id the volume was created from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A random token naming this create of the volume, also set on its directory
    /// (in its markers, `os::markers`). Recovery finishes a delete only when the trash carries
    /// the incarnation of the record, so the trash of an earlier volume of the same name never
    /// takes the current one with it. None in records written before incarnations existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Where an adopted volume's directory was before adoption moved it into the base (see
    /// `adopt`); None for a volume the driver made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_from: Option<std::path::PathBuf>,
}

pub type VolumeRecord = crate::state::VolumeRecord<HostpathData>;
