//! XDR (RFC 4506) encoding and decoding: big-endian 4-byte units, opaque data padded to a multiple
//! of four. Only the shapes NFSv3, NFSv4.1, MOUNT3 and portmap use are here.

/// Builds one XDR message.
#[derive(Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// A message that starts with `v`.
    pub fn of(v: impl Xdr) -> Encoder {
        let mut e = Encoder::default();
        e.put(v);
        e
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    /// Fixed-length opaque: no length word, padded.
    pub fn fixed(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.pad(data.len())
    }

    /// Variable-length opaque: length word, bytes, padding.
    pub fn opaque(&mut self, data: &[u8]) -> &mut Self {
        self.u32(data.len() as u32);
        self.fixed(data)
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        self.opaque(s.as_bytes())
    }

    /// Appends `v` in its one encoding (see `Xdr`).
    pub fn put(&mut self, v: impl Xdr) -> &mut Self {
        v.enc(self);
        self
    }

    fn pad(&mut self, len: usize) -> &mut Self {
        let pad = (4 - len % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// A value with one XDR encoding: numbers as themselves, `str` as a string, `[u8]` as
/// variable-length opaque, `[u8; N]` as fixed-length opaque, an `Encoder` as the bytes it
/// holds, a tuple as its fields in order, an `Option` as optional-data (a boolean, then the
/// value when true).
pub trait Xdr {
    fn enc(&self, e: &mut Encoder);
}

macro_rules! xdr_by {
    ($($t:ty: |$v:ident, $e:ident| $put:expr;)*) => {$(
        impl Xdr for $t {
            fn enc(&self, $e: &mut Encoder) {
                let $v = self;
                $put;
            }
        }
    )*};
}

xdr_by! {
    u32: |v, e| e.u32(*v);
    u64: |v, e| e.u64(*v);
    bool: |v, e| e.bool(*v);
    str: |v, e| e.string(v);
    [u8]: |v, e| e.opaque(v);
    Encoder: |v, e| e.fixed(&v.buf);
}

impl<const N: usize> Xdr for [u8; N] {
    fn enc(&self, e: &mut Encoder) {
        e.fixed(self);
    }
}

impl<T: Xdr> Xdr for Option<T> {
    fn enc(&self, e: &mut Encoder) {
        match self {
            Some(v) => e.bool(true).put(v),
            None => e.bool(false),
        };
    }
}

impl<T: Xdr + ?Sized> Xdr for &T {
    fn enc(&self, e: &mut Encoder) {
        (**self).enc(e)
    }
}

macro_rules! xdr_tuples {
    ($(($($n:tt $t:ident),*))*) => {$(
        impl<$($t: Xdr),*> Xdr for ($($t,)*) {
            fn enc(&self, _e: &mut Encoder) {
                $(self.$n.enc(_e);)*
            }
        }
    )*};
}
xdr_tuples!(() (0 A, 1 B) (0 A, 1 B, 2 C) (0 A, 1 B, 2 C, 3 D) (0 A, 1 B, 2 C, 3 D, 4 E));
xdr_tuples!((0 A, 1 B, 2 C, 3 D, 4 E, 5 F) (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G));

/// A reply that ended early or held a value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XDR: {0}")]
pub struct XdrError(pub String);

pub type XdrResult<T> = Result<T, XdrError>;

/// Reads one XDR message from a byte slice.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                let (pos, len) = (self.pos, self.buf.len());
                XdrError(format!(
                    "wanted {n} bytes at offset {pos}, message has {len}"
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u32(&mut self) -> XdrResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> XdrResult<u64> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }

    pub fn bool(&mut self) -> XdrResult<bool> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError(format!("boolean with value {v}"))),
        }
    }

    pub fn fixed(&mut self, len: usize) -> XdrResult<&'a [u8]> {
        let data = self.take(len)?;
        self.take((4 - len % 4) % 4)?;
        Ok(data)
    }

    /// An 8-byte verifier (cookieverf3, writeverf3).
    pub fn verf(&mut self) -> XdrResult<[u8; 8]> {
        Ok(self.fixed(8)?.try_into().expect("fixed(8) gives 8 bytes"))
    }

    /// Variable-length opaque of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> XdrResult<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(XdrError(format!("opaque of {len} bytes, limit {max}")));
        }
        self.fixed(len)
    }

    pub fn string(&mut self, max: usize) -> XdrResult<String> {
        let b = self.opaque(max)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    pub fn skip(&mut self, n: usize) -> XdrResult<()> {
        self.take(n).map(|_| ())
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_pads_opaque_to_four_bytes() {
        let mut e = Encoder::default();
        e.u32(7)
            .u64(1 << 40 | 5)
            .bool(true)
            .string("abcde")
            .opaque(&[]);
        let b = e.into_bytes();
        assert_eq!(b.len(), 4 + 8 + 4 + (4 + 8) + 4);
        let mut d = Decoder::new(&b);
        assert_eq!(d.u32().unwrap(), 7);
        assert_eq!(d.u64().unwrap(), 1 << 40 | 5);
        assert!(d.bool().unwrap());
        assert_eq!(d.string(255).unwrap(), "abcde");
        assert_eq!(d.opaque(10).unwrap(), b"");
        assert!(d.remaining().is_empty());
    }

    #[test]
    fn short_or_oversized_input_is_an_error() {
        assert!(Decoder::new(&[0, 0, 1]).u32().is_err());
        let mut e = Encoder::default();
        e.opaque(&[1; 70]);
        assert!(Decoder::new(e.bytes()).opaque(64).is_err());
        assert!(Decoder::new(&[0, 0, 0, 2]).bool().is_err());
    }
}
