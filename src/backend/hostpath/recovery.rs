//! Start-up reconciliation of the hostpath backend: the journal says which volumes were
//! acknowledged; the directories' markers say what the driver made. A name can be deleted and
//! created again, so each create draws an incarnation token, kept in the record and on the
//! directory; a trash or directory is the record's only when the tokens agree.
//!
//! | found at start | meaning | action |
//! |---|---|---|
//! | record, directory of its incarnation | a volume | keep; forget publications whose mounts vanished |
//! | record, trash of its incarnation | a delete that was never acknowledged (left by builds that renamed before the commit) | finish it |
//! | record, trash or directory of an earlier incarnation, ours | an acknowledged delete of an earlier volume of that name (a power cut lost its removal or its rename) | remove that; the record is untouched |
//! | record, trash and no directory, incarnations unknown (a record without incarnations) | cannot tell | keep both, log an error; ListVolumes reports the volume abnormal; DeleteVolume settles it |
//! | record, nothing | the mkdir was lost (power cut) or removed by hand | recreate it empty, log an error |
//! | no record, directory marked by this store | a create that was never acknowledged, or an acknowledged delete whose removal a crash or power cut stopped | remove it |
//! | no record, trash marked by this store | a delete acknowledged before its removal | remove it |
//! | no record, marked by another store or none | not provably ours (state lost or restored) | leave it, report its id |
//!
//! Every removal reads the journal's silence as proof. It is none for a directory marked (with the
//! journal's next sequence number) at or before the last number the journal may have lost: when
//! the journal is damaged, or proven behind because a marker is newer than its end. Such a
//! directory is kept, logged and counted, and a record without a directory is not recreated.

use super::{HostpathBackend, VolumeRecord, TRASH_PREFIX};
use crate::os::fsutil;
use crate::os::markers::{self, Markers};
use crate::state::{legacy, Damage, Phase};
use std::collections::HashSet;
use std::io;
use std::path::Path;

#[derive(Default)]
struct Tally {
    kept: usize,
    rolled_back: usize,
    finished_deletes: usize,
    earlier_removed: usize,
    recreated: usize,
    held: usize,
    adopted: usize,
    /// Directories kept because no intact record explains them (the journal is damaged or
    /// behind).
    unexplained: usize,
}

/// Whose a trash directory is, given the record that now holds its volume's name.
#[derive(Debug, PartialEq, Eq)]
enum TrashOf {
    /// The record's own: its delete was interrupted before the commit.
    Current,
    /// An earlier volume of the same name, whose delete was acknowledged.
    Earlier,
    /// Cannot be told apart (no incarnation on one side, no directory to compare with).
    Unsure,
}

impl HostpathBackend {
    pub(super) fn recover(&self, state_dir: &Path) -> io::Result<()> {
        let mut tally = Tally {
            adopted: self.adopt_legacy(state_dir)?,
            ..Tally::default()
        };
        self.check_journal_current()?;
        // Before the sweep, which removes marked directories that have no record.
        self.recover_adoptions()?;
        let damage = self.ledger.journal().damage();
        let held = self.sweep_base(&mut tally, damage.as_ref())?;
        tally.held = held.len();
        for mut rec in self.ledger.records() {
            let dir = self.volume_dir(&rec.name);
            if !dir.exists() && !held.contains(&rec.name) {
                if damage.is_some() {
                    // A lost change may have been this volume's delete: recreating it would
                    // bring back a volume the CO was told is gone.
                    tracing::error!(volume = %rec.id, dir = %dir.display(),
                        "volume directory is missing and the state journal is damaged: not recreated; the volume is reported abnormal, DeleteVolume removes its record");
                    tally.held += 1;
                } else {
                    tracing::error!(volume = %rec.id, dir = %dir.display(),
                        "volume directory is missing (lost in a power cut before the filesystem committed it, or removed by hand): recreating it empty, as it was when acknowledged");
                    self.materialize(&rec).map_err(io::Error::other)?;
                    tally.recreated += 1;
                }
            }
            if self.forget_lost_mounts(&mut rec) {
                self.ledger.save(rec).map_err(io::Error::other)?;
            }
            tally.kept += 1;
        }
        crate::metrics::add_unexplained_dirs(tally.unexplained as u64);
        tracing::info!(
            volumes = tally.kept,
            rolled_back = tally.rolled_back,
            finished_deletes = tally.finished_deletes,
            earlier_incarnations_removed = tally.earlier_removed,
            recreated = tally.recreated,
            held_unsure = tally.held,
            unexplained_kept = tally.unexplained,
            adopted_from_0_1 = tally.adopted,
            "hostpath state recovered"
        );
        Ok(())
    }

