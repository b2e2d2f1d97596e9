//! One server's connection state: the ports found through portmap, the share's root handle from
//! MOUNT, and a small pool of idle NFS connections. Everything is per client, so a dead server
//! never holds a lock that a call to another server needs. Locks are held only to pop or push a
//! connection or swap the session, never across network I/O.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::{NfsError, Result};
use super::proto::{self, Fh};
use super::rpc::{self, CallError, Conn, SourcePort};
use super::xdr::{Decoder, Encoder};

/// How the client connects; see `NfsClient::new`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of every RPC exchange (connect, send, receive). Default 5 s.
    pub timeout: Duration,
    /// AUTH_SYS identity of every call. Default 0/0 (root; squashed by `root_squash` exports).
    pub uid: u32,
    pub gid: u32,
    /// NFS port; `None` asks the server's portmapper (port 111).
    pub nfs_port: Option<u16>,
    /// MOUNT port; `None` asks the server's portmapper.
    pub mount_port: Option<u16>,
    /// Idle connections kept for reuse (the pool grows to the concurrency in use, then keeps this many).
    pub max_idle: usize,
    /// Try a source port below 1024 first (knfsd `secure` exports require one).
    pub reserved_port: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            uid: 0,
            gid: 0,
            nfs_port: None,
            mount_port: None,
            max_idle: 16,
            reserved_port: true,
        }
    }
}

/// Where the share lives right now. Replaced whole after a failure or a stale root handle.
pub struct Session {
    pub nfs: SocketAddr,
    pub root: Fh,
}

pub struct Transport {
    pub server: String,
    pub share: String,
    pub opts: ClientOptions,
    cred: Vec<u8>,
    session: Mutex<Option<Arc<Session>>>,
    pool: Mutex<Vec<Conn>>,
    /// Last source-port kind logged: 0 none, 1 reserved, 2 ephemeral.
    logged: AtomicU8,
}

