//! Snapshots of hostpath volumes, kept on the same node under `<base>/.snapshots/<key>/`.
//! The outer directory carries the ownership markers (snapshot id, state store); the content
//! is `data/`, a read-only btrfs snapshot of the volume's subvolume or a reflink/byte copy of
//! its directory (see `SnapMethod`). Same durability as volumes: make and mark, then commit
//! the record (one sync); delete renames to `.trash-<key>`, commits, then removes.
//!
//! CreateVolume with a content source makes a volume holding a snapshot's or another volume's
//! content: on btrfs a writable snapshot of the source subvolume (O(1)), elsewhere a reflink or
//! byte copy into a freshly made volume directory. Either way the new volume shares nothing a
//! later delete of the source could take away.

use super::{HostpathBackend, VolumeRecord, TRASH_PREFIX};
use crate::backend::local::LocalVolumes;
use crate::error::{Error, Result};
use crate::os::{btrfs, copytree, fsutil, markers};
use crate::snapshot::{ContentSource, SnapshotId, SnapshotInfo, SnapshotRequest};
use crate::volume::AccessKind;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Journal key prefix of snapshot records (`hostpath-snap/<name>`).
pub const LEDGER: &str = "hostpath-snap";
const SNAPSHOTS_DIR: &str = ".snapshots";
const DATA: &str = "data";

/// How snapshots and clones are made on this base path, chosen when first needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapMethod {
    /// btrfs with qgroups (volumes are subvolumes): subvolume snapshots, O(1).
    Btrfs,
    /// FICLONE per file (XFS reflink=1, btrfs without quota): shared extents, no data copied.
    Reflink,
    /// A full sparse copy.
    Copy,
}

impl SnapMethod {
    pub fn copy_mode(self) -> copytree::Mode {
        match self {
            SnapMethod::Copy => copytree::Mode::Copy,
            _ => copytree::Mode::Reflink,
        }
    }
}

/// How one snapshot's data was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoredAs {
    BtrfsSubvolume,
    Reflink,
    #[default]
    Copy,
}

/// A snapshot's record. (Earlier builds wrote it as a volume record; the fields read here are
/// the ones those carried too.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapRecord {
    pub id: String,
    pub name: String,
    /// The source volume's access type and size.
    pub kind: AccessKind,
    pub capacity_bytes: u64,
    pub source_volume_id: String,
    pub created_unix_ms: u64,
    pub stored_as: StoredAs,
}

record_of!(SnapRecord);

/// Whether `dir` is the root of a btrfs subvolume (inode 256 means nothing elsewhere).
pub(super) fn is_subvolume(dir: &Path) -> bool {
    btrfs::is_btrfs(dir).unwrap_or(false) && btrfs::BtrfsQgroups::is_subvolume(dir)
}

/// Makes `dst` hold the content of directory `src`: a btrfs snapshot when `src` is a subvolume
/// and the method allows, else a copy into a new directory `dst`.
pub(super) fn take(
    method: SnapMethod,
    src: &Path,
    dst: &Path,
    read_only: bool,
) -> io::Result<StoredAs> {
    if method == SnapMethod::Btrfs && is_subvolume(src) {
        btrfs::snapshot(src, dst, read_only)?;
        return Ok(StoredAs::BtrfsSubvolume);
    }
    std::fs::create_dir(dst)?;
    let stats = copytree::copy_tree(src, dst, method.copy_mode())?;
    Ok(if stats.reflinked > 0 {
        StoredAs::Reflink
    } else {
        StoredAs::Copy
    })
}

/// Removes a snapshot directory (read-only subvolume content included).
pub(super) fn remove_snapshot_tree(dir: &Path) -> io::Result<()> {
    let data = dir.join(DATA);
    if is_subvolume(&data) {
        btrfs::destroy_subvolume(&data)?;
    }
    fsutil::remove_tree_one_fs(dir)
}

pub(super) fn snapshot_dir_in(base: &Path, key: &str) -> PathBuf {
    base.join(SNAPSHOTS_DIR).join(key)
}

/// VolumeSnapshotClass parameters: none of its own yet; unknown keys are InvalidArgument.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapParams {}

/// A resolved content source.
pub(super) struct Source {
    /// What the CO named (recorded on the new volume for idempotency).
    pub id: String,
    /// The directory whose content the new volume gets.
    pub dir: PathBuf,
    pub kind: AccessKind,
    pub capacity: u64,
}

