//! The kubelet's plugin watcher dials the registration socket by its bare path, so grpc-go sends
//! that path (`/var/lib/kubelet/plugins_registry/...`) as the HTTP/2 `:authority`, which the h2
//! server under tonic rejects as malformed (RST_STREAM, PROTOCOL_ERROR). [`FixAuthority`] wraps a
//! registration connection and rewrites the `:authority` value of every request HEADERS frame the
//! client sends to `localhost` before the server reads it; everything else passes unchanged.
//!
//! The HPACK dynamic table stays consistent: the representation (indexed or not) is kept, and the
//! value is replaced only when its decoded length is surely at least that of `localhost`, so the
//! server's table never holds more bytes than the client's and never evicts an entry the client
//! still refers to.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const AUTHORITY_INDEX: usize = 1;
const REPLACEMENT: &[u8] = b"localhost";

/// A connection whose client-to-server HEADERS frames carry a valid `:authority`.
pub struct FixAuthority<S> {
    inner: S,
    raw: Vec<u8>,
    ready: Vec<u8>,
    preface_left: usize,
    eof: bool,
}

impl<S> FixAuthority<S> {
    /// Wraps the server side of a fresh HTTP/2 connection (the client preface not yet read).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            raw: Vec::new(),
            ready: Vec::new(),
            preface_left: PREFACE_LEN,
            eof: false,
        }
    }

    /// Moves every complete unit (preface bytes, whole frames) from `raw` to `ready`.
    fn process(&mut self) {
        let n = self.preface_left.min(self.raw.len());
        self.ready.extend(self.raw.drain(..n));
        self.preface_left -= n;
        if self.preface_left > 0 {
            return;
        }
        while let [a, b, c, ..] = self.raw[..] {
            let len = FRAME_HEADER_LEN + u32::from_be_bytes([0, a, b, c]) as usize;
            if self.raw.len() < len {
                return;
            }
            let frame: Vec<u8> = self.raw.drain(..len).collect();
            self.ready.extend(fix_frame(frame));
        }
    }
}

/// A frame with the `:authority` of a HEADERS frame replaced; other frames as they are.
pub fn fix_frame(frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < FRAME_HEADER_LEN || frame[3] != HEADERS {
        return frame;
    }
    let flags = frame[4];
    let payload = &frame[FRAME_HEADER_LEN..];
    let (mut start, pad) = match (flags & PADDED != 0, payload.first()) {
        (false, _) => (0, 0),
        (true, Some(&p)) => (1, usize::from(p)),
        (true, None) => return frame,
    };
    if flags & PRIORITY != 0 {
        start += 5;
    }
    if start + pad > payload.len() {
        return frame;
    }
    let block = &payload[start..payload.len() - pad];
    let Some(fixed) = fix_block(block) else {
        return frame;
    };
    let len = (payload.len() - block.len() + fixed.len()).to_be_bytes();
    let (head, tail) = (&frame[3..FRAME_HEADER_LEN], &payload[payload.len() - pad..]);
    [&len[len.len() - 3..], head, &payload[..start], &fixed, tail].concat()
}

/// An HPACK integer with an `n`-bit prefix at `pos`: (value, position after it).
fn integer(b: &[u8], pos: usize, n: u32) -> Option<(usize, usize)> {
    let mask = (1usize << n) - 1;
    let mut v = usize::from(*b.get(pos)?) & mask;
    let mut p = pos + 1;
    if v < mask {
        return Some((v, p));
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(p)?;
        p += 1;
        v = v.checked_add(usize::from(byte & 0x7f).checked_shl(shift)?)?;
        shift += 7;
        if byte & 0x80 == 0 || shift > 28 {
            return Some((v, p));
        }
    }
}

/// A string literal at `pos`: (Huffman-coded, start of its bytes, end).
fn string(b: &[u8], pos: usize) -> Option<(bool, usize, usize)> {
    let huffman = b.get(pos)? & 0x80 != 0;
    let (len, start) = integer(b, pos, 7)?;
    let end = start.checked_add(len)?;
    (end <= b.len()).then_some((huffman, start, end))
}

/// The header block with the first literal `:authority` value replaced, or None when it has none
/// to replace (or cannot be parsed).
fn fix_block(b: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 0;
    while pos < b.len() {
        let first = b[pos];
        let (index, after) = if first & 0x80 != 0 {
            pos = integer(b, pos, 7)?.1;
            continue;
        } else if first & 0x40 != 0 {
            integer(b, pos, 6)?
        } else if first & 0x20 != 0 {
            pos = integer(b, pos, 5)?.1;
            continue;
        } else {
            integer(b, pos, 4)?
        };
        let value_at = if index == 0 {
            string(b, after)?.2
        } else {
            after
        };
        let (huffman, start, end) = string(b, value_at)?;
        // A Huffman code is at most 30 bits a character.
        let surely_long = if huffman {
            (end - start) * 8 / 30
        } else {
            end - start
        };
        if index == AUTHORITY_INDEX && surely_long >= REPLACEMENT.len() {
            let len = [REPLACEMENT.len() as u8];
            return Some([&b[..value_at], &len, REPLACEMENT, &b[end..]].concat());
        }
        pos = end;
    }
    None
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A truncated frame at the end goes through as it is.
                this.ready = std::mem::take(&mut this.raw);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(rb.filled());
                this.process();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for FixAuthority<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
