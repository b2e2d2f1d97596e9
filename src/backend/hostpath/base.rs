//! The identity of the base path. The base is usually a filesystem the operator mounts; when
//! that mount is missing, the path shows the directory below the mount point (or nothing, which
//! the chart's `DirectoryOrCreate` turns into an empty directory), and a driver that trusted it
//! would report its volumes healthy on empty directories or make them again empty.
//!
//! So the base carries the id of the state store that adopted it (`trusted.ferrovol.base`), and
//! the driver uses a base only while it carries its own store's id: read at start, and again
//! before every change, stage or publish (one getxattr). A base is adopted (the id written)
//! when nothing is recorded on it yet (fresh, or the state was lost, which recovery never turns
//! into deletion): by the first change, not at start, so a process that never holds a volume
//! (the local resizer, unable to write a `trusted.` xattr) never writes to its base; or at
//! start when it has no id but holds, under its name and carrying its id, the directory (or
//! trash) of a recorded volume or snapshot (state written before bases had identities).
//! Anything else is refused: Probe says why, its volumes are abnormal, every change, stage and
//! publish answers FailedPrecondition, and nothing on it is recovered, recreated or removed.
//!
//! Each pool (`pools`) is a base of its own: the id it carries names its pool too (`pool_key`).

use crate::os::markers;
use std::io;
use std::path::{Path, PathBuf};

/// (id, directory): a directory (a volume's, its trash, a snapshot's) that, if present and
/// marked with that id, proves the base is the one recorded.
pub(super) type Evidence = (String, PathBuf);

/// Whether the base can be used, decided at start: Ok when it carries this store's id (now),
/// else why not, for Probe and the errors.
pub(super) type Verdict = Result<(), String>;

/// Decides at start whether `base` is this state store's, adopting it where that is safe (see
/// the module doc). `recorded`: the volumes and snapshots the journal holds on this base.
/// `create`: whether a missing base with nothing recorded on it is created (`--hostpath-base`)
/// or refused (a pool's path: see `pool_config::PoolSpec`).
pub(super) fn settle(
    base: &Path,
    store: &str,
    recorded: &[Evidence],
    create: bool,
) -> io::Result<Verdict> {
    let found = match markers::base_marker(base) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && recorded.is_empty() => {
            if let Err(why) = ensure_exists(base, create)? {
                return Ok(Err(why));
            }
            None
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Err(format!(
                "base path {} does not exist, and volumes or snapshots are recorded on it: is its \
                 filesystem mounted? The driver does not create it again",
                base.display()
            )))
        }
        Err(e) => return Err(e),
    };
    match found {
        Some(s) if s == store => return Ok(Ok(())),
        Some(other) if same_store_other_pool(&other, store) => {
            return Ok(Err(another_pool(base, &other)))
        }
        Some(other) if recorded.is_empty() => {
            tracing::warn!(base = %base.display(), previous = %other, store,
                "the base was adopted by another state store, and no volume is recorded on it here: adopting it");
        }
        Some(other) => {
            return Ok(Err(format!(
                "base path {} belongs to state store {other}, not to this driver's {store}: \
                 another filesystem is mounted there, or the state directory is another one",
                base.display()
            )))
        }
        None if recorded.is_empty() => {}
        None => {
            let proof = recorded
                .iter()
                .find(|(id, dir)| matches!(markers::owner_marker(dir), Ok(Some(m)) if m == *id));
            let Some((proof, _)) = proof else {
                return Ok(Err(format!(
                    "base path {} carries no identity and holds none of the volumes or snapshots \
                     recorded on it: is its filesystem mounted?",
                    base.display()
                )));
            };
            tracing::info!(base = %base.display(), proof = %proof,
                "the base has no identity yet (state of an earlier version) but holds its recorded volumes: recording its identity");
        }
    }
    markers::set_base_marker(base, store)?;
    Ok(Ok(()))
}

/// A base with nothing recorded on it: created when missing if `create`, else refused when
/// it is not a directory (its disk is not mounted: nothing is written below the mount point).
pub(super) fn ensure_exists(base: &Path, create: bool) -> io::Result<Verdict> {
    if create {
        std::fs::create_dir_all(base)?;
    }
    Ok((create || base.is_dir()).then_some(()).ok_or_else(|| {
        format!(
            "pool path {} is not a directory: is its filesystem mounted? The driver does not \
             create a pool's path",
            base.display()
        )
    }))
}

fn same_store_other_pool(found: &str, ours: &str) -> bool {
    let store = |id: &str| id.split('@').next().unwrap_or_default().to_string();
    found != ours && store(found) == store(ours)
}

fn another_pool(base: &Path, found: &str) -> String {
    let pool = found
        .split_once('@')
        .map_or(super::pool_config::DEFAULT_POOL, |(_, p)| p);
    format!(
        "base path {} is this driver's pool {pool:?} (its volumes are recorded under that \
         name): configure it as pool {pool:?} again",
        base.display()
    )
}

/// At start with nothing recorded on the base: refused when it carries this store's identity
/// of another pool (see `pool_key`), else usable.
/// (Unreadable: usable, as before pools existed; a process that may not read `trusted.`
/// xattrs, the local resizer, changes nothing on a base.)
pub(super) fn check_unrecorded(base: &Path, identity: &str) -> Verdict {
    match markers::base_marker(base).ok().flatten() {
        Some(found) if same_store_other_pool(&found, identity) => Err(another_pool(base, &found)),
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_identity_names_the_store_and_the_pool() {
        // This store's base of another pool: refused, naming that pool.
        assert!(same_store_other_pool("s1@fast", "s1@slow"));
        assert!(same_store_other_pool("s1", "s1@fast"));
        assert!(same_store_other_pool("s1@fast", "s1"));
        // Its own, or another store's (state lost): the rules for one base apply.
        assert!(!same_store_other_pool("s1@fast", "s1@fast"));
        assert!(!same_store_other_pool("s0@fast", "s1@fast"));
        let why = another_pool(Path::new("/b"), "s1@fast");
        assert!(why.contains("pool \"fast\""), "{why}");
    }
}
