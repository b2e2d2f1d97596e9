//! Adoption of an existing directory as a hostpath volume, in place: one rename within the
//! base's filesystem (none when it already is the volume's place), never a copy, unless the
//! operator asks for a reflink copy on btrfs (below). The checks are in `adopt_checks`; which
//! pool a directory goes to, in `pools_dispatch`.
//!
//! The directory gets what a create gives a new one: the ownership markers (volume id, this
//! store, an incarnation, the journal's sequence), the capacity limit where the base's filesystem
//! can put one on an existing tree, and a record. Its mode, owner and content stay as found.
//!
//! Crash safety: the intent (source, volume, incarnation) is committed before anything changes;
//! then the source is marked, renamed to the volume's place, limited, and the record committed;
//! the intent goes last. Once the record is committed the adoption is done: an intent that
//! cannot be dropped then stays for the next start, which drops it. A start that finds an intent settles it before the base is swept (the
//! sweep removes marked directories without a record): the directory in the volume's place,
//! marked with the intent's incarnation, is finished into a volume; anything else is rolled back
//! (renamed back if it moved, its markers taken off). So a kill at any point leaves either the
//! untouched directory or a complete volume.
//!
//! `--reflink-copy` adoption on btrfs: a qgroup limits a subvolume, and an existing plain
//! directory is none, so its tree is reflink-copied (extents shared, no data written twice)
//! into a new subvolume that becomes the volume; the original is renamed aside to
//! `<dir>.adopted-<incarnation>`, never deleted (the operator removes it once the volume serves).
//!
//! The copy is made under a staging name in the base (`.adopt-<incarnation>`, marked with the
//! intent's incarnation), synced, then renamed into the volume's place. A start that finds it
//! there finishes (sets the original aside if still there); anything earlier is rolled back:
//! the staging subvolume, proven ours by its markers, is deleted; the original was untouched.

use super::adopt_checks::same_filesystem;
use super::provision::{Limiter, LimiterKind};
use super::{Enforcement, HostpathBackend, HostpathData, VolumeRecord};
use crate::backend::adopt::AdoptDir;
use crate::backend::local::LocalVolumes;
use crate::backend::ControllerBackend;
use crate::error::{Error, Result};
use crate::os::btrfs::{self, BtrfsQgroups};
use crate::os::{copytree, fsutil, markers};
use crate::volume::{AccessKind, VolumeCondition, VolumeInfo};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// Journal prefix of the default pool's adoption intents (and the metrics label of all).
pub(super) const LEDGER: &str = "hostpath-adopt";

/// An adoption under way: committed before its first change, removed after its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptIntent {
    pub id: String,
    pub name: String,
    /// The directory as the operator named it (canonical).
    pub source: PathBuf,
    pub capacity_bytes: u64,
    #[serde(default)]
    pub enforced_by: Option<Enforcement>,
    pub incarnation: String,
    /// A reflink copy into a new subvolume (see the module doc) rather than a rename.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
}

record_of!(AdoptIntent);

impl AdoptIntent {
    /// `dir`'s markers when they carry this adoption's incarnation.
    pub(super) fn made(&self, dir: &Path) -> Option<markers::Markers> {
        let inc = Some(self.incarnation.as_str());
        (markers::read_markers(dir).ok().flatten()).filter(|m| m.incarnation.as_deref() == inc)
    }
}

/// Which limiter enforces an adopted directory's capacity on a base whose limiter is `limiter`
/// (None: advisory): a project quota takes any directory (every inode of the tree is put into
/// the project); a btrfs qgroup needs a subvolume, so a plain directory there stays advisory.
pub(super) fn enforcement_for(
    limiter: Option<LimiterKind>,
    is_subvolume: bool,
) -> Option<LimiterKind> {
    limiter.filter(|l| *l == LimiterKind::Project || is_subvolume)
}

/// Held through each adoption: two adoptions of one directory under two names (two locks)
/// must not interleave their marks and renames, or the directory would end up carrying the
/// other's incarnation. Adoptions are rare operator calls; one at a time costs nothing.
static ADOPTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where the original goes: `<dir>.adopted-<incarnation>` beside it.
pub(super) fn aside_path(intent: &AdoptIntent) -> PathBuf {
    let mut name = intent.source.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".adopted-{}", intent.incarnation));
    intent.source.with_file_name(name)
}

