//! Group commit: a change is queued for the journal's next batch (`submit`) and acknowledged only
//! once the batch that carries it is synced. Its caller waits on a thread (`wait`: the first
//! waiter to find no sync in flight leads the batch itself) or as a task (`wait_async`: a task
//! that finds no leader starts one on the blocking pool, which leads batch after batch while
//! changes keep arriving, and each task is woken by its batch's outcome). A waiting task holds no
//! thread, so N concurrent commits do not keep N threads asleep. A thread that led its own batch
//! hands the next one to a thread blocked on it, or, when only tasks wait, to a pool leader.

use super::frame::{Update, SEQ_KEY};
use super::journal::{poisoned_error, Inner, Journal};
use std::future::poll_fn;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, MutexGuard, OnceLock};
use std::task::Poll;

/// One batch, shared by the tickets of its changes: the condition its waiting threads sleep
/// on, and its outcome, set once when it is decided. Each waiter reads its own batch's
/// outcome, however many batches were decided before it looked.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) cv: Condvar,
    outcome: OnceLock<Result<(), Arc<io::Error>>>,
}

impl Batch {
    /// Records the outcome and wakes the batch's threads (its tasks are woken by sequence).
    fn decide(&self, outcome: Result<(), Arc<io::Error>>) {
        let _ = self.outcome.set(outcome);
        self.cv.notify_all();
    }

    fn outcome(&self) -> io::Result<()> {
        match self.outcome.get() {
            Some(Ok(())) => Ok(()),
            Some(Err(cause)) => Err(io::Error::new(cause.kind(), cause.to_string())),
            None => Err(io::Error::other(
                "state journal batch decided without an outcome",
            )),
        }
    }
}

/// A change queued for a batch: its sequence number, and its batch.
#[derive(Debug)]
#[must_use = "a queued change is acknowledged only once its ticket is waited for"]
pub struct Ticket {
    seq: u64,
    batch: Arc<Batch>,
}

