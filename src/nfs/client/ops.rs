//! The primitive operations the client's methods are made of, each sent in the session's
//! protocol: one NFSv3 procedure (v3/ops.rs) or one NFSv4.1 compound (v4/ops.rs).

use super::*;
use crate::nfs::types::{CreateHow, DirEntry, FullAttr};

/// A regular file opened for I/O: NFSv3 needs only its handle, NFSv4.1 an OPEN's stateid too.
pub(super) struct File {
    pub fh: Fh,
    open: Option<v4::Open>,
}

/// Rewrites the path an error names (a lookup of one name knows only that name).
fn at_path(e: NfsError, path: &str) -> NfsError {
    match e {
        NfsError::Status {
            server,
            op,
            status,
            v4,
            ..
        } => NfsError::Status {
            server,
            op,
            path: path.to_string(),
            status,
            v4,
        },
        e => e,
    }
}

impl NfsClient {
    pub(super) fn lookup_in(
        &self,
        s: &Sess,
        dir: &Fh,
        name: &str,
        path: &str,
    ) -> Result<(Fh, Option<Attr>)> {
        match s {
            Sess::V3(s) => self.v3.lookup_in(s, dir, name, path),
            Sess::V4(_) => self
                .v4
                .walk_from(Some(dir), &[name], "")
                .map(|(fh, a)| (fh, Some(a)))
                .map_err(|e| at_path(e, path)),
        }
    }

    /// Resolves `comps` from the root; the error of a failed LOOKUP names the prefix that failed.
    pub(super) fn walk(&self, s: &Sess, comps: &[&str]) -> Result<(Fh, Option<Attr>)> {
        match s {
            Sess::V3(_) => {
                let mut cur = (s.root().clone(), None);
                for i in 0..comps.len() {
                    cur = self.lookup_in(s, &cur.0, comps[i], &comps[..=i].join("/"))?;
                }
                Ok(cur)
            }
            Sess::V4(root) if comps.is_empty() => Ok(((**root).clone(), None)),
            Sess::V4(root) => self
                .v4
                .walk_from(Some(root), comps, "")
                .map(|(fh, a)| (fh, Some(a))),
        }
    }

    pub(super) fn getattr(&self, s: &Sess, fh: &Fh, path: &str) -> Result<Attr> {
        match s {
            Sess::V3(s) => self.v3.getattr(s, fh, path),
            Sess::V4(_) => self.v4.getattr(fh, path),
        }
    }

    pub(super) fn setattr_op(&self, s: &Sess, fh: &Fh, a: &FullAttr, path: &str) -> Result<()> {
        match s {
            Sess::V3(s) => self.v3.setattr(s, fh, a, path),
            Sess::V4(_) => self.v4.setattr(fh, a, path),
        }
    }

    /// MKDIR (CREATE of a directory): the handle and attributes, where the server gave them.
    pub(super) fn mkdir_op(
        &self,
        s: &Sess,
        dir: &Fh,
        name: &str,
        mode: u32,
        path: &str,
    ) -> Result<(Option<Fh>, Option<Attr>)> {
        match s {
            Sess::V3(s) => self.v3.mkdir(s, dir, name, mode, path),
            Sess::V4(_) => {
                let a = FullAttr {
                    mode: Some(mode),
                    ..FullAttr::default()
                };
                let (fh, attr) = self.v4.create(dir, name, None, &a, path)?;
                Ok((Some(fh), Some(attr)))
            }
        }
    }

    pub(super) fn symlink_op(
        &self,
        s: &Sess,
        dir: &Fh,
        name: &str,
        a: &FullAttr,
        target: &str,
        path: &str,
    ) -> Result<(Option<Fh>, Option<Attr>)> {
        match s {
            Sess::V3(s) => self.v3.symlink(s, dir, name, a, target, path),
            Sess::V4(_) => {
                let (fh, attr) = self.v4.create(dir, name, Some(target), a, path)?;
                Ok((Some(fh), Some(attr)))
            }
        }
    }

    /// Creates regular file `name` in `dir` as `how` says, open for writing.
    pub(super) fn create_op(
        &self,
        s: &Sess,
        dir: &Fh,
        name: &str,
        how: CreateHow,
        path: &str,
    ) -> Result<File> {
        match s {
            Sess::V3(s3) => {
                let made = self.v3.create(s3, dir, name, how, path)?;
                let fh = match made {
                    Some(fh) => fh,
                    None => self.lookup_in(s, dir, name, path)?.0,
                };
                Ok(File { fh, open: None })
            }
            Sess::V4(_) => {
                let o = self.v4.open(dir, Some(name), Some(how), true, path)?;
                Ok(File {
                    fh: o.fh.clone(),
                    open: Some(o),
                })
            }
        }
    }

