//! Devices whose identity is only their port ([`identity::port_only`]: no WWN, serial, loop
//! backing file or dm UUID, as QEMU/KVM virtio-blk and scsi-hd disks and some USB bridges
//! show). Another disk of the same size put into that port later presents the same uid, device
//! number and size, so the proof ([`super::proof`]) cannot tell it from the claimed one. A
//! filesystem volume still proves its device by the filesystem UUID drawn at its create; a raw
//! volume's device carries nothing the driver wrote. So such a device serves filesystem volumes
//! only: CreateVolume never places a raw volume on one, and a raw volume found on one anyway (a
//! record in the state journal names it) is staged and published with a warning and released
//! unwiped by its delete, never wiped or discarded.

use super::{DeviceBackend, VolumeRecord};
use crate::discovery::{identity, Device, Entry};
use crate::volume::AccessKind;

/// The devices of `found` a volume of `kind` may be placed on, and how many were passed over
/// because their identity is only their port.
pub(super) fn placeable(kind: AccessKind, found: Vec<Entry>) -> (Vec<Entry>, usize) {
    if kind == AccessKind::Mount {
        return (found, 0);
    }
    let (port, fit): (Vec<Entry>, Vec<Entry>) = found
        .into_iter()
        .partition(|e| identity::port_only(&e.device));
    (fit, port.len())
}

/// What a no-capacity answer adds when `passed` fitting devices were passed over.
pub(super) fn passed_over(passed: usize) -> String {
    if passed == 0 {
        return String::new();
    }
    format!(
        "; {passed} device(s) that fit were passed over because their identity is only their \
         port (no WWN or serial): raw block volumes are never placed on them, since nothing \
         would prove at delete or publish that another disk has not taken that port (they \
         serve filesystem volumes)"
    )
}

/// Why `rec`'s device `dev` is released unwiped by its delete, if it is: a raw volume on a
/// device whose identity is only its port.
pub(super) fn unprovable(rec: &VolumeRecord, dev: &Device) -> Option<String> {
    (rec.backend.fs.is_none() && identity::port_only(dev)).then(|| {
        format!(
            "raw block volume {} was deleted and its device {} ({}) not wiped: the disk's \
             identity is only its port (no WWN or serial), so the driver cannot prove it is \
             still the disk the volume used; wipe it by hand if it is, and clear the claim \
             (`ferrovol ctl clear-released {} --volume {}`)",
            rec.id,
            dev.uid,
            dev.dev_path.display(),
            dev.uid,
            rec.id
        )
    })
}

/// The warning a stage of `rec` on `dev` logs, if any: a raw volume on a port-identified device
/// is still staged and published (its pods may be running), but no proof tells its disk from
/// another put into the same port.
pub(super) fn stage_risk(rec: &VolumeRecord, dev: &Device) -> Option<String> {
    (rec.backend.fs.is_none() && identity::port_only(dev)).then(|| {
        format!(
            "raw block volume {} is on device {} ({}), whose identity is only its port (no WWN \
             or serial): if its disk was swapped for another of the same size in that port, \
             the pod gets that other disk; its delete will not wipe the device",
            rec.id,
            dev.uid,
            dev.dev_path.display()
        )
    })
}

impl DeviceBackend {
    /// [`unprovable`] for `rec`'s device as the inventory knows it (None when it knows none:
    /// then the delete's other checks decide).
    pub(super) fn unprovable(&self, rec: &VolumeRecord) -> Option<String> {
        let e = self.inventory.get(&rec.backend.uid)?;
        unprovable(rec, &e.device)
    }

    /// Logs [`stage_risk`] for `rec`'s device, once per stage.
    pub(super) fn warn_stage_risk(&self, rec: &VolumeRecord) {
        let e = self.inventory.get(&rec.backend.uid);
        if let Some(risk) = e.and_then(|e| stage_risk(rec, &e.device)) {
            tracing::warn!(volume = %rec.id, uid = %rec.backend.uid, "{risk}");
        }
    }
}

#[cfg(test)]
#[path = "port_tests.rs"]
mod tests;