    /// Proves the journal is not behind the base: every directory this store marked carries
    /// the journal's next sequence number at the time, so one marked later than the batch after
    /// the journal's end was made by a run the journal has not seen (the state dir was restored
    /// from an older copy, or lost its newest commits). Then the journal is marked damaged
    /// through that number, and nothing marked up to it is removed without a record.
    fn check_journal_current(&self) -> io::Result<()> {
        let journal = self.ledger.journal();
        let end = journal.opened_seq();
        let mut newest: Option<(u64, std::path::PathBuf)> = None;
        let snapshots = match std::fs::read_dir(self.snapshots_root()) {
            Ok(dir) => Some(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        for entry in std::fs::read_dir(&self.base)?.chain(snapshots.into_iter().flatten()) {
            let path = entry?.path();
            let Ok(Some(m)) = markers::read_markers(&path) else {
                continue;
            };
            let ours = m.store.as_deref() == Some(self.store_id());
            if let Some(seq) = m.seq.filter(|&seq| ours && seq > end + 1) {
                if newest.as_ref().is_none_or(|(n, _)| seq > *n) {
                    newest = Some((seq, path))
                }
            }
        }
        let Some((seq, path)) = newest else {
            return Ok(());
        };
        let found = format!(
            "{} was marked at sequence {seq}, past the journal's end {end}",
            path.display()
        );
        tracing::error!(journal_end = end, newest_marker = seq, dir = %path.display(),
            "state journal is behind the volumes on the base (restored from an older copy, or its newest commits were lost): directories it does not record are kept, never removed");
        journal.mark_damaged(seq, vec![found])
    }

    /// Keeps a directory that no intact record explains, says so and counts it.
    pub(super) fn keep_unexplained(&self, path: &Path, id: Option<&str>, count: &mut usize) {
        *count += 1;
        tracing::error!(dir = %path.display(), id = id.unwrap_or("?"),
            "directory that no intact state record explains (the state journal is damaged or behind): kept; deleting its id removes it");
    }

    /// Whether the journal's silence about a directory with these markers proves anything: it
    /// does unless the journal may have lost a change made after the directory was marked.
    pub(super) fn silence_proves(&self, damage: Option<&Damage>, found: Option<&Markers>) -> bool {
        damage.is_none_or(|d| !d.may_explain(found.and_then(|m| m.seq)))
    }

    /// What `dir`'s markers say: the id it is marked with, whether this store marked it, and
    /// whether the journal's silence about it proves anything (`silence_proves`).
    pub(super) fn examine(
        &self,
        dir: &Path,
        damage: Option<&Damage>,
    ) -> (Option<String>, bool, bool) {
        let found = markers::read_markers(dir).ok().flatten();
        let ours = found
            .as_ref()
            .is_some_and(|m| m.store.as_deref() == Some(self.store_id()));
        let provable = self.silence_proves(damage, found.as_ref());
        (found.map(|m| m.volume), ours, provable)
    }

    /// Walks the base once and settles every directory the journal does not explain. Returns
    /// the names of volumes whose state could not be told (kept as found, not recreated).
    /// A directory marked within `damage` is never removed: a change the journal lost may
    /// explain it.
    fn sweep_base(
        &self,
        tally: &mut Tally,
        damage: Option<&Damage>,
    ) -> io::Result<HashSet<String>> {
        let mut held = HashSet::new();
        for entry in std::fs::read_dir(&self.base)? {
            let entry = entry?;
            let path = entry.path();
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let (marker, ours, provable) = self.examine(&path, damage);
            if let Some(volume) = name.strip_prefix(TRASH_PREFIX) {
                let rec = marker
                    .as_deref()
                    .and_then(|id| self.ledger.by_id(id))
                    .filter(|r| r.name == volume);
                let Some(rec) = rec else {
                    if ours && !provable {
                        self.keep_unexplained(&path, marker.as_deref(), &mut tally.unexplained);
                    } else if ours {
                        self.remove_trash(marker.as_deref().unwrap_or("?"), &path, false);
                        tally.finished_deletes += 1;
                    } else {
                        tracing::warn!(dir = %path.display(), "trash directory not made by this driver's state: left in place");
                    }
                    continue;
                };
                match self.trash_of(&rec, &path) {
                    _ if !provable => {
                        self.keep_unexplained(&path, Some(&rec.id), &mut tally.unexplained);
                        held.insert(rec.name.clone());
                    }
                    TrashOf::Current => {
                        // Renamed to trash, removal not yet committed: finish the delete.
                        self.release_limit(&rec.id, rec.backend.enforced_by)
                            .map_err(io::Error::other)?;
                        self.ledger.remove(&rec).map_err(io::Error::other)?;
                        self.remove_trash(&rec.id, &path, false);
                        tally.finished_deletes += 1;
                    }
                    // Its delete lifted its limit before renaming it to trash; the current
                    // volume's limit is not touched.
                    TrashOf::Earlier if ours => {
                        tracing::info!(volume = %rec.id, dir = %path.display(),
                            "removing the trash of an earlier, deleted volume of this name; the current volume is kept");
                        self.remove_trash(&rec.id, &path, false);
                        tally.earlier_removed += 1;
                    }
                    TrashOf::Earlier => tracing::warn!(volume = %rec.id, dir = %path.display(),
                        "trash of an earlier volume of this name, not made by this driver's state: left in place"),
                    TrashOf::Unsure => {
                        tracing::error!(volume = %rec.id, dir = %path.display(),
                            "cannot tell whether this trash is an unfinished delete of the volume or of an earlier volume of the same name (written before incarnations): keeping the record and the trash; ListVolumes reports the volume abnormal, and DeleteVolume removes both");
                        held.insert(rec.name.clone());
                    }
                }
                continue;
            }
            if let Some(rec) = self.ledger.get(&name) {
                let earlier = self.is_earlier_incarnation(&rec, &path, marker.as_deref());
                if ours && earlier && !provable {
                    // The record may be the one that is out of date.
                    self.keep_unexplained(&path, Some(&rec.id), &mut tally.unexplained);
                } else if ours && earlier {
                    // A power cut lost both the rename of an acknowledged delete and the mkdir
                    // of the create after it: the old content must not appear as the new
                    // volume's. Its limit was lifted by its delete; the record's own is set
                    // again when the loop in `recover` recreates the directory.
                    tracing::warn!(volume = %rec.id, dir = %path.display(),
                        "the directory holds an earlier, deleted volume of this name: removing it and recreating the current volume empty");
                    fsutil::remove_tree_one_fs(&path)?;
                    tally.earlier_removed += 1;
                }
                continue;
            }
            match marker {
                Some(id) if ours && !provable => {
                    self.keep_unexplained(&path, Some(&id), &mut tally.unexplained);
                }
                Some(id) if ours => {
                    tracing::info!(volume = %id, dir = %path.display(), "rolling back a volume that was never acknowledged");
                    if let Some(l) = &self.features()?.limiter {
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
        Ok(held)
    }

    /// Whether `dir`, under the record's name and marked with its id, was made by an earlier
    /// create of that id: both incarnations are known and differ.
    fn is_earlier_incarnation(&self, rec: &VolumeRecord, dir: &Path, marker: Option<&str>) -> bool {
        let Some(current) = &rec.backend.incarnation else {
            return false;
        };
        marker == Some(rec.id.as_str())
            && matches!(markers::incarnation_marker(dir), Ok(Some(inc)) if &inc != current)
    }

    /// Decides whose `trash` (marked with `rec`'s id, named after its name) is. `Current` only
    /// on proof (equal incarnations and no directory of that incarnation in place), because
    /// finishing a delete removes an acknowledged record; `Earlier` on proof too, because it
    /// removes the trash.
    fn trash_of(&self, rec: &VolumeRecord, trash: &Path) -> TrashOf {
        let dir = self.volume_dir(&rec.name);
        // The live directory's incarnation, if a directory marked with this id is in place.
        let live = matches!(markers::owner_marker(&dir), Ok(Some(m)) if m == rec.id)
            .then(|| markers::incarnation_marker(&dir).ok().flatten());
        let of_trash = markers::incarnation_marker(trash).ok().flatten();
        match (&rec.backend.incarnation, of_trash) {
            (Some(current), Some(t)) if *current != t => TrashOf::Earlier,
            // A trash carrying a token while the record has none: made by a create after the
            // record's, which is impossible unless the trash is not this record's.
            (None, Some(_)) => TrashOf::Earlier,
            // Same token twice (a copy by hand): touch neither.
            (Some(current), Some(_))
                if live.as_ref().is_some_and(|l| l.as_ref() == Some(current)) =>
            {
                TrashOf::Unsure
            }
            (Some(_), Some(_)) => TrashOf::Current,
            // No token on the trash: the record's directory in place proves the trash older
            // (a directory cannot be both renamed away and present).
            (_, None) if live.is_some() => TrashOf::Earlier,
            (_, None) => TrashOf::Unsure,
        }
    }

    /// Removes a deleted volume's directory once its record's removal is durable: one rmdir
    /// when nobody wrote to it, else renamed to trash first, so a removal stopped half-way never
    /// leaves part of it under the volume's name. No directory: a build that renamed before its
    /// commit left a trash, which goes instead. A failure is retried at the next start (the
    /// directory is marked by this store and has no record). Either goes only when it carries
    /// the volume's marker, read again right before the removal (the directory's set by this
    /// store, as DeleteVolume checked before its commit; the trash's by any, as recovery matches
    /// a trash to its record by the id alone); anything else stays.
    pub(super) fn remove_deleted(&self, id: &str, name: &str) {
        let dir = self.volume_dir(name);
        let trash = self.base.join(format!("{TRASH_PREFIX}{name}"));
        let present = |p: &Path| std::fs::symlink_metadata(p).is_ok();
        let (at, this_store) = if present(&dir) {
            (&dir, true)
        } else {
            (&trash, false)
        };
        if let Some(why) = present(at)
            .then(|| self.not_ours(id, at, this_store))
            .flatten()
        {
            tracing::warn!(volume = %id, dir = %at.display(), why,
                "deleted; a directory under its name is not the volume's and is left in place");
            return;
        }
        let failed = match std::fs::remove_dir(&dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self.remove_trash(id, &trash, false)
            }
            // The delete looked for mounts inside before its commit.
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                match std::fs::rename(&dir, &trash) {
                    Ok(()) => return self.remove_trash(id, &trash, true),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        tracing::warn!(volume = %id, dir = %dir.display(), error = %failed,
            "could not remove a deleted volume's directory; retried at the next start");
    }

    /// Removes a trash tree after its record is gone; a failure is retried at the next start.
    /// `mounts_checked`: the caller found nothing mounted inside just before (DeleteVolume, under
    /// the volume's lock), so the mount table need not be read again.
    pub(super) fn remove_trash(&self, id: &str, trash: &Path, mounts_checked: bool) {
        // Only a tree is renamed to trash (`remove_deleted` removes an empty directory in
        // place), so this always walks.
        let removed = crate::backend::done::long_step(|| match mounts_checked {
            true => crate::os::rmtree::remove_tree(trash),
            false => fsutil::remove_tree_one_fs(trash),
        });
        if let Err(e) = removed {
            tracing::warn!(volume = %id, dir = %trash.display(), error = %e,
                "could not remove a deleted volume's directory; retried at the next start");
        }
    }

    /// Adopts the per-volume records of ferrovol 0.1: ready volumes move into the journal (and
    /// their directories get this store's marker); half-done creates and deletes are settled
    /// the way 0.1 would have settled them. Returns how many volumes were adopted.
    fn adopt_legacy(&self, state_dir: &Path) -> io::Result<usize> {
        // 0.1 knew one base: its records are the default pool's.
        if self.pool != super::pool_config::DEFAULT_POOL {
            return Ok(0);
        }
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
                        markers::set_store_marker(&path, self.store_id())?;
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
