//! Making and growing a hostpath volume's storage: the directory (a subvolume on btrfs), its
//! ownership markers, its capacity limit and a block volume's image. Every step is safe to
//! repeat, and none is synced: the record's commit is the one sync (see the module doc).
//!
//! How a hostpath volume's capacity becomes a hard limit: an XFS/ext4 project quota on its
//! directory, or a btrfs qgroup on its subvolume. Chosen once per base path, when a volume
//! first needs it.

use super::controller::ALIGN;
use super::{Enforcement, HostpathBackend, VolumeRecord, BLOCK_QUOTA_SLACK};
use crate::backend::local::LocalVolumes;
use crate::error::{Error, Result};
use crate::os::btrfs::BtrfsQgroups;
use crate::os::quota::ProjectQuota;
use crate::os::{fsutil, markers};
use crate::volume::{AccessKind, CapacityRange, VolumeId};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

impl HostpathBackend {
    /// Makes the directory (and image) a record describes.
    pub(super) fn materialize(&self, rec: &VolumeRecord) -> Result<()> {
        self.make_dir(rec)?;
        if rec.kind == AccessKind::Block {
            self.make_image(rec)?;
        }
        Ok(())
    }

    /// Makes (or adopts) the volume directory, marks it, and sets its limit.
    pub(super) fn make_dir(&self, rec: &VolumeRecord) -> Result<()> {
        let dir = self.volume_dir(&rec.name);
        let os = |action: &str| Error::os(&rec.id, format!("{action} {}", dir.display()));
        let enforcer = self.enforcer(rec.backend.enforced_by)?;
        let create = || match enforcer {
            Some((l, _)) => l.create_dir(&dir),
            None => fs::create_dir(&dir),
        };
        match create() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match markers::read_markers(&dir).map_err(os("read marker of"))? {
                    Some(m) if m.volume == rec.id => {
                        // This create's own (a repeat, or a restore that claimed it), or empty
                        // and so holding nothing of anyone's; else an earlier volume's leftover.
                        let ours = rec.backend.incarnation.is_some()
                            && m.incarnation == rec.backend.incarnation;
                        if !ours && fs::read_dir(&dir).map_err(os("read"))?.next().is_some() {
                            self.remove_leftover(rec, &dir, &m)?;
                            create().map_err(os("create"))?;
                        }
                    }
                    None if fs::read_dir(&dir).map_err(os("read"))?.next().is_none()
                        && enforcer.is_none_or(|(l, _)| l.fits(&dir)) => {}
                    _ => {
                        return Err(Error::precondition(
                            &rec.id,
                            format!(
                                "{} already exists and is not this volume's; it is left untouched",
                                dir.display()
                            ),
                        ))
                    }
                }
            }
            Err(e) => return Err(os("create")(e)),
        }
        // Pods run as any user: the volume root is world-writable like a fresh emptyDir.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).map_err(os("chmod"))?;
        let inc = rec.backend.incarnation.as_deref();
        self.mark(&dir, &rec.id, inc).map_err(os("mark"))?;
        crate::failpoint::hit("create:after-mark");
        if let Some((l, how)) = enforcer {
            let bytes = self.quota_limit(rec.kind, rec.capacity_bytes);
            l.apply(&dir, how, bytes, false)
                .map_err(os("set capacity limit on"))?;
        }
        Ok(())
    }

    /// Marks `dir` as `id`'s: its id, this store, its create's incarnation and the journal's
    /// next sequence number (see `recovery`).
    pub(super) fn mark(&self, dir: &Path, id: &str, inc: Option<&str>) -> io::Result<()> {
        let (store, seq) = (self.store_id(), self.ledger.journal().next_seq());
        markers::set_markers(dir, id, store, inc, seq)
    }

    /// Removes a volume directory that carries `id` (or, for a create that never got as far
    /// as marking it, an empty unmarked one), and lifts its limit.
    pub(super) fn remove_dir_of(
        &self,
        id: &str,
        dir: &Path,
        enforced_by: Option<Enforcement>,
    ) -> Result<()> {
        if !dir.exists() {
            return self.release_limit(id, enforced_by);
        }
        let found = markers::read_markers(dir).map_err(Error::os(id, "read ownership marker"))?;
        let refuse =
            |why| Error::precondition(id, format!("refusing to remove {}: {why}", dir.display()));
        match found {
            // Not when another store marked it: a create that failed on finding another store's
            // directory of this id must not remove it. (No store marker: made by 0.1, whose
            // half-done creates and deletes the adoption settles here.)
            Some(m)
                if m.volume == id && m.store.as_deref().is_none_or(|s| s == self.store_id()) =>
            {
                fsutil::remove_tree_one_fs(dir)
                    .map_err(Error::os(id, format!("remove {}", dir.display())))?
            }
            Some(m) if m.volume == id => return Err(refuse("another state store made it".into())),
            None => {
                // Crashed between mkdir and marking: remove only if still empty.
                if let Err(e) = std::fs::remove_dir(dir) {
                    tracing::warn!(volume = %id, dir = %dir.display(), error = %e, "left an unmarked directory in place");
                }
            }
            Some(other) => {
                let why = format!(
                    "it is marked as volume {:?}, not as this volume",
                    other.volume
                );
                return Err(refuse(why));
            }
        }
        crate::failpoint::hit("discard:after-remove-dir");
        self.release_limit(id, enforced_by)
    }

    /// Why `dir` is not provably volume `id`'s, or None when it is: it carries `id`'s marker,
    /// and with `this_store` one set by this state store (or by 0.1, which set no store
    /// marker). An earlier create of the same id by this store counts as the id's (the start-up
    /// sweep removes such a directory too); an unreadable marker proves nothing.
    pub(super) fn not_ours(&self, id: &str, dir: &Path, this_store: bool) -> Option<String> {
        let store = self.store_id();
        let by_us =
            |m: &markers::Markers| !this_store || m.store.as_deref().is_none_or(|s| s == store);
        match markers::read_markers(dir) {
            Ok(Some(m)) if m.volume == id && by_us(&m) => None,
            Ok(Some(m)) if m.volume == id => Some("another state store marked it".into()),
            Ok(Some(m)) => Some(format!("it is marked as volume {:?}", m.volume)),
            Ok(None) => Some("it carries no ferrovol ownership marker".into()),
            Err(e) => Some(format!("its ownership marker cannot be read: {e}")),
        }
    }

    pub(super) fn release_limit(&self, id: &str, enforced_by: Option<Enforcement>) -> Result<()> {
        self.enforcer(enforced_by)?.map_or(Ok(()), |(l, how)| {
            l.release(how).map_err(Error::os(id, "lift capacity limit"))
        })
    }

    /// The limiter that enforces a volume's capacity, and how, when it is enforced.
    pub(super) fn enforcer(
        &self,
        how: Option<Enforcement>,
    ) -> Result<Option<(&Limiter, Enforcement)>> {
        let Some(how) = how else { return Ok(None) };
        Ok(self.limiter()?.map(|l| (l, how)))
    }

    /// Removes what an earlier volume of this name left under it (a delete whose removal
    /// failed, a create whose rollback failed): never served as the new volume. Only a
    /// directory this store marked, and whose fate the journal can prove, goes; anything else
    /// is refused.
    fn remove_leftover(
        &self,
        rec: &VolumeRecord,
        dir: &Path,
        found: &markers::Markers,
    ) -> Result<()> {
        let refuse = |why| {
            Err(Error::precondition(
                &rec.id,
                format!("{} holds {why}", dir.display()),
            ))
        };
        if found.store.as_deref() != Some(self.store_id()) {
            return refuse("an earlier volume of this name that this driver's state did not make; it is left untouched");
        }
        if !self.silence_proves(self.ledger.journal().damage().as_ref(), Some(found)) {
            return refuse("a volume of this name whose record the damaged state journal may have lost; it is kept (DeleteVolume of its id removes it)");
        }
        tracing::warn!(volume = %rec.id, dir = %dir.display(),
            "removing what an earlier, deleted volume of this name left behind before creating it anew");
        let what = format!("remove the earlier volume's leftover at {}", dir.display());
        crate::backend::done::long_step(|| fsutil::remove_tree_one_fs(dir))
            .map_err(Error::os(&rec.id, what))
    }

    /// Creates a block volume's sparse image (or grows one a crash left short).
    pub(super) fn make_image(&self, rec: &VolumeRecord) -> Result<()> {
        let image = self.image_path(&rec.name);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&image)
            .map_err(Error::os(&rec.id, format!("create {}", image.display())))?;
        if f.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            let what = format!("mark {} no-copy-on-write", image.display());
            fsutil::set_nocow(&f).map_err(Error::os(&rec.id, what))?;
        }
        f.set_len(rec.capacity_bytes)
            .map_err(Error::os(&rec.id, format!("size {}", image.display())))
    }

    /// Sets the length of an existing block volume's image (`verb` says why, for errors).
    pub(super) fn size_image(&self, rec: &VolumeRecord, len: u64, verb: &str) -> Result<()> {
        let image = self.image_path(&rec.name);
        let f = OpenOptions::new()
            .write(true)
            .open(&image)
            .map_err(Error::os(&rec.id, format!("open {}", image.display())))?;
        f.set_len(len)
            .map_err(Error::os(&rec.id, format!("{verb} {}", image.display())))
    }

    pub(super) fn quota_limit(&self, kind: AccessKind, capacity: u64) -> u64 {
        match kind {
            AccessKind::Mount => capacity,
            AccessKind::Block => capacity + BLOCK_QUOTA_SLACK,
        }
    }

    /// A project id derived from the volume id, probing past ids in use by us or anyone else.
    pub(super) fn allocate_project_id(&self, volume: &str) -> Result<u32> {
        const FIRST: u32 = 1 << 20;
        const SPAN: u32 = (1 << 31) - FIRST;
        let hash = crate::volume::stable_hash(volume);
        let limiter = self.limiter()?.expect("allocate only with a limiter");
        // Read in place: copying every record out for each create would cost a few MB of
        // short-lived allocations with 10,000 volumes.
        let mut in_use = std::collections::HashSet::new();
        self.ledger.for_each(|r| {
            if let Some(Enforcement::ProjectQuota { id }) = r.backend.enforced_by {
                in_use.insert(id);
            }
        });
        for probe in 0..1024u32 {
            let id = FIRST + ((hash as u32).wrapping_add(probe) % SPAN);
            if !in_use.contains(&id) && limiter.project_id_free(id) {
                return Ok(id);
            }
        }
        Err(Error::no_space(volume, "no free project quota id found"))
    }

    /// Grows a local volume to `range`: the limit, then the image, then the record.
    pub(super) fn grow(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)> {
        let mut rec = self.record(id)?;
        let id_str = rec.id.clone();
        self.require_base(&id_str)?;
        if range.required == 0 && range.limit == 0 {
            let why = format!("volume {id_str}: capacity_range is required");
            return Err(Error::invalid(why));
        }
        if range.limit != 0 && range.limit < rec.capacity_bytes {
            let (limit, now) = (range.limit, rec.capacity_bytes);
            let why = format!(
                "limit_bytes {limit} is below the current capacity {now}; volumes do not shrink"
            );
            return Err(Error::out_of_range(id_str, why));
        }
        let node_step = rec.kind == AccessKind::Block;
        if range.required <= rec.capacity_bytes {
            return Ok((rec.capacity_bytes, node_step));
        }
        let new = range.resolve(rec.capacity_bytes, ALIGN, &id_str)?;
        self.check_room(&id_str, new, new - rec.capacity_bytes, self.space()?)?;
        // Grow the limit first, then the image, then commit the record: each step is safe to
        // repeat, and a crash before the commit leaves the old size recorded (a retry grows it).
        if let Some((l, how)) = self.enforcer(rec.backend.enforced_by)? {
            let (dir, bytes) = (self.volume_dir(&rec.name), self.quota_limit(rec.kind, new));
            l.apply(&dir, how, bytes, false)
                .map_err(Error::os(&id_str, "raise capacity limit"))?;
        }
        if rec.kind == AccessKind::Block {
            self.size_image(&rec, new, "grow")?;
        }
        rec.capacity_bytes = new;
        self.ledger.save(rec)?;
        Ok((new, node_step))
    }
}

