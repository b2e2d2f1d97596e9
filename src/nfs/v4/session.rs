//! The NFSv4.1 client ID and session (RFC 8881 sections 2.4 and 2.10): EXCHANGE_ID,
//! CREATE_SESSION, RECLAIM_COMPLETE, the fore channel's slot table, and DESTROY_SESSION /
//! DESTROY_CLIENTID when the client goes.
//!
//! The client owner is unique per `NfsClient` (host, process, a counter and the time), so two
//! clients of one process never replace each other's state; its verifier is fixed for the
//! client's life, so after a server restart it comes back as a client that did not reboot.
//! State protection is SP4_NONE, so any connection bound with BIND_CONN_TO_SESSION may carry
//! the session.
//!
//! Slots: each compound takes a free slot and sends its sequence id + 1. A lost reply leaves
//! the slot uncertain (the server may or may not have executed it); the next use sends the
//! following id, and on SEQ_MISORDERED (the server never saw the lost one) the slot steps back
//! once and the call is sent again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::proto::{self, Op};
use crate::nfs::xdr::{Decoder, Encoder, Xdr, XdrError, XdrResult};

/// Slots (concurrent compounds) asked for; the server may grant fewer.
const SLOTS_WANTED: u32 = 64;
/// Largest request and reply: a 1 MiB WRITE or READ with room for the operations around it.
const MAX_MESSAGE: u32 = (1 << 20) + (64 << 10);
/// Operations asked for per compound; the server may grant fewer (long walks are split).
const OPS_WANTED: u32 = 64;
const EXCHGID4_FLAG_USE_NON_PNFS: u32 = 0x0001_0000;

pub struct Owner {
    pub id: Vec<u8>,
    pub verifier: [u8; 8],
    /// The open-owner of every OPEN (open-owner sequence ids are unused in NFSv4.1).
    pub open_owner: Vec<u8>,
}

