//! Wire shapes of the NFSv3 (RFC 1813), MOUNT3 (RFC 1813 appendix I) and portmap v2 (RFC 1833)
//! procedures this client uses: argument encoders and result decoders. No I/O here.

use crate::nfs::types::{Attr, DirEntry, Fh, FileType, FullAttr, NAME_MAX};
use crate::nfs::xdr::{Decoder, Encoder, XdrResult};

/// Largest NFSv3 file handle.
const FH_MAX: usize = 64;

/// Program, version and procedure of portmap v2 GETPORT and MOUNT3 MNT.
pub const PMAP_GETPORT: (u32, u32, u32) = (100000, 2, 3);
pub const PMAP_PORT: u16 = 111;
pub const IPPROTO_TCP: u32 = 6;

pub const MOUNT_PROG: u32 = 100005;
pub const MOUNT_VERS: u32 = 3;
pub const MOUNT_MNT: (u32, u32, u32) = (MOUNT_PROG, MOUNT_VERS, 1);

pub const NFS_PROG: u32 = 100003;
pub const NFS_VERS: u32 = 3;

/// NFSv3 procedures; errors name them by `Debug`.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    GETATTR = 1,
    SETATTR = 2,
    LOOKUP = 3,
    READLINK = 5,
    READ = 6,
    WRITE = 7,
    CREATE = 8,
    MKDIR = 9,
    SYMLINK = 10,
    REMOVE = 12,
    RMDIR = 13,
    RENAME = 14,
    LINK = 15,
    READDIRPLUS = 17,
    FSSTAT = 18,
    COMMIT = 21,
}

impl Proc {
    pub fn name(self) -> String {
        format!("{self:?}")
    }
}

/// sattr3: the fields given are set, size and times too; atime is left alone.
pub fn enc_full_sattr(e: &mut Encoder, s: &FullAttr) {
    e.put((s.mode, s.uid, s.gid, s.size, 0u32)); // atime: DONT_CHANGE
    match s.mtime {
        // SET_TO_CLIENT_TIME
        Some((sec, nsec)) => e.u32(2).u32(sec).u32(nsec),
        None => e.u32(0),
    };
}

pub fn dec_fattr(d: &mut Decoder<'_>) -> XdrResult<Attr> {
    let kind = FileType::from_wire(d.u32()?);
    let (mode, nlink, uid, gid) = (d.u32()? & 0o7777, d.u32()?, d.u32()?, d.u32()?);
    let size = d.u64()?;
    d.skip(8 + 16)?; // used, rdev, fsid
    let fileid = d.u64()?;
    d.skip(8)?; // atime
    let (mtime, mtime_nsec) = (d.u32()?, d.u32()?);
    d.skip(8)?; // ctime
    Ok(Attr {
        kind,
        mode,
        nlink,
        uid,
        gid,
        size,
        fileid,
        mtime,
        mtime_nsec,
    })
}

pub fn dec_post_op_attr(d: &mut Decoder<'_>) -> XdrResult<Option<Attr>> {
    d.bool()?.then(|| dec_fattr(d)).transpose()
}

pub fn dec_fh(d: &mut Decoder<'_>) -> XdrResult<Fh> {
    Ok(Fh(d.opaque(FH_MAX)?.to_vec()))
}

pub fn skip_wcc(d: &mut Decoder<'_>) -> XdrResult<()> {
    if d.bool()? {
        d.skip(8 + 8 + 8)?; // size, mtime, ctime
    }
    dec_post_op_attr(d).map(drop)
}

/// MKDIR3resok / CREATE3resok: the new object's handle and attributes, when the server sent them.
pub fn dec_created(d: &mut Decoder<'_>) -> XdrResult<(Option<Fh>, Option<Attr>)> {
    Ok((
        d.bool()?.then(|| dec_fh(d)).transpose()?,
        dec_post_op_attr(d)?,
    ))
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
        let fh = d.bool()?.then(|| dec_fh(d)).transpose()?;
        entries.push((name, cookie, fh.zip(attr)));
    }
    Ok((entries, verf, d.bool()?))
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
        let mut e = Encoder::default();
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
        let (fh, a) = ents[0].2.as_ref().unwrap();
        assert!(a.is_dir());
        assert_eq!((a.mode, a.uid, a.gid, a.fileid), (0o755, 10, 20, 77));
        assert_eq!(*fh, Fh(vec![9; 8]));
        assert_eq!(ents[1].0, "b");
        assert!(ents[1].2.is_none());
    }

    #[test]
    fn sattr_sets_only_given_fields() {
        let mut e = Encoder::default();
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
