//! ONC RPC v2 (RFC 5531) over TCP with record marking, AUTH_SYS credentials, and the source-port
//! policy (reserved port first, ephemeral when not permitted).
//!
//! One `Conn` carries one call at a time; the client pools several. Every read and write is
//! bounded by the caller's deadline, recomputed before each system call, so a server that
//! accepts and then goes silent costs at most the deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::xdr::{Decoder, Encoder};

const MSG_CALL: u32 = 0;
const MSG_REPLY: u32 = 1;
const AUTH_NONE: u32 = 0;
const AUTH_SYS: u32 = 1;
const LAST_FRAGMENT: u32 = 0x8000_0000;
/// Largest reply accepted: a READ of 1 MiB plus headers, with margin.
const MAX_REPLY: usize = 4 << 20;

#[derive(Debug)]
pub enum CallError {
    Io(io::Error),
    Timeout,
    /// The server answered, but not usably (denied, program unavailable, garbled).
    Rpc(String),
}

impl From<io::Error> for CallError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CallError::Timeout,
            _ => CallError::Io(e),
        }
    }
}

/// The time since the epoch (zero before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// AUTH_SYS credential body (RFC 5531 appendix A).
pub fn auth_sys(uid: u32, gid: u32) -> Vec<u8> {
    let stamp = since_epoch().as_secs() as u32;
    Encoder::of((stamp, "ferrovol", uid, gid, 1u32, gid)).into_bytes()
}

pub struct Conn {
    stream: TcpStream,
    /// The reserved source port bound, `None` for an ephemeral one.
    pub reserved: Option<u16>,
}

fn remaining(deadline: Instant) -> Result<Duration, CallError> {
    let left = deadline.saturating_duration_since(Instant::now());
    Some(left)
        .filter(|l| !l.is_zero())
        .ok_or(CallError::Timeout)
}

fn next_xid() -> u32 {
    static XID: AtomicU32 = AtomicU32::new(0);
    // Seed from the clock so a restarted client does not reuse the xids a server's duplicate
    // request cache still remembers.
    if XID.load(Ordering::Relaxed) == 0 {
        let d = since_epoch();
        let seed = (d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)) | 1;
        let _ = XID.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    XID.fetch_add(1, Ordering::Relaxed)
}

