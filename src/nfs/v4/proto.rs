//! Wire shapes of the NFSv4.1 operations this client sends (RFC 8881 section 18), encoded into
//! one COMPOUND, and the decoding of their results. No I/O here.

use super::attr;
use crate::nfs::client::Listing;
use crate::nfs::types::{CreateHow, Fh, FullAttr, NAME_MAX};
use crate::nfs::xdr::{Decoder, Encoder, Xdr, XdrError, XdrResult};

pub const NFS_PROG: u32 = 100003;
pub const NFS_V4: u32 = 4;
pub const COMPOUND: u32 = 1;
pub const MINOR: u32 = 1;
pub const FH_MAX: usize = 128;

/// The operations this client sends (RFC 8881 section 16); errors name them by `Debug`.
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CLOSE = 4,
    COMMIT = 5,
    CREATE = 6,
    DELEGRETURN = 8,
    GETATTR = 9,
    GETFH = 10,
    LINK = 11,
    LOOKUP = 15,
    LOOKUPP = 16,
    NVERIFY = 17,
    OPEN = 18,
    PUTFH = 22,
    PUTROOTFH = 24,
    READ = 25,
    READDIR = 26,
    READLINK = 27,
    REMOVE = 28,
    RENAME = 29,
    SAVEFH = 32,
    SETATTR = 34,
    VERIFY = 37,
    WRITE = 38,
    BIND_CONN_TO_SESSION = 41,
    EXCHANGE_ID = 42,
    CREATE_SESSION = 43,
    DESTROY_SESSION = 44,
    SEQUENCE = 53,
    DESTROY_CLIENTID = 57,
    RECLAIM_COMPLETE = 58,
}

impl Op {
    pub fn name(self) -> String {
        format!("{self:?}")
    }
}

/// OPEN4_SHARE_ACCESS_*: read, write, and the 4.1 want flag that asks for no delegation.
pub const ACCESS_READ: u32 = 1;
pub const ACCESS_BOTH: u32 = 3;
const WANT_NO_DELEG: u32 = 0x0400;

/// A stateid4 (seqid, then 12 bytes of "other"): what an OPEN answers and READ, WRITE, CLOSE
/// name; this client never looks inside.
pub type Stateid = [u8; 16];

/// The current stateid (RFC 8881 section 16.2.3.1.2: seqid 1, other all zeros): the one the
/// compound's last OPEN answered, so READ and CLOSE can follow OPEN in the same compound.
pub const CURRENT: Stateid = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// The anonymous stateid (all zeros): SETATTR of attributes other than an open file's size.
pub const ANONYMOUS: Stateid = [0; 16];

pub fn dec_stateid(d: &mut Decoder<'_>) -> XdrResult<Stateid> {
    Ok(d.fixed(16)?.try_into().expect("16 bytes"))
}

/// The operations of one COMPOUND after its SEQUENCE.
#[derive(Default)]
pub struct Ops {
    pub e: Encoder,
    /// Opcodes in order: the decoder checks each result against them.
    pub ops: Vec<Op>,
}

impl Ops {
    /// Appends `op`, which takes no arguments.
    pub fn bare(&mut self, op: Op) -> &mut Self {
        self.add(op, ())
    }

    /// Appends `op`; its arguments go into the encoder it returns.
    pub fn op(&mut self, op: Op) -> &mut Encoder {
        self.ops.push(op);
        self.e.u32(op as u32)
    }

    /// Appends `op` with its arguments.
    pub fn add(&mut self, op: Op, args: impl Xdr) -> &mut Self {
        self.op(op).put(args);
        self
    }

    pub fn putfh(&mut self, fh: &Fh) -> &mut Self {
        self.add(Op::PUTFH, fh)
    }

    /// VERIFY (`same`) or NVERIFY that the current object's attribute `bit` is `value`: the
    /// compound stops there otherwise (NOT_SAME, SAME).
    pub fn verify(&mut self, same: bool, bit: u32, value: impl Xdr) -> &mut Self {
        self.op(if same { Op::VERIFY } else { Op::NVERIFY });
        attr::enc_bitmap(&mut self.e, &[bit]);
        self.e.opaque(Encoder::of(value).bytes());
        self
    }

