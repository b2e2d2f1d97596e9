//! The identity of the base path. The base is usually a filesystem the operator mounts; when
//! that mount is missing, the path shows the directory below the mount point (or nothing, which
//! the chart's `DirectoryOrCreate` turns into an empty directory), and a driver that trusted it
//! would report its volumes healthy on empty directories or make them again empty.
//!
//! So the base carries the id of the state store that adopted it (`trusted.ferrovol.base`), and
//! the driver uses a base only while it carries its own store's id: read at start, and again
//! before every change and every stage or publish (one getxattr). A base is adopted (the id
//! written) when nothing is recorded on it yet (a fresh base, or the state was lost, which
//! recovery never turns into deletion): then by the first change, not at start, so a process
//! that never holds a volume (the local resizer, unprivileged, unable to write a `trusted.`
//! xattr) never writes to its base; or at start when it has no id but holds, under its name and
//! carrying its id, the directory (or trash) of a recorded volume or snapshot (state written
//! before bases had identities). Anything else is refused: Probe says why, the base's volumes are abnormal,
//! and every change, stage and publish answers FailedPrecondition; nothing on it is recovered,
//! recreated or removed.

use crate::os::markers;
use std::io;
use std::path::{Path, PathBuf};

/// A directory (a volume's, its trash, a snapshot's) that, if present and marked with `id`,
/// proves the base is the one recorded.
pub(super) struct Evidence {
    pub id: String,
    pub dir: PathBuf,
}

/// Whether the base can be used, decided at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It carries this store's id (now).
    Ours,
    /// It cannot be used; why, for Probe and the errors.
    Refused(String),
}

/// Decides at start whether `base` is this state store's, adopting it where that is safe (see
/// the module doc). `recorded`: the volumes and snapshots the journal holds on this base.
pub(super) fn settle(base: &Path, store: &str, recorded: &[Evidence]) -> io::Result<Verdict> {
    let found = match markers::base_marker(base) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && recorded.is_empty() => {
            std::fs::create_dir_all(base)?;
            None
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Verdict::Refused(format!(
                "base path {} does not exist, and volumes or snapshots are recorded on it: is its \
                 filesystem mounted? The driver does not create it again",
                base.display()
            )))
        }
        Err(e) => return Err(e),
    };
    match found {
        Some(s) if s == store => return Ok(Verdict::Ours),
        Some(other) if recorded.is_empty() => {
            tracing::warn!(base = %base.display(), previous = %other, store,
                "the base was adopted by another state store, and no volume is recorded on it here: adopting it");
        }
        Some(other) => {
            return Ok(Verdict::Refused(format!(
                "base path {} belongs to state store {other}, not to this driver's {store}: \
                 another filesystem is mounted there, or the state directory is another one",
                base.display()
            )))
        }
        None if recorded.is_empty() => {}
        None => {
            let proof = recorded
                .iter()
                .find(|e| matches!(markers::owner_marker(&e.dir), Ok(Some(id)) if id == e.id));
            let Some(proof) = proof else {
                return Ok(Verdict::Refused(format!(
                    "base path {} carries no identity and holds none of the volumes or snapshots \
                     recorded on it: is its filesystem mounted?",
                    base.display()
                )));
            };
            tracing::info!(base = %base.display(), proof = %proof.id,
                "the base has no identity yet (state of an earlier version) but holds its recorded volumes: recording its identity");
        }
    }
    markers::set_base_marker(base, store)?;
    Ok(Verdict::Ours)
}

/// Whether `base` still carries `store`'s id: Err(why) when not.
pub(super) fn check(base: &Path, store: &str) -> Result<(), String> {
    match markers::base_marker(base) {
        Ok(Some(s)) if s == store => Ok(()),
        Ok(Some(other)) => Err(format!(
            "base path {} now belongs to state store {other}, not to this driver's {store}",
            base.display()
        )),
        Ok(None) => Err(format!(
            "base path {} no longer carries this driver's identity: is its filesystem still \
             mounted?",
            base.display()
        )),
        Err(e) => Err(format!("base path {}: {e}", base.display())),
    }
}
