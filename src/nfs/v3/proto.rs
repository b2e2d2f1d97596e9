//! Wire shapes of the NFSv3 (RFC 1813), MOUNT3 (RFC 1813 appendix I) and portmap v2 (RFC 1833)
//! procedures this client uses: argument encoders and result decoders. No I/O here.

use crate::nfs::error::NfsStatus;
use crate::nfs::types::{
    Attr, CreateHow, DirEntry, Fh, FileType, FsStat, FullAttr, IO_MAX, NAME_MAX,
};
use crate::nfs::xdr::{Decoder, Encoder, XdrResult};

/// Largest NFSv3 file handle.
const FH_MAX: usize = 64;

pub const PMAP_PROG: u32 = 100000;
pub const PMAP_VERS: u32 = 2;
pub const PMAP_GETPORT: u32 = 3;
pub const PMAP_PORT: u16 = 111;
pub const IPPROTO_TCP: u32 = 6;

pub const MOUNT_PROG: u32 = 100005;
pub const MOUNT_VERS: u32 = 3;
pub const MOUNT_MNT: u32 = 1;

pub const NFS_PROG: u32 = 100003;
pub const NFS_VERS: u32 = 3;

/// NFSv3 procedure numbers with their names, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Getattr = 1,
    Setattr = 2,
    Lookup = 3,
    Readlink = 5,
    Read = 6,
    Write = 7,
    Create = 8,
    Mkdir = 9,
    Symlink = 10,
    Remove = 12,
    Rmdir = 13,
    Rename = 14,
    Link = 15,
    Readdirplus = 17,
    Fsstat = 18,
    Commit = 21,
}

impl Proc {
    pub fn name(self) -> &'static str {
        match self {
            Proc::Getattr => "GETATTR",
            Proc::Setattr => "SETATTR",
            Proc::Lookup => "LOOKUP",
            Proc::Readlink => "READLINK",
            Proc::Symlink => "SYMLINK",
            Proc::Link => "LINK",
            Proc::Read => "READ",
            Proc::Write => "WRITE",
            Proc::Create => "CREATE",
            Proc::Mkdir => "MKDIR",
            Proc::Remove => "REMOVE",
            Proc::Rmdir => "RMDIR",
            Proc::Rename => "RENAME",
            Proc::Readdirplus => "READDIRPLUS",
            Proc::Fsstat => "FSSTAT",
            Proc::Commit => "COMMIT",
        }
    }
}

pub fn enc_fh(e: &mut Encoder, fh: &Fh) {
    e.opaque(&fh.0);
}

pub fn enc_dirop(e: &mut Encoder, dir: &Fh, name: &str) {
    enc_fh(e, dir);
    e.string(name);
}

/// sattr3: the fields given are set, size and times too; atime is left alone.
pub fn enc_full_sattr(e: &mut Encoder, s: &FullAttr) {
    for v in [s.mode, s.uid, s.gid] {
        match v {
            Some(v) => e.bool(true).u32(v),
            None => e.bool(false),
        };
    }
    match s.size {
        Some(n) => e.bool(true).u64(n),
        None => e.bool(false),
    };
    e.u32(0); // atime: DONT_CHANGE
    match s.mtime {
        // SET_TO_CLIENT_TIME
        Some((sec, nsec)) => e.u32(2).u32(sec).u32(nsec),
        None => e.u32(0),
    };
}

/// READLINK3resok: the link's text.
pub fn dec_readlink(d: &mut Decoder<'_>) -> XdrResult<String> {
    dec_post_op_attr(d)?;
    d.string(4096)
}

/// createhow3: GUARDED with the mode, or EXCLUSIVE with the verifier.
pub fn enc_createhow(e: &mut Encoder, how: CreateHow) {
    match how {
        CreateHow::Guarded(mode) => {
            e.u32(1);
            enc_full_sattr(e, &FullAttr::mode(mode));
        }
        CreateHow::Exclusive(verf) => {
            e.u32(2).fixed(&verf);
        }
    }
}

pub fn dec_fattr(d: &mut Decoder<'_>) -> XdrResult<Attr> {
    let kind = match d.u32()? {
        1 => FileType::Regular,
        2 => FileType::Directory,
        5 => FileType::Symlink,
        n => FileType::Other(n),
    };
    let mode = d.u32()? & 0o7777;
    let nlink = d.u32()?;
    let uid = d.u32()?;
    let gid = d.u32()?;
    let size = d.u64()?;
    let used = d.u64()?;
    d.skip(8)?; // rdev
    d.skip(8)?; // fsid
    let fileid = d.u64()?;
    d.skip(8)?; // atime
    let mtime = d.u32()?;
    let mtime_nsec = d.u32()?;
    d.skip(8)?; // ctime
    Ok(Attr {
        kind,
        mode,
        nlink,
        uid,
        gid,
        size,
        used,
        fileid,
        mtime,
        mtime_nsec,
    })
}

pub fn dec_post_op_attr(d: &mut Decoder<'_>) -> XdrResult<Option<Attr>> {
    if d.bool()? {
        Ok(Some(dec_fattr(d)?))
    } else {
        Ok(None)
    }
}

pub fn dec_post_op_fh(d: &mut Decoder<'_>) -> XdrResult<Option<Fh>> {
    if d.bool()? {
        Ok(Some(Fh(d.opaque(FH_MAX)?.to_vec())))
    } else {
        Ok(None)
    }
}

