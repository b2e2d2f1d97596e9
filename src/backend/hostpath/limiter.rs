//! How a hostpath volume's capacity becomes a hard limit: an XFS/ext4 project quota on its
//! directory, or a btrfs qgroup on its subvolume. Chosen once per base path, when a volume
//! first needs it.

use super::Enforcement;
use crate::os::btrfs::BtrfsQgroups;
use crate::os::quota::ProjectQuota;
use std::fs;
use std::io;
use std::path::Path;

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
