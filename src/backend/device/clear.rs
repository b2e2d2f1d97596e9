//! Clearing a Released device (`ferrovol ctl clear-released`, the admin API): the operator has
//! checked the disk a delete could not hand back and wiped it by hand, and names the device and
//! the volume its release names. Only a release this node's state journal holds is cleared, by
//! one commit removing `device-released/<uid>`; the inventory shows the device Unclaimed after
//! that commit, never before. Nothing is written to the device: once it carries no signature it
//! is a candidate again, and the next volume may format it.
//!
//! Every other claim is refused, nothing changed: a device a record names (Claimed, or two
//! records: contested), a hold only the cluster's BlockDevice object remembers (cleared there),
//! another node's claim, a device gone or sharing its identity with another, and a release
//! naming another volume than the operator's.

use super::{claims, DeviceBackend};
use crate::backend::clear::{ClearReleased, Cleared, ReleaseBackend};
use crate::discovery::{Claim, State};
use crate::error::{Error, Result};

impl ReleaseBackend for DeviceBackend {
    fn clear_released(&self, req: &ClearReleased) -> Result<Cleared> {
        let (uid, volume) = (&req.device_uid, &req.volume);
        // No create or adoption picks or claims a device meanwhile.
        let _claiming = self.claiming.lock().unwrap_or_else(|p| p.into_inner());
        let refuse = |why: String| {
            Error::precondition(volume, format!("device {uid}: {why}; nothing was changed"))
        };
        let e = self
            .inventory
            .get(uid)
            .ok_or_else(|| Error::DeviceNotFound {
                device: uid.clone(),
                detail:
                    "no such device in this node's inventory (`ferrovol ctl devices` lists them)"
                        .into(),
            })?;
        let at = e.device.dev_path.display().to_string();
        // A record names it: its volume owns it (or, named twice, nobody can tell who does).
        let mut named = Vec::new();
        self.ledger.for_each(|r| {
            if &r.backend.uid == uid {
                named.push(r.id.clone());
            }
        });
        if let [first, others @ ..] = named.as_slice() {
            return Err(refuse(if others.is_empty() {
                format!("it is claimed by volume {first}, whose record names it; delete that volume instead")
            } else {
                claims::contested_reason(uid, first, others)
            }));
        }
        let candidate = |uid: &str| self.inventory.get(uid).is_some_and(|e| e.device.candidate);
        let reason = match &e.claim {
            Claim::Unclaimed => {
                return Ok(Cleared::AlreadyUnclaimed {
                    candidate: candidate(uid),
                    device_path: at,
                })
            }
            claim if claim.node() != Some(self.node.as_str()) => {
                let (node, kind) = (claim.node().unwrap_or_default(), claim.kind());
                return Err(refuse(format!(
                    "it is {kind} by node {node} (volume {}); only that node clears its claims",
                    claim.volume()
                )));
            }
            Claim::Claimed { volume, .. } => {
                return Err(refuse(format!("it is claimed by volume {volume}")))
            }
            hold if self.inventory.remembered_claims().get(uid) == Some(hold) => {
                return Err(refuse(format!(
                    "it is held for volume {} because only its BlockDevice object records that \
                     claim, not this node's state journal; release it there: delete the \
                     BlockDevice object {uid} or clear its claim",
                    hold.volume()
                )));
            }
            Claim::Released {
                volume: theirs,
                reason,
                ..
            } if theirs != volume => {
                return Err(refuse(format!(
                    "its Released claim names volume {theirs}, not {volume} ({reason}); \
                     check that volume's disk and name it"
                )));
            }
            Claim::Released { reason, .. } => reason.clone(),
        };
        if e.state != State::Active {
            return Err(refuse(format!(
                "it is gone (last seen at {at}); clear it once it is back and checked"
            )));
        }
        if let Some(why) = super::proof::conflict(&e) {
            return Err(refuse(why));
        }
        // Only the journal's own release is left: shown Released by this node, named by no
        // record, not a remembered hold. Its removal is the one commit.
        let update = claims::clear_update(uid);
        (self.ledger.journal().commit(vec![update])).map_err(Error::state(volume))?;
        if let Err(err) = self.inventory.set_claim(uid, Claim::Unclaimed) {
            tracing::warn!(%uid, %volume, error = %err, "cleared claim not shown in the inventory");
        }
        // Its candidacy follows its signatures, which the operator's wipe changed.
        if let Err(err) = self.inventory.rescan_device(&e.device.kernel_name, None) {
            tracing::warn!(%uid, error = %err, "rescan after clearing a release failed");
        }
        let candidate = candidate(uid);
        tracing::info!(%uid, %volume, device = %at, released_because = %reason, candidate,
            "operator cleared a Released device: Unclaimed, nothing written to it");
        Ok(Cleared::Cleared {
            reason,
            candidate,
            device_path: at,
        })
    }
}

#[cfg(test)]
#[path = "clear_tests.rs"]
mod tests;
