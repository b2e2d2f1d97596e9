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
use crate::nfs::types::{Attr, CreateHow, DirEntry, Fh, FsStat, FullAttr};
use crate::nfs::xdr::XdrResult;

const NOT_SAME: u32 = 10027;
const SAME: u32 = 10009;
const SYMLINK: u32 = 10029;

/// An open file: its handle and the open stateid READ, WRITE and CLOSE name.
#[derive(Debug, Clone)]
pub struct Open {
    pub fh: Fh,
    pub stateid: Stateid,
}

impl Transport {
    /// Runs a compound; `decode` reads the results (`Results::step` before each), and a
    /// failed step becomes the error `fail` names (by the failed operation's index).
    fn run<T>(
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

    fn fail_at(&self, path: &str) -> impl FnOnce(Failed) -> NfsError + '_ {
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
    fn plain(r: &mut proto::Results<'_>, n: usize) -> XdrResult<std::result::Result<(), Failed>> {
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

    /// OPEN of `name` in `dir` (created as `how` says when given), or of `fh` itself, for
    /// reading (and writing with `write`). A delegation the server grants anyway is returned.
    pub fn open(
        &self,
        at: &Fh,
        name: Option<&str>,
        how: Option<CreateHow>,
        write: bool,
        path: &str,
    ) -> Result<Open> {
        let access = if write {
            proto::ACCESS_BOTH
        } else {
            proto::ACCESS_READ
        };
        let owner = self.owner.open_owner.clone();
        let (open, deleg) = self.run(
            |s, o| {
                o.putfh(at)
                    .open(s.clientid, &owner, access, name, how)
                    .getfh();
            },
            |r, _| {
                if let Err(f) = Self::plain(r, 1)? {
                    return Ok(Err(f));
                }
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                let (stateid, deleg) = proto::dec_open(&mut r.d)?;
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                let fh = proto::dec_fh(&mut r.d)?;
                Ok(Ok((Open { fh, stateid }, deleg)))
            },
            self.fail_at(path),
        )?;
        if let Some(d) = deleg {
            self.return_delegation(&open.fh, &d, path);
        }
        Ok(open)
    }

    /// OPEN of `fh` for reading, READ of its first `count` bytes and CLOSE, in one compound
    /// (the current stateid carries the open to READ and CLOSE): a small record in one round
    /// trip. Returns the data and eof.
    pub fn read_whole(&self, fh: &Fh, count: u32, path: &str) -> Result<(Vec<u8>, bool)> {
        let owner = self.owner.open_owner.clone();
        let cur = Stateid::CURRENT;
        let (data, deleg) = self.run(
            |s, o| {
                o.putfh(fh)
                    .open(s.clientid, &owner, proto::ACCESS_READ, None, None)
                    .read(&cur, 0, count)
                    .close(&cur);
            },
            |r, _| {
                if let Err(f) = Self::plain(r, 1)? {
                    return Ok(Err(f));
                }
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                let (_, deleg) = proto::dec_open(&mut r.d)?;
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                let data = proto::dec_read(&mut r.d)?;
                Ok(Self::plain(r, 1)?.map(|()| (data, deleg)))
            },
            self.fail_at(path),
        )?;
        if let Some(d) = deleg {
            self.return_delegation(fh, &d, path);
        }
        Ok(data)
    }

    fn return_delegation(&self, fh: &Fh, d: &Stateid, path: &str) {
        tracing::debug!(server = %self.server, path, "returning a delegation this client did not ask for");
        let _ = self.run(
            |_, o| {
                o.putfh(fh).delegreturn(d);
            },
            |r, _| Self::plain(r, 2),
            self.fail_at(path),
        );
    }

    pub fn close(&self, f: &Open, path: &str) -> Result<()> {
        self.run(
            |_, o| {
                o.putfh(&f.fh).close(&f.stateid);
            },
            |r, _| Self::plain(r, 2),
            self.fail_at(path),
        )
    }

    pub fn read(&self, f: &Open, off: u64, count: u32, path: &str) -> Result<(Vec<u8>, bool)> {
        self.run(
            |_, o| {
                o.putfh(&f.fh).read(&f.stateid, off, count);
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => proto::dec_read(&mut r.d).map(Ok),
            },
            self.fail_at(path),
        )
    }

    pub fn write(
        &self,
        f: &Open,
        off: u64,
        stable: u32,
        data: &[u8],
        path: &str,
    ) -> Result<(u32, u32, [u8; 8])> {
        self.run(
            |_, o| {
                o.putfh(&f.fh).write(&f.stateid, off, stable, data);
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => proto::dec_write(&mut r.d).map(Ok),
            },
            self.fail_at(path),
        )
    }

    /// WRITE of all of `data` at offset 0 and CLOSE, in one compound (a small record).
    pub fn write_close(
        &self,
        f: &Open,
        stable: u32,
        data: &[u8],
        path: &str,
    ) -> Result<(u32, u32)> {
        self.run(
            |_, o| {
                o.putfh(&f.fh)
                    .write(&f.stateid, 0, stable, data)
                    .close(&f.stateid);
            },
            |r, _| {
                if let Err(f) = Self::plain(r, 2)? {
                    return Ok(Err(f));
                }
                let (n, committed, _) = proto::dec_write(&mut r.d)?;
                Ok(Self::plain(r, 1)?.map(|()| (n, committed)))
            },
            self.fail_at(path),
        )
    }

    pub fn commit(&self, fh: &Fh, path: &str) -> Result<[u8; 8]> {
        self.run(
            |_, o| {
                o.putfh(fh).commit();
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => r.d.verf().map(Ok),
            },
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
