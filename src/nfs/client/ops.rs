//! The primitive operations the client's methods are made of, as each protocol sends them: one
//! NFSv3 procedure (v3/ops.rs) or one NFSv4.1 compound (v4/ops.rs), on the share as the
//! client's session reached it.

use crate::nfs::endpoint::Endpoint;
use crate::nfs::error::{NfsError, NfsStatus, Result};
use crate::nfs::types::{Attr, CreateHow, DirEntry, Fh, FsStat, FullAttr};
use crate::nfs::v4;

/// A regular file opened for I/O; errors name its path.
pub(crate) struct File {
    pub fh: Fh,
    /// NFSv4.1: the OPEN's stateid (NFSv3: unused).
    pub stateid: v4::proto::Stateid,
    pub path: String,
}

/// The share reached in one protocol: its root handle and the operations on it.
pub(crate) trait Proto: Send + Sync {
    fn ep(&self) -> &Endpoint;
    fn is_v4(&self) -> bool;
    fn invalidate(&self);

    fn status(&self, op: &str, path: &str, status: NfsStatus) -> NfsError {
        self.ep().status(op, path, status, self.is_v4())
    }

    fn lookup_in(&self, dir: &Fh, name: &str, path: &str) -> Result<(Fh, Option<Attr>)>;
    /// Resolves `comps` from the root (none: the root, without I/O); the error of a failed
    /// LOOKUP names the prefix that failed.
    fn walk(&self, comps: &[&str]) -> Result<(Fh, Option<Attr>)>;
    fn getattr(&self, fh: &Fh, path: &str) -> Result<Attr>;
    fn setattr(&self, fh: &Fh, a: &FullAttr, path: &str) -> Result<()>;
    /// MKDIR, or SYMLINK to `target` (NFSv4.1: CREATE of either).
    fn make(
        &self,
        dir: &Fh,
        name: &str,
        target: Option<&str>,
        a: &FullAttr,
        path: &str,
    ) -> Result<Made>;
    /// Creates regular file `name` in `dir` as `how` says, open for writing.
    fn create(&self, dir: &Fh, name: &str, how: CreateHow, path: &str) -> Result<File>;
    /// Opens the existing file `fh` for reading.
    fn open(&self, fh: &Fh, path: &str) -> Result<File>;
    fn close(&self, _f: &File) -> Result<()> {
        Ok(())
    }
    fn read(&self, f: &File, off: u64, count: u32) -> Result<(Vec<u8>, bool)>;
    /// WRITE: the count written, how stably, and the write verifier.
    fn write(&self, f: &File, off: u64, stable: u32, data: &[u8]) -> Result<(u32, u32, [u8; 8])>;
    /// NFSv4.1: OPEN, READ of the first `count` bytes and CLOSE of `fh` in one compound.
    fn read_whole(&self, _: &Fh, _: u32, _: &str) -> Option<Result<(Vec<u8>, bool)>> {
        None
    }
    /// NFSv4.1: WRITE at offset 0 and CLOSE in one compound.
    fn write_close(&self, _: &File, _: &[u8], _: u32) -> Option<Result<(u32, u32)>> {
        None
    }
    fn commit(&self, f: &File) -> Result<[u8; 8]>;
    /// Removes `name` from `dir`: a directory (RMDIR; empty only) or anything else (REMOVE).
    /// `false` when it was not there.
    fn remove(&self, dir: &Fh, name: &str, is_dir: bool, path: &str) -> Result<bool>;
    /// RENAME; over NFSv4.1 `expect` makes the server check, in the same compound, that the
    /// source is that object (NFSv3: the caller's LOOKUP just before is the check).
    fn rename(
        &self,
        from: (&Fh, &str),
        to: (&Fh, &str),
        expect: Option<&Fh>,
        path: &str,
    ) -> Result<()>;
    fn link(&self, file: &Fh, dir: &Fh, name: &str, path: &str) -> Result<()>;
    fn readlink(&self, fh: &Fh, path: &str) -> Result<String>;
    /// One listing page after cookie `at`.
    fn readdir(&self, dir: &Fh, at: (u64, [u8; 8]), bytes: u32, path: &str) -> Result<Listing>;
    fn fsstat(&self) -> Result<FsStat>;
}

/// What MKDIR, SYMLINK or CREATE answer: the new object's handle and attributes, where given.
pub(crate) type Made = (Option<Fh>, Option<Attr>);
/// One page of READDIRPLUS or READDIR: entries, cookie verifier, eof.
pub(crate) type Listing = (Vec<DirEntry>, [u8; 8], bool);
