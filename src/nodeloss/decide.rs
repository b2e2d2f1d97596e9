//! The decision, with no I/O: given a PV, whether its node exists (and for how long it has been
//! missing), and its claim, what the policy says to do. Tests in decide_tests.rs.

use super::{LOCAL_DRIVER, NODE_LOST_ANNOTATION, OPT_IN_ANNOTATION, TOPOLOGY_KEY};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use std::time::Duration;

/// What the controller may do to the volumes of a deleted node (cluster-wide ceiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Write nothing; log lost volumes only.
    Off,
    /// Annotate the PV and claim, emit a Warning event, count it.
    Report,
    /// Report, and delete opted-in claims and their PVs so they are provisioned elsewhere.
    Recreate,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        ["off", "report", "recreate"][self as usize]
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub policy: Policy,
    /// Under `recreate`, delete claims that carry no opt-in annotation too.
    pub recreate_all: bool,
    /// How long a node must stay deleted before its volumes are touched: a Node object that is
    /// deleted and re-registered (kubelet restarts with a wiped object) must not cost data.
    pub grace: Duration,
}

/// Whether the PV's node exists, as the API server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Present,
    /// No Node object of that name, first noticed this long ago.
    Missing(Duration),
}

/// The PV's claim, as found through its claimRef.
#[derive(Debug, Clone, Copy)]
pub enum ClaimState<'a> {
    /// The PV has no claimRef (Available).
    Unclaimed,
    /// The claimRef names a claim that no longer exists, or one of that name that is not
    /// bound to this PV (a newer one, or one bound to another volume).
    Gone,
    Bound(&'a PersistentVolumeClaim),
}

/// A claim's own say, from its [`OPT_IN_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptIn {
    Unset,
    Recreate,
    Report,
    Ignore,
    /// A value we do not know: treated as `report` (never deletes), and logged.
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not a PV of the local driver pinned to exactly one node: never touched.
    NotOurs,
    /// Its node exists. `unmark`: it still carries a node-lost mark (a node of that name came
    /// back), which is removed.
    NodePresent { unmark: bool },
    /// The node is missing for less than the grace period: look again after this long.
    Wait(Duration),
    /// The node is gone, but the policy or the claim says to write nothing.
    Leave(&'static str),
    /// Mark the PV and claim, emit an event, count it.
    Report,
    /// Report, then delete the claim (when `claim`) and the PV.
    Recreate { claim: bool },
}

/// The node a PV of the local driver is pinned to: every node selector term must require
/// [`TOPOLOGY_KEY`] `In` exactly one and the same node. Anything else (another driver, no
/// affinity, a PV usable on several nodes) is not a local volume and gives `None`.
pub fn pinned_node(pv: &PersistentVolume) -> Option<&str> {
    let spec = pv.spec.as_ref()?;
    if spec.csi.as_ref()?.driver != LOCAL_DRIVER {
        return None;
    }
    let required = spec.node_affinity.as_ref()?.required.as_ref()?;
    let mut node: Option<&str> = None;
    for term in &required.node_selector_terms {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let pinned = exprs.iter().find_map(|e| match e.values.as_deref() {
            Some([v]) if e.key == TOPOLOGY_KEY && e.operator == "In" => Some(v.as_str()),
            _ => None,
        })?;
        match node {
            Some(n) if n != pinned => return None,
            _ => node = Some(pinned),
        }
    }
    node
}

/// The node-lost mark on an object, if any.
pub fn mark(obj: &impl ResourceExt) -> Option<&str> {
    Some(obj.annotations().get(NODE_LOST_ANNOTATION)?.as_str())
}

pub fn opt_in(pvc: &PersistentVolumeClaim) -> OptIn {
    match pvc.annotations().get(OPT_IN_ANNOTATION).map(String::as_str) {
        None => OptIn::Unset,
        Some("recreate") => OptIn::Recreate,
        Some("report") => OptIn::Report,
        Some("ignore") => OptIn::Ignore,
        Some(other) => OptIn::Invalid(other.to_string()),
    }
}

/// Matches the PV's claimRef against the claim found under that name. The claim is this PV's
/// only when its `spec.volumeName` names the PV and it has the claimRef's uid, if any: another
/// uid is a newer claim, and a claimRef without a uid (pre-bound by hand) may name a claim bound
/// elsewhere. Anything less would let `recreate` delete a claim that is not the lost volume's.
pub fn claim_state<'a>(
    pv: &PersistentVolume,
    found: Option<&'a PersistentVolumeClaim>,
) -> ClaimState<'a> {
    let Some(cref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return ClaimState::Unclaimed;
    };
    let names_this_pv = |pvc: &PersistentVolumeClaim| {
        let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        volume.is_some() && volume == pv.metadata.name.as_deref()
    };
    match found {
        Some(pvc) if names_this_pv(pvc) && (cref.uid.is_none() || pvc.metadata.uid == cref.uid) => {
            ClaimState::Bound(pvc)
        }
        _ => ClaimState::Gone,
    }
}

pub fn decide(
    opts: &Options,
    pv: &PersistentVolume,
    node: NodeState,
    claim: ClaimState,
) -> Decision {
    if pinned_node(pv).is_none() {
        return Decision::NotOurs;
    }
    let NodeState::Missing(missing_for) = node else {
        let unmark = opts.policy != Policy::Off && mark(pv).is_some();
        return Decision::NodePresent { unmark };
    };
    if missing_for < opts.grace {
        return Decision::Wait(opts.grace - missing_for);
    }
    if opts.policy == Policy::Off {
        return Decision::Leave("policy off");
    }
    let ClaimState::Bound(pvc) = claim else {
        // No live claim: under `recreate`, a PV whose reclaim policy is Delete is what its
        // provisioner would have deleted, so it goes; a retained one is kept (and reported) for
        // whoever retained it.
        let spec = pv.spec.as_ref();
        let reclaim = spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
        if opts.policy == Policy::Recreate && reclaim == Some("Delete") {
            return Decision::Recreate { claim: false };
        }
        return Decision::Report;
    };
    let choice = opt_in(pvc);
    if choice == OptIn::Ignore {
        return Decision::Leave("the claim opted out (ferrovol.io/node-loss=ignore)");
    }
    if opts.policy == Policy::Report {
        return Decision::Report;
    }
    match choice {
        OptIn::Recreate => Decision::Recreate { claim: true },
        OptIn::Unset if opts.recreate_all => Decision::Recreate { claim: true },
        _ => Decision::Report,
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