impl HostpathBackend {
    pub(super) fn adopt_dir(&self, req: &AdoptDir) -> Result<VolumeInfo> {
        let _one_at_a_time = ADOPTING.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.volume_id(&req.name)?.to_string();
        self.require_base(&id)?;
        if req.capacity == 0 {
            let why = format!("volume {id}: a capacity is required (the PersistentVolume's size)");
            return Err(Error::invalid(why));
        }
        let capacity = req.capacity.next_multiple_of(super::controller::ALIGN);
        if let Some(rec) = self.ledger.get(&req.name) {
            // A repeat (the answer was lost, or the operator ran it twice): the source has
            // moved into the volume by now.
            let asked: PathBuf = req.path.components().collect();
            if rec.backend.adopted_from.as_deref() == Some(asked.as_path()) {
                return Ok(self.volume_info(&rec));
            }
            let why = format!(
                "a volume named {:?} exists already; choose another name",
                req.name
            );
            return Err(Error::exists(id, why));
        }
        self.ledger.refuse_id_of_another(&id, &req.name, "volume")?;
        let source = self.check_source(&id, &req.path)?;
        self.check_unused(&id, &source)?;
        self.check_no_pod_uses(&id, &source, req.pods.as_deref())?;
        if req.reflink_copy {
            self.check_copyable(&id, &source)?;
        } else {
            self.check_same_fs(&id, &source)?;
        }
        let target = self.volume_dir(&req.name);
        // A directory already in the base under the volume's name is adopted where it is.
        let in_place = target == source && !req.reflink_copy;
        if !in_place && std::fs::symlink_metadata(&target).is_ok() {
            return Err(Error::exists(
                id,
                format!(
                    "{} (the volume's place in the base) exists already; {} is left untouched",
                    target.display(),
                    source.display()
                ),
            ));
        }
        let (used, _) = fsutil::disk_usage(&source)
            .map_err(Error::os(&id, format!("measure {}", source.display())))?;
        if used > capacity {
            let why = format!(
                "{} holds {used} bytes, more than the capacity {capacity}; nothing was changed",
                source.display()
            );
            return Err(Error::out_of_range(id, why));
        }
        let kind = self.limiter()?.map(|l| l.kind());
        // A copy goes into a new subvolume, which a qgroup limits.
        let subvolume = req.reflink_copy || BtrfsQgroups::is_subvolume(&source);
        let enforced_by = match enforcement_for(kind, subvolume) {
            Some(LimiterKind::Project) => Some(Enforcement::ProjectQuota {
                id: self.allocate_project_id(&id)?,
            }),
            Some(LimiterKind::Btrfs) => Some(Enforcement::BtrfsQgroup),
            // btrfs with quota, but the directory is no subvolume: no qgroup can limit it.
            None if kind.is_some() => {
                tracing::warn!(volume = %id, dir = %source.display(),
                    "btrfs limits a subvolume, and this directory is none: its capacity stays advisory (capacity-enforced=false)");
                None
            }
            None => {
                tracing::warn!(volume = %id, dir = %source.display(), fs = self.base_fs,
                    "the base's filesystem has no quota: the adopted volume's capacity is advisory");
                None
            }
        };
        let intent = AdoptIntent {
            id: id.clone(),
            name: req.name.clone(),
            source,
            capacity_bytes: capacity,
            enforced_by,
            incarnation: fsutil::random_token()
                .map_err(Error::os(&id, "draw the incarnation token"))?,
            copy: req.reflink_copy,
        };
        // The intent is durable before the directory changes: a start after a crash finds it.
        self.adoptions.save(intent.clone())?;
        crate::failpoint::hit("adopt:after-intent");
        let rec = self.carry_out(&intent).inspect_err(|_| {
            if let Err(undo) = self.roll_back(&intent) {
                tracing::error!(volume = %id, error = %undo,
                    "could not roll back a failed adoption; the next start finishes the rollback");
            }
        })?;
        tracing::info!(volume = %id, from = %intent.source.display(),
            to = %self.volume_dir(&intent.name).display(), enforced = enforced_by.is_some(),
            "adopted a directory as a volume");
        Ok(self.info_with(&rec, VolumeCondition::healthy()))
    }

    /// Marks, moves, limits and records the directory of `intent`; the intent goes last.
    fn carry_out(&self, intent: &AdoptIntent) -> Result<VolumeRecord> {
        if intent.copy {
            self.copy_in(intent)?;
            return self.finish(intent);
        }
        let target = self.volume_dir(&intent.name);
        // In place, the source is the volume's place.
        let (src, inc) = (&intent.source, Some(intent.incarnation.as_str()));
        (self.mark(src, &intent.id, inc))
            .map_err(Error::os(&intent.id, format!("mark {}", src.display())))?;
        if intent.source != target {
            crate::failpoint::hit("adopt:after-mark");
            fsutil::rename_noreplace_durable(&intent.source, &target).map_err(|e| {
                Error::precondition(
                    &intent.id,
                    format!(
                        "renaming {} to {}: {e}; nothing was moved",
                        intent.source.display(),
                        target.display()
                    ),
                )
            })?;
        }
        crate::failpoint::hit("adopt:after-rename");
        self.finish(intent)
    }

