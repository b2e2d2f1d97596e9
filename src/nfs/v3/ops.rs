//! The client's primitive operations as NFSv3 procedures, one call each.

use std::sync::Arc;

use super::proto::{self, Proc};
use super::transport::{Session, Transport};
use crate::nfs::client::{File, Listing, Made, Proto};
use crate::nfs::endpoint::Endpoint;
use crate::nfs::error::{Found, NfsStatus, Result};
use crate::nfs::types::{Attr, CreateHow, Fh, FsStat, FullAttr};
use crate::nfs::xdr::{Decoder, Encoder, XdrResult};

/// The share reached over NFSv3: the transport and the session MOUNT gave.
pub struct Share<'a> {
    pub t: &'a Transport,
    pub s: Arc<Session>,
}

/// Arguments that start with the handle `fh`.
fn args(fh: &Fh) -> Encoder {
    let mut e = Encoder::new();
    proto::enc_fh(&mut e, fh);
    e
}

/// Arguments that start with `name` in directory `dir`.
fn dirop(dir: &Fh, name: &str) -> Encoder {
    let mut e = Encoder::new();
    proto::enc_dirop(&mut e, dir, name);
    e
}

impl Share<'_> {
    /// One NFS call; an error status becomes `NfsError::Status` naming `path`. Returns the
    /// result after the status word.
    fn nfs(&self, op: Proc, path: &str, args: Encoder) -> Result<Vec<u8>> {
        let mut reply = self.t.call(&self.s, op, args.bytes())?;
        let status = NfsStatus(self.decode(op, Decoder::new(&reply).u32())?);
        if status != NfsStatus::OK {
            return Err(self.status(op.name(), path, status));
        }
        reply.drain(..4);
        Ok(reply)
    }

    fn decode<T>(&self, op: Proc, r: XdrResult<T>) -> Result<T> {
        r.map_err(|e| self.t.protocol(op.name(), e))
    }

    /// One NFS call whose result `dec` decodes.
    fn decoded<T>(
        &self,
        op: Proc,
        path: &str,
        args: Encoder,
        dec: fn(&mut Decoder<'_>) -> XdrResult<T>,
    ) -> Result<T> {
        let r = self.nfs(op, path, args)?;
        self.decode(op, dec(&mut Decoder::new(&r)))
    }
}

