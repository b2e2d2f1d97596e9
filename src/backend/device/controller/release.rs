//! Releasing a device: prove it is the claimed one, unmount what is left, wipe only the
//! signatures this volume made (or, for a raw block volume, everything), then hand the device
//! back as Unclaimed or keep it Released. A raw volume's device whose identity is only its port
//! is kept Released unwiped ([`super::super::port`]).

use super::*;
use crate::backend::device::claims::release_update;
use crate::backend::device::proof::{conflict, Hold};
use std::fs::File;

impl DeviceBackend {
    /// Wipes what the volume made and releases the device, then drops the record. Safe to repeat
    /// from any point (recovery calls it for a Deleting record).
    pub(in crate::backend::device) fn finish_delete(&self, rec: &VolumeRecord) -> Result<()> {
        if let Some(why) = self.contested(rec) {
            return Err(Error::precondition(&rec.id, why));
        }
        if rec.backend.adopted {
            // The data it was adopted with is not the driver's to destroy: nothing is written,
            // the record goes and the device is Unclaimed with its filesystem in place (and so
            // no candidate for a create).
            self.ledger.remove(rec)?;
            tracing::info!(volume = %rec.id, uid = %rec.backend.uid,
                "deleted an adopted device volume: claim released, its filesystem and data kept");
            if self.holds(rec) {
                self.show_claim(rec, Claim::Unclaimed);
            }
            return Ok(());
        }
        let uid = &rec.backend.uid;
        // Another device presenting the uid: which one is ours is not known; wait it out.
        let shared = self.inventory.get(uid).and_then(|e| conflict(&e));
        if let Some(why) = shared.filter(|_| self.holds(rec)) {
            return Err(Error::precondition(&rec.id, format!("{why}; not wiped")));
        }
        let unprovable = self.unprovable(rec);
        let outcome = match self.device_path(rec) {
            // A device never seen, or claimed by another node: nothing of ours to wipe or release.
            Err(_) if !self.holds(rec) => None,
            Err(e) => Some(self.released(
                rec,
                format!("deleted while the device could not be verified ({e}); not wiped"),
            )),
            // A raw volume on a device known only by its port: another disk in that port
            // would pass every proof, so nothing is wiped or discarded.
            Ok(_) if unprovable.is_some() => unprovable.map(|why| self.released(rec, why)),
            Ok(path) => {
                // Proven and held from here: the node cannot turn into another device.
                let strict = rec.backend.fs.is_none();
                let _held = self.prove(rec, &path, Hold::Shared, strict)?;
                unmount_device(&rec.id, &path)?;
                // A crash may have left a read-only publication's flag set; the wipe writes.
                crate::os::blockdev::set_read_only(&path, false)
                    .map_err(Error::os(&rec.id, "clear the read-only flag"))?;
                let dev = self.prove(rec, &path, Hold::Exclusive, strict)?;
                Some(self.wipe(rec, &dev, &path)?)
            }
        };
        let release = match &outcome {
            Some(claim @ Claim::Released { reason, .. }) => {
                tracing::warn!(volume = %rec.id, %uid, %reason,
                    "device released, not wiped: once the disk is checked and wiped by hand, `ferrovol ctl clear-released {uid} --volume {}` hands it back", rec.id);
                vec![release_update(uid, claim).map_err(Error::state(&rec.id))?]
            }
            _ => Vec::new(),
        };
        self.ledger.remove_with(rec, release)?;
        crate::failpoint::hit("device:delete:after-release");
        if let Some(claim) = outcome {
            self.show_claim(rec, claim);
        }
        if let Some(e) = self.inventory.get(uid) {
            // The device's candidacy follows its signatures: refresh it now.
            if let Err(err) = self.inventory.rescan_device(&e.device.kernel_name, None) {
                tracing::warn!(%uid, error = %err, "rescan after release failed");
            }
        }
        Ok(())
    }

    /// The claim a deleted volume leaves: Unclaimed once what we made is wiped, else Released.
    /// Writes only through `dev`, the proven descriptor of `path`.
    fn wipe(&self, rec: &VolumeRecord, dev: &File, path: &Path) -> Result<Claim> {
        let (vid, at) = (rec.id.as_str(), path.display());
        let probe =
            |what: &str| blkid::probe_all(path).map_err(Error::os(vid, format!("{what} {at}")));
        let wiped = Error::os(vid, format!("wipe {at}"));
        let sigs = probe("probe")?;
        let Some(fs) = &rec.backend.fs else {
            // Raw block: the claim is the proof of ownership; the pod wrote what it liked.
            blkid::wipe_all(dev, path).map_err(wiped)?;
            crate::failpoint::hit("device:delete:after-wipe");
            match crate::os::blockdev::discard_all(dev, path) {
                Ok(done) => tracing::info!(volume = vid, discarded = done, "wiped raw device"),
                Err(e) => tracing::warn!(volume = vid, error = %e, "discard failed (wiped anyway)"),
            }
            return Ok(Claim::Unclaimed);
        };
        if sigs.is_empty() {
            return Ok(Claim::Unclaimed);
        }
        if !sigs.iter().all(|s| fs.made(s)) {
            let found: Vec<String> = sigs
                .iter()
                .map(|s| format!("{s} (uuid {})", s.uuid.as_deref().unwrap_or("-")))
                .collect();
            let (found, OurFs { fs_type, uuid, .. }) = (found.join(", "), fs);
            return Ok(self.released(
                rec,
                format!("device holds {found}, not only the {fs_type} filesystem {uuid} this volume made; not wiped"),
            ));
        }
        let offsets: Vec<u64> = sigs.iter().map(|s| s.offset).collect();
        blkid::wipe_at(dev, path, &offsets).map_err(wiped)?;
        crate::failpoint::hit("device:delete:after-wipe");
        let left = probe("probe after wipe")?;
        Ok(if left.is_empty() {
            Claim::Unclaimed
        } else {
            self.released(rec, format!("signatures left after wiping ours: {left:?}"))
        })
    }
}