impl Conn {
    /// Connects to `addr` before `deadline`. With `try_reserved`, from a port below 1024 (knfsd
    /// `secure` exports), else (not permitted, or every port tried busy) an ephemeral one.
    pub fn connect(
        addr: SocketAddr,
        deadline: Instant,
        try_reserved: bool,
    ) -> Result<Conn, CallError> {
        if try_reserved {
            // Start at a pseudo-random point so concurrent connections rarely collide.
            let start = (next_xid() % 512) as u16;
            for i in 0..32u16 {
                let port = 512 + (start + i * 37) % 512;
                match Self::connect_from(addr, Some(port), deadline) {
                    Err(CallError::Io(e)) => match e.raw_os_error() {
                        Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL) => continue,
                        Some(libc::EACCES | libc::EPERM) => break,
                        _ if e.kind() == io::ErrorKind::PermissionDenied => break,
                        _ => return Err(CallError::Io(e)),
                    },
                    r => return r,
                }
            }
        }
        Self::connect_from(addr, None, deadline)
    }

    fn connect_from(
        addr: SocketAddr,
        port: Option<u16>,
        deadline: Instant,
    ) -> Result<Conn, CallError> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if let Some(p) = port {
            sock.set_reuse_address(true)?;
            let local: SocketAddr = match addr {
                SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, p).into(),
                SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, p).into(),
            };
            sock.bind(&SockAddr::from(local))?;
        }
        sock.connect_timeout(&SockAddr::from(addr), remaining(deadline)?)?;
        sock.set_tcp_nodelay(true)?;
        Ok(Conn {
            stream: sock.into(),
            reserved: port,
        })
    }

    /// Sends one call of `(program, version, procedure)` with the AUTH_SYS credential body
    /// `cred` and returns the procedure's result bytes.
    pub fn call(
        &mut self,
        (prog, vers, proc_): (u32, u32, u32),
        cred: &[u8],
        args: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, CallError> {
        let xid = next_xid();
        // The record mark (0) is filled in below.
        let mut e = Encoder::of((0u32, xid, MSG_CALL, 2u32, prog, vers, proc_));
        e.put((AUTH_SYS, cred, AUTH_NONE, 0u32)); // verifier: AUTH_NONE, empty body
        e.fixed(args);
        let mut msg = e.into_bytes();
        let len = (msg.len() - 4) as u32 | LAST_FRAGMENT;
        msg[..4].copy_from_slice(&len.to_be_bytes());

        self.stream.set_write_timeout(Some(remaining(deadline)?))?;
        self.stream.write_all(&msg)?;
        loop {
            let reply = self.read_record(deadline)?;
            let mut d = Decoder::new(&reply);
            if d.u32()? != xid {
                // A late reply to a call this connection gave up on: skip it.
                continue;
            }
            parse_reply(&mut d)?;
            return Ok(d.remaining().to_vec());
        }
    }

    fn read_record(&mut self, deadline: Instant) -> Result<Vec<u8>, CallError> {
        let mut out = Vec::new();
        loop {
            let mut hdr = [0u8; 4];
            self.read_exact(&mut hdr, deadline)?;
            let h = u32::from_be_bytes(hdr);
            let len = (h & !LAST_FRAGMENT) as usize;
            if out.len() + len > MAX_REPLY {
                return Err(CallError::Rpc(format!(
                    "reply larger than {MAX_REPLY} bytes"
                )));
            }
            let start = out.len();
            out.resize(start + len, 0);
            self.read_exact(&mut out[start..], deadline)?;
            if h & LAST_FRAGMENT != 0 {
                return Ok(out);
            }
        }
    }

    fn read_exact(&mut self, mut buf: &mut [u8], deadline: Instant) -> Result<(), CallError> {
        while !buf.is_empty() {
            self.stream.set_read_timeout(Some(remaining(deadline)?))?;
            match self.stream.read(buf) {
                Ok(0) => {
                    return Err(CallError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    )))
                }
                Ok(n) => buf = &mut buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl From<super::xdr::XdrError> for CallError {
    fn from(e: super::xdr::XdrError) -> Self {
        CallError::Rpc(e.to_string())
    }
}

/// Checks the reply header after the xid; leaves `d` at the procedure's results.
fn parse_reply(d: &mut Decoder<'_>) -> Result<(), CallError> {
    if d.u32()? != MSG_REPLY {
        return Err(CallError::Rpc("message is not a reply".into()));
    }
    let why = match d.u32()? {
        // MSG_ACCEPTED: verifier, then accept_stat.
        0 => {
            d.u32()?;
            d.opaque(400)?;
            match d.u32()? {
                0 => return Ok(()),
                1 => "program unavailable".into(),
                2 => {
                    let (lo, hi) = (d.u32()?, d.u32()?);
                    format!("program version mismatch (server supports {lo}..{hi})")
                }
                3 => "procedure unavailable".into(),
                4 => "server could not decode the arguments".into(),
                s => format!("server error (accept_stat {s})"),
            }
        }
        // MSG_DENIED: RPC_MISMATCH or AUTH_ERROR.
        1 if d.u32()? == 0 => "RPC version mismatch".into(),
        1 => {
            let why = d.u32().unwrap_or(0);
            let hint = ": too weak, is the export `secure` and the source port unreserved?";
            let hint = if why == 5 { hint } else { "" };
            format!("authentication rejected (auth_stat {why}{hint})")
        }
        s => format!("reply_stat {s}"),
    };
    Err(CallError::Rpc(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_success_reply_leaves_results() {
        let mut e = Encoder::default();
        e.u32(MSG_REPLY).u32(0).u32(0).opaque(&[]).u32(0).u32(42);
        let b = e.into_bytes();
        let mut d = Decoder::new(&b);
        parse_reply(&mut d).unwrap();
        assert_eq!(d.u32().unwrap(), 42);
    }

    #[test]
    fn denied_reply_explains_weak_auth() {
        let mut e = Encoder::default();
        e.u32(MSG_REPLY).u32(1).u32(1).u32(5);
        let b = e.into_bytes();
        match parse_reply(&mut Decoder::new(&b)) {
            Err(CallError::Rpc(m)) => assert!(m.contains("secure"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