impl HostpathBackend {
    pub(super) fn snapshots_root(&self) -> PathBuf {
        self.base.join(SNAPSHOTS_DIR)
    }

    pub(super) fn snap_key(id: &str) -> Result<String> {
        SnapshotId::parse(id)?
            .map(|s| s.key)
            .ok_or_else(|| Error::Internal(format!("recorded snapshot id {id:?} does not parse")))
    }

    pub(super) fn snapshot_data(&self, rec: &SnapRecord) -> Result<PathBuf> {
        Ok(snapshot_dir_in(&self.base, &Self::snap_key(&rec.id)?).join(DATA))
    }

    pub(super) fn snapshot_info(rec: &SnapRecord) -> SnapshotInfo {
        SnapshotInfo {
            id: rec.id.clone(),
            source_volume_id: rec.source_volume_id.clone(),
            size_bytes: rec.capacity_bytes,
            created: UNIX_EPOCH + Duration::from_millis(rec.created_unix_ms),
            ready: true,
        }
    }

    /// Start-up reconciliation of `.snapshots/`: unacknowledged snapshots (marked by this
    /// store, no record) and trash are removed; records whose directory is gone are reported.
    /// Nothing that a change the journal lost may explain is removed (see `recovery`).
    pub(super) fn recover_snapshots(&self) -> io::Result<()> {
        let root = self.snapshots_root();
        let (mut kept, mut rolled_back, mut finished, mut unexplained) = (0, 0, 0, 0);
        let damage = self.ledger.journal().damage();
        if root.is_dir() {
            for entry in std::fs::read_dir(&root)? {
                let entry = entry?;
                let (path, name) = (entry.path(), entry.file_name().into_string());
                let name = name.unwrap_or_default();
                let (marker, ours, provable) = self.examine(&path, damage.as_ref());
                let rec = marker.as_deref().and_then(|id| self.snaps.by_id(id));
                let rec_key = rec.as_ref().and_then(|r| Self::snap_key(&r.id).ok());
                let own_record = rec_key.as_deref() == Some(name.as_str());
                if ours && !provable && !own_record {
                    self.keep_unexplained(&path, marker.as_deref(), &mut unexplained);
                    continue;
                }
                if let Some(key) = name.strip_prefix(TRASH_PREFIX) {
                    match rec {
                        // A delete that stopped after its rename: finish it. When the name's
                        // directory exists, the record is a later snapshot of the same name,
                        // and this trash an earlier delete's leftover: only the trash goes.
                        Some(rec) if rec_key.as_deref() == Some(key) => {
                            if !snapshot_dir_in(&self.base, key).exists() {
                                self.snaps.remove(&rec).map_err(io::Error::other)?;
                            }
                        }
                        None if ours => {}
                        _ => {
                            tracing::warn!(dir = %path.display(), "snapshot trash not made by this driver's state: left in place");
                            continue;
                        }
                    }
                    remove_snapshot_tree(&path)?;
                    finished += 1;
                    continue;
                }
                if own_record {
                    kept += 1
                } else if ours {
                    tracing::info!(dir = %path.display(), snapshot = marker.as_deref().unwrap_or("?"), "rolling back a snapshot that was never acknowledged");
                    remove_snapshot_tree(&path)?;
                    rolled_back += 1;
                } else {
                    tracing::warn!(dir = %path.display(), "snapshot directory without a state record: left in place")
                }
            }
        }
        for rec in self.snaps.records() {
            if !self.snapshot_data(&rec).map_err(io::Error::other)?.exists() {
                tracing::warn!(snapshot = %rec.id, "snapshot content is missing (removed by hand?): restores from it will fail");
            }
        }
        crate::metrics::add_unexplained_dirs(unexplained as u64);
        tracing::info!(
            snapshots = kept,
            rolled_back,
            finished_deletes = finished,
            unexplained_kept = unexplained,
            "hostpath snapshots recovered"
        );
        Ok(())
    }

