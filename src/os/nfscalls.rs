//! Kernel calls against NFS servers (mount, umount, statfs), each on its own thread under a
//! deadline, bounded per server, and what the node knows about a server that stopped answering.
//!
//! Why a thread per call: a mount, umount or statfs against a dead server can sit in
//! uninterruptible sleep for minutes; on tokio's blocking pool it would hold a worker for good,
//! and a few dead servers would stall every RPC. When the deadline passes we answer
//! DeadlineExceeded and leave the thread to finish (or hang) on its own: the call is *abandoned*.
//!
//! Why the bound is per server: the threads a dead server holds are that server's cost alone.
//! With one budget for the node, one dead server used it up and every other server's calls were
//! refused until it came back. So each server (the host of `host:/path`) may have
//! [`CALLS_PER_SERVER`] calls running at once; past that its new calls are refused as
//! Unavailable. A call counts from its start, not from its deadline, so a burst cannot get past
//! the bound before the first deadline passes. [`CALLS_TOTAL`] caps all servers together, should
//! many die at once. Name lookups do not reach the server: they count under [`RESOLVER`].
//!
//! Why 32 per server: a server known hung gets no new stat calls (below), and the kubelet
//! retries mounts and unmounts with a backoff growing to minutes, so a dead server collects about
//! one stuck thread per pod starting or stopping on it, plus the stats that reached it before its
//! first deadline. 32 covers a node's pods of one server starting together; a stuck thread costs
//! a few KiB of stack, so 32 per server and 512 in all stay small next to the process.
//!
//! Known hung: from the first abandoned call to a server until an abandoned call to it returns,
//! [`not_answering`] says since when. NodeGetVolumeStats (about once a minute per volume) for
//! such a server answers from this state without a kernel call, so a dead server with many
//! volumes holds one statfs thread, not one per volume per minute.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Kernel calls to one server that may run at once; see the module doc.
pub const CALLS_PER_SERVER: usize = 32;
/// Kernel calls to all servers together that may run at once.
pub const CALLS_TOTAL: usize = 512;

#[derive(Default)]
struct Server {
    /// Calls started and not yet returned, abandoned or not.
    running: usize,
    /// Of those, the ones whose caller gave up at the deadline.
    abandoned: usize,
    /// Start of the oldest call abandoned since the server last answered one.
    hung_since: Option<Instant>,
}

struct Calls {
    servers: BTreeMap<String, Server>,
    running: usize,
}

static CALLS: Mutex<Calls> = Mutex::new(Calls {
    servers: BTreeMap::new(),
    running: 0,
});

fn calls() -> MutexGuard<'static, Calls> {
    // The bookkeeping stays consistent under a panic elsewhere: every change is one statement.
    CALLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server a mount source or server name stands for: `host` of `host:/path`, the address
/// inside `[v6]:/path`, else the whole text (a bare server name).
pub fn server_of(source: &str) -> &str {
    if let Some((v6, _)) = source.strip_prefix('[').and_then(|r| r.split_once(']')) {
        return v6;
    }
    source.split_once(":/").map_or(source, |(host, _)| host)
}

/// A server known not to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnswering {
    /// Since the start of its oldest call abandoned since it last answered.
    pub silent_for: Duration,
    /// Its calls still running past their deadline.
    pub abandoned: usize,
}

/// Whether calls to `server` (a name or mount source) are known to hang: one was abandoned at its
/// deadline and none of those has returned since.
pub fn not_answering(server: &str) -> Option<NotAnswering> {
    let calls = calls();
    let s = calls.servers.get(server_of(server))?;
    s.hung_since.map(|t| NotAnswering {
        silent_for: t.elapsed(),
        abandoned: s.abandoned,
    })
}

/// What the metrics show of one server (or of [`RESOLVER`]) this process has called.
pub struct ServerState {
    pub name: String,
    /// Its calls still running past their deadline.
    pub abandoned: usize,
    /// Not known hung (see the module doc).
    pub answering: bool,
    /// The name lookups' entry, not a server.
    pub resolver: bool,
}

