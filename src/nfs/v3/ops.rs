//! The client's primitive operations as NFSv3 procedures, one call each.

use std::sync::Arc;

use super::proto::{self, Proc};
use super::transport::{Session, Transport};
use crate::nfs::error::{NfsError, NfsStatus, Result};
use crate::nfs::types::{Attr, CreateHow, DirEntry, Fh, FsStat, FullAttr};
use crate::nfs::xdr::{Decoder, Encoder, XdrResult};

impl Transport {
    pub fn status(&self, op: &str, path: &str, status: NfsStatus) -> NfsError {
        NfsError::Status {
            server: self.server.clone(),
            op: op.to_string(),
            path: path.to_string(),
            status,
            v4: false,
        }
    }

    fn xdr<T>(&self, op: Proc, r: XdrResult<T>) -> Result<T> {
        r.map_err(|e| NfsError::Protocol {
            server: self.server.clone(),
            op: op.name().to_string(),
            detail: e.to_string(),
        })
    }

    /// One NFS call; an error status becomes `NfsError::Status` naming `path`. Returns the
    /// result after the status word.
    fn nfs(&self, s: &Arc<Session>, op: Proc, path: &str, args: Encoder) -> Result<Vec<u8>> {
        let mut reply = self.call(s, op, args.bytes())?;
        let status = self.xdr(op, proto::dec_status(&mut Decoder::new(&reply)))?;
        if status != NfsStatus::OK {
            return Err(self.status(op.name(), path, status));
        }
        reply.drain(..4);
        Ok(reply)
    }

    /// One NFS call whose result `dec` decodes.
    fn decoded<T>(
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

    pub fn lookup_in(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        path: &str,
    ) -> Result<(Fh, Option<Attr>)> {
        let mut e = Encoder::new();
        proto::enc_dirop(&mut e, dir, name);
        self.decoded(s, Proc::Lookup, path, e, proto::dec_lookup)
    }

    pub fn getattr(&self, s: &Arc<Session>, fh: &Fh, path: &str) -> Result<Attr> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, fh);
        self.decoded(s, Proc::Getattr, path, e, proto::dec_fattr)
    }

    pub fn setattr(&self, s: &Arc<Session>, fh: &Fh, a: &FullAttr, path: &str) -> Result<()> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, fh);
        proto::enc_full_sattr(&mut e, a);
        e.bool(false); // no ctime guard
        self.nfs(s, Proc::Setattr, path, e).map(|_| ())
    }

    pub fn mkdir(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        mode: u32,
        path: &str,
    ) -> Result<(Option<Fh>, Option<Attr>)> {
        let mut e = Encoder::new();
        proto::enc_dirop(&mut e, dir, name);
        proto::enc_full_sattr(
            &mut e,
            &FullAttr {
                mode: Some(mode),
                ..FullAttr::default()
            },
        );
        self.decoded(s, Proc::Mkdir, path, e, proto::dec_created)
    }

    pub fn symlink(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        a: &FullAttr,
        target: &str,
        path: &str,
    ) -> Result<(Option<Fh>, Option<Attr>)> {
        let mut e = Encoder::new();
        proto::enc_symlink(&mut e, dir, name, a, target);
        self.decoded(s, Proc::Symlink, path, e, proto::dec_created)
    }

    pub fn create(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        how: CreateHow,
        path: &str,
    ) -> Result<Option<Fh>> {
        let mut e = Encoder::new();
        proto::enc_create(&mut e, dir, name, how);
        Ok(self
            .decoded(s, Proc::Create, path, e, proto::dec_created)?
            .0)
    }

    pub fn read(
        &self,
        s: &Arc<Session>,
        fh: &Fh,
        off: u64,
        count: u32,
        path: &str,
    ) -> Result<(Vec<u8>, bool)> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, fh);
        e.u64(off).u32(count);
        self.decoded(s, Proc::Read, path, e, proto::dec_read)
    }

    pub fn write(
        &self,
        s: &Arc<Session>,
        fh: &Fh,
        off: u64,
        stable: u32,
        data: &[u8],
        path: &str,
    ) -> Result<(u32, u32, [u8; 8])> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, fh);
        e.u64(off).u32(data.len() as u32).u32(stable).opaque(data);
        self.decoded(s, Proc::Write, path, e, proto::dec_write)
    }

    pub fn commit(&self, s: &Arc<Session>, fh: &Fh, path: &str) -> Result<[u8; 8]> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, fh);
        e.u64(0).u32(0);
        self.decoded(s, Proc::Commit, path, e, proto::dec_commit)
    }

    /// REMOVE (a file) or RMDIR (`dir`).
    pub fn remove(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        name: &str,
        is_dir: bool,
        path: &str,
    ) -> Result<()> {
        let mut e = Encoder::new();
        proto::enc_dirop(&mut e, dir, name);
        let op = if is_dir { Proc::Rmdir } else { Proc::Remove };
        self.nfs(s, op, path, e).map(|_| ())
    }

    pub fn rename(
        &self,
        s: &Arc<Session>,
        from: (&Fh, &str),
        to: (&Fh, &str),
        path: &str,
    ) -> Result<()> {
        let mut e = Encoder::new();
        proto::enc_dirop(&mut e, from.0, from.1);
        proto::enc_dirop(&mut e, to.0, to.1);
        self.nfs(s, Proc::Rename, path, e).map(|_| ())
    }

    pub fn link(
        &self,
        s: &Arc<Session>,
        file: &Fh,
        dir: &Fh,
        name: &str,
        path: &str,
    ) -> Result<()> {
        let mut e = Encoder::new();
        proto::enc_link(&mut e, file, dir, name);
        self.nfs(s, Proc::Link, path, e).map(|_| ())
    }

    pub fn readlink(&self, s: &Arc<Session>, fh: &Fh, path: &str) -> Result<String> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, fh);
        self.decoded(s, Proc::Readlink, path, e, proto::dec_readlink)
    }

    pub fn readdir(
        &self,
        s: &Arc<Session>,
        dir: &Fh,
        cookie: u64,
        verf: [u8; 8],
        bytes: u32,
        path: &str,
    ) -> Result<(Vec<DirEntry>, [u8; 8], bool)> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, dir);
        e.u64(cookie).fixed(&verf).u32(bytes / 4).u32(bytes);
        self.decoded(s, Proc::Readdirplus, path, e, proto::dec_readdirplus)
    }

    pub fn fsstat(&self, s: &Arc<Session>) -> Result<FsStat> {
        let mut e = Encoder::new();
        proto::enc_fh(&mut e, &s.root);
        self.decoded(s, Proc::Fsstat, "", e, proto::dec_fsstat)
    }
}
