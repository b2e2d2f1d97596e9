//! The client's primitive operations as NFSv3 procedures, one call each.

use std::sync::Arc;

use super::proto::{self, Proc};
use super::transport::{Session, Transport};
use crate::nfs::client::{File, Listing, Made, Proto};
use crate::nfs::endpoint::Endpoint;
use crate::nfs::error::{Found, Result};
use crate::nfs::types::{Attr, CreateHow, Fh, FsStat, FullAttr, IO_MAX};
use crate::nfs::xdr::{Decoder, Encoder, Xdr, XdrResult};

/// The share reached over NFSv3: the transport and the session MOUNT gave.
pub struct Share<'a> {
    pub t: &'a Transport,
    pub s: Arc<Session>,
}

impl Share<'_> {
    /// One NFS call whose result after the status `dec` decodes; an error status names `path`.
    fn decoded<T>(
        &self,
        op: Proc,
        path: &str,
        args: impl Xdr,
        dec: fn(&mut Decoder<'_>) -> XdrResult<T>,
    ) -> Result<T> {
        let reply = self.t.call(&self.s, op, Encoder::of(args).bytes())?;
        self.t.decode(&reply, &op.name(), path, dec)
    }

    /// One NFS call whose result carries nothing this client reads.
    fn nfs(&self, op: Proc, path: &str, args: impl Xdr) -> Result<()> {
        self.decoded(op, path, args, |_| Ok(()))
    }
}

impl Proto for Share<'_> {
    fn ep(&self) -> &Endpoint {
        self.t
    }

    fn is_v4(&self) -> bool {
        false
    }

    fn invalidate(&self) {
        self.t.invalidate(&self.s);
    }

    fn lookup_in(&self, dir: &Fh, name: &str, path: &str) -> Result<(Fh, Option<Attr>)> {
        self.decoded(Proc::LOOKUP, path, (dir, name), |d| {
            Ok((proto::dec_fh(d)?, proto::dec_post_op_attr(d)?))
        })
    }

    fn walk(&self, comps: &[&str]) -> Result<(Fh, Option<Attr>)> {
        let mut cur = (self.s.root.clone(), None);
        for i in 0..comps.len() {
            cur = self.lookup_in(&cur.0, comps[i], &comps[..=i].join("/"))?;
        }
        Ok(cur)
    }

    fn getattr(&self, fh: &Fh, path: &str) -> Result<Attr> {
        self.decoded(Proc::GETATTR, path, fh, proto::dec_fattr)
    }

    fn setattr(&self, fh: &Fh, a: &FullAttr, path: &str) -> Result<()> {
        let mut e = Encoder::of(fh);
        proto::enc_full_sattr(&mut e, a);
        self.nfs(Proc::SETATTR, path, (e, false)) // no ctime guard
    }

    fn make(
        &self,
        dir: &Fh,
        name: &str,
        to: Option<&str>,
        a: &FullAttr,
        path: &str,
    ) -> Result<Made> {
        let mut e = Encoder::of((dir, name));
        proto::enc_full_sattr(&mut e, a);
        let op = match to {
            Some(target) => {
                e.string(target);
                Proc::SYMLINK
            }
            None => Proc::MKDIR,
        };
        self.decoded(op, path, e, proto::dec_created)
    }

    fn create(&self, dir: &Fh, name: &str, how: CreateHow, path: &str) -> Result<File> {
        let mut e = Encoder::of((dir, name));
        match how {
            CreateHow::Guarded(mode) => proto::enc_full_sattr(e.u32(1), &FullAttr::mode(mode)),
            CreateHow::Exclusive(verf) => _ = e.u32(2).fixed(&verf),
        }
        let made = self.decoded(Proc::CREATE, path, e, proto::dec_created)?.0;
        let fh = made.map_or_else(|| self.lookup_in(dir, name, path).map(|l| l.0), Ok)?;
        self.open(&fh, path)
    }

    fn open(&self, fh: &Fh, path: &str) -> Result<File> {
        let (fh, path) = (fh.clone(), path.to_string());
        Ok(File {
            fh,
            stateid: [0; 16],
            path,
        })
    }

    fn read(&self, f: &File, off: u64, count: u32) -> Result<(Vec<u8>, bool)> {
        self.decoded(Proc::READ, &f.path, (&f.fh, off, count), |d| {
            proto::dec_post_op_attr(d)?;
            d.u32()?; // count
            let eof = d.bool()?;
            Ok((d.opaque(IO_MAX)?.to_vec(), eof))
        })
    }

    fn write(&self, f: &File, off: u64, stable: u32, data: &[u8]) -> Result<(u32, u32, [u8; 8])> {
        let e = (&f.fh, off, data.len() as u32, stable, data);
        // WRITE3resok: bytes written, how stably, and the server's write verifier.
        self.decoded(Proc::WRITE, &f.path, e, |d| {
            proto::skip_wcc(d)?;
            Ok((d.u32()?, d.u32()?, d.verf()?))
        })
    }

    fn commit(&self, f: &File) -> Result<[u8; 8]> {
        self.decoded(Proc::COMMIT, &f.path, (&f.fh, 0u64, 0u32), |d| {
            proto::skip_wcc(d)?;
            d.verf()
        })
    }

    fn remove(&self, dir: &Fh, name: &str, is_dir: bool, path: &str) -> Result<bool> {
        let op = if is_dir { Proc::RMDIR } else { Proc::REMOVE };
        Ok(self.nfs(op, path, (dir, name)).found()?.is_some())
    }

    fn rename(&self, from: (&Fh, &str), to: (&Fh, &str), _: Option<&Fh>, path: &str) -> Result<()> {
        self.nfs(Proc::RENAME, path, (from.0, from.1, to.0, to.1))
    }

    fn link(&self, file: &Fh, dir: &Fh, name: &str, path: &str) -> Result<()> {
        self.nfs(Proc::LINK, path, (file, dir, name))
    }

    fn readlink(&self, fh: &Fh, path: &str) -> Result<String> {
        self.decoded(Proc::READLINK, path, fh, |d| {
            proto::dec_post_op_attr(d)?;
            d.string(4096)
        })
    }

    fn readdir(
        &self,
        dir: &Fh,
        (cookie, verf): (u64, [u8; 8]),
        bytes: u32,
        path: &str,
    ) -> Result<Listing> {
        let e = (dir, cookie, verf, bytes / 4, bytes);
        self.decoded(Proc::READDIRPLUS, path, e, proto::dec_readdirplus)
    }

    fn fsstat(&self) -> Result<FsStat> {
        self.decoded(Proc::FSSTAT, "", &self.s.root, |d| {
            proto::dec_post_op_attr(d)?;
            let (total, free, avail) = (d.u64()?, d.u64()?, d.u64()?);
            Ok(FsStat { total, free, avail })
        })
    }
}
