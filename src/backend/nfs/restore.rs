//! CreateVolume with a content source: a new volume holding a snapshot's or another volume's
//! content, copied through the client on the source's own export.
//!
//! A restore never shows a half copy under its final name, and never renames onto a directory
//! it did not make: the intent record names a staging directory (`.ferrovol/staging/<key>`);
//! the subDir is claimed with MKDIR before the copy starts (another CreateVolume for it then
//! finds it taken), and the copy goes to `content/` inside the staging directory. The record
//! keeps the file handles of both (layout.rs) before the copy begins. Only when the copy is
//! whole is `content` RENAMEd onto the claimed subDir, after checking that the subDir is still
//! the claimed, empty directory (RENAME replaces only an empty one); then the record becomes
//! `Ready` with the copy's handle as the volume's, then the (now empty) staging directory
//! goes. After a crash between the RENAME and `Ready`, the subDir has the copy's handle, which
//! proves it is this restore's and lets the rollback remove it (rollback.rs); a subDir with
//! any other handle is never touched. The staging directory is how recovery at start finds a
//! cut-off restore without reading every volume record.
//!
//! A volume source is read only while its directory has the handle its record keeps. A restore
//! shows life (alive.rs) from before its intent until its record is `Ready`, and checks that it
//! still does before the RENAME and before `Ready`. Once it shows life, and before its intent,
//! it reads its source's record again: a source being deleted meanwhile stops it (readers.rs).

use super::layout::{self, staging_path, RecordState, VolumeRecord, STAGING_DIR};
use super::readers::{snapshot_still_ready, volume_still_ready};
use super::{recorded_handle, remove_record, write_record, NfsBackend, BACKEND};
use crate::error::{Error, Result};
use crate::nfs::{Guarded, NfsClient};
use crate::snapshot::ContentSource;
use crate::volume::{VolumeCondition, VolumeInfo};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub(super) struct Source {
    /// The id the CO named (recorded on the new volume for idempotency).
    pub id: String,
    /// The directory, relative to the share root, whose content the new volume gets.
    pub dir: String,
    /// The least capacity the new volume may have.
    pub capacity: u64,
    /// The handle `dir` must have to be read (a volume's directory), and its NFS version;
    /// `None` for a snapshot's content, which lies under `.ferrovol/` where only the driver writes.
    pub proof: Option<(String, crate::nfs::Version)>,
    /// A snapshot source's record key; `None` for a volume source.
    pub snapshot_key: Option<String>,
}

/// The name a restore shows life under (alive.rs).
pub(super) fn restore_name(key: &str) -> String {
    format!("restore-{key}")
}

impl NfsBackend {
    /// Finds the source on export `server:share` (where the new volume goes): NotFound when it
    /// does not exist, InvalidArgument when it lives on another export (a copy runs within one).
    pub(super) fn resolve_source(
        &self,
        vid: &str,
        src: &ContentSource,
        server: &str,
        share: &str,
    ) -> Result<Source> {
        if src.backend() != BACKEND {
            let (id, backend) = (src.id(), src.backend());
            let why = format!("content source {id} belongs to backend {backend}, not {BACKEND}");
            return Err(Error::invalid(format!("volume {vid}: {why}")));
        }
        let elsewhere = |what: &str, s: &str, sh: &str| {
            Error::invalid(format!(
                "volume {vid}: {what} {} lives on {s}:{sh}; a volume made from it must be on the same export, not {server}:{share}",
                src.id()
            ))
        };
        match src {
            ContentSource::Snapshot(id) => {
                let sid = id.to_string();
                let found = match id.node {
                    None => self.find_snapshot(&sid, &id.key)?,
                    Some(_) => None,
                };
                let (c, rec) = found
                    .filter(|(_, r)| r.state != RecordState::Deleting)
                    .ok_or_else(|| Error::not_found_because(&sid, "no such snapshot"))?;
                if (rec.server.as_str(), rec.share.as_str()) != (server, share) {
                    return Err(elsewhere("snapshot", &rec.server, &rec.share));
                }
                // A snapshot still being copied is waited for: the volume gets all of it.
                let rec = self.settle(&c, rec, None)?;
                // A DeleteSnapshot that came during the wait leaves nothing to copy from.
                match rec.state {
                    RecordState::Ready => {}
                    RecordState::Deleting => {
                        return Err(Error::not_found_because(&sid, "no such snapshot"))
                    }
                    RecordState::Creating => {
                        return Err(Error::Busy(format!("{sid} (still being copied)")))
                    }
                }
                Ok(Source {
                    id: sid,
                    dir: rec.data_path(),
                    capacity: rec.size_bytes,
                    proof: None,
                    snapshot_key: Some(rec.key()),
                })
            }
            ContentSource::Volume(id) => {
                let svid = id.to_string();
                let found = match layout::parse_volume_id(&svid) {
                    Some(key) => self.find_live(&svid, key)?,
                    None => None,
                };
                let (c, rec) = found
                    .filter(|(_, r)| r.state == RecordState::Ready)
                    .ok_or_else(|| Error::not_found(&svid))?;
                if (rec.server.as_str(), rec.share.as_str()) != (server, share) {
                    return Err(elsewhere("volume", &rec.server, &rec.share));
                }
                Ok(Source {
                    proof: Some((self.source_handle(&c, &rec)?, rec.version())),
                    id: svid,
                    dir: rec.sub_dir,
                    capacity: rec.capacity_bytes,
                    snapshot_key: None,
                })
            }
        }
    }