    pub(super) fn create_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotInfo> {
        let id = SnapshotId::new(super::BACKEND, Some(&self.node), &req.name)?;
        let id_str = id.to_string();
        let source_str = req.source.to_string();
        crate::backend::params::decode::<SnapParams>(super::BACKEND, &req.parameters)?;
        if let Some(rec) = self.snaps.get(&req.name) {
            if rec.source_volume_id == source_str {
                return Ok(Self::snapshot_info(&rec));
            }
            return Err(Error::exists(
                id_str,
                format!(
                    "snapshot {:?} already exists for volume {}, not {source_str}",
                    req.name, rec.source_volume_id
                ),
            ));
        }
        self.snaps
            .refuse_id_of_another(&id_str, &req.name, "snapshot")?;
        if !self.is_local(req.source.node.as_deref()) {
            return Err(Error::invalid(format!(
                "snapshot {}: volume {source_str} does not live on node {}",
                req.name, self.node
            )));
        }
        let vol = self.record(&req.source)?;
        self.require_base(&id_str)?;
        let src = self.volume_dir(&vol.name);
        if vol.kind == AccessKind::Block {
            crate::os::loopdev::flush_backing(&self.image_path(&vol.name))
                .map_err(Error::os(&source_str, "flush the loop device of"))?;
        }
        let dir = snapshot_dir_in(&self.base, &id.key);
        let os = |what: &str| Error::os(&id_str, format!("{what} the snapshot's directory"));
        let root = self.snapshots_root();
        if !root.exists() {
            std::fs::create_dir(&root)
                .map_err(Error::os(&id_str, "create the base's snapshots directory"))?;
        }
        std::fs::create_dir(&dir).map_err(os("create"))?;
        let made = (|| {
            self.mark(&dir, &id_str, None).map_err(os("mark"))?;
            crate::failpoint::hit("snapshot:after-mark");
            // Opened before the copy, so a writeback error during it fails the snapshot.
            let sync = copytree::FsSync::begin(&dir).map_err(os("open"))?;
            let method = self.probed()?.snap_method;
            tracing::info!(snapshot = %id_str, source = %source_str, ?method, "snapshot: writing content");
            let what = format!("copy the content of {source_str}");
            let stored_as =
                take(method, &src, &dir.join(DATA), true).map_err(Error::os(&id_str, what))?;
            // The record must not point at content a power cut can take back. A btrfs snapshot
            // is committed (with the markers made before it) when its ioctl returns; a copy or
            // reflink tree is dirty in memory until synced.
            if stored_as != StoredAs::BtrfsSubvolume {
                sync.commit()
                    .map_err(Error::os(&id_str, "make the snapshot's content durable"))?;
            }
            crate::failpoint::hit("snapshot:before-commit");
            let now = SystemTime::now().duration_since(UNIX_EPOCH);
            let rec = SnapRecord {
                id: id_str.clone(),
                name: req.name.clone(),
                kind: vol.kind,
                capacity_bytes: vol.capacity_bytes,
                source_volume_id: source_str.clone(),
                created_unix_ms: now.unwrap_or_default().as_millis() as u64,
                stored_as,
            };
            // The commit point: once durable, the snapshot exists.
            self.snaps.save(rec.clone())?;
            Ok(rec)
        })();
        let rec = made.inspect_err(|_| {
            if let Err(undo) = remove_snapshot_tree(&dir) {
                tracing::warn!(snapshot = %id_str, error = %undo, "rollback of a failed snapshot incomplete; the next start finishes it");
            }
        })?;
        tracing::info!(snapshot = %id_str, source = %source_str, stored_as = ?rec.stored_as, "snapshot taken");
        Ok(Self::snapshot_info(&rec))
    }

