//! The high-level, blocking API: paths relative to the share root, resolved from the root handle
//! on every call (no handle cache, so nothing goes stale between calls; a symlink is never
//! followed: LOOKUP returns the link itself).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::endpoint::{ClientOptions, Endpoint};
use super::error::{Found, NfsError, NfsStatus, Result};
use super::path::{components, split_last};
use super::rpc::since_epoch;
use super::types::{Attr, CreateHow, Fh, FileType, FsStat, FullAttr, SetAttr, Version};
use super::{v3, v4};

mod copy;
mod dirs;
mod guarded;
mod ops;
mod select;

pub use copy::CopyStats;
pub use guarded::Rmdir;
pub(crate) use ops::{File, Listing, Made, Proto};
use select::Sess;

/// Bytes per READ and WRITE: below every server's limit, large enough for volume records.
const CHUNK: usize = 64 * 1024;
const FILE_SYNC: u32 = 2;

/// What `mkdir` and `create_file` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// A directory of that name was already there (its mode is left alone).
    Existed,
}

/// What an operation guarded by a file handle found at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    Done,
    /// Nothing there: nothing done.
    Absent,
    /// Another object than the one named by the handle: left untouched.
    Foreign,
}

/// A blocking NFS client for one export of one server. Calls from many threads (share it in an
/// `Arc`) run in parallel on pooled connections.
pub struct NfsClient {
    ep: Arc<Endpoint>,
    v3: v3::Transport,
    v4: v4::Transport,
    /// The version `Want::Auto` settled on.
    chosen: Mutex<Option<Version>>,
}

struct Entry {
    name: String,
    attr: Attr,
    fh: Fh,
    cookie: u64,
}

