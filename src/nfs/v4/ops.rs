//! The client's primitive operations as NFSv4.1 compounds, one round trip each as in NFSv3 (a
//! whole path resolves in one compound of LOOKUPs).
//!
//! NFSv4 REMOVE removes files and empty directories alike; where the caller means one kind,
//! the compound looks the name up and VERIFYs (or NVERIFYs) its type before REMOVE, so the
//! server refuses the other kind as NFSv3's RMDIR and REMOVE do (NOTDIR, ISDIR).
//!
//! File I/O: OPEN (asking for no delegation, returning one granted anyway), READ, WRITE,
//! COMMIT, CLOSE. A small record is read with OPEN, READ and CLOSE in one compound (the current
//! stateid links them) and written with WRITE and CLOSE in one.

use std::sync::Arc;

use super::attr;
use super::proto::{self, Failed, Op, Ops, Results, Stateid, Stop};
use super::session::Session;
use super::transport::Transport;
use crate::nfs::client::{File, Listing, Made, Proto};
use crate::nfs::endpoint::Endpoint;
use crate::nfs::error::{Found, NfsError, NfsStatus, Result};
use crate::nfs::types::{Attr, CreateHow, Fh, FsStat, FullAttr};
use crate::nfs::xdr::{Decoder, XdrError, XdrResult};

const NOT_SAME: u32 = 10027;
const SAME: u32 = 10009;
const SYMLINK: u32 = 10029;

/// The share reached over NFSv4.1: the transport and the share's root handle.
pub struct Share<'a> {
    pub t: &'a Transport,
    pub root: Arc<Fh>,
}

impl Transport {
    /// Runs the compound `build` makes; `decode` reads its results, and a failed operation
    /// becomes the error `fail` names.
    pub(super) fn run_with<T>(
        &self,
        build: impl for<'o> Fn(&Session, &'o mut Ops) -> &'o mut Ops,
        decode: impl FnOnce(&mut Results<'_>) -> Result<T, Stop>,
        fail: impl FnOnce(Failed) -> NfsError,
    ) -> Result<T> {
        let reply = self.compound(|s| {
            let mut ops = Ops::default();
            build(s, &mut ops);
            ops
        })?;
        match decode(&mut reply.results()) {
            Ok(v) => Ok(v),
            Err(Stop::Failed(f)) => Err(fail(f)),
            Err(Stop::Xdr(x)) => {
                Err(self.protocol(&reply.ops.last().map_or("COMPOUND".into(), |o| o.name()), x))
            }
        }
    }

    /// `run_with`, a failed operation an error on `path`.
    pub(super) fn run<T>(
        &self,
        build: impl for<'o> Fn(&Session, &'o mut Ops) -> &'o mut Ops,
        decode: impl FnOnce(&mut Results<'_>) -> Result<T, Stop>,
        path: &str,
    ) -> Result<T> {
        self.run_with(build, decode, |f| self.failed(f, path))
    }

    /// `run` of a compound whose results carry only statuses.
    pub(super) fn exec(
        &self,
        path: &str,
        build: impl for<'o> Fn(&Session, &'o mut Ops) -> &'o mut Ops,
    ) -> Result<()> {
        self.run(build, |r| r.rest(), path)
    }

    /// The error of operation `f` that failed on `path`, VERIFY's and LOOKUP's in NFSv3's terms.
    fn failed(&self, f: Failed, path: &str) -> NfsError {
        let status = match f.status {
            NOT_SAME | SYMLINK => NfsStatus::NOTDIR.0,
            SAME => NfsStatus::ISDIR.0,
            s => s,
        };
        self.status(&f.op.name(), path, NfsStatus(status), true)
    }

    /// The share's root in the server's pseudo-filesystem.
    pub(super) fn resolve_root(&self) -> Result<Fh> {
        let comps: Vec<&str> = self.share.split('/').filter(|c| !c.is_empty()).collect();
        let (fh, a) = self.walk_from(None, &comps, |_| self.share.clone())?;
        if !a.is_dir() {
            return Err(self.status("LOOKUP", &self.share, NfsStatus::NOTDIR, true));
        }
        Ok(fh)
    }

    /// Resolves `comps` below `from` (None: the server's root) in as few compounds as the
    /// session allows. A failed LOOKUP names `name_of` the components up to it, a failed GETFH
    /// or GETATTR `name_of` all of them.
    fn walk_from(
        &self,
        from: Option<&Fh>,
        comps: &[&str],
        name_of: impl Fn(usize) -> String,
    ) -> Result<(Fh, Attr)> {
        let max = self.session()?.max_ops.saturating_sub(4).max(1);
        let mut cur = from.cloned();
        let mut done = 0;
        loop {
            let part = &comps[done..(done + max).min(comps.len())];
            let res = self.run_with(
                |_, o| {
                    match &cur {
                        Some(fh) => o.putfh(fh),
                        None => o.bare(Op::PUTROOTFH),
                    };
                    for c in part {
                        match *c {
                            ".." => o.bare(Op::LOOKUPP),
                            c => o.add(Op::LOOKUP, c),
                        };
                    }
                    o.bare(Op::GETFH).getattr(attr::OBJECT)
                },
                |r| fh_attr(r, 1 + part.len()),
                |f| {
                    let at = match f.op {
                        Op::LOOKUP | Op::LOOKUPP => f.index,
                        _ => part.len(),
                    };
                    self.failed(f, &name_of(done + at))
                },
            )?;
            done += part.len();
            if done >= comps.len() {
                return Ok(res);
            }
            cur = Some(res.0);
        }
    }
}