impl Journal {
    /// Makes `updates` durable, together with whatever other threads commit at the same time.
    /// Returns only when they are on disk (or failed: then none of them is acknowledged).
    pub fn commit(&self, updates: Vec<Update>) -> io::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let ticket = self.submit(updates)?;
        self.wait(ticket)
    }

    /// Queues `updates` for the next batch without waiting. They are durable once `wait` or
    /// `wait_async` on the ticket answers Ok; until then nothing may act as if they were.
    pub fn submit(&self, updates: Vec<Update>) -> io::Result<Ticket> {
        let mut inner = self.lock();
        if let Some(cause) = &inner.poisoned {
            return Err(poisoned_error(cause));
        }
        for u in &updates {
            super::frame::encode(u, &mut inner.queued);
        }
        inner.queued_frames += updates.len();
        inner.issued += 1;
        let (seq, batch) = (inner.issued, inner.queue_cv.clone());
        Ok(Ticket { seq, batch })
    }

    /// Waits on this thread until the ticket's batch is decided, leading a batch when no sync
    /// is in flight.
    pub fn wait(&self, ticket: Ticket) -> io::Result<()> {
        let mine = ticket.seq;
        let mut inner = self.lock();
        loop {
            if inner.decided >= mine {
                return ticket.batch.outcome();
            }
            if !inner.leader_active {
                inner = self.lead_one_batch(inner);
                if inner.decided >= mine {
                    self.hand_off(&mut inner);
                }
                continue;
            }
            // Still queued (not in a batch in flight): count this thread as one that can lead it.
            let queued = mine > inner.taken;
            if queued {
                inner.queued_blocking += 1;
            }
            inner = ticket
                .batch
                .cv
                .wait(inner)
                .unwrap_or_else(|p| p.into_inner());
            // A leader that took the queue reset the count; otherwise this thread is no longer
            // blocked on it.
            if queued && mine > inner.taken {
                inner.queued_blocking -= 1;
            }
        }
    }

    /// Waits as a task until the ticket's batch is decided; holds no thread meanwhile.
    pub async fn wait_async(&self, ticket: &Ticket) -> io::Result<()> {
        poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.decided >= ticket.seq {
                return Poll::Ready(ticket.batch.outcome());
            }
            inner.wakers.retain(|(seq, _)| *seq != ticket.seq);
            inner.wakers.push((ticket.seq, cx.waker().clone()));
            if !inner.leader_active && !inner.leader_started {
                self.start_leader(&mut inner);
            }
            Poll::Pending
        })
        .await
    }

    /// Writes and syncs everything queued, as the leader; the lock is released during I/O. The
    /// batch's threads and tasks are woken; the caller decides who leads the next batch.
    fn lead_one_batch<'a>(&'a self, mut inner: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        let batch = std::mem::take(&mut inner.queue_cv);
        inner.queued_blocking = 0;
        let first = inner.decided + 1;
        let last = inner.issued;
        inner.taken = last;
        let mut bytes = std::mem::take(&mut inner.queued);
        let frames = std::mem::take(&mut inner.queued_frames) + 1;
        // The batch's closing frame: its sequence number.
        let seq = inner.seq + 1;
        super::frame::encode_put(SEQ_KEY, &seq.to_le_bytes(), &mut bytes);
        if let Some(cause) = &inner.poisoned {
            // Queued before an earlier batch's sync failed: a later sync that succeeds proves
            // nothing about the pages the failed one lost, so this batch fails too.
            let cause = Arc::new(poisoned_error(cause));
            inner.decided = last;
            batch.decide(Err(cause));
            wake_decided(&mut inner);
            return inner;
        }
        inner.leader_active = true;
        let file = inner.file.clone();
        let start_len = inner.durable_len;
        drop(inner);

        // At an explicit offset: after a failed write the log is cut back to `start_len`, and
        // the next batch must land there, not after a hole.
        let outcome: Result<(), (io::Error, bool)> = crate::failpoint::fail("journal:write")
            .and_then(|()| file.write_all_at(&bytes, start_len))
            .map_err(|e| (e, false))
            .and_then(|()| {
                crate::failpoint::hit("journal:before-sync");
                crate::metrics::count_commit();
                crate::failpoint::fail("journal:sync")
                    .and_then(|()| file.sync_data())
                    .map_err(|e| (e, true))
            });

        let mut inner = self.lock();
        let decided = match outcome {
            Ok(()) => {
                // Never lowered: `mark_damaged` may have moved the numbering on meanwhile.
                inner.seq = inner.seq.max(seq);
                inner.durable_len = start_len + bytes.len() as u64;
                inner.frames_in_log += frames;
                inner.frames_since_snap += frames;
                Ok(())
            }
            Err((e, sync_failed)) => {
                tracing::error!(error = %e, batch = last - first + 1, "state journal commit failed; no operation in the batch is acknowledged");
                let cause = Arc::new(e);
                // What was written but not synced must not be read back as committed: cut the
                // log back. If even that fails (or the sync failed, leaving the page cache in
                // an unknown state) the journal refuses further commits until restart.
                let truncated = file.set_len(start_len).is_ok();
                if !truncated || sync_failed {
                    inner.poisoned = Some(cause.clone());
                }
                Err(cause)
            }
        };
        inner.decided = last;
        inner.leader_active = false;
        self.maybe_compact(&mut inner);
        batch.decide(decided);
        wake_decided(&mut inner);
        inner
    }

    /// After a thread led its own batch: the next batch, if any, goes to one thread blocked on
    /// it, or, when only tasks wait for it, to a leader on the blocking pool.
    fn hand_off(&self, inner: &mut Inner) {
        if inner.issued == inner.decided || inner.leader_active || inner.leader_started {
            return;
        }
        if inner.queued_blocking > 0 {
            inner.queue_cv.cv.notify_one();
        } else {
            self.start_leader(inner);
        }
    }

    /// Starts a leader off this thread (the caller is a task, or a thread with its own answer
    /// to give): on the runtime's blocking pool, else on a thread of its own. It leads batch
    /// after batch until nothing is queued.
    fn start_leader(&self, inner: &mut Inner) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        inner.leader_started = true;
        if let Err(e) = on_blocking_pool("journal-commit", move || me.lead_while_queued()) {
            // Nobody leads now; the next waiter that polls or waits tries again.
            tracing::warn!(error = %e, "cannot start a state journal leader thread");
            inner.leader_started = false;
        }
    }

    /// A started leader's loop: leads batches while changes are queued. When a thread is
    /// leading as it begins, it leaves: that thread hands the next batch on when done.
    fn lead_while_queued(&self) {
        let mut inner = self.lock();
        inner.leader_started = false;
        while inner.issued > inner.decided && !inner.leader_active {
            inner = self.lead_one_batch(inner);
        }
    }
}

/// Runs `f` on the runtime's blocking pool, or without a runtime on a thread of its own, `name`.
pub fn on_blocking_pool(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(f)),
        Err(_) => drop(std::thread::Builder::new().name(name.into()).spawn(f)?),
    }
    Ok(())
}

/// Wakes the tasks of the batch just decided (its threads were woken by `Batch::decide`).
fn wake_decided(inner: &mut Inner) {
    let decided = inner.decided;
    inner.wakers.retain(|(seq, waker)| {
        let done = *seq <= decided;
        if done {
            waker.wake_by_ref();
        }
        !done
    });
}

#[cfg(test)]
#[path = "group_commit_tests.rs"]
mod tests;