/// Steps the client's methods share, on the session's protocol.
impl dyn Proto + '_ {
    /// LOOKUP with the attributes, by GETATTR when the server left them out.
    fn lookup_attr_in(&self, dir: &Fh, name: &str, path: &str) -> Result<(Fh, Attr)> {
        self.with_attr(self.lookup_in(dir, name, path)?, path)
    }

    fn with_attr(&self, (fh, attr): (Fh, Option<Attr>), path: &str) -> Result<(Fh, Attr)> {
        let attr = attr.map_or_else(|| self.getattr(&fh, path), Ok)?;
        Ok((fh, attr))
    }

    fn walk_attr(&self, comps: &[&str], path: &str) -> Result<(Fh, Attr)> {
        self.with_attr(self.walk(comps)?, path)
    }

    fn walk_dir(&self, comps: &[&str], path: &str) -> Result<Fh> {
        let (fh, attr) = self.walk_attr(comps, path)?;
        if !attr.is_dir() {
            return Err(self.status("LOOKUP", path, NfsStatus::NOTDIR));
        }
        Ok(fh)
    }

    /// The directory `parent` (components of a path's parent).
    fn parent_dir(&self, parent: &[&str]) -> Result<Fh> {
        self.walk_dir(parent, &parent.join("/"))
    }

    /// MKDIR, or the directory already there.
    fn mkdir_in(&self, dir: &Fh, name: &str, mode: u32, path: &str) -> Result<(Outcome, Fh)> {
        match self.make(dir, name, None, &FullAttr::mode(mode), path) {
            Ok((fh, attr)) => {
                let fh = fh.map_or_else(|| self.lookup_in(dir, name, path).map(|l| l.0), Ok)?;
                // Some servers apply a umask to the requested mode; set it again when they did.
                if attr.is_none_or(|a| a.mode != mode & 0o7777) {
                    self.setattr(&fh, &FullAttr::mode(mode), path)?;
                }
                Ok((Outcome::Created, fh))
            }
            Err(e) if e.is_status(NfsStatus::EXIST) => {
                match self.lookup_attr_in(dir, name, path)? {
                    (fh, attr) if attr.is_dir() => Ok((Outcome::Existed, fh)),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `data` to `f` with FILE_SYNC, COMMITting when the server kept any of it unstable
    /// anyway: durable when it returns.
    fn write_all(&self, f: &File, data: &[u8]) -> Result<()> {
        let mut off = 0usize;
        let mut synced = true;
        while off < data.len() {
            let chunk = &data[off..data.len().min(off + CHUNK)];
            let (count, committed, _) = self.write(f, off as u64, FILE_SYNC, chunk)?;
            if count == 0 {
                let why = format!("server wrote 0 bytes of {:?}", f.path);
                return Err(self.ep().protocol("WRITE", why));
            }
            synced &= committed == FILE_SYNC;
            off += count as usize;
        }
        if !synced {
            self.commit(f)?;
        }
        Ok(())
    }

    /// Writes `data` to `f` and closes it (also when the write failed); over NFSv4.1 a small
    /// file in one compound.
    fn write_and_close(&self, f: &File, data: &[u8]) -> Result<()> {
        if data.len() <= CHUNK && !data.is_empty() {
            if let Some(done) = self.write_close(f, data, FILE_SYNC) {
                let ((count, committed), path) = (done?, &f.path);
                if count as usize != data.len() {
                    return Err(self.ep().protocol(
                        "WRITE",
                        format!("server wrote {count} of {} bytes of {path:?}", data.len()),
                    ));
                }
                if committed != FILE_SYNC {
                    self.commit(f)?;
                }
                return Ok(());
            }
        }
        let written = self.write_all(f, data);
        let closed = self.close(f);
        written.and(closed)
    }
}

impl NfsClient {
    /// A client for `server` (host name or address) and `share` (as in `server:/share`; over
    /// NFSv4.1 the path in the server's pseudo-filesystem). No I/O before the first call.
    pub fn new(server: &str, share: &str, opts: ClientOptions) -> Result<NfsClient> {
        let bad = |reason: &str| NfsError::InvalidPath {
            path: format!("{server}:{share}"),
            reason: reason.to_string(),
        };
        if server.is_empty() || server.contains(['/', '\0', ' ']) {
            return Err(bad("the server must be a host name or address"));
        }
        if !share.starts_with('/') || share.contains('\0') || share.len() > 1024 {
            return Err(bad("the share must be an absolute export path"));
        }
        let ep = Arc::new(Endpoint::new(server, share, opts));
        Ok(NfsClient {
            v3: v3::Transport::new(ep.clone()),
            v4: v4::Transport::new(ep.clone()),
            ep,
            chosen: Mutex::new(None),
        })
    }

    pub fn server(&self) -> &str {
        &self.ep.server
    }

    pub fn share(&self) -> &str {
        &self.ep.share
    }

    /// Reaches the share now, so configuration errors surface early.
    pub fn connect(&self) -> Result<()> {
        self.session().map(|_| ())
    }

    /// Runs `f` with the current session, and once more after resolving the share again when a
    /// handle is stale (the server restarted with new handles, or the export was re-created).
    fn with_session<T>(&self, f: impl Fn(&dyn Proto) -> Result<T>) -> Result<T> {
        let s = self.session()?;
        match f(&*s) {
            Err(e) if e.is_status(NfsStatus::STALE) => {
                tracing::info!(server = %self.ep.server, share = %self.ep.share, "stale NFS handle: resolving the share again");
                s.invalidate();
                f(&*self.session()?)
            }
            r => r,
        }
    }

    /// Attributes of `path`, or `None` when it (or a parent) does not exist.
    pub fn lookup(&self, path: &str) -> Result<Option<Attr>> {
        let comps = components(path)?;
        self.with_session(|s| Ok(s.walk_attr(&comps, path).found()?.map(|(_, a)| a)))
    }

    /// Makes directory `path` (its parent must exist): `Existed` when a directory is there,
    /// `Status{EXIST}` when anything else is.
    pub fn mkdir(&self, path: &str, mode: u32) -> Result<Outcome> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| Ok(s.mkdir_in(&s.parent_dir(&parent)?, name, mode, path)?.0))
    }

    /// Makes `path` and any missing parents; says what happened to the last one.
    pub fn mkdir_all(&self, path: &str, mode: u32) -> Result<Outcome> {
        let comps = components(path)?;
        split_last(path)?;
        self.with_session(|s| {
            let mut dir = s.walk(&[])?.0;
            let mut last = Outcome::Existed;
            for i in 0..comps.len() {
                let prefix = comps[..=i].join("/");
                (last, dir) = s.mkdir_in(&dir, comps[i], mode, &prefix)?;
            }
            Ok(last)
        })
    }

    pub fn setattr(&self, path: &str, attr: SetAttr) -> Result<()> {
        let comps = components(path)?;
        let a = FullAttr {
            mode: attr.mode,
            uid: attr.uid,
            gid: attr.gid,
            ..FullAttr::default()
        };
        self.with_session(|s| s.setattr(&s.walk(&comps)?.0, &a, path))
    }

    /// Replaces `path` with `data` atomically (a temporary file in the same directory written
    /// with FILE_SYNC, then RENAMEd over `path`): readers see the old or the new content.
    pub fn write_file_atomic(&self, path: &str, data: &[u8]) -> Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let (parent, name) = split_last(path)?;
        let parent_path = parent.join("/");
        self.with_session(|s| {
            let dir = s.parent_dir(&parent)?;
            let nanos = since_epoch().subsec_nanos();
            let (pid, seq) = (std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
            let tmp = format!(".ferrovol-tmp-{pid}-{seq}-{nanos:x}");
            let tmp_path = dirs::join(&parent_path, &tmp);
            let f = s.create(&dir, &tmp, CreateHow::Guarded(0o644), &tmp_path)?;
            let result = s
                .write_and_close(&f, data)
                .and_then(|()| s.rename((&dir, &tmp), (&dir, name), None, path));
            if result.is_err() {
                let _ = s.remove(&dir, &tmp, false, &tmp_path);
            }
            result
        })
    }

    /// Creates file `path` (mode 0644) with `data` only if no entry of that name exists
    /// (EXCLUSIVE create: a retransmitted request succeeds rather than report EXIST). A reader
    /// may see it before `data` is complete: it claims a name, it does not publish content.
    pub fn create_file(&self, path: &str, data: &[u8]) -> Result<Outcome> {
        let (parent, name) = split_last(path)?;
        let nanos = since_epoch().as_nanos() as u64;
        let verf = (nanos ^ u64::from(std::process::id()) << 40).to_be_bytes();
        self.with_session(|s| {
            let dir = s.parent_dir(&parent)?;
            let f = match s.create(&dir, name, CreateHow::Exclusive(verf), path) {
                Ok(f) => f,
                Err(e) if e.is_status(NfsStatus::EXIST) => return Ok(Outcome::Existed),
                Err(e) => return Err(e),
            };
            // RFC 1813 and RFC 8881: after an exclusive create the server may have stored the
            // verifier in the attributes, so the client sets them.
            let set = s.setattr(&f.fh, &FullAttr::mode(0o644), path);
            let written = set.and_then(|()| s.write_all(&f, data));
            written.and(s.close(&f))?;
            Ok(Outcome::Created)
        })
    }

    /// The whole content of file `path`, or `None` when it does not exist.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let comps = components(path)?;
        self.with_session(|s| {
            let Some((fh, attr)) = s.walk_attr(&comps, path).found()? else {
                return Ok(None);
            };
            if attr.is_dir() {
                return Err(s.status("READ", path, NfsStatus::ISDIR));
            }
            // NFSv4.1: OPEN, READ and CLOSE of a small file in one compound.
            if let Some(whole) = s.read_whole(&fh, CHUNK as u32, path) {
                match whole.found()? {
                    None => return Ok(None),
                    Some((data, eof)) if eof || data.is_empty() => return Ok(Some(data)),
                    Some(_) => {}
                }
            }
            let Some(f) = s.open(&fh, path).found()? else {
                return Ok(None);
            };
            let mut out = Vec::with_capacity(attr.size.min(1 << 20) as usize);
            let read = (|| loop {
                let (data, eof) = s.read(&f, out.len() as u64, CHUNK as u32)?;
                out.extend_from_slice(&data);
                if eof || data.is_empty() {
                    return Ok(());
                }
            })();
            read.and(s.close(&f))?;
            Ok(Some(out))
        })
    }

    /// Removes file (or symlink) `path`; `false` when it was not there.
    pub fn remove_file(&self, path: &str) -> Result<bool> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| {
            let Some(dir) = s.parent_dir(&parent).found()? else {
                return Ok(false);
            };
            s.remove(&dir, name, false, path)
        })
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (fp, fname) = split_last(from)?;
        let (tp, tname) = split_last(to)?;
        self.with_session(|s| {
            let (fdir, tdir) = (s.parent_dir(&fp)?, s.parent_dir(&tp)?);
            s.rename((&fdir, fname), (&tdir, tname), None, from)
        })
    }
}
