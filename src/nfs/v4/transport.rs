//! Sending one NFSv4.1 COMPOUND: a session (made on first use, made again when the server lost
//! it), a slot, SEQUENCE first (which renews the lease), a pooled connection bound to the
//! session, and bounded retries:
//! - BADSESSION, DEADSESSION, STALE_CLIENTID (the server restarted or expired the client): a
//!   new session, then the compound again (it was not executed).
//! - GRACE and DELAY: the compound again after a short pause while `ClientOptions::timeout`,
//!   counted from the call's start, allows; then `Unavailable` naming the status.
//! - A lost reply costs the call, as in NFSv3; the slot is left uncertain (see session.rs).

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ops::Share;
use super::proto::{self, Op, Ops, Results};
use super::session::{self, Outcome, Owner, Session, Taken};
use crate::nfs::endpoint::{Cached, Endpoint};
use crate::nfs::error::{NfsError, NfsStatus, Result};
use crate::nfs::rpc::{CallError, Conn};
use crate::nfs::types::Fh;
use crate::nfs::xdr::{Decoder, Encoder, Xdr, XdrResult};

pub const NFS4_PORT: u16 = 2049;
/// New sessions asked for within one call.
const MAX_REESTABLISH: u32 = 2;

/// A connection, with the session it is bound to.
struct Pooled {
    conn: Conn,
    bound: [u8; 16],
}

/// The reply of one compound, after its SEQUENCE result.
pub struct Reply {
    bytes: Vec<u8>,
    start: usize,
    pub ops: Vec<Op>,
}

impl Reply {
    pub fn results(&self) -> Results<'_> {
        Results::new(Decoder::new(&self.bytes[self.start..]), &self.ops)
    }
}