impl Transport {
    pub fn new(server: &str, share: &str, opts: ClientOptions) -> Self {
        Self {
            server: server.to_string(),
            share: share.to_string(),
            cred: rpc::auth_sys(opts.uid, opts.gid),
            opts,
            session: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
            logged: AtomicU8::new(0),
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.opts.timeout
    }

    fn map_err(&self, op: &str, e: CallError) -> NfsError {
        match e {
            CallError::Timeout => NfsError::DeadlineExceeded {
                server: self.server.clone(),
                op: op.to_string(),
            },
            CallError::Io(e) => NfsError::Unavailable {
                server: self.server.clone(),
                cause: format!("{op}: {e}"),
            },
            CallError::Rpc(detail) => NfsError::Protocol {
                server: self.server.clone(),
                op: op.to_string(),
                detail,
            },
        }
    }

    fn resolve(&self, port: u16) -> Result<SocketAddr> {
        (self.server.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            .map_err(|cause| NfsError::Unavailable {
                server: self.server.clone(),
                cause: format!("cannot resolve the server name: {cause}"),
            })
    }

    fn connect(&self, addr: SocketAddr, op: &str) -> Result<Conn> {
        let conn = Conn::connect(addr, self.deadline(), self.opts.reserved_port)
            .map_err(|e| self.map_err(op, e))?;
        let kind = match conn.source {
            SourcePort::Reserved(_) => 1,
            SourcePort::Ephemeral => 2,
        };
        if self.logged.swap(kind, Ordering::Relaxed) != kind {
            match conn.source {
                SourcePort::Reserved(p) => tracing::info!(
                    server = %self.server,
                    "NFS client connects from reserved source ports (first: {p})"
                ),
                SourcePort::Ephemeral if self.opts.reserved_port => tracing::warn!(
                    server = %self.server,
                    "NFS client may not bind a reserved source port (needs root or \
                     NET_BIND_SERVICE); using ephemeral ports, which exports marked \
                     `secure` refuse"
                ),
                SourcePort::Ephemeral => tracing::info!(
                    server = %self.server,
                    "NFS client connects from ephemeral source ports"
                ),
            }
        }
        Ok(conn)
    }

    /// One call on a fresh connection that is then closed (portmap, MOUNT).
    fn call_once(
        &self,
        addr: SocketAddr,
        prog: u32,
        vers: u32,
        proc_: u32,
        args: &[u8],
        op: &str,
    ) -> Result<Vec<u8>> {
        let mut conn = self.connect(addr, op)?;
        conn.call(prog, vers, proc_, Some(&self.cred), args, self.deadline())
            .map_err(|e| self.map_err(op, e))
    }

    fn getport(&self, prog: u32, vers: u32, what: &str) -> Result<u16> {
        let mut e = Encoder::new();
        e.u32(prog).u32(vers).u32(proto::IPPROTO_TCP).u32(0);
        let op = format!("portmap GETPORT {what}");
        let addr = self.resolve(proto::PMAP_PORT)?;
        let reply = self.call_once(
            addr,
            proto::PMAP_PROG,
            proto::PMAP_VERS,
            proto::PMAP_GETPORT,
            e.bytes(),
            &op,
        )?;
        let port = (Decoder::new(&reply).u32()).map_err(|x| self.map_err(&op, x.into()))?;
        match u16::try_from(port) {
            Ok(0) | Err(_) => Err(NfsError::Unavailable {
                server: self.server.clone(),
                cause: format!(
                    "portmap has no TCP mapping for {what} (is the NFS server running?)"
                ),
            }),
            Ok(p) => Ok(p),
        }
    }

    fn establish(&self) -> Result<Arc<Session>> {
        let mount_port = match self.opts.mount_port {
            Some(p) => p,
            None => self.getport(proto::MOUNT_PROG, proto::MOUNT_VERS, "MOUNT v3")?,
        };
        let nfs_port = match self.opts.nfs_port {
            Some(p) => p,
            None => self.getport(proto::NFS_PROG, proto::NFS_VERS, "NFS v3")?,
        };
        let mut e = Encoder::new();
        e.string(&self.share);
        let reply = self.call_once(
            self.resolve(mount_port)?,
            proto::MOUNT_PROG,
            proto::MOUNT_VERS,
            proto::MOUNT_MNT,
            e.bytes(),
            "MOUNT MNT",
        )?;
        let root = match proto::dec_mnt(&mut Decoder::new(&reply)) {
            Ok(Ok(fh)) => fh,
            Ok(Err(status)) => {
                return Err(NfsError::Status {
                    server: self.server.clone(),
                    op: "MOUNT MNT".into(),
                    path: self.share.clone(),
                    status,
                })
            }
            Err(x) => return Err(self.map_err("MOUNT MNT", x.into())),
        };
        tracing::debug!(server = %self.server, share = %self.share, nfs_port, mount_port, "NFS share mounted");
        Ok(Arc::new(Session {
            nfs: self.resolve(nfs_port)?,
            root,
        }))
    }

    /// The current session, mounting the share first when there is none.
    pub fn session(&self) -> Result<Arc<Session>> {
        if let Some(s) = self.session.lock().unwrap().as_ref() {
            return Ok(s.clone());
        }
        // Established outside the lock: concurrent callers may both mount, which is harmless,
        // and none waits on another's network I/O.
        let s = self.establish()?;
        *self.session.lock().unwrap() = Some(s.clone());
        Ok(s)
    }

    /// Forgets the session and idle connections, so the next call re-resolves ports and re-mounts.
    pub fn invalidate(&self, stale: &Arc<Session>) {
        let mut cur = self.session.lock().unwrap();
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, stale)) {
            *cur = None;
            self.pool.lock().unwrap().clear();
        }
    }

    /// One NFSv3 call. Returns the result bytes, starting with the nfsstat3.
    pub fn call(&self, session: &Arc<Session>, proc_: proto::Proc, args: &[u8]) -> Result<Vec<u8>> {
        let op = proc_.name();
        let pooled = self.pool.lock().unwrap().pop();
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect(session.nfs, op)?,
        };
        let (prog, vers, cred) = (proto::NFS_PROG, proto::NFS_VERS, Some(self.cred.as_slice()));
        let call = |c: &mut Conn| c.call(prog, vers, proc_ as u32, cred, args, self.deadline());
        let mut result = call(&mut conn);
        if reused && matches!(result, Err(CallError::Io(_))) {
            // An idle connection the server closed (it restarted, or dropped idle clients):
            // one retry on a fresh connection before calling the server unavailable.
            conn = self
                .connect(session.nfs, op)
                .inspect_err(|_| self.invalidate(session))?;
            result = call(&mut conn);
        }
        match result {
            Ok(reply) => {
                let mut pool = self.pool.lock().unwrap();
                if pool.len() < self.opts.max_idle {
                    pool.push(conn);
                }
                Ok(reply)
            }
            Err(e) => {
                // The connection is in an unknown state (a reply may still arrive): drop it, and
                // re-resolve ports next time in case the server moved.
                self.invalidate(session);
                Err(self.map_err(op, e))
            }
        }
    }
}