/// GETFH then GETATTR, after `n` other results: the current object's handle and attributes.
fn fh_attr(r: &mut Results<'_>, n: usize) -> Result<(Fh, Attr), Stop> {
    let fh = proto::dec_fh(r.body(n + 1)?)?;
    Ok((fh, object_attr(r.body(1)?)?))
}

/// A GETATTR result of the object's attributes, which must hold its type.
fn object_attr(d: &mut Decoder<'_>) -> XdrResult<Attr> {
    let a = attr::dec_fattr(d)?.attr();
    a.ok_or_else(|| XdrError("GETATTR without the type".into()))
}

impl Share<'_> {
    /// OPEN of `name` in `at` created as `how` says, for reading and writing, or of `at` itself
    /// (both None) for reading.
    fn open_in(
        &self,
        at: &Fh,
        name: Option<&str>,
        how: Option<CreateHow>,
        path: &str,
    ) -> Result<File> {
        let access = match how {
            Some(_) => proto::ACCESS_BOTH,
            None => proto::ACCESS_READ,
        };
        let owner = &self.t.owner.open_owner;
        let (f, deleg) = self.t.run(
            |s, o| {
                let opened = o.putfh(at).open(s.clientid, owner, access, name, how);
                opened.bare(Op::GETFH)
            },
            |r| {
                let (stateid, deleg) = proto::dec_open(r.body(2)?)?;
                let fh = proto::dec_fh(r.body(1)?)?;
                let path = path.to_string();
                Ok((File { fh, stateid, path }, deleg))
            },
            path,
        )?;
        self.return_delegation(&f.fh, deleg, path);
        Ok(f)
    }

    /// Returns at once a delegation the server granted although none was asked for.
    fn return_delegation(&self, fh: &Fh, deleg: Option<Stateid>, path: &str) {
        if let Some(d) = deleg {
            tracing::debug!(server = %self.t.server, path, "returning a delegation this client did not ask for");
            let _ = self
                .t
                .exec(path, |_, o| o.putfh(fh).add(Op::DELEGRETURN, d));
        }
    }
}