impl Owner {
    pub fn new(server: &str) -> Owner {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let now = crate::nfs::rpc::since_epoch();
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let (pid, nanos) = (std::process::id(), now.as_nanos());
        let id = format!("ferrovol/{host}/{pid}/{n}/{nanos:x}/{server}");
        Owner {
            id: id.into_bytes(),
            verifier: (nanos as u64 ^ n).to_be_bytes(),
            open_owner: format!("ferrovol-open-{n}").into_bytes(),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Last sequence id sent (and executed, unless `uncertain`).
    seq: u32,
    busy: bool,
    uncertain: bool,
}

pub struct Session {
    pub clientid: u64,
    pub id: [u8; 16],
    pub max_ops: usize,
    slots: Mutex<Vec<Slot>>,
    freed: Condvar,
}

pub struct Taken {
    pub slot: u32,
    pub seq: u32,
    pub highest: u32,
}

/// How a compound left its slot.
pub enum Outcome {
    /// The server answered SEQUENCE: it executed this sequence id.
    Done,
    /// No reply: the server may or may not have executed it.
    Lost,
    /// The server refused the SEQUENCE without executing it.
    Refused,
    /// SEQ_MISORDERED after a lost reply: the server never saw that one, step back.
    StepBack,
}

impl Session {
    /// Waits for a free slot until `deadline`.
    pub fn take(&self, deadline: Instant) -> Option<Taken> {
        let mut slots = self.slots.lock().unwrap();
        loop {
            let highest = slots.len() as u32 - 1;
            if let Some(i) = slots.iter().position(|s| !s.busy) {
                let s = &mut slots[i];
                s.busy = true;
                return Some(Taken {
                    slot: i as u32,
                    seq: s.seq.wrapping_add(1),
                    highest,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            slots = self.freed.wait_timeout(slots, left).unwrap().0;
        }
    }

    pub fn slots(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    /// Whether the slot's last call lost its reply (SEQ_MISORDERED then means step back).
    pub fn uncertain(&self, slot: u32) -> bool {
        self.slots.lock().unwrap()[slot as usize].uncertain
    }

    pub fn release(&self, t: &Taken, how: Outcome) {
        let mut slots = self.slots.lock().unwrap();
        let s = &mut slots[t.slot as usize];
        s.busy = false;
        match how {
            Outcome::Done => (s.seq, s.uncertain) = (t.seq, false),
            Outcome::Lost => (s.seq, s.uncertain) = (t.seq, true),
            Outcome::Refused => {}
            Outcome::StepBack => (s.seq, s.uncertain) = (t.seq.wrapping_sub(2), false),
        }
        drop(slots);
        self.freed.notify_one();
    }
}

/// A COMPOUND header: empty tag, minor version 1, then `n` operations.
pub fn header(e: &mut Encoder, n: usize) {
    e.string("").u32(proto::MINOR).u32(n as u32);
}

/// SEQUENCE4args for `t` on session `id`; the server caches no replies (cachethis false).
pub fn enc_sequence(e: &mut Encoder, id: &[u8; 16], t: &Taken) {
    e.put((Op::SEQUENCE as u32, id, t.seq, t.slot, t.highest, false));
}

/// Reads a COMPOUND4res header and its first result's opcode, which must be `op`: that
/// result's status, or the overall status when there is no result.
pub fn dec_first(d: &mut Decoder<'_>, op: Op) -> XdrResult<u32> {
    let status = d.u32()?;
    d.opaque(1024)?; // tag
    if d.u32()? == 0 {
        return Ok(status);
    }
    let got = d.u32()?;
    if got != op as u32 {
        return Err(XdrError(format!("first result is of operation {got}")));
    }
    d.u32()
}

/// EXCHANGE_ID4args: our owner, no pNFS, no state protection, no implementation id.
pub fn exchange_id(o: &Owner) -> impl Xdr + '_ {
    let flags = EXCHGID4_FLAG_USE_NON_PNFS;
    (o.verifier, o.id.as_slice(), flags, 0u32, 0u32)
}

/// EXCHANGE_ID4resok: the client id and the sequence id CREATE_SESSION must use.
pub fn dec_exchange_id(d: &mut Decoder<'_>) -> XdrResult<(u64, u32)> {
    let clientid = d.u64()?;
    let seq = d.u32()?;
    d.u32()?; // flags
    if d.u32()? != 0 {
        return Err(XdrError(
            "the server asks for state protection, which this client does not do".into(),
        ));
    }
    Ok((clientid, seq))
}

/// channel_attrs4: no header padding, `max` bytes each way, no RDMA.
fn channel(max: u32, cached: u32, ops: u32, reqs: u32) -> impl Xdr {
    (0u32, max, max, cached, ops, reqs, 0u32)
}

/// CREATE_SESSION4args: no persistence, no back channel (no delegations, so no callbacks),
/// AUTH_NONE for the unused callback program.
pub fn create_session(clientid: u64, seq: u32) -> impl Xdr {
    let fore = channel(MAX_MESSAGE, 4096, OPS_WANTED, SLOTS_WANTED);
    let callback = (0x4000_0000u32, 1u32, 0u32);
    (clientid, seq, 0u32, fore, channel(4096, 0, 2, 1), callback)
}

/// CREATE_SESSION4resok: the session, with the slots and operations the server granted.
pub fn dec_create_session(d: &mut Decoder<'_>, clientid: u64) -> XdrResult<Session> {
    let id: [u8; 16] = d.fixed(16)?.try_into().expect("16 bytes");
    d.u32()?; // sequence
    d.u32()?; // flags
    d.skip(4 * 4)?; // headerpad, max request, max response, max response cached
    let max_ops = d.u32()?.clamp(4, 1024) as usize;
    let slots = d.u32()?.clamp(1, SLOTS_WANTED) as usize;
    Ok(Session {
        clientid,
        id,
        max_ops,
        slots: Mutex::new(vec![Slot::default(); slots]),
        freed: Condvar::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session(n: usize) -> Session {
        Session {
            clientid: 1,
            id: [0; 16],
            max_ops: 8,
            slots: Mutex::new(vec![Slot::default(); n]),
            freed: Condvar::new(),
        }
    }

    #[test]
    fn slots_advance_and_step_back_after_a_lost_reply() {
        let s = session(1);
        let far = Instant::now() + Duration::from_secs(1);
        let t = s.take(far).unwrap();
        assert_eq!((t.slot, t.seq, t.highest), (0, 1, 0));
        assert!(s.take(Instant::now()).is_none(), "the only slot is busy");
        s.release(&t, Outcome::Done);
        let t = s.take(far).unwrap();
        assert_eq!(t.seq, 2);
        s.release(&t, Outcome::Lost);
        assert!(s.uncertain(0));
        let t = s.take(far).unwrap();
        assert_eq!(t.seq, 3, "after a lost reply the next id goes first");
        s.release(&t, Outcome::StepBack);
        let t = s.take(far).unwrap();
        assert_eq!(t.seq, 2, "the server never saw 2: it is sent again");
        s.release(&t, Outcome::Refused);
        assert_eq!(s.take(far).unwrap().seq, 2);
    }
}
