//! One server's connection state: the ports found through portmap, the share's root handle from
//! MOUNT, and a pool of idle NFS connections; all per client, locked only to pop or push a
//! connection or swap the session, never across network I/O.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use super::ops::Share;
use super::proto;
use crate::nfs::endpoint::{Cached, Endpoint};
use crate::nfs::error::{NfsStatus, Result};
use crate::nfs::rpc::{CallError, Conn};
use crate::nfs::types::Fh;
use crate::nfs::xdr::{Decoder, Encoder, XdrResult};

/// Where the share lives, replaced whole after a failure or a stale root handle.
pub struct Session {
    pub nfs: SocketAddr,
    pub root: Fh,
}

pub struct Transport {
    ep: Arc<Endpoint>,
    session: Cached<Session>,
    pool: Mutex<Vec<Conn>>,
}

impl Deref for Transport {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.ep
    }
}

impl Transport {
    pub fn new(ep: Arc<Endpoint>) -> Self {
        Self {
            ep,
            session: Cached::default(),
            pool: Mutex::new(Vec::new()),
        }
    }

    fn getport(&self, prog: u32, vers: u32, what: &str) -> Result<u16> {
        let e = Encoder::of((prog, vers, proto::IPPROTO_TCP, 0u32));
        let op = format!("portmap GETPORT {what}");
        let reply = self.call_once(proto::PMAP_PORT, proto::PMAP_GETPORT, e.bytes(), &op)?;
        let port = (Decoder::new(&reply).u32()).map_err(|x| self.protocol(&op, x))?;
        let none = format!("portmap has no TCP mapping for {what} (is the NFS server running?)");
        match u16::try_from(port) {
            Ok(0) | Err(_) => Err(self.unavailable(none)),
            Ok(p) => Ok(p),
        }
    }

    fn establish(&self) -> Result<Session> {
        let mount = || self.getport(proto::MOUNT_PROG, proto::MOUNT_VERS, "MOUNT v3");
        let mount_port = self.opts.mount_port.map_or_else(mount, Ok)?;
        let nfs = || self.getport(proto::NFS_PROG, proto::NFS_VERS, "NFS v3");
        let nfs_port = self.opts.nfs_port.map_or_else(nfs, Ok)?;
        let e = Encoder::of(self.share.as_str());
        let reply = self.call_once(mount_port, proto::MOUNT_MNT, e.bytes(), "MOUNT MNT")?;
        // mountres3: status, then on success the root handle (auth flavours ignored).
        let root = self.decode(&reply, "MOUNT MNT", &self.share, proto::dec_fh)?;
        tracing::debug!(server = %self.server, share = %self.share, nfs_port, mount_port, "NFS share mounted");
        Ok(Session {
            nfs: self.resolve(nfs_port)?,
            root,
        })
    }

    /// A result that starts with its status (nfsstat3, mountstat3): what `dec` reads after OK,
    /// else the status as an error of `op` on `path`.
    pub fn decode<T>(
        &self,
        reply: &[u8],
        op: &str,
        path: &str,
        dec: fn(&mut Decoder<'_>) -> XdrResult<T>,
    ) -> Result<T> {
        let mut d = Decoder::new(reply);
        match d.u32().map(NfsStatus) {
            Ok(NfsStatus::OK) => dec(&mut d).map_err(|x| self.protocol(op, x)),
            Ok(status) => Err(self.status(op, path, status, false)),
            Err(x) => Err(self.protocol(op, x)),
        }
    }

    pub fn share(&self) -> Result<Share<'_>> {
        let s = self.session.get_or(|| self.establish())?;
        Ok(Share { t: self, s })
    }

    /// Forgets the session and idle connections, so the next call re-resolves ports and re-mounts.
    pub fn invalidate(&self, stale: &Arc<Session>) {
        if self.session.forget(stale) {
            self.pool.lock().unwrap().clear();
        }
    }

    /// One NFSv3 call: the result bytes, starting with the nfsstat3.
    pub fn call(&self, session: &Arc<Session>, proc_: proto::Proc, args: &[u8]) -> Result<Vec<u8>> {
        let op = &proc_.name();
        let pooled = self.pool.lock().unwrap().pop();
        let reused = pooled.is_some();
        let mut conn = pooled.map_or_else(|| self.connect(session.nfs, op), Ok)?;
        let nfs = (proto::NFS_PROG, proto::NFS_VERS, proc_ as u32);
        let call = |c: &mut Conn| c.call(nfs, &self.cred, args, self.deadline());
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