    /// The handle a copy of `rec`'s directory checks: the recorded one, or for a `Ready` record
    /// from before handles were kept, the directory's now (no delete has removed it; layout.rs).
    pub(super) fn source_handle(&self, c: &NfsClient, rec: &VolumeRecord) -> Result<String> {
        let gone = || {
            let (dir, at) = (&rec.sub_dir, format!("{}:{}", rec.server, rec.share));
            Error::precondition(&rec.id, format!("directory {dir} is gone from {at}"))
        };
        recorded_handle(c, rec)
            .map_err(|e| self.err(&rec.id, e))?
            .ok_or_else(gone)
    }

    /// Makes volume `rec` (a `Creating` record with `source` set) with `src`'s content.
    pub(super) fn restore(
        &self,
        c: &Arc<NfsClient>,
        mut rec: VolumeRecord,
        src: &Source,
    ) -> Result<VolumeInfo> {
        let vid = rec.id.clone();
        let staging = staging_path(rec.key());
        let content = format!("{staging}/content");
        crate::failpoint::hit("nfs-restore:before-show");
        let alive = self
            .work
            .copies
            .show(c, &restore_name(rec.key()), &src.id)?;
        // Shown before this look: a delete of the source whose intent came before is seen
        // here, one whose intent comes later sees this restore (readers.rs).
        let t = self.cfg.timeout;
        match (&src.snapshot_key, &src.proof) {
            (Some(key), _) => snapshot_still_ready(c, &vid, (&src.id, key), t)?,
            (None, Some((h, _))) => volume_still_ready(c, &vid, (&src.id, &src.dir, h), t)?,
            (None, None) => {}
        }
        rec.staging = Some(staging.clone());
        write_record(c, &rec, self.cfg.timeout)?;
        crate::failpoint::hit("nfs-restore:after-intent");
        let started = std::time::Instant::now();
        let made = (|| {
            let err = |e| self.err(&vid, e);
            // The claim: from here no other create can make the subDir.
            self.claim_dir(c, &mut rec, 0o700)?;
            c.remove_tree(&staging).map_err(err)?;
            c.mkdir_all(STAGING_DIR, 0o700).map_err(err)?;
            c.mkdir(&staging, 0o700).map_err(err)?;
            let copy = c.mkdir_claim(&content, 0o700).map_err(err)?;
            let why = || format!("volume {vid}: {content} existed after its parent was made");
            let copy = copy.ok_or_else(|| Error::Internal(why()))?;
            rec.staging_handle = Some(copy.clone());
            write_record(c, &rec, self.cfg.timeout)?;
            let cancel = AtomicBool::new(false);
            // A copy without a handle to check always finds its source, or fails.
            let handle = src.proof.as_ref().map(|(h, _)| h.as_str());
            let stats = c
                .copy_dir_contents_if(&src.dir, handle, &content, &cancel)
                .map_err(err)?
                .ok_or_else(|| {
                    let (dir, id) = (&src.dir, &src.id);
                    Error::precondition(&vid, format!("the directory {dir} of source volume {id} is not the one made for it (another file handle); nothing copied"))
                })?;
            // The root is the new volume's: the class's mode (and owner, when it names one).
            c.setattr(&content, rec.root_attr()).map_err(err)?;
            crate::failpoint::hit("nfs-restore:before-rename");
            alive.check()?;
            let renamed = c.rename_if(&content, &copy, &rec.sub_dir, rec.dir_handle.as_deref());
            if renamed.map_err(err)? != Guarded::Done {
                let (dir, server, share) = (&rec.sub_dir, &rec.server, &rec.share);
                return Err(Error::precondition(&vid, format!("{dir} on {server}:{share} changed while the content was copied (it is no longer the empty directory this restore made); left untouched")));
            }
            crate::failpoint::hit("nfs-restore:before-ready");
            alive.check()?;
            Ok(stats)
        })();
        // A restore that stopped showing life leaves its undoing to the lease holder.
        if made.is_err() && !alive.lost() {
            let undone = if rec.dir_handle.is_none() {
                // The subDir was not claimed (another's, or never reached): not ours to touch;
                // the staging copy and the record go.
                c.remove_tree(&staging)
                    .map_err(|e| self.err(&vid, e))
                    .and_then(|_| remove_record(c, &rec, self.cfg.timeout))
            } else {
                super::rollback::undo_create(c, &rec, self.cfg.timeout)
            };
            if let Err(undo) = undone {
                tracing::warn!(volume = %vid, error = %undo, "rollback of a failed restore incomplete; recovery finishes it");
            }
        }
        let stats = made?;
        rec.state = RecordState::Ready;
        rec.dir_handle = rec.staging_handle.take();
        rec.staging = None;
        rec.staging_fileid = None;
        write_record(c, &rec, self.cfg.timeout)?;
        if let Err(e) = c.remove_tree(&staging) {
            tracing::warn!(volume = %vid, dir = %staging, error = %e, "could not remove an empty staging directory; recovery at the next start does");
        }
        tracing::info!(volume = %vid, source = %src.id, files = stats.files, bytes = stats.bytes,
            ms = started.elapsed().as_millis() as u64, "volume made from its content source");
        Ok(self.info(&rec, VolumeCondition::healthy()))
    }
}
