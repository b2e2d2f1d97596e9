//! Operations on a directory proven, at that moment, to be a given object: its file handle
//! (hex) is compared with the one recorded when the caller made it. An NFSv3 handle never
//! equals the NFSv4.1 handle of the same directory, so a handle proves ownership only to a
//! client of the version that recorded it (the NFS backend records the version too).
//!
//! NFSv3 has no conditional REMOVE or RENAME, so the check and the change are two calls; what
//! lies between them is the object LOOKUP just returned under that name, and the change then
//! acts on that name (REMOVE and RMDIR of an emptied tree, RENAME). RMDIR and RENAME onto a
//! directory act only on empty directories, so nothing a pod wrote can be lost in that gap.
//! Over NFSv4.1 RENAME also VERIFYs the source's handle in its own compound, closing the gap.

use super::*;

/// What `rmdir_if_empty` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rmdir {
    Removed,
    Absent,
    /// Not empty (or not a directory): left as it is.
    Kept,
}

impl NfsClient {
    /// The handle (hex) and attributes of `path`, if it exists.
    pub fn handle_of(&self, path: &str) -> Result<Option<(String, Attr)>> {
        let comps = components(path)?;
        self.with_session(|s| {
            let found = s.walk_attr(&comps, path).found()?;
            Ok(found.map(|(fh, a)| (fh.to_hex(), a)))
        })
    }

    /// Makes directory `path` (its parent must exist) and answers its handle; `None` when
    /// something of that name already exists (then it is not this call's, and is not touched).
    pub fn mkdir_claim(&self, path: &str, mode: u32) -> Result<Option<String>> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| {
            let dir = s.parent_dir(&parent)?;
            match s.mkdir_in(&dir, name, mode, path) {
                Ok((Outcome::Created, fh)) => Ok(Some(fh.to_hex())),
                Ok((Outcome::Existed, _)) => Ok(None),
                Err(e) if e.is_status(NfsStatus::EXIST) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Removes directory `path` only when it is empty (one RMDIR: the server checks), and,
    /// given `handle`, only when it is that object.
    pub fn rmdir_if_empty(&self, path: &str, handle: Option<&str>) -> Result<Rmdir> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| {
            let Some(dir) = s.parent_dir(&parent).found()? else {
                return Ok(Rmdir::Absent);
            };
            if let Some(h) = handle {
                match s.lookup_in(&dir, name, path).found()? {
                    None => return Ok(Rmdir::Absent),
                    Some((fh, _)) if fh.to_hex() != h => return Ok(Rmdir::Kept),
                    Some(_) => {}
                }
            }
            match s.remove(&dir, name, true, path) {
                Ok(true) => Ok(Rmdir::Removed),
                Ok(false) => Ok(Rmdir::Absent),
                Err(e) if e.is_any(&[NfsStatus::NOTEMPTY, NfsStatus::EXIST, NfsStatus::NOTDIR]) => {
                    Ok(Rmdir::Kept)
                }
                Err(e) => Err(e),
            }
        })
    }

    /// Renames `from` to `to` only when `from` is the object `from_handle` and, given
    /// `to_handle`, `to` is that object (an empty directory of the caller's, which RENAME then
    /// replaces). Without `to_handle`, `to` must not exist: `Foreign` when it does. `Absent`
    /// when `from` is not there.
    pub fn rename_if(
        &self,
        from: &str,
        from_handle: &str,
        to: &str,
        to_handle: Option<&str>,
    ) -> Result<Guarded> {
        let (fp, fname) = split_last(from)?;
        let (tp, tname) = split_last(to)?;
        self.with_session(|s| {
            let (fdir, tdir) = (s.parent_dir(&fp)?, s.parent_dir(&tp)?);
            let src = match s.lookup_in(&fdir, fname, from).found()? {
                None => return Ok(Guarded::Absent),
                Some((fh, _)) if fh.to_hex() != from_handle => return Ok(Guarded::Foreign),
                Some((fh, _)) => fh,
            };
            match (s.lookup_in(&tdir, tname, to).found()?, to_handle) {
                (Some((fh, _)), Some(h)) if fh.to_hex() == h => {}
                (None, None) => {}
                _ => return Ok(Guarded::Foreign),
            }
            match s.rename((&fdir, fname), (&tdir, tname), Some(&src), from) {
                Ok(()) => Ok(Guarded::Done),
                // NFSv4.1: the VERIFY in RENAME's compound found another object meanwhile.
                Err(e) if s.is_v4() && e.is_status(NfsStatus::NOTDIR) => Ok(Guarded::Foreign),
                // The claimed target was written into meanwhile: RENAME replaced nothing.
                Err(e) if e.is_any(&[NfsStatus::NOTEMPTY, NfsStatus::EXIST]) => {
                    Ok(Guarded::Foreign)
                }
                Err(e) => Err(e),
            }
        })
    }
}