pub enum Limiter {
    Project(ProjectQuota),
    Btrfs(BtrfsQgroups),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterKind {
    Project,
    Btrfs,
}

impl Limiter {
    pub fn kind(&self) -> LimiterKind {
        match self {
            Limiter::Project(_) => LimiterKind::Project,
            Limiter::Btrfs(_) => LimiterKind::Btrfs,
        }
    }

    pub fn probe(base: &Path) -> io::Result<Option<Self>> {
        if let Some(q) = ProjectQuota::probe(base)? {
            return Ok(Some(Limiter::Project(q)));
        }
        Ok(BtrfsQgroups::probe(base)?.map(Limiter::Btrfs))
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Limiter::Project(_) => "project quota",
            Limiter::Btrfs(_) => "btrfs qgroup",
        }
    }

    /// Creates the volume directory in the form this limiter needs (a subvolume on btrfs).
    pub fn create_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Limiter::Project(_) => fs::create_dir(dir),
            Limiter::Btrfs(b) => b.create_subvolume(dir),
        }
    }

    /// Whether an existing `dir` can carry this limiter's limit.
    pub fn fits(&self, dir: &Path) -> bool {
        match self {
            Limiter::Project(_) => true,
            Limiter::Btrfs(_) => BtrfsQgroups::is_subvolume(dir),
        }
    }

    /// Sets (or raises) the limit of the volume at `dir` to `bytes`. On a directory that
    /// already holds data (`tree`: adoption), a project quota counts only the inodes in the
    /// project, so every directory and file of the tree joins it first.
    pub fn apply(&self, dir: &Path, how: Enforcement, bytes: u64, tree: bool) -> io::Result<()> {
        match (self, how) {
            (Limiter::Project(q), Enforcement::ProjectQuota { id }) => {
                if tree {
                    crate::os::quota::assign_project_tree(dir, id)?
                } else {
                    q.assign(dir, id)?
                }
                q.set_limit(id, bytes)
            }
            (Limiter::Btrfs(b), Enforcement::BtrfsQgroup) => b.set_limit(dir, bytes),
            _ => Err(mismatch()),
        }
    }

    /// Lifts the limit once the volume is gone. A btrfs qgroup goes with its subvolume.
    pub fn release(&self, how: Enforcement) -> io::Result<()> {
        match (self, how) {
            (Limiter::Project(q), Enforcement::ProjectQuota { id }) => q.set_limit(id, 0),
            (Limiter::Btrfs(_), Enforcement::BtrfsQgroup) => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// Lifts the limit of a volume directory that has no record (a create that was never
    /// acknowledged): its project id is read from the directory itself.
    pub fn release_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Limiter::Project(q) => match q.project_of(dir)? {
                0 => Ok(()),
                id => q.set_limit(id, 0),
            },
            Limiter::Btrfs(_) => Ok(()),
        }
    }

    /// (bytes used, inodes used if counted) by the volume at `dir`.
    pub fn usage(&self, dir: &Path, how: Enforcement) -> io::Result<(u64, Option<u64>)> {
        match (self, how) {
            (Limiter::Project(q), Enforcement::ProjectQuota { id }) => {
                let (_, used, inodes) = q.get(id)?;
                Ok((used, Some(inodes)))
            }
            (Limiter::Btrfs(b), Enforcement::BtrfsQgroup) => Ok((b.usage(dir)?, None)),
            _ => Err(mismatch()),
        }
    }

    /// Project ids of other tools must not be reused: true when `id` has no limit and no usage.
    pub fn project_id_free(&self, id: u32) -> bool {
        match self {
            Limiter::Project(q) => q
                .get(id)
                .map_or(true, |(l, u, i)| l == 0 && u == 0 && i == 0),
            Limiter::Btrfs(_) => true,
        }
    }
}

fn mismatch() -> io::Error {
    io::Error::other("the volume's recorded limit does not match this base path's filesystem")
}
