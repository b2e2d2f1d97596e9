//! What both protocol versions share about one server: options, AUTH_SYS credential, name
//! resolution, connecting (with the source-port log line) and errors naming the server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::{NfsError, NfsStatus, Result};
use super::rpc::{self, CallError, Conn};
use super::types::Want;

/// How the client connects; see `NfsClient::new`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of every RPC exchange (connect, send, receive).
    pub timeout: Duration,
    /// AUTH_SYS identity of every call (root by default; `root_squash` exports squash it).
    pub uid: u32,
    pub gid: u32,
    /// NFS port; `None` asks the server's portmapper (port 111) for NFSv3 and uses 2049 for
    /// NFSv4.1.
    pub nfs_port: Option<u16>,
    /// MOUNT port; `None` asks the server's portmapper.
    pub mount_port: Option<u16>,
    /// Idle connections kept for reuse.
    pub max_idle: usize,
    /// Try a source port below 1024 first (knfsd `secure` exports require one).
    pub reserved_port: bool,
    pub version: Want,
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
            version: Want::Auto,
        }
    }
}

pub struct Endpoint {
    pub server: String,
    pub share: String,
    pub opts: ClientOptions,
    pub cred: Vec<u8>,
    /// Last source-port kind logged: 0 none, 1 reserved, 2 ephemeral.
    logged: AtomicU8,
}

impl Endpoint {
    pub fn new(server: &str, share: &str, opts: ClientOptions) -> Self {
        Self {
            server: server.to_string(),
            share: share.to_string(),
            cred: rpc::auth_sys(opts.uid, opts.gid),
            opts,
            logged: AtomicU8::new(0),
        }
    }

    pub fn deadline(&self) -> Instant {
        Instant::now() + self.opts.timeout
    }

    pub fn protocol(&self, op: &str, detail: impl ToString) -> NfsError {
        NfsError::Protocol {
            server: self.server.clone(),
            op: op.to_string(),
            detail: detail.to_string(),
        }
    }

    pub fn unavailable(&self, cause: impl ToString) -> NfsError {
        NfsError::Unavailable {
            server: self.server.clone(),
            cause: cause.to_string(),
        }
    }

    pub fn status(&self, op: &str, path: &str, status: NfsStatus, v4: bool) -> NfsError {
        NfsError::Status {
            server: self.server.clone(),
            op: op.to_string(),
            path: path.to_string(),
            status,
            v4,
        }
    }

    pub fn map_err(&self, op: &str, e: CallError) -> NfsError {
        match e {
            CallError::Timeout => NfsError::DeadlineExceeded {
                server: self.server.clone(),
                op: op.to_string(),
            },
            CallError::Io(e) => self.unavailable(format!("{op}: {e}")),
            CallError::Rpc(detail) => self.protocol(op, detail),
        }
    }

    pub fn resolve(&self, port: u16) -> Result<SocketAddr> {
        (self.server.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            .map_err(|cause| self.unavailable(format!("cannot resolve the server name: {cause}")))
    }

    pub fn connect(&self, addr: SocketAddr, op: &str) -> Result<Conn> {
        let conn = Conn::connect(addr, self.deadline(), self.opts.reserved_port)
            .map_err(|e| self.map_err(op, e))?;
        let kind = if conn.reserved.is_some() { 1 } else { 2 };
        if self.logged.swap(kind, Ordering::Relaxed) != kind {
            match conn.reserved {
                Some(p) => tracing::info!(
                    server = %self.server,
                    "NFS client connects from reserved source ports (first: {p})"
                ),
                None if self.opts.reserved_port => tracing::warn!(
                    server = %self.server,
                    "NFS client may not bind a reserved source port (needs root or \
                     NET_BIND_SERVICE); using ephemeral ports, which exports marked \
                     `secure` refuse"
                ),
                None => tracing::info!(
                    server = %self.server,
                    "NFS client connects from ephemeral source ports"
                ),
            }
        }
        Ok(conn)
    }

    /// One call of `(program, version, procedure)` to `port` on a fresh connection (portmap,
    /// MOUNT).
    pub fn call_once(
        &self,
        port: u16,
        call: (u32, u32, u32),
        args: &[u8],
        op: &str,
    ) -> Result<Vec<u8>> {
        let mut conn = self.connect(self.resolve(port)?, op)?;
        conn.call(call, &self.cred, args, self.deadline())
            .map_err(|e| self.map_err(op, e))
    }
}

/// What a transport makes on first use and forgets when the server shows it stale (NFSv3's
/// mount, NFSv4.1's session and root handle); never locked across network I/O.
pub struct Cached<T>(Mutex<Option<Arc<T>>>);

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached(Mutex::new(None))
    }
}

impl<T> Cached<T> {
    pub fn get(&self) -> Option<Arc<T>> {
        self.0.lock().unwrap().clone()
    }

    pub fn set(&self, v: Option<Arc<T>>) -> Option<Arc<T>> {
        std::mem::replace(&mut self.0.lock().unwrap(), v)
    }

    /// The value, made by `make` when there is none (concurrent callers may both make one,
    /// which is harmless, and none waits on another's network I/O).
    pub fn get_or(&self, make: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        if let Some(v) = self.get() {
            return Ok(v);
        }
        let v = Arc::new(make()?);
        self.set(Some(v.clone()));
        Ok(v)
    }

    /// Forgets `stale` unless it was replaced already; true when it was forgotten.
    pub fn forget(&self, stale: &Arc<T>) -> bool {
        let mut cur = self.0.lock().unwrap();
        cur.take_if(|c| Arc::ptr_eq(c, stale)).is_some()
    }
}
