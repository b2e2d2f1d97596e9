//! Operations on a directory proven, at that moment, to be a given object: its file handle
//! (hex, as `Fh::to_hex`) is compared with the one recorded when the caller made it. NFSv3 has
//! no conditional REMOVE or RENAME, so the check and the change are two calls; what lies
//! between them is the object LOOKUP just returned under that name, and the change then acts on
//! that name (REMOVE and RMDIR of an emptied tree, RENAME). RMDIR and RENAME onto a directory
//! act only on empty directories, so nothing a pod wrote can be lost in that gap.

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
    /// The handle (hex) and attributes of `path`, or `None` when it does not exist.
    pub fn handle_of(&self, path: &str) -> Result<Option<(String, Attr)>> {
        let comps = components(path)?;
        self.with_session(|s| match self.walk_attr(s, &comps, path) {
            Ok((fh, a)) => Ok(Some((fh.to_hex(), a))),
            Err(e) if e.is_status(NfsStatus::NOENT) => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// Makes directory `path` (its parent must exist) and answers its handle; `None` when
    /// something of that name already exists (then it is not this call's, and is not touched).
    pub fn mkdir_claim(&self, path: &str, mode: u32) -> Result<Option<String>> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| {
            let dir = self.walk_dir(s, &parent, &parent.join("/"))?;
            match self.mkdir_in(s, &dir, name, mode, path) {
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
            let dir = match self.walk_dir(s, &parent, &parent.join("/")) {
                Ok(d) => d,
                Err(e) if e.is_status(NfsStatus::NOENT) => return Ok(Rmdir::Absent),
                Err(e) => return Err(e),
            };
            if let Some(h) = handle {
                match self.lookup_in(s, &dir, name, path) {
                    Ok((fh, _)) if fh.to_hex() != h => return Ok(Rmdir::Kept),
                    Ok(_) => {}
                    Err(e) if e.is_status(NfsStatus::NOENT) => return Ok(Rmdir::Absent),
                    Err(e) => return Err(e),
                }
            }
            match self.remove_in(s, &dir, name, path, Proc::Rmdir) {
                Ok(true) => Ok(Rmdir::Removed),
                Ok(false) => Ok(Rmdir::Absent),
                Err(e)
                    if e.is_status(NfsStatus::NOTEMPTY)
                        || e.is_status(NfsStatus::EXIST)
                        || e.is_status(NfsStatus::NOTDIR) =>
                {
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
            let fdir = self.walk_dir(s, &fp, &fp.join("/"))?;
            let tdir = self.walk_dir(s, &tp, &tp.join("/"))?;
            match self.lookup_in(s, &fdir, fname, from) {
                Ok((fh, _)) if fh.to_hex() != from_handle => return Ok(Guarded::Foreign),
                Ok(_) => {}
                Err(e) if e.is_status(NfsStatus::NOENT) => return Ok(Guarded::Absent),
                Err(e) => return Err(e),
            }
            match (self.lookup_in(s, &tdir, tname, to), to_handle) {
                (Ok((fh, _)), Some(h)) if fh.to_hex() == h => {}
                (Ok(_), _) => return Ok(Guarded::Foreign),
                (Err(e), None) if e.is_status(NfsStatus::NOENT) => {}
                (Err(e), Some(_)) if e.is_status(NfsStatus::NOENT) => return Ok(Guarded::Foreign),
                (Err(e), _) => return Err(e),
            }
            let mut e = Encoder::new();
            proto::enc_dirop(&mut e, &fdir, fname);
            proto::enc_dirop(&mut e, &tdir, tname);
            match self.nfs(s, Proc::Rename, from, e) {
                Ok(_) => Ok(Guarded::Done),
                // The claimed target was written into meanwhile: RENAME replaced nothing.
                Err(e) if e.is_status(NfsStatus::NOTEMPTY) || e.is_status(NfsStatus::EXIST) => {
                    Ok(Guarded::Foreign)
                }
                Err(e) => Err(e),
            }
        })
    }
}