/// Every server called so far, for the metrics.
pub fn servers() -> Vec<ServerState> {
    calls()
        .servers
        .iter()
        .map(|(k, s)| ServerState {
            name: k.clone(),
            abandoned: s.abandoned,
            answering: s.hung_since.is_none(),
            resolver: k == RESOLVER,
        })
        .collect()
}

/// Runs `f` on its own thread and waits at most `deadline`. On timeout the thread is abandoned
/// (see the module doc) and the answer is DeadlineExceeded naming `server` and `action`. Refused
/// as Unavailable when `server` (a name or mount source) has used its budget of running calls.
pub fn with_deadline<T: Send + 'static>(
    server: &str,
    action: &str,
    deadline: Duration,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    with_deadline_as(server_of(server), server, action, deadline, f)
}

/// Budget and hung state of calls that do not reach the server itself (name lookups): a slow
/// resolver must not mark the server as not answering.
pub const RESOLVER: &str = "(resolver)";

/// [`with_deadline`] counted against `key`'s budget and hung state instead of `server`'s.
pub fn with_deadline_as<T: Send + 'static>(
    key: &str,
    server: &str,
    action: &str,
    deadline: Duration,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let key = key.to_string();
    let started = Instant::now();
    admit(&key, server, action)?;
    let (tx, rx) = mpsc::sync_channel(1);
    let abandoned = Arc::new(AtomicBool::new(false));
    let (k, gave_up, what) = (key.clone(), abandoned.clone(), action.to_string());
    let spawned = std::thread::Builder::new()
        .name("nfs-kernel-call".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(Error::Internal(format!("{what} panicked"))));
            // Under the lock, so the caller's timeout sees either this answer or none.
            let mut calls = calls();
            returned(&mut calls, &k, gave_up.load(Ordering::Relaxed));
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        returned(&mut calls(), &key, false);
        let why = format!("{action}: cannot start a thread: {e}");
        return Err(Error::Internal(why));
    }
    match rx.recv_timeout(deadline) {
        Ok(r) => r,
        Err(_) => {
            let mut calls = calls();
            if let Ok(r) = rx.try_recv() {
                return r; // it returned just as the deadline passed
            }
            abandoned.store(true, Ordering::Relaxed);
            let s = calls.servers.entry(key).or_default();
            s.abandoned += 1;
            s.hung_since.get_or_insert(started);
            Err(Error::DeadlineExceeded {
                server: server.to_string(),
                action: action.to_string(),
                seconds: deadline.as_secs().max(1),
            })
        }
    }
}

fn admit(key: &str, server: &str, action: &str) -> Result<()> {
    let mut calls = calls();
    let running = calls.servers.get(key).map_or(0, |s| s.running);
    let refuse = |detail: String| Error::Unavailable {
        server: server.to_string(),
        detail: format!("{action}: {detail}; refusing more until they return"),
    };
    if running >= CALLS_PER_SERVER {
        let abandoned = calls.servers.get(key).map_or(0, |s| s.abandoned);
        return Err(refuse(format!(
            "{running} kernel calls to NFS server {key} are still running, {abandoned} of them past their deadline"
        )));
    }
    if calls.running >= CALLS_TOTAL {
        return Err(refuse(format!(
            "{} kernel NFS calls are still running on this node",
            calls.running
        )));
    }
    calls.running += 1;
    calls.servers.entry(key.to_string()).or_default().running += 1;
    Ok(())
}

