//! `--reflink-copy` adoption on btrfs: a qgroup limits a subvolume, and an existing plain
//! directory is none, so its tree is reflink-copied (extents shared, no data written twice)
//! into a new subvolume that becomes the volume; the original is renamed aside to
//! `<dir>.adopted-<incarnation>`, never deleted (the operator removes it once the volume serves).
//!
//! The copy is made under a staging name in the base (`.adopt-<incarnation>`, marked with the
//! intent's incarnation), synced, then renamed into the volume's place. A start that finds it
//! there finishes (sets the original aside if still there); anything earlier is rolled back:
//! the staging subvolume, proven ours by its markers, is deleted; the original was untouched.

use super::adopt::AdoptIntent;
use super::adopt_checks::same_filesystem;
use super::limiter::Limiter;
use super::HostpathBackend;
use crate::error::{Error, Result};
use crate::os::btrfs::{self, BtrfsQgroups};
use crate::os::{copytree, fsutil};
use std::io;
use std::path::{Path, PathBuf};

/// Where the original goes: `<dir>.adopted-<incarnation>` beside it.
pub(super) fn aside_path(intent: &AdoptIntent) -> PathBuf {
    let mut name = intent.source.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".adopted-{}", intent.incarnation));
    intent.source.with_file_name(name)
}

impl HostpathBackend {
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