    pub(super) fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        let id_str = id.to_string();
        if !self.is_local(id.node.as_deref()) {
            let node = id.node.as_deref().unwrap_or("?");
            let why =
                format!("the snapshot lives on node {node}; only that node's plugin can delete it");
            return Err(Error::precondition(&id_str, why));
        }
        self.require_base(&id_str)?;
        let dir = snapshot_dir_in(&self.base, &id.key);
        let Some(rec) = self.snaps.by_id(&id_str) else {
            // No record: remove a directory only if it carries this id (state lost).
            if matches!(markers::owner_marker(&dir), Ok(Some(m)) if m == id_str) {
                remove_snapshot_tree(&dir)
                    .map_err(Error::os(&id_str, format!("remove {}", dir.display())))?;
            }
            return Ok(());
        };
        let trash = snapshot_dir_in(&self.base, &format!("{TRASH_PREFIX}{}", id.key));
        if dir.exists() {
            std::fs::rename(&dir, &trash)
                .map_err(Error::os(&id_str, format!("move {} aside", dir.display())))?;
        }
        crate::failpoint::hit("snapshot-delete:after-rename");
        self.snaps.remove(&rec)?;
        if let Err(e) = remove_snapshot_tree(&trash) {
            tracing::warn!(snapshot = %id_str, error = %e, "could not remove a deleted snapshot's directory; retried at the next start");
        }
        Ok(())
    }

    /// Finds the source: NotFound when unknown, InvalidArgument when on another node.
    pub(super) fn resolve_source(&self, volume: &str, src: &ContentSource) -> Result<Source> {
        if src.backend() != super::BACKEND {
            return Err(Error::invalid(format!(
                "volume {volume}: content source {} belongs to backend {}, not {}",
                src.id(),
                src.backend(),
                super::BACKEND
            )));
        }
        // A restore from another node is impossible, not merely missing.
        let node = match src {
            ContentSource::Snapshot(s) => &s.node,
            ContentSource::Volume(v) => &v.node,
        };
        if !self.is_local(node.as_deref()) {
            return Err(Error::invalid(format!(
                "volume {volume}: source {} lives on node {}, not on node {}",
                src.id(),
                node.as_deref().unwrap_or("?"),
                self.node
            )));
        }
        match src {
            ContentSource::Snapshot(id) => {
                let rec = (self.snaps.by_id(&id.to_string()))
                    .ok_or_else(|| Error::not_found_because(id.to_string(), "no such snapshot"))?;
                Ok(Source {
                    id: rec.id.clone(),
                    dir: self.snapshot_data(&rec)?,
                    kind: rec.kind,
                    capacity: rec.capacity_bytes,
                })
            }
            ContentSource::Volume(id) => {
                let rec = self.record(id)?;
                if rec.kind == AccessKind::Block {
                    crate::os::loopdev::flush_backing(&self.image_path(&rec.name))
                        .map_err(Error::os(&rec.id, "flush the loop device of"))?;
                }
                Ok(Source {
                    id: rec.id.clone(),
                    dir: self.volume_dir(&rec.name),
                    kind: rec.kind,
                    capacity: rec.capacity_bytes,
                })
            }
        }
    }

    /// Makes the volume `rec` describes with `src`'s content, durably; the caller commits the
    /// record. Unlike an empty volume, which recovery may recreate empty if a power cut lost it,
    /// a restored one must be on disk before its record says it exists: one syncfs of the base
    /// (`copytree::FsSync`) after the copy, or on btrfs after claiming the snapshot (the ioctl
    /// commits the content, not the markers and qgroup limit set on it afterwards).
    pub(super) fn materialize_from(&self, rec: &VolumeRecord, src: &Source) -> Result<()> {
        let dir = self.volume_dir(&rec.name);
        let os = |what: &str| Error::os(&rec.id, format!("{what} the volume's directory"));
        let sync = copytree::FsSync::begin(&self.base).map_err(os("open the filesystem of"))?;
        let method = self.probed()?.snap_method;
        tracing::info!(volume = %rec.id, source = %src.id, ?method, "restore: writing content");
        if method == SnapMethod::Btrfs && is_subvolume(&src.dir) {
            btrfs::snapshot(&src.dir, &dir, false).map_err(os("snapshot into"))?;
            // The snapshot carries the source's markers: claim it at once, so a rollback (or
            // the next start) recognizes it as this create's.
            if let Err(e) = self.mark(&dir, &rec.id, rec.backend.incarnation.as_deref()) {
                let _ = btrfs::destroy_subvolume(&dir);
                return Err(os("mark")(e));
            }
            crate::failpoint::hit("restore:after-snapshot");
            self.make_dir(rec)?;
        } else {
            self.make_dir(rec)?;
            let what = format!("copy the content of {} into it", src.id);
            copytree::copy_tree(&src.dir, &dir, method.copy_mode())
                .map_err(Error::os(&rec.id, what))?;
            // The copy skips our `trusted.ferrovol.*` xattrs, so the markers make_dir set stay;
            // the root takes the source's owner and mode.
            crate::failpoint::hit("restore:after-copy");
        }
        if rec.kind == AccessKind::Block {
            self.size_image(rec, rec.capacity_bytes, "size")?;
        }
        sync.commit().map_err(os("make durable the content of"))?;
        crate::failpoint::hit("restore:after-sync");
        tracing::info!(volume = %rec.id, "restore: content durable");
        Ok(())
    }
}
