//! Node loss: what happens to local volumes when their Node object is deleted.
//!
//! A hostpath or device volume lives on one node; its PV is pinned there by node affinity on
//! [`TOPOLOGY_KEY`]. Once that Node object is deleted (the machine is gone, not merely
//! NotReady), the PV can never be used again and the workload owning the claim (a StatefulSet)
//! stays Pending forever. This controller applies an opt-in policy (docs/install.md, "Node
//! loss"):
//!
//! - `off` (the default): lost volumes are only logged.
//! - `report`: the PV and its claim get [`NODE_LOST_ANNOTATION`]`=<node>`, the claim a Warning
//!   event, and the volume is counted in `ferrovol_node_loss_volumes_total`.
//! - `recreate`: as `report`, and claims that opted in ([`OPT_IN_ANNOTATION`]`=recreate`, or
//!   all with `--recreate-all`) are deleted with their PV, so a new volume is provisioned on a
//!   node that exists.
//!
//! A claim counts as the PV's only when it names the PV in `spec.volumeName` (and has the
//! claimRef's uid, when there is one), so no other claim of the same name is ever deleted.
//!
//! The short grace period (default 60 s) is safe because nothing here deletes data, only API
//! objects (the claim, and the PV after stripping the provisioner's finalizer). A volume's bytes
//! go only through DeleteVolume, which only the lost node's own csi-provisioner would call, and
//! the PV is gone by the time that node comes back: it finds its directories and devices as
//! they were, unreferenced (`ferrovol ctl list` shows them; a hand-written PV with the same
//! handle attaches one again). The grace guards only the workload's binding against a Node
//! deleted and registered again at once, and only for claims that opted in. `report` marks are
//! removed when a node of that name registers again.
//!
//! [`decide`] is the pure decision; [`act`] carries it out; [`controller`] runs it.

pub mod act;
pub mod controller;
pub mod decide;
pub mod metrics;

pub use decide::{decide, pinned_node, ClaimState, Decision, NodeState, Options, Policy};

/// The CSI driver whose PVs this controller handles (hostpath and device volumes).
pub const LOCAL_DRIVER: &str = "local.csi.ferrovol.io";

/// The topology key that pins a local PV to its node.
pub const TOPOLOGY_KEY: &str = "topology.ferrovol.io/node";

/// Set on a lost PV and its claim: the name of the deleted node.
pub const NODE_LOST_ANNOTATION: &str = "ferrovol.io/node-lost";

/// On a claim: `recreate` opts in to deletion under the `recreate` policy, `report` keeps it
/// to marking, `ignore` opts out of everything.
pub const OPT_IN_ANNOTATION: &str = "ferrovol.io/node-loss";

/// The finalizer external-provisioner puts on the PVs it provisions and removes after
/// DeleteVolume; the dead node's provisioner never will.
pub const PROVISIONER_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";

/// The name events and field managers report.
pub const CONTROLLER_NAME: &str = "ferrovol-node-loss";