pub fn skip_wcc(d: &mut Decoder<'_>) -> XdrResult<()> {
    if d.bool()? {
        d.skip(8 + 8 + 8)?; // size, mtime, ctime
    }
    dec_post_op_attr(d)?;
    Ok(())
}

/// LOOKUP3resok: the object's handle and attributes.
pub fn dec_lookup(d: &mut Decoder<'_>) -> XdrResult<(Fh, Option<Attr>)> {
    Ok((Fh(d.opaque(FH_MAX)?.to_vec()), dec_post_op_attr(d)?))
}

/// MKDIR3resok / CREATE3resok: the new object's handle and attributes, when the server sent them.
pub fn dec_created(d: &mut Decoder<'_>) -> XdrResult<(Option<Fh>, Option<Attr>)> {
    Ok((dec_post_op_fh(d)?, dec_post_op_attr(d)?))
}

/// READDIRPLUS3resok: entries, the cookie verifier for the next page, and eof.
pub fn dec_readdirplus(d: &mut Decoder<'_>) -> XdrResult<(Vec<DirEntry>, [u8; 8], bool)> {
    dec_post_op_attr(d)?;
    let verf = d.verf()?;
    let mut entries = Vec::new();
    while d.bool()? {
        d.u64()?; // fileid
        let name = d.string(NAME_MAX)?;
        let cookie = d.u64()?;
        let attr = dec_post_op_attr(d)?;
        let fh = dec_post_op_fh(d)?;
        entries.push(DirEntry {
            name,
            cookie,
            attr,
            fh,
        });
    }
    let eof = d.bool()?;
    Ok((entries, verf, eof))
}

/// READ3resok: data and eof.
pub fn dec_read(d: &mut Decoder<'_>) -> XdrResult<(Vec<u8>, bool)> {
    dec_post_op_attr(d)?;
    d.u32()?; // count
    let eof = d.bool()?;
    let data = d.opaque(IO_MAX)?.to_vec();
    Ok((data, eof))
}

/// WRITE3resok: bytes written, how stably, and the server's write verifier (it changes when
/// the server restarts, which may have lost unstable data).
pub fn dec_write(d: &mut Decoder<'_>) -> XdrResult<(u32, u32, [u8; 8])> {
    skip_wcc(d)?;
    Ok((d.u32()?, d.u32()?, d.verf()?))
}

/// COMMIT3resok: the write verifier.
pub fn dec_commit(d: &mut Decoder<'_>) -> XdrResult<[u8; 8]> {
    skip_wcc(d)?;
    d.verf()
}

pub fn dec_fsstat(d: &mut Decoder<'_>) -> XdrResult<FsStat> {
    dec_post_op_attr(d)?;
    let (total, free, avail) = (d.u64()?, d.u64()?, d.u64()?);
    Ok(FsStat { total, free, avail })
}

/// mountres3: status, then on success the root handle (auth flavours ignored).
pub fn dec_mnt(d: &mut Decoder<'_>) -> XdrResult<Result<Fh, NfsStatus>> {
    let status = NfsStatus(d.u32()?);
    if status != NfsStatus::OK {
        return Ok(Err(status));
    }
    Ok(Ok(Fh(d.opaque(FH_MAX)?.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fattr(e: &mut Encoder, kind: u32, mode: u32) {
        e.u32(kind)
            .u32(mode)
            .u32(2)
            .u32(10)
            .u32(20)
            .u64(4096)
            .u64(8192);
        e.u64(0)
            .u64(1)
            .u64(77)
            .u64(0)
            .u32(1_700_000_000)
            .u32(0)
            .u64(0);
    }

    #[test]
    fn readdirplus_entries_decode() {
        let mut e = Encoder::new();
        e.bool(false).fixed(&[1; 8]);
        e.bool(true).u64(77).string("a").u64(1).bool(true);
        fattr(&mut e, 2, 0o40755);
        e.bool(true).opaque(&[9; 8]);
        e.bool(true)
            .u64(78)
            .string("b")
            .u64(2)
            .bool(false)
            .bool(false);
        e.bool(false).bool(true);
        let b = e.into_bytes();
        let (ents, verf, eof) = dec_readdirplus(&mut Decoder::new(&b)).unwrap();
        assert_eq!(verf, [1; 8]);
        assert!(eof);
        assert_eq!(ents.len(), 2);
        let a = ents[0].attr.as_ref().unwrap();
        assert!(a.is_dir());
        assert_eq!((a.mode, a.uid, a.gid, a.fileid), (0o755, 10, 20, 77));
        assert_eq!(ents[0].fh, Some(Fh(vec![9; 8])));
        assert_eq!(ents[1].name, "b");
        assert!(ents[1].attr.is_none());
    }

    #[test]
    fn sattr_sets_only_given_fields() {
        let mut e = Encoder::new();
        enc_full_sattr(
            &mut e,
            &FullAttr {
                mode: Some(0o750),
                gid: Some(5),
                ..FullAttr::default()
            },
        );
        let b = e.into_bytes();
        let mut d = Decoder::new(&b);
        let words: Vec<u32> = (0..b.len() / 4).map(|_| d.u32().unwrap()).collect();
        assert_eq!(words, vec![1, 0o750, 0, 1, 5, 0, 0, 0]);
    }
}
