//! fattr4 (RFC 8881 section 5): the attribute bitmaps this client asks for and sets, and the
//! decoding of the values, which follow in the order of their bit numbers.
//!
//! Owners travel as strings. Under AUTH_SYS the client sends numeric strings ("1000"), which
//! RFC 8881 section 5.9 has servers accept, and reads numeric strings back: knfsd sends them to
//! AUTH_SYS clients by default (`nfs4_disable_idmapping`), nfs-ganesha with
//! `Only_Numeric_Owners = true`. A name such as `user@domain` cannot be turned into an id here:
//! it reads as `UNKNOWN_ID`, which provisioning never needs and a copy refuses (it could not
//! keep the owner), naming the remedy (`NAMED_OWNERS`).

use crate::nfs::types::{Attr, FileType, FsStat, FullAttr, UNKNOWN_ID};
use crate::nfs::xdr::{Decoder, Encoder, XdrError, XdrResult};

pub const TYPE: u32 = 1;
pub const SIZE: u32 = 4;
pub const FSID: u32 = 8;
pub const RDATTR_ERROR: u32 = 11;
pub const FILEHANDLE: u32 = 19;
pub const FILEID: u32 = 20;
pub const MODE: u32 = 33;
pub const NUMLINKS: u32 = 35;
pub const OWNER: u32 = 36;
pub const OWNER_GROUP: u32 = 37;
pub const SPACE_AVAIL: u32 = 42;
pub const SPACE_FREE: u32 = 43;
pub const SPACE_TOTAL: u32 = 44;
pub const TIME_MODIFY: u32 = 53;
pub const TIME_MODIFY_SET: u32 = 54;

pub const OBJECT: &[u32] = &[
    TYPE,
    SIZE,
    FSID,
    FILEID,
    MODE,
    NUMLINKS,
    OWNER,
    OWNER_GROUP,
    TIME_MODIFY,
];
/// What a READDIR entry carries besides `OBJECT` (a per-entry error, not a failed listing).
pub const ENTRY_EXTRA: &[u32] = &[RDATTR_ERROR, FILEHANDLE];
pub const SPACE: &[u32] = &[SPACE_AVAIL, SPACE_FREE, SPACE_TOTAL];

/// A bitmap4 of `bits`.
pub fn bitmap(bits: &[u32]) -> Vec<u32> {
    let words = bits.iter().map(|b| b / 32 + 1).max().unwrap_or(0);
    let word = |w| {
        bits.iter()
            .filter(|&&b| b / 32 == w)
            .fold(0, |acc, b| acc | 1 << (b % 32))
    };
    (0..words).map(word).collect()
}

pub fn enc_bitmap(e: &mut Encoder, bits: &[u32]) {
    let words = bitmap(bits);
    e.u32(words.len() as u32);
    words.into_iter().for_each(|w| _ = e.u32(w));
}

pub fn dec_bitmap(d: &mut Decoder<'_>) -> XdrResult<Vec<u32>> {
    let n = d.u32()? as usize;
    if n > 8 {
        return Err(XdrError(format!("bitmap of {n} words")));
    }
    (0..n).map(|_| d.u32()).collect()
}

fn set_bits(words: &[u32]) -> impl Iterator<Item = u32> + '_ {
    words.iter().enumerate().flat_map(|(i, w)| {
        (0..32)
            .filter(move |b| w & (1 << b) != 0)
            .map(move |b| i as u32 * 32 + b)
    })
}

/// fattr4 of the settable attributes in `a`.
pub fn enc_fattr(e: &mut Encoder, a: &FullAttr) {
    let owner = |id: Option<u32>| id.map(|n| Encoder::of(n.to_string().as_str()));
    // SET_TO_CLIENT_TIME4, nfstime4 (int64 seconds, uint32 nanoseconds).
    let mtime = a
        .mtime
        .map(|(sec, nsec)| Encoder::of((1u32, u64::from(sec), nsec)));
    let fields = [
        (SIZE, a.size.map(Encoder::of)),
        (MODE, a.mode.map(|m| Encoder::of(m & 0o7777))),
        (OWNER, owner(a.uid)),
        (OWNER_GROUP, owner(a.gid)),
        (TIME_MODIFY_SET, mtime),
    ];
    let (mut bits, mut vals) = (Vec::new(), Encoder::default());
    for (bit, v) in fields.into_iter().filter_map(|(bit, v)| Some((bit, v?))) {
        bits.push(bit);
        vals.put(v);
    }
    enc_bitmap(e, &bits);
    e.opaque(vals.bytes());
}

#[derive(Debug, Default)]
pub struct Decoded {
    pub kind: Option<FileType>,
    /// The object's attributes but for its type (`kind`).
    pub a: Attr,
    pub rdattr_error: u32,
    pub fh: Option<Vec<u8>>,
    pub space: FsStat,
}

