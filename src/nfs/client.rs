//! The high-level, blocking API: paths relative to the share root, resolved one LOOKUP per
//! component from the root handle on every call (no handle cache, so nothing goes stale between
//! calls and a symlink is never followed: LOOKUP returns the link itself).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{Found, NfsError, NfsStatus, Result};
use super::path::{components, split_last};
use super::proto::{self, Attr, CreateHow, Fh, FileType, FsStat, Proc, SetAttr};
use super::transport::{ClientOptions, Session, Transport};
use super::xdr::{Decoder, Encoder, XdrResult};

mod copy;
mod dirs;
mod guarded;

pub use copy::CopyStats;
pub use guarded::Rmdir;

/// Bytes per READ and WRITE: far below every server's limit, large enough for volume records.
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

/// A blocking NFSv3 client for one export of one server. Cheap to share (`Arc<NfsClient>`); calls
/// from many threads run in parallel on pooled connections.
pub struct NfsClient {
    t: Transport,
}

struct Entry {
    name: String,
    attr: Attr,
    fh: Fh,
    /// Where a listing resumes after this entry.
    cookie: u64,
}

impl NfsClient {
    /// A client for `server` (host name or address) and `share` (the export path, as in
    /// `server:/share`). Does no I/O: the share is mounted on the first call.
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
        Ok(NfsClient {
            t: Transport::new(server, share, opts),
        })
    }

    pub fn server(&self) -> &str {
        &self.t.server
    }

    pub fn share(&self) -> &str {
        &self.t.share
    }

    /// Mounts the share now (portmap, MNT), so configuration errors surface early.
    pub fn connect(&self) -> Result<()> {
        self.t.session().map(|_| ())
    }

    /// Runs `f` with the current session; when the server says a handle is stale (it restarted
    /// with new handles, or the export was re-created), mounts again and runs `f` once more.
    fn with_session<T>(&self, f: impl Fn(&Arc<Session>) -> Result<T>) -> Result<T> {
        let s = self.t.session()?;
        match f(&s) {
            Err(e) if e.is_status(NfsStatus::STALE) => {
                tracing::info!(server = %self.t.server, share = %self.t.share, "stale NFS handle: mounting the share again");
                self.t.invalidate(&s);
                let s = self.t.session()?;
                f(&s)
            }
            r => r,
        }
    }

    fn protocol(&self, op: &str, detail: String) -> NfsError {
        NfsError::Protocol {
            server: self.t.server.clone(),
            op: op.to_string(),
            detail,
        }
    }

    fn xdr<T>(&self, op: Proc, r: XdrResult<T>) -> Result<T> {
        r.map_err(|e| self.protocol(op.name(), e.to_string()))
    }

    /// One NFS call; an error status becomes `NfsError::Status` naming `path`. Returns the
    /// result after the status word.
    fn nfs(&self, s: &Arc<Session>, op: Proc, path: &str, args: Encoder) -> Result<Vec<u8>> {
        let mut reply = self.t.call(s, op, args.bytes())?;
        let status = self.xdr(op, proto::dec_status(&mut Decoder::new(&reply)))?;
        if status != NfsStatus::OK {
            return Err(self.status(op, path, status));
        }
        reply.drain(..4);
        Ok(reply)
    }

    /// One NFS call whose result `dec` decodes.
    fn call<T>(
        &self,
        s: &Arc<Session>,
        op: Proc,
        path: &str,
        args: Encoder,
        dec: fn(&mut Decoder<'_>) -> XdrResult<T>,
    ) -> Result<T> {
        let r = self.nfs(s, op, path, args)?;
        self.xdr(op, dec(&mut Decoder::new(&r)))
    }

    fn lookup_in(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        path: &str,
    ) -> Result<(Fh, Option<Attr>)> {
        let mut e = Encoder::new();
        proto::enc_dirop(&mut e, dir, name);
        self.call(s, Proc::Lookup, path, e, proto::dec_lookup)
    }

    /// LOOKUP with the attributes, by GETATTR when the server left them out.
    fn lookup_attr_in(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        path: &str,
    ) -> Result<(Fh, Attr)> {
        let (fh, attr) = self.lookup_in(s, dir, name, path)?;
        self.with_attr(s, fh, attr, path)
    }

    fn with_attr(
        &self,
        s: &Arc<Session>,
        fh: Fh,
        attr: Option<Attr>,
        path: &str,
    ) -> Result<(Fh, Attr)> {
        let attr = match attr {
            Some(a) => a,
            None => self.getattr(s, &fh, path)?,
        };
        Ok((fh, attr))
    }

    fn getattr(&self, s: &Arc<Session>, fh: &Fh, path: &str) -> Result<Attr> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, fh);
        self.call(s, Proc::Getattr, path, e, proto::dec_fattr)
    }

    /// The handle of an object CREATE, MKDIR or SYMLINK just made as `name` in `dir`, from the
    /// reply `created` or, when the server left it out, by LOOKUP.
    fn made_fh(
        &self,
        s: &Arc<Session>,
        created: Option<Fh>,
        dir: &Fh,
        name: &str,
        path: &str,
    ) -> Result<Fh> {
        match created {
            Some(fh) => Ok(fh),
            None => Ok(self.lookup_in(s, dir, name, path)?.0),
        }
    }

    /// Resolves `comps` from the root; the error of a failed LOOKUP names the prefix that failed.
    fn walk(&self, s: &Arc<Session>, comps: &[&str]) -> Result<(Fh, Option<Attr>)> {
        let mut cur = (s.root.clone(), None);
        for i in 0..comps.len() {
            cur = self.lookup_in(s, &cur.0, comps[i], &comps[..=i].join("/"))?;
        }
        Ok(cur)
    }

    fn walk_attr(&self, s: &Arc<Session>, comps: &[&str], path: &str) -> Result<(Fh, Attr)> {
        let (fh, attr) = self.walk(s, comps)?;
        self.with_attr(s, fh, attr, path)
    }

    fn walk_dir(&self, s: &Arc<Session>, comps: &[&str], path: &str) -> Result<Fh> {
        let (fh, attr) = self.walk_attr(s, comps, path)?;
        if !attr.is_dir() {
            return Err(self.status(Proc::Lookup, path, NfsStatus::NOTDIR));
        }
        Ok(fh)
    }

    /// The directory `parent` (components of a path's parent).
    fn parent_dir(&self, s: &Arc<Session>, parent: &[&str]) -> Result<Fh> {
        self.walk_dir(s, parent, &parent.join("/"))
    }

    fn status(&self, op: Proc, path: &str, status: NfsStatus) -> NfsError {
        NfsError::Status {
            server: self.t.server.clone(),
            op: op.name().to_string(),
            path: path.to_string(),
            status,
        }
    }

    /// Attributes of `path`, or `None` when it (or a parent) does not exist.
    pub fn lookup(&self, path: &str) -> Result<Option<Attr>> {
        let comps = components(path)?;
        self.with_session(|s| Ok(self.walk_attr(s, &comps, path).found()?.map(|(_, a)| a)))
    }

    fn setattr_fh(&self, s: &Arc<Session>, fh: &Fh, attr: &SetAttr, path: &str) -> Result<()> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, fh);
        proto::enc_sattr(&mut e, attr);
        e.bool(false); // no ctime guard
        self.nfs(s, Proc::Setattr, path, e).map(|_| ())
    }

    fn mkdir_in(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        mode: u32,
        path: &str,
    ) -> Result<(Outcome, Fh)> {
        let mut e = Encoder::new();
        proto::enc_dirop(&mut e, dir, name);
        let want = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        proto::enc_sattr(&mut e, &want);
        match self.nfs(s, Proc::Mkdir, path, e) {
            Ok(r) => {
                let (fh, attr) =
                    self.xdr(Proc::Mkdir, proto::dec_created(&mut Decoder::new(&r)))?;
                let fh = self.made_fh(s, fh, dir, name, path)?;
                // Some servers apply a umask to the requested mode; set it again when they did.
                if attr.is_none_or(|a| a.mode != mode & 0o7777) {
                    self.setattr_fh(s, &fh, &want, path)?;
                }
                Ok((Outcome::Created, fh))
            }
            Err(e) if e.is_status(NfsStatus::EXIST) => {
                match self.lookup_attr_in(s, dir, name, path)? {
                    (fh, attr) if attr.is_dir() => Ok((Outcome::Existed, fh)),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Makes directory `path` with `mode`; its parent must exist. A directory already there is
    /// `Existed`; anything else there is `Status{NFS3ERR_EXIST}`.
    pub fn mkdir(&self, path: &str, mode: u32) -> Result<Outcome> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| {
            Ok(self
                .mkdir_in(s, &self.parent_dir(s, &parent)?, name, mode, path)?
                .0)
        })
    }

    /// Makes `path` and any missing parents, all with `mode`. Says what happened to the last one.
    pub fn mkdir_all(&self, path: &str, mode: u32) -> Result<Outcome> {
        let comps = components(path)?;
        split_last(path)?;
        self.with_session(|s| {
            let mut dir = s.root.clone();
            let mut last = Outcome::Existed;
            for i in 0..comps.len() {
                let prefix = comps[..=i].join("/");
                (last, dir) = self.mkdir_in(s, &dir, comps[i], mode, &prefix)?;
            }
            Ok(last)
        })
    }

    /// Changes mode, owner and/or group of `path` (it must exist).
    pub fn setattr(&self, path: &str, attr: SetAttr) -> Result<()> {
        let comps = components(path)?;
        self.with_session(|s| {
            let (fh, _) = self.walk(s, &comps)?;
            self.setattr_fh(s, &fh, &attr, path)
        })
    }

    fn write_all(&self, s: &Arc<Session>, fh: &Fh, data: &[u8], path: &str) -> Result<()> {
        let mut off = 0usize;
        let mut synced = true;
        while off < data.len() {
            let chunk = &data[off..data.len().min(off + CHUNK)];
            let mut e = Encoder::new();
            proto::enc_fh(&mut e, fh);
            e.u64(off as u64)
                .u32(chunk.len() as u32)
                .u32(FILE_SYNC)
                .opaque(chunk);
            let (count, committed, _) = self.call(s, Proc::Write, path, e, proto::dec_write)?;
            if count == 0 {
                return Err(self.protocol("WRITE", format!("server wrote 0 bytes of {path:?}")));
            }
            synced &= committed == FILE_SYNC;
            off += count as usize;
        }
        if !synced {
            // The server cached some data unstably despite FILE_SYNC: make it durable.
            let mut e = Encoder::new();
            proto::enc_fh(&mut e, fh);
            e.u64(0).u32(0);
            self.nfs(s, Proc::Commit, path, e)?;
        }
        Ok(())
    }

    fn remove_in(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        path: &str,
        op: Proc,
    ) -> Result<bool> {
        let mut e = Encoder::new();
        proto::enc_dirop(&mut e, dir, name);
        Ok(self.nfs(s, op, path, e).found()?.is_some())
    }

    /// Replaces `path` with `data` atomically: writes a unique temporary file in the same
    /// directory with FILE_SYNC writes, then RENAMEs it over `path`. Readers see the old or the
    /// new content, never a mix; the parent directory must exist.
    pub fn write_file_atomic(&self, path: &str, data: &[u8]) -> Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let (parent, name) = split_last(path)?;
        let parent_path = parent.join("/");
        self.with_session(|s| {
            let dir = self.parent_dir(s, &parent)?;
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = format!(
                ".ferrovol-tmp-{}-{}-{nanos:x}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let tmp_path = if parent_path.is_empty() {
                tmp.clone()
            } else {
                format!("{parent_path}/{tmp}")
            };
            let mut e = Encoder::new();
            proto::enc_create(&mut e, &dir, &tmp, CreateHow::Guarded(0o644));
            let made = self
                .call(s, Proc::Create, &tmp_path, e, proto::dec_created)?
                .0;
            let result = (|| {
                let fh = self.made_fh(s, made, &dir, &tmp, &tmp_path)?;
                self.write_all(s, &fh, data, &tmp_path)?;
                let mut e = Encoder::new();
                proto::enc_dirop(&mut e, &dir, &tmp);
                proto::enc_dirop(&mut e, &dir, name);
                self.nfs(s, Proc::Rename, path, e).map(|_| ())
            })();
            if result.is_err() {
                let _ = self.remove_in(s, &dir, &tmp, &tmp_path, Proc::Remove);
            }
            result
        })
    }

    /// Creates file `path` with `data` only if no entry of that name exists (EXCLUSIVE create,
    /// whose verifier makes a retransmitted request succeed rather than report EXIST). Unlike
    /// `write_file_atomic` a concurrent reader may see the file before `data` is complete; use it
    /// to claim a name, not to publish content. The file gets mode 0644.
    pub fn create_file(&self, path: &str, data: &[u8]) -> Result<Outcome> {
        let (parent, name) = split_last(path)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let verf = (nanos ^ u64::from(std::process::id()) << 40).to_be_bytes();
        self.with_session(|s| {
            let dir = self.parent_dir(s, &parent)?;
            let mut e = Encoder::new();
            proto::enc_create(&mut e, &dir, name, CreateHow::Exclusive(verf));
            let made = match self.call(s, Proc::Create, path, e, proto::dec_created) {
                Ok((made, _)) => made,
                Err(e) if e.is_status(NfsStatus::EXIST) => return Ok(Outcome::Existed),
                Err(e) => return Err(e),
            };
            let fh = self.made_fh(s, made, &dir, name, path)?;
            // RFC 1813: after an exclusive create the server may have stored the verifier in
            // the attributes, so the client sets them.
            let mode = SetAttr {
                mode: Some(0o644),
                ..SetAttr::default()
            };
            self.setattr_fh(s, &fh, &mode, path)?;
            self.write_all(s, &fh, data, path)?;
            Ok(Outcome::Created)
        })
    }

    /// The whole content of file `path`, or `None` when it does not exist.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let comps = components(path)?;
        self.with_session(|s| {
            let Some((fh, attr)) = self.walk_attr(s, &comps, path).found()? else {
                return Ok(None);
            };
            if attr.is_dir() {
                return Err(self.status(Proc::Read, path, NfsStatus::ISDIR));
            }
            let mut out = Vec::with_capacity(attr.size.min(1 << 20) as usize);
            loop {
                let mut e = Encoder::new();
                proto::enc_fh(&mut e, &fh);
                e.u64(out.len() as u64).u32(CHUNK as u32);
                let (data, eof) = self.call(s, Proc::Read, path, e, proto::dec_read)?;
                out.extend_from_slice(&data);
                if eof || data.is_empty() {
                    return Ok(Some(out));
                }
            }
        })
    }

    /// Removes file (or symlink) `path`. `false` when it was not there.
    pub fn remove_file(&self, path: &str) -> Result<bool> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| {
            let Some(dir) = self.parent_dir(s, &parent).found()? else {
                return Ok(false);
            };
            self.remove_in(s, &dir, name, path, Proc::Remove)
        })
    }

    /// Renames `from` to `to` (replacing a file there, as rename(2) does).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (fp, fname) = split_last(from)?;
        let (tp, tname) = split_last(to)?;
        self.with_session(|s| {
            let (fdir, tdir) = (self.parent_dir(s, &fp)?, self.parent_dir(s, &tp)?);
            let mut e = Encoder::new();
            proto::enc_dirop(&mut e, &fdir, fname);
            proto::enc_dirop(&mut e, &tdir, tname);
            self.nfs(s, Proc::Rename, from, e).map(|_| ())
        })
    }
}
