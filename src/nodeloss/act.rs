//! Carries out a decision against the API server: marks, events, deletions. Every write is
//! idempotent (a reconcile may run again after any step failed) and guarded by the object's
//! uid, so a claim the workload already made anew, or a PV of the same name, is never touched.

use super::controller::Context;
use super::decide::mark;
use super::metrics::{self, Outcome};
use super::{NODE_LOST_ANNOTATION, PROVISIONER_FINALIZER};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};

/// A failed step of a reconcile, naming the PV and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("pv {pv}: {step}: {source}")]
pub struct Error {
    pub pv: String,
    pub step: String,
    #[source]
    pub source: kube::Error,
}

/// Wraps a failed API call with the PV and the step it belonged to.
pub(super) fn err(pv: &str, step: impl Into<String>) -> impl FnOnce(kube::Error) -> Error + '_ {
    let (pv, step) = (pv.to_string(), step.into());
    move |source| Error { pv, step, source }
}

/// 404 (already gone) and 409 (the uid precondition failed: a newer object of that name) mean
/// there is nothing of ours left to delete.
fn gone_or_replaced(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

fn claims(client: &Client, pvc: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
    Api::namespaced(client.clone(), &pvc.namespace().unwrap_or_default())
}

fn annotation_patch(value: Option<&str>) -> Patch<serde_json::Value> {
    Patch::Merge(serde_json::json!({
        "metadata": { "annotations": { NODE_LOST_ANNOTATION: value } }
    }))
}

impl Context {
    /// Marks the PV and its claim with the lost node and emits a Warning event on the claim (on
    /// the PV when it has none). Counts the volume the first time its PV is marked. Returns
    /// whether this call wrote the PV's mark.
    pub async fn report(
        &self,
        pv: &PersistentVolume,
        claim: Option<&PersistentVolumeClaim>,
        node: &str,
    ) -> Result<bool, Error> {
        let name = pv.name_any();
        let pp = PatchParams::default();
        if let Some(pvc) = claim.filter(|c| mark(*c) != Some(node)) {
            claims(&self.client, pvc)
                .patch(&pvc.name_any(), &pp, &annotation_patch(Some(node)))
                .await
                .map_err(err(&name, format!("marking claim {}", claim_name(pvc))))?;
        }
        if mark(pv) == Some(node) {
            return Ok(false);
        }
        // The event goes out before the PV's mark: the mark is what says "reported", so a
        // crash in between repeats the event rather than losing it.
        let note = format!(
            "node {node} is deleted; volume {name} was pinned to it and its data is unreachable. \
             Annotated {NODE_LOST_ANNOTATION}={node} (docs/install.md, \"Node loss\")"
        );
        self.event(pv, claim, "NodeLost", "Report", note).await?;
        Api::<PersistentVolume>::all(self.client.clone())
            .patch(&name, &pp, &annotation_patch(Some(node)))
            .await
            .map_err(err(&name, "marking the PV"))?;
        metrics::count(Outcome::Reported);
        tracing::warn!(pv = %name, node, claim = ?claim.map(claim_name), "volume pinned to a deleted node: marked");
        Ok(true)
    }

    /// Removes the marks of a node that exists again.
    pub async fn unmark(
        &self,
        pv: &PersistentVolume,
        claim: Option<&PersistentVolumeClaim>,
    ) -> Result<(), Error> {
        let name = pv.name_any();
        let pp = PatchParams::default();
        if let Some(pvc) = claim.filter(|c| mark(*c).is_some()) {
            claims(&self.client, pvc)
                .patch(&pvc.name_any(), &pp, &annotation_patch(None))
                .await
                .map_err(err(&name, format!("unmarking claim {}", claim_name(pvc))))?;
        }
        Api::<PersistentVolume>::all(self.client.clone())
            .patch(&name, &pp, &annotation_patch(None))
            .await
            .map_err(err(&name, "unmarking the PV"))?;
        tracing::info!(pv = %name, "the volume's node exists again: node-lost mark removed");
        Ok(())
    }

    /// Reports, then deletes the claim (if any) and the PV, removing the provisioner finalizer
    /// that the dead node's csi-provisioner would never remove. The claim's own protection
    /// finalizer is left to Kubernetes: it goes once no pod uses the claim (the pod garbage
    /// collector deletes the pods of a deleted node).
    pub async fn recreate(
        &self,
        pv: &PersistentVolume,
        claim: Option<&PersistentVolumeClaim>,
        node: &str,
    ) -> Result<(), Error> {
        let name = pv.name_any();
        self.report(pv, claim, node).await?;
        if let Some(pvc) = claim.filter(|c| c.metadata.deletion_timestamp.is_none()) {
            let note = format!(
                "deleting this claim and volume {name} (node {node} is deleted) so that the \
                 workload's controller provisions a new volume on a node that exists"
            );
            self.event(pv, Some(pvc), "RecreatingClaim", "Recreate", note)
                .await?;
            let dp = uid_guard(pvc.uid());
            match claims(&self.client, pvc).delete(&pvc.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if gone_or_replaced(&e) => {}
                Err(e) => return Err(err(&name, format!("deleting claim {}", claim_name(pvc)))(e)),
            }
            tracing::warn!(pv = %name, node, claim = %claim_name(pvc), "claim of a volume on a deleted node deleted");
        }
        let pvs = Api::<PersistentVolume>::all(self.client.clone());
        // Fresh: the mark above changed its resourceVersion, which guards the finalizer patch.
        let fresh = (pvs.get_opt(&name).await).map_err(err(&name, "reading the PV"))?;
        let Some(pv) = fresh.filter(|f| f.uid() == pv.uid()) else {
            return Ok(());
        };
        let mut kept = pv.finalizers().to_vec();
        kept.retain(|f| f != PROVISIONER_FINALIZER);
        if kept.len() < pv.finalizers().len() {
            // resourceVersion makes the patch fail (409, retried) if the PV changed meanwhile,
            // so no finalizer added since is dropped.
            let patch = Patch::Merge(serde_json::json!({
                "metadata": { "finalizers": kept, "resourceVersion": pv.resource_version() }
            }));
            let step = format!("removing finalizer {PROVISIONER_FINALIZER}");
            let patched = pvs.patch(&name, &PatchParams::default(), &patch).await;
            patched.map_err(err(&name, step))?;
        }
        if pv.metadata.deletion_timestamp.is_none() {
            match pvs.delete(&name, &uid_guard(pv.uid())).await {
                Ok(_) => {}
                Err(e) if gone_or_replaced(&e) => return Ok(()),
                Err(e) => return Err(err(&name, "deleting the PV")(e)),
            }
            metrics::count(Outcome::Recreated);
            tracing::warn!(pv = %name, node, "volume on a deleted node deleted");
        }
        Ok(())
    }

    /// A Warning event about the claim, or about the PV when there is no claim.
    async fn event(
        &self,
        pv: &PersistentVolume,
        claim: Option<&PersistentVolumeClaim>,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), Error> {
        let (regarding, secondary) = match claim {
            Some(pvc) => (pvc.object_ref(&()), Some(pv.object_ref(&()))),
            None => (pv.object_ref(&()), None),
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary,
        };
        let published = self.recorder.publish(&ev, &regarding).await;
        published.map_err(err(&pv.name_any(), format!("emitting event {reason}")))
    }
}

fn uid_guard(uid: Option<String>) -> DeleteParams {
    DeleteParams::default().preconditions(Preconditions {
        uid,
        ..Default::default()
    })
}

pub fn claim_name(pvc: &PersistentVolumeClaim) -> String {
    format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any())
}