    /// Limits the directory in the volume's place and commits its record, then drops the intent
    /// (a failure to drop it is only logged: the committed record makes the adoption done).
    pub(super) fn finish(&self, intent: &AdoptIntent) -> Result<VolumeRecord> {
        let target = self.volume_dir(&intent.name);
        if let (Some(l), Some(how)) = (self.limiter()?, intent.enforced_by) {
            l.apply(&target, how, intent.capacity_bytes, true)
                .map_err(Error::os(&intent.id, format!("limit {}", target.display())))?;
        }
        let rec = VolumeRecord::new(
            intent.id.clone(),
            intent.name.clone(),
            AccessKind::Mount,
            intent.capacity_bytes,
            HostpathData {
                enforced_by: intent.enforced_by,
                incarnation: Some(intent.incarnation.clone()),
                adopted_from: Some(intent.source.clone()),
                ..Default::default()
            },
        );
        self.ledger.save(rec.clone())?;
        crate::failpoint::hit("adopt:after-commit");
        // The adoption is done once its record is durable: a failure to drop the intent must not
        // roll it back (the record would stay, its directory gone back to the source). A start
        // drops an intent whose record carries its incarnation.
        let dropped = crate::failpoint::fail("adopt:remove-intent")
            .map_err(Error::state(&intent.id))
            .and_then(|()| self.adoptions.remove(intent));
        if let Err(e) = dropped {
            tracing::warn!(volume = %intent.id, error = %e,
                "adopted, but its adoption intent could not be dropped; the next start drops it");
        }
        Ok(rec)
    }

    /// Gives the directory back as it was found: renamed back to its source if it moved, its
    /// markers taken off, its limit lifted; then the intent goes.
    fn roll_back(&self, intent: &AdoptIntent) -> io::Result<()> {
        if intent.copy {
            return self.roll_back_copy(intent);
        }
        let target = self.volume_dir(&intent.name);
        if intent.source != target && intent.made(&target).is_some() {
            fsutil::rename_noreplace_durable(&target, &intent.source)?;
        }
        if intent.made(&intent.source).is_some() {
            markers::clear_markers(&intent.source)?;
        }
        // A limit a record holds is that volume's: an intent left after its record was
        // committed (see `finish`) can outlive the volume, and a later create may take its
        // project id.
        let held = |how| (self.ledger.records().iter()).any(|r| r.backend.enforced_by == Some(how));
        if let (Some(how), Some(l)) = (intent.enforced_by, self.features()?.limiter.as_ref()) {
            if !held(how) {
                l.release(how)?;
            }
        }
        self.adoptions.remove(intent).map_err(io::Error::other)?;
        tracing::warn!(volume = %intent.id, dir = %intent.source.display(),
            "adoption rolled back: the directory is where and as it was");
        Ok(())
    }

    /// Settles the adoptions a crash interrupted (at start, before the base is swept): the
    /// directory in the volume's place with the intent's incarnation becomes the volume;
    /// otherwise the adoption is rolled back.
    pub(super) fn recover_adoptions(&self) -> io::Result<()> {
        for intent in self.adoptions.records() {
            let done = self.ledger.get(&intent.name).is_some_and(|r| {
                r.backend.incarnation.as_deref() == Some(intent.incarnation.as_str())
            });
            if done {
                self.adoptions.remove(&intent).map_err(io::Error::other)?;
                continue;
            }
            let target = self.volume_dir(&intent.name);
            if intent.made(&target).is_some_and(|m| m.volume == intent.id) {
                if intent.copy {
                    self.set_original_aside(&intent).map_err(io::Error::other)?;
                }
                self.finish(&intent).map_err(io::Error::other)?;
                tracing::info!(volume = %intent.id, dir = %target.display(),
                    "finished an adoption a crash interrupted");
            } else {
                self.roll_back(&intent)?;
            }
        }
        Ok(())
    }

    fn staging_of(&self, intent: &AdoptIntent) -> PathBuf {
        self.base.join(format!(".adopt-{}", intent.incarnation))
    }

