//! The client's primitive operations as NFSv4.1 compounds: each names the handles it acts on
//! with PUTFH (SAVEFH/RESTOREFH where it needs two), so one round trip does what NFSv3 does in
//! one procedure, and a path resolves in one compound of LOOKUPs.
//!
//! NFSv4 REMOVE removes files and empty directories alike; where the caller means one kind,
//! the compound looks the name up and VERIFYs (or NVERIFYs) its type before REMOVE, so the
//! server refuses the other kind as NFSv3's RMDIR and REMOVE do (NOTDIR, ISDIR).

use super::attr;
use super::proto::{self, Failed, Ops, Stateid, Step};
use super::transport::{Reply, Transport};
use crate::nfs::error::{NfsError, NfsStatus, Result};
use crate::nfs::types::{Attr, DirEntry, Fh, FsStat, FullAttr};
use crate::nfs::xdr::XdrResult;

const NOT_SAME: u32 = 10027;
const SAME: u32 = 10009;
const SYMLINK: u32 = 10029;

impl Transport {
    /// Runs a compound; `decode` reads the results (`Results::step` before each), and a
    /// failed step becomes the error `fail` names (by the failed operation's index).
    pub(super) fn run<T>(
        &self,
        build: impl Fn(&super::session::Session, &mut Ops),
        decode: impl FnOnce(
            &mut proto::Results<'_>,
            &Reply,
        ) -> XdrResult<std::result::Result<T, Failed>>,
        fail: impl FnOnce(Failed) -> NfsError,
    ) -> Result<T> {
        let reply = self.compound(|s| {
            let mut ops = Ops::new();
            build(s, &mut ops);
            ops
        })?;
        let mut r = reply.results();
        match decode(&mut r, &reply) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(f)) => Err(fail(f)),
            Err(x) => Err(NfsError::Protocol {
                server: self.server.clone(),
                op: proto::op_name(reply.ops.last().copied().unwrap_or(0)).into(),
                detail: x.to_string(),
            }),
        }
    }

    pub(super) fn fail_at(&self, path: &str) -> impl FnOnce(Failed) -> NfsError + '_ {
        let path = path.to_string();
        move |f| {
            let status = match f.status {
                NOT_SAME => NfsStatus::NOTDIR.0,
                SAME => NfsStatus::ISDIR.0,
                SYMLINK => NfsStatus::NOTDIR.0,
                s => s,
            };
            self.v4_status(proto::op_name(f.op), &path, status)
        }
    }

    /// Steps over `n` results that carry nothing but their status.
    pub(super) fn plain(
        r: &mut proto::Results<'_>,
        n: usize,
    ) -> XdrResult<std::result::Result<(), Failed>> {
        for _ in 0..n {
            if let Step::Failed(f) = r.step()? {
                return Ok(Err(f));
            }
        }
        Ok(Ok(()))
    }

    /// GETFH then GETATTR: the current object's handle and attributes.
    fn fh_attr(r: &mut proto::Results<'_>) -> XdrResult<std::result::Result<(Fh, Attr), Failed>> {
        if let Step::Failed(f) = r.step()? {
            return Ok(Err(f));
        }
        let fh = proto::dec_fh(&mut r.d)?;
        if let Step::Failed(f) = r.step()? {
            return Ok(Err(f));
        }
        let a = attr::dec_fattr(&mut r.d)?;
        match a.attr() {
            Some(a) => Ok(Ok((fh, a))),
            None => Err(crate::nfs::xdr::XdrError("GETATTR without the type".into())),
        }
    }

    /// The share's root: PUTROOTFH and a LOOKUP per component of the share's path in the
    /// server's pseudo-filesystem.
    pub fn root(&self) -> Result<Fh> {
        let comps: Vec<&str> = self.share.split('/').filter(|c| !c.is_empty()).collect();
        let share = self.share.clone();
        let (fh, a) = self.walk_from(None, &comps, &share)?;
        if !a.is_dir() {
            return Err(self.v4_status("LOOKUP", &share, NfsStatus::NOTDIR.0));
        }
        Ok(fh)
    }

    /// Resolves `comps` below `from` (None: the server's root), in as few compounds as the
    /// session's operation limit allows. A failed LOOKUP names the prefix (`base` joined with
    /// the components up to it).
    pub fn walk_from(&self, from: Option<&Fh>, comps: &[&str], base: &str) -> Result<(Fh, Attr)> {
        let max = self.session()?.max_ops.saturating_sub(4).max(1);
        let mut cur = from.cloned();
        let mut done = 0;
        loop {
            let part = &comps[done..(done + max).min(comps.len())];
            // A failed LOOKUP names the path up to it: the share itself when resolving the
            // share from the server's root, else the components below `from`.
            let prefix = |i: usize| match from {
                None => base.to_string(),
                Some(_) => comps[..done + i].join("/"),
            };
            let start = cur.clone();
            let res = self.run(
                |_, o| {
                    match &start {
                        Some(fh) => o.putfh(fh),
                        None => o.putrootfh(),
                    };
                    for c in part {
                        if *c == ".." {
                            o.lookupp();
                        } else {
                            o.lookup(c);
                        }
                    }
                    o.getfh().getattr(attr::OBJECT);
                },
                |r, _| match Self::plain(r, 1 + part.len())? {
                    Err(f) => Ok(Err(f)),
                    Ok(()) => Self::fh_attr(r),
                },
                |f| {
                    let failed_at = if f.op == proto::OP_LOOKUP || f.op == proto::OP_LOOKUPP {
                        f.index
                    } else {
                        part.len()
                    };
                    (self.fail_at(&prefix(failed_at)))(f)
                },
            )?;
            done += part.len();
            if done >= comps.len() {
                return Ok(res);
            }
            cur = Some(res.0);
        }
    }

    pub fn getattr(&self, fh: &Fh, path: &str) -> Result<Attr> {
        let a = self.run(
            |_, o| {
                o.putfh(fh).getattr(attr::OBJECT);
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => attr::dec_fattr(&mut r.d).map(|a| Ok(a.attr())),
            },
            self.fail_at(path),
        )?;
        a.ok_or_else(|| self.protocol_err("GETATTR", "the server left out the type".into()))
    }

    fn protocol_err(&self, op: &str, detail: String) -> NfsError {
        NfsError::Protocol {
            server: self.server.clone(),
            op: op.into(),
            detail,
        }
    }

    /// CREATE of a directory (`target` None) or symlink in `dir`: its handle and attributes.
    pub fn create(
        &self,
        dir: &Fh,
        name: &str,
        target: Option<&str>,
        a: &FullAttr,
        path: &str,
    ) -> Result<(Fh, Attr)> {
        self.run(
            |_, o| {
                o.putfh(dir)
                    .create(name, target, a)
                    .getfh()
                    .getattr(attr::OBJECT);
            },
            |r, _| {
                if let Err(f) = Self::plain(r, 1)? {
                    return Ok(Err(f));
                }
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                proto::skip_change_info(&mut r.d)?;
                attr::dec_bitmap(&mut r.d)?;
                Self::fh_attr(r)
            },
            self.fail_at(path),
        )
    }

    pub fn setattr(&self, fh: &Fh, a: &FullAttr, path: &str) -> Result<()> {
        self.run(
            |_, o| {
                o.putfh(fh).setattr(&Stateid::ANONYMOUS, a);
            },
            |r, _| Self::plain(r, 2),
            self.fail_at(path),
        )
    }

    /// REMOVE of `name` in `dir`; `dir_only` Some(true) removes only a directory (else
    /// NOTDIR), Some(false) only a non-directory (else ISDIR).
    pub fn remove(&self, dir: &Fh, name: &str, dir_only: Option<bool>, path: &str) -> Result<()> {
        let checks = if dir_only.is_some() { 3 } else { 0 };
        self.run(
            |_, o| {
                o.putfh(dir);
                if let Some(want_dir) = dir_only {
                    o.lookup(name).verify_dir(want_dir).putfh(dir);
                }
                o.remove(name);
            },
            |r, _| Self::plain(r, 2 + checks),
            self.fail_at(path),
        )
    }

    /// RENAME, optionally only while `name` in `from` is the object `expect` (VERIFY of its
    /// handle in the same compound).
    pub fn rename(
        &self,
        from: (&Fh, &str),
        to: (&Fh, &str),
        expect: Option<&Fh>,
        path: &str,
    ) -> Result<()> {
        let checks = if expect.is_some() { 3 } else { 0 };
        self.run(
            |_, o| {
                o.putfh(from.0);
                if let Some(fh) = expect {
                    o.lookup(from.1).verify_fh(fh).putfh(from.0);
                }
                o.savefh().putfh(to.0).rename(from.1, to.1);
            },
            |r, _| Self::plain(r, 4 + checks),
            self.fail_at(path),
        )
    }

    /// LINK of `file` as `name` in `dir`.
    pub fn link(&self, file: &Fh, dir: &Fh, name: &str, path: &str) -> Result<()> {
        self.run(
            |_, o| {
                o.putfh(file).savefh().putfh(dir).link(name);
            },
            |r, _| Self::plain(r, 4),
            self.fail_at(path),
        )
    }

    pub fn readlink(&self, fh: &Fh, path: &str) -> Result<String> {
        self.run(
            |_, o| {
                o.putfh(fh).readlink();
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => r.d.string(4096).map(Ok),
            },
            self.fail_at(path),
        )
    }

    /// One READDIR page: entries (with handle and attributes where the server gave them),
    /// the verifier, eof.
    pub fn readdir(
        &self,
        dir: &Fh,
        cookie: u64,
        verf: [u8; 8],
        bytes: u32,
        path: &str,
    ) -> Result<(Vec<DirEntry>, [u8; 8], bool)> {
        let (verf, raw, eof) = self.run(
            |_, o| {
                o.putfh(dir).readdir(cookie, verf, bytes);
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => proto::dec_readdir(&mut r.d).map(Ok),
            },
            self.fail_at(path),
        )?;
        let entries = raw
            .into_iter()
            .map(|e| {
                let ok = e.attrs.rdattr_error == 0;
                DirEntry {
                    cookie: e.cookie,
                    attr: if ok { e.attrs.attr() } else { None },
                    fh: if ok { e.attrs.fh.clone().map(Fh) } else { None },
                    name: e.name,
                }
            })
            .collect();
        Ok((entries, verf, eof))
    }

    pub fn fsstat(&self, root: &Fh) -> Result<FsStat> {
        self.run(
            |_, o| {
                o.putfh(root).getattr(attr::SPACE);
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => attr::dec_fattr(&mut r.d).map(|a| Ok(a.space)),
            },
            self.fail_at(""),
        )
    }
}
