//! One controller at a time recovers a share: a lease record on the share,
//! `.ferrovol/controller-lease.json`, written through the NFS client. A rollout overlaps the old
//! and the new controller pod, and both would otherwise roll back, remove or copy again what the
//! other is still making. Recovery at start, the rollback of a create this process did not
//! start, and the resumption of a snapshot copy this process is not running happen only while
//! this process holds the share's lease. Its own creates, deletes and copies need no lease: the
//! CO sends each volume's calls to one controller (its sidecars elect a leader).
//!
//! - A free lease (no record) is taken with an exclusive CREATE: of two contenders one wins.
//! - The holder rewrites the record every `RENEW` (a counter goes up), and counts itself the
//!   holder for `VALID` after each write began. A contender takes over only a record it has
//!   seen unchanged for `TTL` by its own clock (no clock is compared across machines), or one
//!   its own instance (same host and state directory: a restarted process) wrote. A takeover
//!   writes, waits `SETTLE` (longer than a write takes) and reads again: it holds the lease only
//!   if the record is still its own, so of two contenders writing at once one backs off.
//! - `VALID` < `TTL`: a holder that could not renew stops counting itself the holder before
//!   anyone may take over.

use super::in_meta_dir;
use super::layout::META_DIR;
use crate::nfs::{NfsClient, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const LEASE_PATH: &str = ".ferrovol/controller-lease.json";
const TTL: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(3);
const VALID: Duration = Duration::from_secs(9);
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// This process: `<instance> pid <pid> at <ns>`.
    pub holder: String,
    /// The controller instance (host and state directory) the holder runs as.
    pub instance: String,
    pub renewals: u64,
}

/// Whether this process holds a share's lease, and until when.
#[derive(Default)]
struct Held {
    until: Mutex<Option<Instant>>,
    changed: Condvar,
}

impl Held {
    fn set(&self, until: Option<Instant>) {
        *self.until.lock().expect("lease poisoned") = until;
        self.changed.notify_all();
    }

    /// Whether this process holds the lease, waiting up to `budget` for it to.
    fn within(&self, budget: Duration) -> bool {
        let valid = |u: &mut Option<Instant>| u.is_some_and(|u| Instant::now() < u);
        let until = self.until.lock().expect("lease poisoned");
        let (mut until, _) = (self.changed)
            .wait_timeout_while(until, budget, |u| !valid(u))
            .expect("lease poisoned");
        valid(&mut until)
    }
}

pub struct Leases {
    instance: String,
    holder: String,
    shares: Mutex<HashMap<(String, String), Arc<Held>>>,
}

impl Leases {
    pub fn new(instance: &str) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH);
        let nanos = nanos.map_or(0, |d| d.as_nanos());
        Leases {
            instance: instance.to_string(),
            holder: format!("{instance} pid {} at {nanos}", std::process::id()),
            shares: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self, c: &NfsClient) -> Option<Arc<Held>> {
        let shares = self.shares.lock().expect("leases poisoned");
        shares.get(&share_of(c)).cloned()
    }

    /// Starts contending for `c`'s lease (once per share); `on_acquired` runs on a thread of its
    /// own each time this process comes to hold it (recovery).
    pub fn watch(&self, c: Arc<NfsClient>, on_acquired: impl Fn() + Send + Sync + 'static) {
        let mut shares = self.shares.lock().expect("leases poisoned");
        let held = match shares.entry(share_of(&c)) {
            Entry::Occupied(_) => return,
            Entry::Vacant(v) => v.insert(Arc::default()).clone(),
        };
        drop(shares);
        let me = LeaseRecord {
            holder: self.holder.clone(),
            instance: self.instance.clone(),
            renewals: 0,
        };
        let on_acquired = Arc::new(on_acquired);
        let thread = std::thread::Builder::new().name("nfs-lease".into());
        let spawned = thread.spawn(move || contend(&c, me, &held, on_acquired));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the NFS share lease thread");
        }
    }

    pub fn holds(&self, c: &NfsClient) -> bool {
        self.held(c).is_some_and(|h| h.within(Duration::ZERO))
    }

    /// Waits as long as a takeover takes (`SETTLE` + `RENEW`) for this process to hold `c`'s
    /// lease (a restarted process takes its own back within `SETTLE`).
    pub fn wait_held(&self, c: &NfsClient) -> bool {
        self.held(c).is_some_and(|h| h.within(SETTLE + RENEW))
    }
}