    /// A reflink copy needs a btrfs base with quota (the subvolume's qgroup is the point) on
    /// the source's filesystem.
    pub(super) fn check_copyable(&self, id: &str, source: &Path) -> Result<()> {
        let base = self.base.display();
        let refuse = |why| {
            Err(Error::precondition(
                id,
                format!("{why}. Nothing was changed"),
            ))
        };
        if !matches!(self.limiter()?, Some(Limiter::Btrfs(_))) {
            return refuse(format!("a reflink copy goes into a btrfs subvolume limited by a qgroup; base path {base} is {} without btrfs quota", self.base_fs));
        }
        if !same_filesystem(source, &self.base).map_err(Error::os(id, "read the mount table"))? {
            return refuse(format!("{} is on another filesystem than the base path {base}; a reflink copy shares extents within one filesystem only", source.display()));
        }
        Ok(())
    }

    /// Makes the copy and puts it in the volume's place, then the original aside.
    pub(super) fn copy_in(&self, intent: &AdoptIntent) -> Result<()> {
        let id = &intent.id;
        let staging = self.staging_of(intent);
        let os = |what: &str, p: &Path| Error::os(id, format!("{what} {}", p.display()));
        let Some(Limiter::Btrfs(qgroups)) = self.limiter()? else {
            return Err(Error::precondition(id, "the base lost its btrfs quota"));
        };
        qgroups
            .create_subvolume(&staging)
            .map_err(os("make the subvolume", &staging))?;
        (self.mark(&staging, id, Some(&intent.incarnation))).map_err(os("mark", &staging))?;
        crate::failpoint::hit("adopt:copy:after-subvolume");
        let sync = copytree::FsSync::begin(&self.base).map_err(os("open", &self.base))?;
        let stats = crate::backend::done::long_step(|| {
            copytree::copy_tree(&intent.source, &staging, copytree::Mode::Reflink)
        })
        .map_err(os("copy", &intent.source))?;
        sync.commit().map_err(os("sync", &self.base))?;
        tracing::info!(volume = %id, files = stats.files, reflinked = stats.reflinked,
            bytes_copied = stats.bytes_copied, "copied the directory into a subvolume");
        crate::failpoint::hit("adopt:copy:after-copy");
        let target = self.volume_dir(&intent.name);
        fsutil::rename_noreplace_durable(&staging, &target).map_err(os("place", &target))?;
        crate::failpoint::hit("adopt:copy:after-place");
        self.set_original_aside(intent)
    }

    /// Renames the original aside (once the copy is in the volume's place); done already when
    /// it is not there any more.
    pub(super) fn set_original_aside(&self, intent: &AdoptIntent) -> Result<()> {
        if std::fs::symlink_metadata(&intent.source).is_err() {
            return Ok(());
        }
        let aside = aside_path(intent);
        let what = format!(
            "rename {} aside to {}",
            intent.source.display(),
            aside.display()
        );
        fsutil::rename_noreplace_durable(&intent.source, &aside)
            .map_err(Error::os(&intent.id, what))?;
        tracing::info!(volume = %intent.id, original = %aside.display(),
            "the original directory is kept aside; remove it once the volume serves");
        Ok(())
    }

    /// Undoes a copy adoption: the original back under its name if it went aside, the copy
    /// (staging or in place, proven by the intent's incarnation) deleted; then the intent goes.
    pub(super) fn roll_back_copy(&self, intent: &AdoptIntent) -> io::Result<()> {
        let aside = aside_path(intent);
        if std::fs::symlink_metadata(&intent.source).is_err() && aside.exists() {
            fsutil::rename_noreplace_durable(&aside, &intent.source)?;
        }
        for copy in [self.staging_of(intent), self.volume_dir(&intent.name)] {
            if intent.made(&copy).is_none_or(|m| m.volume != intent.id) {
                continue;
            }
            if BtrfsQgroups::is_subvolume(&copy) {
                btrfs::destroy_subvolume(&copy)?;
            } else {
                fsutil::remove_tree_one_fs(&copy)?;
            }
        }
        self.adoptions.remove(intent).map_err(io::Error::other)?;
        tracing::warn!(volume = %intent.id, dir = %intent.source.display(),
            "copy adoption rolled back: the original is where and as it was, the copy is gone");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // This kernel has no CONFIG_QUOTA: the project-quota path is proven here, by its decision,
    // and by `quota::assign_project_tree`'s own test; the tests through the driver see advisory
    // capacities.
    #[test]
    fn project_quota_limits_any_directory_a_qgroup_only_a_subvolume() {
        let p = Some(LimiterKind::Project);
        let b = Some(LimiterKind::Btrfs);
        assert_eq!(enforcement_for(p, false), p);
        assert_eq!(enforcement_for(p, true), p);
        assert_eq!(enforcement_for(b, true), b);
        assert_eq!(enforcement_for(b, false), None);
        assert_eq!(enforcement_for(None, false), None);
        assert_eq!(enforcement_for(None, true), None);
    }
}