impl Proto for Share<'_> {
    fn ep(&self) -> &Endpoint {
        self.t
    }

    fn is_v4(&self) -> bool {
        false
    }

    fn root(&self) -> &Fh {
        &self.s.root
    }

    fn invalidate(&self) {
        self.t.invalidate(&self.s);
    }

    fn lookup_in(&self, dir: &Fh, name: &str, path: &str) -> Result<(Fh, Option<Attr>)> {
        self.decoded(Proc::Lookup, path, dirop(dir, name), proto::dec_lookup)
    }

    fn walk(&self, comps: &[&str]) -> Result<(Fh, Option<Attr>)> {
        let mut cur = (self.s.root.clone(), None);
        for i in 0..comps.len() {
            cur = self.lookup_in(&cur.0, comps[i], &comps[..=i].join("/"))?;
        }
        Ok(cur)
    }

    fn getattr(&self, fh: &Fh, path: &str) -> Result<Attr> {
        self.decoded(Proc::Getattr, path, args(fh), proto::dec_fattr)
    }

    fn setattr(&self, fh: &Fh, a: &FullAttr, path: &str) -> Result<()> {
        let mut e = args(fh);
        proto::enc_full_sattr(&mut e, a);
        e.bool(false); // no ctime guard
        self.nfs(Proc::Setattr, path, e).map(|_| ())
    }

    fn mkdir(&self, dir: &Fh, name: &str, mode: u32, path: &str) -> Result<Made> {
        let mut e = dirop(dir, name);
        proto::enc_full_sattr(&mut e, &FullAttr::mode(mode));
        self.decoded(Proc::Mkdir, path, e, proto::dec_created)
    }

    fn symlink(
        &self,
        dir: &Fh,
        name: &str,
        a: &FullAttr,
        target: &str,
        path: &str,
    ) -> Result<Made> {
        let mut e = dirop(dir, name);
        proto::enc_full_sattr(&mut e, a);
        e.string(target);
        self.decoded(Proc::Symlink, path, e, proto::dec_created)
    }

    fn create(&self, dir: &Fh, name: &str, how: CreateHow, path: &str) -> Result<File> {
        let mut e = dirop(dir, name);
        proto::enc_createhow(&mut e, how);
        let fh = match self.decoded(Proc::Create, path, e, proto::dec_created)?.0 {
            Some(fh) => fh,
            None => self.lookup_in(dir, name, path)?.0,
        };
        Ok(File { fh, open: None })
    }

    fn open(&self, fh: &Fh, _write: bool, _path: &str) -> Result<File> {
        Ok(File {
            fh: fh.clone(),
            open: None,
        })
    }

    fn close(&self, _f: &File, _path: &str) -> Result<()> {
        Ok(())
    }

    fn read(&self, f: &File, off: u64, count: u32, path: &str) -> Result<(Vec<u8>, bool)> {
        let mut e = args(&f.fh);
        e.u64(off).u32(count);
        self.decoded(Proc::Read, path, e, proto::dec_read)
    }

    fn write(
        &self,
        f: &File,
        off: u64,
        stable: u32,
        data: &[u8],
        path: &str,
    ) -> Result<(u32, u32, [u8; 8])> {
        let mut e = args(&f.fh);
        e.u64(off).u32(data.len() as u32).u32(stable).opaque(data);
        self.decoded(Proc::Write, path, e, proto::dec_write)
    }

    fn read_whole(&self, _: &Fh, _: u32, _: &str) -> Option<Result<(Vec<u8>, bool)>> {
        None
    }

    fn write_close(&self, _: &File, _: &[u8], _: u32, _: &str) -> Option<Result<(u32, u32)>> {
        None
    }

    fn commit(&self, f: &File, path: &str) -> Result<[u8; 8]> {
        let mut e = args(&f.fh);
        e.u64(0).u32(0);
        self.decoded(Proc::Commit, path, e, proto::dec_commit)
    }

    fn remove(&self, dir: &Fh, name: &str, is_dir: bool, path: &str) -> Result<bool> {
        let op = if is_dir { Proc::Rmdir } else { Proc::Remove };
        Ok(self.nfs(op, path, dirop(dir, name)).found()?.is_some())
    }

    fn rename(&self, from: (&Fh, &str), to: (&Fh, &str), _: Option<&Fh>, path: &str) -> Result<()> {
        let mut e = dirop(from.0, from.1);
        proto::enc_dirop(&mut e, to.0, to.1);
        self.nfs(Proc::Rename, path, e).map(|_| ())
    }

    fn link(&self, file: &Fh, dir: &Fh, name: &str, path: &str) -> Result<()> {
        let mut e = args(file);
        proto::enc_dirop(&mut e, dir, name);
        self.nfs(Proc::Link, path, e).map(|_| ())
    }

    fn readlink(&self, fh: &Fh, path: &str) -> Result<String> {
        self.decoded(Proc::Readlink, path, args(fh), proto::dec_readlink)
    }

    fn readdir(
        &self,
        dir: &Fh,
        (cookie, verf): (u64, [u8; 8]),
        bytes: u32,
        path: &str,
    ) -> Result<Listing> {
        let mut e = args(dir);
        e.u64(cookie).fixed(&verf).u32(bytes / 4).u32(bytes);
        self.decoded(Proc::Readdirplus, path, e, proto::dec_readdirplus)
    }

    fn fsstat(&self) -> Result<FsStat> {
        self.decoded(Proc::Fsstat, "", args(&self.s.root), proto::dec_fsstat)
    }
}