impl Decoded {
    /// `None` when the server left out the type.
    pub fn attr(&self) -> Option<Attr> {
        let kind = self.kind?;
        Some(Attr {
            kind,
            ..self.a.clone()
        })
    }
}

/// What a copy says when the server names owners instead of numbering them.
pub const NAMED_OWNERS: &str = "the server sends owner names, not numeric ids: a copy cannot keep \
    them (knfsd: nfs4_disable_idmapping=Y, the default; nfs-ganesha: NFSV4 { Only_Numeric_Owners = true; })";

/// A numeric owner ("1000", or "1000@domain"); anything else is `UNKNOWN_ID`.
fn owner_id(s: &str) -> u32 {
    let n = s.split_once('@').map_or(s, |(n, _)| n);
    n.parse()
        .ok()
        .filter(|&id| id != UNKNOWN_ID)
        .unwrap_or(UNKNOWN_ID)
}

pub fn dec_fattr(d: &mut Decoder<'_>) -> XdrResult<Decoded> {
    let words = dec_bitmap(d)?;
    let vals = d.opaque(1 << 16)?;
    let mut v = Decoder::new(vals);
    let mut out = Decoded::default();
    for bit in set_bits(&words) {
        match bit {
            TYPE => out.kind = Some(FileType::from_wire(v.u32()?)),
            SIZE => out.a.size = v.u64()?,
            FSID => v.skip(16)?,
            RDATTR_ERROR => out.rdattr_error = v.u32()?,
            FILEHANDLE => out.fh = Some(v.opaque(super::proto::FH_MAX)?.to_vec()),
            FILEID => out.a.fileid = v.u64()?,
            MODE => out.a.mode = v.u32()? & 0o7777,
            NUMLINKS => out.a.nlink = v.u32()?,
            OWNER => out.a.uid = owner_id(&v.string(1024)?),
            OWNER_GROUP => out.a.gid = owner_id(&v.string(1024)?),
            SPACE_AVAIL => out.space.avail = v.u64()?,
            SPACE_FREE => out.space.free = v.u64()?,
            SPACE_TOTAL => out.space.total = v.u64()?,
            TIME_MODIFY => {
                let sec = v.u64()? as i64;
                out.a.mtime = sec.clamp(0, i64::from(u32::MAX)) as u32;
                out.a.mtime_nsec = v.u32()?;
            }
            other => {
                let why = format!("attribute {other}, which this client did not ask for");
                return Err(XdrError(why));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_and_values_round_trip_in_bit_order() {
        assert_eq!(bitmap(&[1, 4, 33, 54]), vec![0b10010, (1 << 1) | (1 << 22)]);
        let mut e = Encoder::default();
        enc_bitmap(
            &mut e,
            &[TYPE, FILEID, MODE, OWNER, OWNER_GROUP, TIME_MODIFY],
        );
        let mut vals = Encoder::default();
        vals.u32(2)
            .u64(77)
            .u32(0o40750)
            .string("1000")
            .string("2000@example");
        vals.u64(1_700_000_000).u32(5);
        e.opaque(vals.bytes());
        let b = e.into_bytes();
        let a = dec_fattr(&mut Decoder::new(&b)).unwrap().attr().unwrap();
        assert_eq!(
            (
                a.kind,
                a.fileid,
                a.mode,
                a.uid,
                a.gid,
                a.mtime,
                a.mtime_nsec
            ),
            (FileType::Directory, 77, 0o750, 1000, 2000, 1_700_000_000, 5)
        );
    }

    #[test]
    fn owner_names_read_as_unknown() {
        let mut e = Encoder::default();
        enc_bitmap(&mut e, &[OWNER, OWNER_GROUP]);
        let mut vals = Encoder::default();
        vals.string("root@localdomain").string("0");
        e.opaque(vals.bytes());
        let a = dec_fattr(&mut Decoder::new(e.bytes())).unwrap();
        assert_eq!((a.a.uid, a.a.gid), (UNKNOWN_ID, 0));
        assert!(NAMED_OWNERS.contains("Only_Numeric_Owners"));
    }

    #[test]
    fn settable_attributes_encode_numeric_owners() {
        let mut e = Encoder::default();
        let a = FullAttr {
            mode: Some(0o644),
            uid: Some(7),
            mtime: Some((10, 20)),
            ..FullAttr::default()
        };
        enc_fattr(&mut e, &a);
        let b = e.into_bytes();
        let mut d = Decoder::new(&b);
        assert_eq!(
            dec_bitmap(&mut d).unwrap(),
            bitmap(&[MODE, OWNER, TIME_MODIFY_SET])
        );
        let vals = d.opaque(1000).unwrap();
        let mut v = Decoder::new(vals);
        assert_eq!(v.u32().unwrap(), 0o644);
        assert_eq!(v.string(10).unwrap(), "7");
        assert_eq!(
            (v.u32().unwrap(), v.u64().unwrap(), v.u32().unwrap()),
            (1, 10, 20)
        );
    }
}