impl Proto for Share<'_> {
    fn ep(&self) -> &Endpoint {
        self.t
    }

    fn is_v4(&self) -> bool {
        true
    }

    fn invalidate(&self) {
        self.t.root.forget(&self.root);
    }

    fn lookup_in(&self, dir: &Fh, name: &str, path: &str) -> Result<(Fh, Option<Attr>)> {
        let (fh, a) = self.t.walk_from(Some(dir), &[name], |_| path.to_string())?;
        Ok((fh, Some(a)))
    }

    fn walk(&self, comps: &[&str]) -> Result<(Fh, Option<Attr>)> {
        if comps.is_empty() {
            return Ok(((*self.root).clone(), None));
        }
        let (fh, a) = (self.t).walk_from(Some(&self.root), comps, |n| comps[..n].join("/"))?;
        Ok((fh, Some(a)))
    }

    fn getattr(&self, fh: &Fh, path: &str) -> Result<Attr> {
        self.t.run(
            |_, o| o.putfh(fh).getattr(attr::OBJECT),
            |r| Ok(object_attr(r.body(2)?)?),
            path,
        )
    }

    fn setattr(&self, fh: &Fh, a: &FullAttr, path: &str) -> Result<()> {
        self.t
            .exec(path, |_, o| o.putfh(fh).setattr(&proto::ANONYMOUS, a))
    }

    fn make(
        &self,
        dir: &Fh,
        name: &str,
        target: Option<&str>,
        a: &FullAttr,
        path: &str,
    ) -> Result<Made> {
        let (fh, attr) = self.t.run(
            |_, o| {
                let made = o.putfh(dir).create(name, target, a);
                made.bare(Op::GETFH).getattr(attr::OBJECT)
            },
            |r| {
                let d = r.body(2)?;
                proto::skip_change_info(d)?;
                attr::dec_bitmap(d)?;
                fh_attr(r, 0)
            },
            path,
        )?;
        Ok((Some(fh), Some(attr)))
    }

    fn create(&self, dir: &Fh, name: &str, how: CreateHow, path: &str) -> Result<File> {
        self.open_in(dir, Some(name), Some(how), path)
    }

    fn open(&self, fh: &Fh, path: &str) -> Result<File> {
        self.open_in(fh, None, None, path)
    }

    fn close(&self, f: &File) -> Result<()> {
        self.t.exec(&f.path, |_, o| {
            o.putfh(&f.fh).add(Op::CLOSE, (0u32, f.stateid))
        })
    }

    fn read(&self, f: &File, off: u64, count: u32) -> Result<(Vec<u8>, bool)> {
        self.t.run(
            |_, o| o.putfh(&f.fh).add(Op::READ, (f.stateid, off, count)),
            |r| Ok(proto::dec_read(r.body(2)?)?),
            &f.path,
        )
    }

    fn write(&self, f: &File, off: u64, stable: u32, data: &[u8]) -> Result<(u32, u32, [u8; 8])> {
        self.t.run(
            |_, o| {
                o.putfh(&f.fh)
                    .add(Op::WRITE, (f.stateid, off, stable, data))
            },
            |r| Ok(proto::dec_write(r.body(2)?)?),
            &f.path,
        )
    }

    /// OPEN for reading, READ of the first `count` bytes and CLOSE in one compound (the current
    /// stateid carries the open to READ and CLOSE).
    fn read_whole(&self, fh: &Fh, count: u32, path: &str) -> Option<Result<(Vec<u8>, bool)>> {
        let (owner, cur, access) = (&self.t.owner.open_owner, proto::CURRENT, proto::ACCESS_READ);
        let read = self.t.run(
            |s, o| {
                let opened = o.putfh(fh).open(s.clientid, owner, access, None, None);
                let read = opened.add(Op::READ, (cur, 0u64, count));
                read.add(Op::CLOSE, (0u32, cur))
            },
            |r| {
                let (_, deleg) = proto::dec_open(r.body(2)?)?;
                let data = proto::dec_read(r.body(1)?)?;
                r.ok(1)?;
                Ok((data, deleg))
            },
            path,
        );
        Some(read.map(|(data, deleg)| {
            self.return_delegation(fh, deleg, path);
            data
        }))
    }

    fn write_close(&self, f: &File, data: &[u8], stable: u32) -> Option<Result<(u32, u32)>> {
        Some(self.t.run(
            |_, o| {
                let written = o
                    .putfh(&f.fh)
                    .add(Op::WRITE, (f.stateid, 0u64, stable, data));
                written.add(Op::CLOSE, (0u32, f.stateid))
            },
            |r| {
                let (n, committed, _) = proto::dec_write(r.body(2)?)?;
                r.ok(1)?;
                Ok((n, committed))
            },
            &f.path,
        ))
    }

    fn commit(&self, f: &File) -> Result<[u8; 8]> {
        let path = &f.path;
        self.t.run(
            |_, o| o.putfh(&f.fh).add(Op::COMMIT, (0u64, 0u32)),
            |r| Ok(r.body(2)?.verf()?),
            path,
        )
    }

    /// REMOVE of `name` only when it is (`is_dir`) or is not a directory: NOTDIR or ISDIR else.
    fn remove(&self, dir: &Fh, name: &str, is_dir: bool, path: &str) -> Result<bool> {
        let r = self.t.exec(path, |_, o| {
            let found = o.putfh(dir).add(Op::LOOKUP, name);
            let checked = found.verify(is_dir, attr::TYPE, 2u32); // NF4DIR
            checked.putfh(dir).add(Op::REMOVE, name)
        });
        Ok(r.found()?.is_some())
    }

    /// RENAME, given `expect` only while the source is that object (VERIFY of its handle in
    /// the same compound).
    fn rename(
        &self,
        from: (&Fh, &str),
        to: (&Fh, &str),
        expect: Option<&Fh>,
        path: &str,
    ) -> Result<()> {
        self.t.exec(path, |_, o| {
            o.putfh(from.0);
            if let Some(fh) = expect {
                let found = o.add(Op::LOOKUP, from.1);
                found.verify(true, attr::FILEHANDLE, fh).putfh(from.0);
            }
            let saved = o.bare(Op::SAVEFH).putfh(to.0);
            saved.add(Op::RENAME, (from.1, to.1))
        })
    }

    fn link(&self, file: &Fh, dir: &Fh, name: &str, path: &str) -> Result<()> {
        self.t.exec(path, |_, o| {
            let saved = o.putfh(file).bare(Op::SAVEFH);
            saved.putfh(dir).add(Op::LINK, name)
        })
    }

    fn readlink(&self, fh: &Fh, path: &str) -> Result<String> {
        self.t.run(
            |_, o| o.putfh(fh).bare(Op::READLINK),
            |r| Ok(r.body(2)?.string(4096)?),
            path,
        )
    }

    fn readdir(
        &self,
        dir: &Fh,
        (cookie, verf): (u64, [u8; 8]),
        bytes: u32,
        path: &str,
    ) -> Result<Listing> {
        self.t.run(
            |_, o| o.putfh(dir).readdir(cookie, verf, bytes),
            |r| Ok(proto::dec_readdir(r.body(2)?)?),
            path,
        )
    }

    fn fsstat(&self) -> Result<FsStat> {
        self.t.run(
            |_, o| o.putfh(&self.root).getattr(attr::SPACE),
            |r| Ok(attr::dec_fattr(r.body(2)?)?.space),
            "",
        )
    }
}
