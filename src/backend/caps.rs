//! What a backend can do. The CSI services answer capability RPCs from the union over the
//! backends a process serves, and reject a request a volume's own backend cannot serve.

use crate::error::{Error, Result};
use crate::volume::{AccessKind, Capability};

/// Where a backend's volumes can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// On the node that made them (topology `topology.ferrovol.io/node`).
    NodeLocal,
    /// On any node of the cluster.
    Cluster,
}

/// How a volume grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expansion {
    /// Cannot grow.
    None,
    /// Grows while in use (a quota limit, an NFS record).
    Online,
    /// Grows up to a fixed size only (a whole device): requests within it succeed at once.
    UpToDevice,
}

#[derive(Debug, Clone)]
pub struct BackendCaps {
    pub reach: Reach,
    pub multi_node: bool,
    /// Raw block access (every backend offers filesystem access).
    pub block: bool,
    /// ControllerPublish records the attachment (a per-node limit applies).
    pub controller_publish: bool,
    pub stage: bool,
    pub expansion: Expansion,
    /// Expansion has a node step (grow a filesystem, refresh a loop device).
    pub node_expansion: bool,
    /// CreateVolume (without a content source) and DeleteVolume touch only local metadata and
    /// wait for one journal commit (a delete also removes the volume's files): short enough to
    /// run on the RPC's own worker thread when the server is otherwise idle (`csi::in_place`).
    pub quick_provisioning: bool,
    /// CreateVolume from another volume.
    pub clone: bool,
}

impl BackendCaps {
    /// Why `cap` cannot be served, or None.
    pub fn refuse(&self, backend: &str, cap: &Capability) -> Option<String> {
        if !cap.mode.single_node() && !self.multi_node {
            return Some(format!(
                "access mode {:?} needs several nodes; {backend} volumes live on one node",
                cap.mode
            ));
        }
        let no_block = cap.kind == AccessKind::Block && !self.block;
        no_block.then(|| format!("{backend} volumes offer no raw block access"))
    }

    /// Why `cap` cannot be served on an existing volume of `kind`, or None.
    pub fn refuse_on(&self, backend: &str, cap: &Capability, kind: AccessKind) -> Option<String> {
        let asked = cap.kind;
        let why = || format!("access type {asked:?} does not match the volume's {kind:?}");
        self.refuse(backend, cap)
            .or_else(|| (asked != kind).then(why))
    }

    /// The one access kind a set of capabilities asks for, after checking each is one we serve.
    pub fn access_kind(
        &self,
        backend: &str,
        volume: &str,
        caps: &[Capability],
    ) -> Result<AccessKind> {
        let first = caps.first().ok_or_else(|| {
            Error::invalid(format!("volume {volume}: volume_capabilities are required"))
        })?;
        match caps
            .iter()
            .find_map(|c| self.refuse_on(backend, c, first.kind))
        {
            Some(why) => Err(Error::invalid(format!("volume {volume}: {why}"))),
            None => Ok(first.kind),
        }
    }
}

/// GetCapacity's answer: what can be provisioned now, and the largest single volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub available: u64,
    pub maximum_volume_size: u64,
}

impl Capacity {
    /// One pool of space: any volume up to all of it.
    pub fn pooled(available: u64) -> Self {
        Capacity {
            available,
            maximum_volume_size: available,
        }
    }
}