pub struct Transport {
    ep: Arc<Endpoint>,
    pub owner: Owner,
    session: Cached<Session>,
    pub root: Cached<Fh>,
    /// Held while a session is established, so concurrent callers make one.
    establishing: Mutex<Option<(Instant, NfsError)>>,
    pool: Mutex<Vec<Pooled>>,
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
            owner: Owner::new(&ep.server),
            ep,
            session: Cached::default(),
            root: Cached::default(),
            establishing: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
        }
    }

    fn addr(&self) -> Result<SocketAddr> {
        self.resolve(self.opts.nfs_port.unwrap_or(NFS4_PORT))
    }

    /// A COMPOUND of operation `op` with `args` alone, without SEQUENCE (EXCHANGE_ID,
    /// CREATE_SESSION, DESTROY_*, BIND_CONN_TO_SESSION) on `conn`; `dec` reads its result.
    fn lone<T>(
        &self,
        conn: &mut Conn,
        (op, args): (Op, impl Xdr),
        deadline: Instant,
        dec: impl FnOnce(&mut Decoder<'_>) -> XdrResult<T>,
    ) -> Result<T> {
        let name = &op.name();
        let mut e = Encoder::default();
        session::header(&mut e, 1);
        e.put((op as u32, args));
        let reply = self
            .rpc(conn, e.bytes(), deadline)
            .map_err(|e| self.map_err(name, e))?;
        let mut d = Decoder::new(&reply);
        match session::dec_first(&mut d, op) {
            Ok(0) => dec(&mut d).map_err(|x| self.protocol(name, x)),
            Ok(st) => Err(self.status(name, &self.share, NfsStatus(st), true)),
            Err(x) => Err(self.protocol(name, x)),
        }
    }

    fn rpc(&self, conn: &mut Conn, args: &[u8], deadline: Instant) -> Result<Vec<u8>, CallError> {
        let call = (proto::NFS_PROG, proto::NFS_V4, proto::COMPOUND);
        conn.call(call, &self.cred, args, deadline)
    }

    /// EXCHANGE_ID, CREATE_SESSION and RECLAIM_COMPLETE on a new connection.
    fn establish(&self) -> Result<Arc<Session>> {
        let deadline = self.deadline();
        let mut conn = self.connect(self.addr()?, "EXCHANGE_ID")?;
        let exchange = (Op::EXCHANGE_ID, session::exchange_id(&self.owner));
        let (clientid, seq) = self.lone(&mut conn, exchange, deadline, session::dec_exchange_id)?;
        let create = (Op::CREATE_SESSION, session::create_session(clientid, seq));
        let dec = |d: &mut Decoder<'_>| session::dec_create_session(d, clientid);
        let s = Arc::new(self.lone(&mut conn, create, deadline, dec)?);
        // CREATE_SESSION bound this connection to the session.
        self.pool.lock().unwrap().push(Pooled { conn, bound: s.id });
        tracing::debug!(server = %self.server, clientid, slots = s.slots(), max_ops = s.max_ops,
            "NFSv4.1 session created");
        // No state of ours survives a server restart worth reclaiming: say so at once, so the
        // server may end its grace period early.
        let mut ops = Ops::default();
        ops.op(Op::RECLAIM_COMPLETE).bool(false);
        match self.send(&s, &ops, deadline) {
            Err(e) if !e.is_status(NfsStatus::COMPLETE_ALREADY) => Err(e),
            _ => Ok(s),
        }
    }

    pub fn session(&self) -> Result<Arc<Session>> {
        if let Some(s) = self.session.get() {
            return Ok(s);
        }
        let started = Instant::now();
        let mut last = self.establishing.lock().unwrap();
        if let Some(s) = self.session.get() {
            return Ok(s);
        }
        // Whoever held the lock while this caller waited failed: its error is this call's
        // too, rather than a second deadline.
        if let Some((_, e)) = last.as_ref().filter(|(at, _)| *at > started) {
            return Err(e.clone());
        }
        let made = self.establish();
        *last = made.as_ref().err().map(|e| (Instant::now(), e.clone()));
        self.session.set(made.as_ref().ok().cloned());
        made
    }

    pub fn share(&self) -> Result<Share<'_>> {
        let root = self.root.get_or(|| self.resolve_root())?;
        Ok(Share { t: self, root })
    }

    /// A connection bound to `s`: pooled, or new and bound with BIND_CONN_TO_SESSION.
    fn conn_for(&self, s: &Session, deadline: Instant) -> Result<(Pooled, bool)> {
        let pooled = self.pool.lock().unwrap().pop();
        match pooled {
            Some(p) if p.bound == s.id => Ok((p, true)),
            Some(p) => Ok((self.bind(p.conn, s, deadline)?, true)),
            None => {
                let conn = self.connect(self.addr()?, "BIND_CONN_TO_SESSION")?;
                Ok((self.bind(conn, s, deadline)?, false))
            }
        }
    }

    fn bind(&self, mut conn: Conn, s: &Session, deadline: Instant) -> Result<Pooled> {
        let bind = (Op::BIND_CONN_TO_SESSION, (s.id, 1u32, false)); // CDFC4_FORE, not RDMA
        self.lone(&mut conn, bind, deadline, |_| Ok(()))?;
        Ok(Pooled { conn, bound: s.id })
    }

    /// Sends `ops` after a SEQUENCE on session `s` once; the caller decides about retries.
    fn send(&self, s: &Arc<Session>, ops: &Ops, deadline: Instant) -> Result<Reply> {
        let t = s.take(deadline).ok_or_else(|| NfsError::DeadlineExceeded {
            server: self.server.clone(),
            op: "SEQUENCE (waiting for a free slot)".into(),
        })?;
        let mut e = Encoder::default();
        session::header(&mut e, 1 + ops.ops.len());
        session::enc_sequence(&mut e, &s.id, &t);
        e.fixed(ops.e.bytes());
        let (mut p, reused) = self
            .conn_for(s, deadline)
            .inspect_err(|_| s.release(&t, Outcome::Refused))?;
        let name = &ops.ops.first().map_or("COMPOUND".into(), |o| o.name());
        let call = |c: &mut Conn| self.rpc(c, e.bytes(), deadline);
        let mut result = call(&mut p.conn);
        if reused && matches!(result, Err(CallError::Io(_))) {
            // An idle connection the server closed: the same slot and sequence id once more on
            // a new one (if the first had arrived, the server answers from its reply cache).
            p = (self.addr().and_then(|a| self.connect(a, name)))
                .and_then(|c| self.bind(c, s, deadline))
                .inspect_err(|_| s.release(&t, Outcome::Lost))?;
            result = call(&mut p.conn);
        }
        let bytes = result.map_err(|err| {
            s.release(&t, Outcome::Lost);
            self.map_err(name, err)
        })?;
        let reply = self.sequence_result(s, &t, bytes, ops);
        let mut pool = self.pool.lock().unwrap();
        if pool.len() < self.opts.max_idle {
            pool.push(p);
        }
        reply
    }

    /// Checks the reply's SEQUENCE result and releases the slot as it says.
    fn sequence_result(
        &self,
        s: &Arc<Session>,
        t: &Taken,
        bytes: Vec<u8>,
        ops: &Ops,
    ) -> Result<Reply> {
        let mut d = Decoder::new(&bytes);
        let seq = session::dec_first(&mut d, Op::SEQUENCE).and_then(|st| {
            if st == 0 {
                d.skip(16 + 4 * 5)?;
            }
            Ok(st)
        });
        let misordered = NfsStatus::SEQ_MISORDERED.0;
        let how = match seq {
            Ok(0) => Outcome::Done,
            Ok(st) if st == misordered && s.uncertain(t.slot) => Outcome::StepBack,
            Ok(_) => Outcome::Refused,
            Err(_) => Outcome::Lost,
        };
        s.release(t, how);
        match seq {
            Ok(0) => {}
            Ok(st) => return Err(self.status("SEQUENCE", &self.share, NfsStatus(st), true)),
            Err(x) => return Err(self.protocol("SEQUENCE", x)),
        }
        let start = bytes.len() - d.remaining().len();
        Ok(Reply {
            bytes,
            start,
            ops: ops.ops.clone(),
        })
    }

    /// Runs the compound `build` makes for the current session, retrying as the module doc
    /// says. The reply may still hold an error of one of the operations (see `Results`).
    pub fn compound(&self, build: impl Fn(&Session) -> Ops) -> Result<Reply> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        let mut renewed = 0;
        loop {
            let s = self.session()?;
            let ops = build(&s);
            let deadline = self.deadline();
            let err = match self.send(&s, &ops, deadline) {
                Ok(reply) => {
                    let status = Decoder::new(&reply.bytes).u32().unwrap_or(0);
                    if status != NfsStatus::GRACE.0 && status != NfsStatus::DELAY.0 {
                        return Ok(reply);
                    }
                    self.status(&reply.ops[0].name(), &self.share, NfsStatus(status), true)
                }
                Err(e) => e,
            };
            let lost = [
                NfsStatus::BADSESSION,
                NfsStatus::DEADSESSION,
                NfsStatus::STALE_CLIENTID,
            ];
            if err.is_any(&lost) && renewed < MAX_REESTABLISH {
                tracing::info!(server = %self.server, error = %err, "NFSv4.1 session lost: establishing a new one");
                self.session.forget(&s);
                renewed += 1;
                continue;
            }
            if err.is_status(NfsStatus::SEQ_MISORDERED) && renewed < MAX_REESTABLISH {
                renewed += 1;
                continue;
            }
            if err.is_any(&[NfsStatus::GRACE, NfsStatus::DELAY]) {
                let left = self.opts.timeout.saturating_sub(started.elapsed());
                if left > pause {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
                let why = if err.is_status(NfsStatus::GRACE) {
                    "the server is in its grace period after a restart (NFS4ERR_GRACE)"
                } else {
                    "the server asks to retry later (NFS4ERR_DELAY)"
                };
                let waited = started.elapsed();
                return Err(self.unavailable(format!("{why}, still after {waited:?}")));
            }
            return Err(err);
        }
    }

    /// DESTROY_SESSION and DESTROY_CLIENTID on an idle connection, if any (else the server
    /// expires the client after its lease).
    fn destroy(&self) {
        let Some(s) = self.session.set(None) else {
            return;
        };
        let Some(mut p) = self.pool.lock().unwrap().pop() else {
            return;
        };
        let deadline = Instant::now() + self.opts.timeout.min(Duration::from_secs(1));
        let (conn, none) = (&mut p.conn, |_: &mut Decoder<'_>| Ok(()));
        if self
            .lone(conn, (Op::DESTROY_SESSION, s.id), deadline, none)
            .is_ok()
        {
            let _ = self.lone(conn, (Op::DESTROY_CLIENTID, s.clientid), deadline, none);
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.destroy();
    }
}