    pub fn getattr(&mut self, bits: &[u32]) -> &mut Self {
        self.op(Op::GETATTR);
        attr::enc_bitmap(&mut self.e, bits);
        self
    }

    /// CREATE of a directory (`target` None) or a symlink to `target`, with `attrs`.
    pub fn create(&mut self, name: &str, target: Option<&str>, attrs: &FullAttr) -> &mut Self {
        let e = self.op(Op::CREATE);
        match target {
            None => e.u32(2),              // NF4DIR
            Some(t) => e.u32(5).string(t), // NF4LNK, linktext4
        };
        self.e.string(name);
        attr::enc_fattr(&mut self.e, attrs);
        self
    }

    /// OPEN of `name` in the current directory, creating it as `how` says (None: it must
    /// exist), or of the current file itself (`name` None, CLAIM_FH). Asks for no delegation.
    pub fn open(
        &mut self,
        clientid: u64,
        owner: &[u8],
        access: u32,
        name: Option<&str>,
        how: Option<CreateHow>,
    ) -> &mut Self {
        let e = self.op(Op::OPEN);
        e.put((0u32, access | WANT_NO_DELEG, 0u32, clientid, owner));
        // OPEN4_CREATE with GUARDED4 or EXCLUSIVE4.
        match how {
            None => _ = e.u32(0),
            Some(CreateHow::Guarded(mode)) => {
                attr::enc_fattr(e.put((1u32, 1u32)), &FullAttr::mode(mode))
            }
            Some(CreateHow::Exclusive(verf)) => _ = e.put((1u32, 2u32, verf)),
        };
        match name {
            Some(n) => self.e.u32(0).string(n), // CLAIM_NULL
            None => self.e.u32(4),              // CLAIM_FH
        };
        self
    }

    pub fn readdir(&mut self, cookie: u64, verf: [u8; 8], bytes: u32) -> &mut Self {
        self.op(Op::READDIR).put((cookie, verf, bytes / 4, bytes));
        attr::enc_bitmap(&mut self.e, &[attr::OBJECT, attr::ENTRY_EXTRA].concat());
        self
    }

    pub fn setattr(&mut self, s: &Stateid, a: &FullAttr) -> &mut Self {
        attr::enc_fattr(self.op(Op::SETATTR).put(s), a);
        self
    }
}

/// A result whose status was not OK: which operation (its index in the compound) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    pub index: usize,
    pub op: Op,
    pub status: u32,
}

/// Walks the results of a COMPOUND after its SEQUENCE, one operation at a time.
pub struct Results<'a> {
    d: Decoder<'a>,
    ops: &'a [Op],
    next: usize,
}

/// Why reading a compound's results stopped: the reply was malformed, or an operation failed.
pub enum Stop {
    Xdr(XdrError),
    Failed(Failed),
}

impl From<XdrError> for Stop {
    fn from(e: XdrError) -> Self {
        Stop::Xdr(e)
    }
}

impl<'a> Results<'a> {
    pub fn new(d: Decoder<'a>, ops: &'a [Op]) -> Self {
        Results { d, ops, next: 0 }
    }

    /// Like `ok`, then the decoder at the body of the last of the `n` results.
    pub fn body(&mut self, n: usize) -> Result<&mut Decoder<'a>, Stop> {
        self.ok(n)?;
        Ok(&mut self.d)
    }

    /// All the remaining results, which carry only a status; stops at the first that failed.
    pub fn rest(&mut self) -> Result<(), Stop> {
        self.ok(self.ops.len() - self.next)
    }

    /// Reads the next `n` results, which carry only a status; stops at the first that failed.
    pub fn ok(&mut self, n: usize) -> Result<(), Stop> {
        for _ in 0..n {
            let more = || XdrError("more results than operations".into());
            let want = *self.ops.get(self.next).ok_or_else(more)?;
            let op = self.d.u32()?;
            if op != want as u32 {
                return Err(
                    XdrError(format!("result of operation {op} where {want:?} was sent")).into(),
                );
            }
            let status = self.d.u32()?;
            let index = self.next;
            self.next += 1;
            if status != 0 {
                return Err(Stop::Failed(Failed {
                    index,
                    op: want,
                    status,
                }));
            }
        }
        Ok(())
    }
}