    /// Opens the existing file `fh` (NFSv3: nothing to do).
    pub(super) fn open_op(&self, s: &Sess, fh: &Fh, write: bool, path: &str) -> Result<File> {
        match s {
            Sess::V3(_) => Ok(File {
                fh: fh.clone(),
                open: None,
            }),
            Sess::V4(_) => {
                let o = self.v4.open(fh, None, None, write, path)?;
                Ok(File {
                    fh: fh.clone(),
                    open: Some(o),
                })
            }
        }
    }

    pub(super) fn close_op(&self, f: &File, path: &str) -> Result<()> {
        match &f.open {
            None => Ok(()),
            Some(o) => self.v4.close(o, path),
        }
    }

    pub(super) fn read_op(
        &self,
        s: &Sess,
        f: &File,
        off: u64,
        count: u32,
        path: &str,
    ) -> Result<(Vec<u8>, bool)> {
        match (s, &f.open) {
            (Sess::V4(_), Some(o)) => self.v4.read(o, off, count, path),
            (Sess::V3(s), _) => self.v3.read(s, &f.fh, off, count, path),
            (Sess::V4(_), None) => unreachable!("NFSv4.1 files are opened"),
        }
    }

    pub(super) fn write_op(
        &self,
        s: &Sess,
        f: &File,
        off: u64,
        stable: u32,
        data: &[u8],
        path: &str,
    ) -> Result<(u32, u32, [u8; 8])> {
        match (s, &f.open) {
            (Sess::V4(_), Some(o)) => self.v4.write(o, off, stable, data, path),
            (Sess::V3(s), _) => self.v3.write(s, &f.fh, off, stable, data, path),
            (Sess::V4(_), None) => unreachable!("NFSv4.1 files are opened"),
        }
    }

    /// WRITE at offset 0 and CLOSE in one compound, over NFSv4.1 (`None` over NFSv3, which has
    /// nothing to close).
    pub(super) fn write_close_op(
        &self,
        f: &File,
        data: &[u8],
        stable: u32,
        path: &str,
    ) -> Option<Result<(u32, u32)>> {
        f.open
            .as_ref()
            .map(|o| self.v4.write_close(o, stable, data, path))
    }

    pub(super) fn commit_op(&self, s: &Sess, f: &File, path: &str) -> Result<[u8; 8]> {
        match s {
            Sess::V3(s) => self.v3.commit(s, &f.fh, path),
            Sess::V4(_) => self.v4.commit(&f.fh, path),
        }
    }

    /// Removes `name` from `dir`: a directory (RMDIR; empty only) or anything else (REMOVE).
    /// `false` when it was not there.
    pub(super) fn remove_in(
        &self,
        s: &Sess,
        dir: &Fh,
        name: &str,
        path: &str,
        is_dir: bool,
    ) -> Result<bool> {
        let r = match s {
            Sess::V3(s) => self.v3.remove(s, dir, name, is_dir, path),
            Sess::V4(_) => self.v4.remove(dir, name, Some(is_dir), path),
        };
        Ok(r.found()?.is_some())
    }

    /// RENAME; over NFSv4.1 `expect` makes the server check, in the same compound, that the
    /// source is that object (NFSv3: the caller's LOOKUP just before is the check).
    pub(super) fn rename_op(
        &self,
        s: &Sess,
        from: (&Fh, &str),
        to: (&Fh, &str),
        expect: Option<&Fh>,
        path: &str,
    ) -> Result<()> {
        match s {
            Sess::V3(s) => self.v3.rename(s, from, to, path),
            Sess::V4(_) => self.v4.rename(from, to, expect, path),
        }
    }

    pub(super) fn link_op(
        &self,
        s: &Sess,
        file: &Fh,
        dir: &Fh,
        name: &str,
        path: &str,
    ) -> Result<()> {
        match s {
            Sess::V3(s) => self.v3.link(s, file, dir, name, path),
            Sess::V4(_) => self.v4.link(file, dir, name, path),
        }
    }

    pub(super) fn readlink_op(&self, s: &Sess, fh: &Fh, path: &str) -> Result<String> {
        match s {
            Sess::V3(s) => self.v3.readlink(s, fh, path),
            Sess::V4(_) => self.v4.readlink(fh, path),
        }
    }

    pub(super) fn readdir_op(
        &self,
        s: &Sess,
        dir: &Fh,
        path: &str,
        (cookie, verf): (u64, [u8; 8]),
        bytes: u32,
    ) -> Result<(Vec<DirEntry>, [u8; 8], bool)> {
        match s {
            Sess::V3(s) => self.v3.readdir(s, dir, cookie, verf, bytes, path),
            Sess::V4(_) => self.v4.readdir(dir, cookie, verf, bytes, path),
        }
    }

    pub(super) fn fsstat_op(&self, s: &Sess) -> Result<FsStat> {
        match s {
            Sess::V3(s) => self.v3.fsstat(s),
            Sess::V4(root) => self.v4.fsstat(root),
        }
    }
}