fn share_of(c: &NfsClient) -> (String, String) {
    (c.server().to_string(), c.share().to_string())
}

fn read(c: &NfsClient) -> crate::nfs::Result<Option<Result<LeaseRecord, String>>> {
    Ok(c.read_file(LEASE_PATH)?
        .map(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())))
}

fn bytes(r: &LeaseRecord) -> Vec<u8> {
    serde_json::to_vec_pretty(r).expect("a lease serialises")
}

/// The contender's loop: take the lease when free or abandoned, renew it while held.
fn contend(
    c: &NfsClient,
    mut me: LeaseRecord,
    held: &Held,
    on_acquired: Arc<dyn Fn() + Send + Sync>,
) {
    let share = format!("{}:{}", c.server(), c.share());
    // The other holder's record as last seen changing, and when.
    let mut seen: Option<(LeaseRecord, Instant)> = None;
    let mut holding = false;
    let expired = |seen: &Option<(LeaseRecord, Instant)>, r: &LeaseRecord| {
        seen.as_ref()
            .is_some_and(|(s, at)| s == r && at.elapsed() >= TTL)
    };
    loop {
        let began = Instant::now();
        let acquired = match read(c) {
            Err(e) => {
                tracing::debug!(share = %share, error = %e, "NFS share lease not read");
                false
            }
            Ok(None) => {
                me.renewals = 0;
                let created = in_meta_dir(c, META_DIR, || c.create_file(LEASE_PATH, &bytes(&me)));
                matches!(created, Ok(Outcome::Created))
            }
            Ok(Some(Ok(r))) if r.holder == me.holder => {
                me.renewals = r.renewals + 1;
                c.write_file_atomic(LEASE_PATH, &bytes(&me)).is_ok()
            }
            // Another instance's record, not yet seen unchanged for TTL: not abandoned.
            Ok(Some(Ok(r))) if r.instance != me.instance && !expired(&seen, &r) => {
                if seen.as_ref().is_none_or(|(s, _)| *s != r) {
                    seen = Some((r, Instant::now()));
                }
                false
            }
            // Abandoned, this instance's (a restarted process), or undecodable (no one's).
            Ok(Some(_)) => {
                me.renewals = 0;
                let written = c.write_file_atomic(LEASE_PATH, &bytes(&me)).is_ok();
                std::thread::sleep(SETTLE);
                written && matches!(read(c), Ok(Some(Ok(r))) if r.holder == me.holder)
            }
        };
        // A write that landed `TTL - VALID` or more after it began may have landed after a
        // contender saw the record stand still for TTL: it does not count.
        let acquired = acquired && began.elapsed() < TTL - VALID;
        if acquired {
            held.set(Some(began + VALID));
            if !holding {
                holding = true;
                seen = None;
                tracing::info!(share = %share, holder = %me.holder, "NFS share lease taken: this controller recovers the share");
                let (run, thread) = (on_acquired.clone(), std::thread::Builder::new());
                if let Err(e) = thread.name("nfs-recovery".into()).spawn(move || run()) {
                    tracing::warn!(error = %e, "cannot start NFS recovery");
                }
            }
        } else if holding && !held.within(Duration::ZERO) {
            holding = false;
            held.set(None);
            tracing::warn!(share = %share, "NFS share lease lost: another controller recovers the share");
        }
        std::thread::sleep(RENEW.saturating_sub(began.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_told_apart_and_records_round_trip() {
        let a = Leases::new("host-a:/state");
        let b = Leases::new("host-a:/state");
        assert_ne!(a.holder, b.holder, "two processes of one instance differ");
        let r = LeaseRecord {
            holder: a.holder.clone(),
            instance: a.instance.clone(),
            renewals: 3,
        };
        assert_eq!(
            serde_json::from_slice::<LeaseRecord>(&bytes(&r)).unwrap(),
            r
        );
        const { assert!(VALID.as_secs() < TTL.as_secs() && RENEW.as_secs() < VALID.as_secs()) };
    }
}