/// A call to `key` returned; an abandoned one returning means the server answers again.
fn returned(calls: &mut Calls, key: &str, was_abandoned: bool) {
    calls.running -= 1;
    let Some(s) = calls.servers.get_mut(key) else {
        return;
    };
    s.running -= 1;
    if was_abandoned {
        s.abandoned -= 1;
        s.hung_since = None;
    }
    // The entry stays (one per server the node mounts): the metrics report the server up.
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abandoned calls per server (servers with none are left out).
    fn abandoned_calls() -> Vec<(String, usize)> {
        servers()
            .into_iter()
            .filter(|s| s.abandoned > 0)
            .map(|s| (s.name, s.abandoned))
            .collect()
    }
    use std::sync::mpsc::Receiver;

    /// A call that blocks until the test sends on (or drops) the returned sender.
    fn hang(server: &str) -> (mpsc::Sender<()>, Result<()>) {
        let (release, wait): (mpsc::Sender<()>, Receiver<()>) = mpsc::channel();
        let r = with_deadline(server, "statfs x", Duration::from_millis(50), move || {
            let _ = wait.recv();
            Ok(())
        });
        (release, r)
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !cond() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn servers_of_sources() {
        assert_eq!(server_of("10.0.0.5:/srv/nfs/ns/v"), "10.0.0.5");
        assert_eq!(server_of("nfs.example:/"), "nfs.example");
        assert_eq!(server_of("[fd00::5]:/e/v"), "fd00::5");
        assert_eq!(server_of("fd00::5"), "fd00::5");
        assert_eq!(server_of("nfs.example"), "nfs.example");
    }

    #[test]
    fn deadline_abandons_a_hung_call() {
        let t0 = Instant::now();
        let r = with_deadline("srv", "mount x", Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        });
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(
            matches!(r, Err(Error::DeadlineExceeded { ref server, .. }) if server == "srv"),
            "{r:?}"
        );
        assert_eq!(
            with_deadline("srv-quick", "x", Duration::from_secs(1), || Ok(7)).unwrap(),
            7
        );
    }

    #[test]
    fn a_hung_name_lookup_does_not_mark_the_server() {
        let (release, r) = {
            let (release, wait) = mpsc::channel::<()>();
            let r = with_deadline_as(
                RESOLVER,
                "lookup-a",
                "resolve",
                Duration::from_millis(50),
                {
                    move || {
                        let _ = wait.recv();
                        Ok(())
                    }
                },
            );
            (release, r)
        };
        assert!(
            matches!(r, Err(Error::DeadlineExceeded { ref server, .. }) if server == "lookup-a"),
            "{r:?}"
        );
        assert_eq!(not_answering("lookup-a"), None);
        assert!(not_answering(RESOLVER).is_some());
        drop(release);
        wait_until("the lookup returns", || not_answering(RESOLVER).is_none());
    }

    #[test]
    fn a_full_budget_refuses_its_server_only_and_clears_when_calls_return() {
        let a = "budget-a:/export/v";
        let mut releases = Vec::new();
        for _ in 0..CALLS_PER_SERVER {
            let (release, r) = hang(a);
            assert!(matches!(r, Err(Error::DeadlineExceeded { .. })), "{r:?}");
            releases.push(release);
        }
        let hung = not_answering("budget-a").expect("known hung");
        assert_eq!(hung.abandoned, CALLS_PER_SERVER);
        assert!(abandoned_calls().contains(&("budget-a".into(), CALLS_PER_SERVER)));
        let r = with_deadline(a, "statfs y", Duration::from_secs(1), || Ok(()));
        match r {
            Err(Error::Unavailable { detail, .. }) => {
                assert!(
                    detail.contains("32 kernel calls to NFS server budget-a"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Another server is not affected.
        assert_eq!(
            with_deadline("budget-b:/e", "statfs", Duration::from_secs(1), || Ok(1)).unwrap(),
            1
        );
        assert_eq!(not_answering("budget-b"), None);

        // One abandoned call returning: the server answers again; the rest still count.
        releases.pop();
        wait_until("budget-a answers", || not_answering("budget-a").is_none());
        wait_until("one fewer abandoned", || {
            abandoned_calls().contains(&("budget-a".into(), CALLS_PER_SERVER - 1))
        });
        assert_eq!(
            with_deadline(a, "statfs z", Duration::from_secs(1), || Ok(2)).unwrap(),
            2
        );
        releases.clear();
        wait_until("all returned", || {
            !abandoned_calls().iter().any(|(s, _)| s == "budget-a")
        });
    }
}
