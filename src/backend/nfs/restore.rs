//! CreateVolume with a content source: a new volume holding a snapshot's or another volume's
//! content, copied through the client on the source's own export.
//!
//! A restore never shows a half copy under its final name: the intent record names a staging
//! directory (`.ferrovol/staging/<key>`); the copy goes to `content/` inside it; only when it is
//! whole is `content` RENAMEd to the volume's subDir, then the record becomes `Ready`, then the
//! (now empty) staging directory goes. The staging directory is how recovery at start finds a
//! cut-off restore without reading every volume record. The fileid of `content` is recorded
//! before the copy starts: RENAME keeps it, so after a crash between the RENAME and `Ready` the
//! subDir is provably this restore's (NFSv3 has no xattrs to mark it) and the rollback may
//! remove it; a subDir with any other fileid is never touched.

use super::controller::PARENT_MODE;
use super::layout::{self, RecordState, VolumeRecord};
use super::snaprecord::{staging_path, STAGING_DIR};
use super::{NfsBackend, BACKEND};
use crate::error::{Error, Result};
use crate::nfs::{NfsClient, SetAttr};
use crate::snapshot::ContentSource;
use crate::volume::{VolumeCondition, VolumeInfo};
use std::sync::atomic::AtomicBool;

/// A resolved content source.
pub(super) struct Source {
    /// The id the CO named (recorded on the new volume for idempotency).
    pub id: String,
    /// The directory, relative to the share root, whose content the new volume gets.
    pub dir: String,
    /// The least capacity the new volume may have.
    pub capacity: u64,
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
            return Err(Error::invalid(format!(
                "volume {vid}: content source {} belongs to backend {}, not {BACKEND}",
                src.id(),
                src.backend()
            )));
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
                Ok(Source {
                    id: sid,
                    dir: rec.data_path(),
                    capacity: rec.size_bytes,
                })
            }
            ContentSource::Volume(id) => {
                let svid = id.to_string();
                let found = match layout::parse_volume_id(&svid) {
                    Some(key) => self.find_live(&svid, key)?,
                    None => None,
                };
                let (_, rec) = found
                    .filter(|(_, r)| r.state == RecordState::Ready)
                    .ok_or_else(|| Error::not_found(&svid))?;
                if (rec.server.as_str(), rec.share.as_str()) != (server, share) {
                    return Err(elsewhere("volume", &rec.server, &rec.share));
                }
                Ok(Source {
                    id: svid,
                    dir: rec.sub_dir,
                    capacity: rec.capacity_bytes,
                })
            }
        }
    }

    /// Makes volume `rec` (a `Creating` record with `source` set) with `src`'s content.
    pub(super) fn make_from(
        &self,
        c: &NfsClient,
        rec: VolumeRecord,
        src: &Source,
    ) -> Result<VolumeInfo> {
        let key = layout::parse_volume_id(&rec.id)
            .expect("records carry our ids")
            .to_string();
        if !self.work.claim_restore(&key) {
            return Err(Error::Busy(rec.id.clone()));
        }
        let res = self.restore(c, rec, src);
        self.work.release_restore(&key);
        res
    }

    fn restore(&self, c: &NfsClient, mut rec: VolumeRecord, src: &Source) -> Result<VolumeInfo> {
        let vid = rec.id.clone();
        let key = layout::parse_volume_id(&vid).expect("our id").to_string();
        let staging = staging_path(&key);
        let content = format!("{staging}/content");
        rec.staging = Some(staging.clone());
        self.write_record(c, &rec)?;
        crate::failpoint::hit("nfs-restore:after-intent");
        let started = std::time::Instant::now();
        let made = (|| {
            let err = |e| self.err(&vid, e);
            if c.lookup(&rec.sub_dir).map_err(err)?.is_some() {
                return Err(Error::precondition(
                    &vid,
                    format!(
                        "{} already exists on {}:{} and is not a volume of this driver; left untouched",
                        rec.sub_dir, rec.server, rec.share
                    ),
                ));
            }
            c.remove_tree(&staging).map_err(err)?;
            c.mkdir_all(STAGING_DIR, 0o700).map_err(err)?;
            c.mkdir(&staging, 0o700).map_err(err)?;
            c.mkdir(&content, 0o700).map_err(err)?;
            let made = c.lookup(&content).map_err(err)?.ok_or_else(|| {
                Error::Internal(format!("volume {vid}: {content} vanished after MKDIR"))
            })?;
            rec.staging_fileid = Some(made.fileid);
            self.write_record(c, &rec)?;
            let stats = c
                .copy_dir_contents(&src.dir, &content, &AtomicBool::new(false))
                .map_err(err)?;
            // The root is the new volume's: the class's mode (and owner, when it names one).
            c.setattr(
                &content,
                SetAttr {
                    mode: Some(rec.mount_permissions),
                    uid: rec.uid,
                    gid: rec.gid,
                },
            )
            .map_err(err)?;
            if let Some((parent, _)) = rec.sub_dir.rsplit_once('/') {
                c.mkdir_all(parent, PARENT_MODE).map_err(err)?;
            }
            crate::failpoint::hit("nfs-restore:before-rename");
            c.rename(&content, &rec.sub_dir).map_err(err)?;
            crate::failpoint::hit("nfs-restore:before-ready");
            Ok(stats)
        })();
        let stats = match made {
            Ok(s) => s,
            Err(e) => {
                if let Err(undo) = super::undo_create(c, &rec, self.cfg.timeout) {
                    tracing::warn!(volume = %vid, error = %undo, "rollback of a failed restore incomplete; recovery finishes it");
                }
                return Err(e);
            }
        };
        rec.state = RecordState::Ready;
        rec.staging = None;
        rec.staging_fileid = None;
        self.write_record(c, &rec)?;
        if let Err(e) = c.remove_tree(&staging) {
            tracing::warn!(volume = %vid, dir = %staging, error = %e, "could not remove an empty staging directory; recovery at the next start does");
        }
        tracing::info!(volume = %vid, source = %src.id, files = stats.files, bytes = stats.bytes,
            ms = started.elapsed().as_millis() as u64, "volume made from its content source");
        Ok(self.info(&rec, VolumeCondition::healthy()))
    }
}
