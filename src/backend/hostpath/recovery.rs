//! Start-up reconciliation of the hostpath backend: the journal says which volumes were
//! acknowledged; the directories' markers say what the driver made. Between them:
//!
//! | found at start | meaning | action |
//! |---|---|---|
//! | record, directory | a volume | keep; forget publications whose mounts vanished |
//! | record, no directory, trash | a delete that was never acknowledged | finish it |
//! | record, nothing | the mkdir was lost (power cut) or removed by hand | recreate it empty, warn |
//! | no record, directory marked by this store | a create that was never acknowledged, or a delete whose rename a power cut undid | remove it |
//! | no record, trash marked by this store | a delete acknowledged before its removal | remove it |
//! | no record, marked by another store or none | not provably ours (state lost or restored) | leave it, report its id |

use super::record::VolumeRecord;
use super::{HostpathBackend, TRASH_PREFIX};
use crate::os::fsutil;
use crate::state::{legacy, Phase};
use std::io;
use std::path::Path;

#[derive(Default)]
struct Tally {
    kept: usize,
    rolled_back: usize,
    finished_deletes: usize,
    recreated: usize,
    adopted: usize,
}

impl HostpathBackend {
    pub(super) fn recover(&self, state_dir: &Path) -> io::Result<()> {
        let mut tally = Tally {
            adopted: self.adopt_legacy(state_dir)?,
            ..Tally::default()
        };
        self.sweep_base(&mut tally)?;
        for mut rec in self.ledger.records() {
            let dir = self.volume_dir(&rec.name);
            if !dir.exists() {
                tracing::warn!(volume = %rec.id, dir = %dir.display(),
                    "volume directory is missing (lost in a power cut before the filesystem committed it, or removed by hand): recreating it empty");
                self.materialize(&rec).map_err(io::Error::other)?;
                tally.recreated += 1;
            }
            if self.forget_lost_mounts(&mut rec) {
                self.save(rec).map_err(io::Error::other)?;
            }
            tally.kept += 1;
        }
        tracing::info!(
            volumes = tally.kept,
            rolled_back = tally.rolled_back,
            finished_deletes = tally.finished_deletes,
            recreated = tally.recreated,
            adopted_from_0_1 = tally.adopted,
            "hostpath state recovered"
        );
        Ok(())
    }

    /// Walks the base once and settles every directory the journal does not explain.
    fn sweep_base(&self, tally: &mut Tally) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.base)? {
            let path = entry?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let ours = matches!(fsutil::store_marker(&path), Ok(Some(s)) if s == self.store_id());
            let marker = fsutil::owner_marker(&path).ok().flatten();
            if let Some(volume) = name.strip_prefix(TRASH_PREFIX) {
                let rec = marker.as_deref().and_then(|id| self.ledger.by_id(id));
                match rec {
                    Some(rec) if rec.name == volume => {
                        // Renamed to trash, removal not yet committed: finish the delete.
                        self.release_limit(&rec.id, rec.backend.enforced_by)
                            .map_err(io::Error::other)?;
                        self.ledger.remove(&rec).map_err(io::Error::other)?;
                        self.remove_trash(&rec.id, &path, false);
                        tally.finished_deletes += 1;
                    }
                    None if ours => {
                        self.remove_trash(marker.as_deref().unwrap_or("?"), &path, false);
                        tally.finished_deletes += 1;
                    }
                    _ => {
                        tracing::warn!(dir = %path.display(), "trash directory not made by this driver's state: left in place")
                    }
                }
                continue;
            }
            if self.ledger.contains_name(&name) {
                continue;
            }
            match marker {
                Some(id) if ours => {
                    tracing::info!(volume = %id, dir = %path.display(), "rolling back a volume that was never acknowledged");
                    if let Some(l) = &self.limiter {
                        l.release_dir(&path)?;
                    }
                    fsutil::remove_tree_one_fs(&path)?;
                    tally.rolled_back += 1;
                }
                Some(id) => tracing::warn!(dir = %path.display(), volume = %id,
                    "volume directory without a state record: left in place; DeleteVolume of this id removes it"),
                None => {}
            }
        }
        Ok(())
    }

    /// Removes a trash tree after its record is gone; a failure is retried at the next start.
    /// `mounts_checked`: the caller found nothing mounted inside just before (DeleteVolume, under
    /// the volume's lock), so the mount table need not be read again.
    pub(super) fn remove_trash(&self, id: &str, trash: &Path, mounts_checked: bool) {
        let removed = if mounts_checked {
            match std::fs::remove_dir_all(trash) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            fsutil::remove_tree_one_fs(trash)
        };
        if let Err(e) = removed {
            tracing::warn!(volume = %id, dir = %trash.display(), error = %e,
                "could not remove a deleted volume's directory; retried at the next start");
        }
    }

    /// Adopts the per-volume records of ferrovol 0.1: ready volumes move into the journal (and
    /// their directories get this store's marker); half-done creates and deletes are settled
    /// the way 0.1 would have settled them. Returns how many volumes were adopted.
    fn adopt_legacy(&self, state_dir: &Path) -> io::Result<usize> {
        let Some(dir) = legacy::dir_with_records(state_dir, super::BACKEND) else {
            return Ok(0);
        };
        let old: Vec<VolumeRecord> = legacy::load(&dir)?;
        let mut ready = Vec::new();
        for rec in old {
            let path = self.volume_dir(&rec.name);
            match rec.phase {
                Phase::Ready => {
                    if path.exists() {
                        fsutil::set_store_marker(&path, self.store_id())?;
                    }
                    ready.push(rec);
                }
                Phase::Creating | Phase::Deleting => self
                    .remove_dir_of(&rec.id, &path, rec.backend.enforced_by)
                    .map_err(io::Error::other)?,
            }
        }
        let adopted = ready.len();
        self.ledger.save_all(ready)?;
        legacy::retire(&dir)?;
        tracing::info!(volumes = adopted, from = %dir.display(), "adopted the state of ferrovol 0.1");
        Ok(adopted)
    }
}