pub fn dec_fh(d: &mut Decoder<'_>) -> XdrResult<Fh> {
    Ok(Fh(d.opaque(FH_MAX)?.to_vec()))
}

pub fn skip_change_info(d: &mut Decoder<'_>) -> XdrResult<()> {
    d.skip(4 + 8 + 8)
}

/// OPEN4resok: the open stateid, and a delegation when the server granted one anyway.
pub fn dec_open(d: &mut Decoder<'_>) -> XdrResult<(Stateid, Option<Stateid>)> {
    let sid = dec_stateid(d)?;
    skip_change_info(d)?;
    d.u32()?; // rflags
    attr::dec_bitmap(d)?;
    let deleg = match d.u32()? {
        0 => None,
        kind @ (1 | 2) => {
            let ds = dec_stateid(d)?;
            d.bool()?; // recall
            if kind == 2 {
                // nfs_space_limit4: a size, or blocks and their size; eight bytes either way.
                d.u32()?;
                d.skip(8)?;
            }
            d.skip(12)?; // nfsace4: type, flag, access mask
            d.string(1024)?; // who
            Some(ds)
        }
        3 => {
            // OPEN_DELEGATE_NONE_EXT: why none; contention and resource carry a flag.
            if matches!(d.u32()?, 7 | 8) {
                d.bool()?;
            }
            None
        }
        n => return Err(XdrError(format!("open_delegation_type4 {n}"))),
    };
    Ok((sid, deleg))
}

/// READ4resok: eof, data.
pub fn dec_read(d: &mut Decoder<'_>) -> XdrResult<(Vec<u8>, bool)> {
    let eof = d.bool()?;
    let data = d.opaque(crate::nfs::types::IO_MAX)?.to_vec();
    Ok((data, eof))
}

/// WRITE4resok: count, committed, verifier.
pub fn dec_write(d: &mut Decoder<'_>) -> XdrResult<(u32, u32, [u8; 8])> {
    Ok((d.u32()?, d.u32()?, d.verf()?))
}

/// READDIR4resok: the entries (with handle and attributes, unless the server failed to read
/// them: `rdattr_error`), the cookie verifier, eof.
pub fn dec_readdir(d: &mut Decoder<'_>) -> XdrResult<Listing> {
    let verf = d.verf()?;
    let mut out = Vec::new();
    while d.bool()? {
        let (cookie, name) = (d.u64()?, d.string(NAME_MAX)?);
        let a = attr::dec_fattr(d)?;
        let (attr, ok) = (a.attr(), a.rdattr_error == 0);
        out.push((name, cookie, a.fh.map(Fh).zip(attr).filter(|_| ok)));
    }
    Ok((out, verf, d.bool()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_asks_for_no_delegation_and_claims_by_name_or_handle() {
        let mut o = Ops::default();
        o.open(7, b"own", ACCESS_READ, None, None);
        let b = o.e.into_bytes();
        let mut d = Decoder::new(&b);
        let words: Vec<u32> = (0..4).map(|_| d.u32().unwrap()).collect();
        assert_eq!(words, vec![Op::OPEN as u32, 0, ACCESS_READ | 0x0400, 0]);
        assert_eq!(d.u64().unwrap(), 7);
        assert_eq!(d.opaque(10).unwrap(), b"own");
        assert_eq!((d.u32().unwrap(), d.u32().unwrap()), (0, 4));
        assert!(d.remaining().is_empty());
    }

    #[test]
    fn a_granted_delegation_is_decoded_to_be_returned() {
        let mut e = Encoder::default();
        e.u32(1).fixed(&[1; 12]); // stateid
        e.bool(true).u64(1).u64(2).u32(0); // cinfo, rflags
        e.u32(0); // attrset
        e.u32(1).u32(3).fixed(&[2; 12]).bool(false); // READ delegation
        e.u32(0).u32(0).u32(0).string("EVERYONE@");
        let b = e.into_bytes();
        let (sid, deleg) = dec_open(&mut Decoder::new(&b)).unwrap();
        assert_eq!(sid[4..], [1; 12]);
        assert_eq!(deleg.unwrap()[4..], [2; 12]);
    }
}
