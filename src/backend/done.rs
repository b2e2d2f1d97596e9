//! What a backend operation returns when its last step waits for the journal: done now, or done
//! once a queued record change is durable and the steps that follow it have run.
//!
//! The split lets the CSI layer wait for the commit as a task instead of on a thread (see
//! `state::group_commit`). The steps after the commit run wherever the wait ends, so they must be
//! short (index updates, removing an empty directory); anything long stays before the commit.

use crate::error::{panic_message, Error, Result};
use crate::state::{Journal, Ticket};
use std::io;
use std::sync::Arc;

/// The steps after a commit: given the commit's outcome, they finish the operation (on Ok) or
/// undo what it prepared (on Err) and give its answer.
type Then<T> = Box<dyn FnOnce(io::Result<()>) -> Result<T> + Send>;

#[must_use = "an operation that waits for a commit is done only once it is finished"]
pub enum Done<T> {
    Now(T),
    AfterCommit(Box<AfterCommit<T>>),
}

pub struct AfterCommit<T> {
    journal: Arc<Journal>,
    ticket: Ticket,
    then: Then<T>,
}

impl<T: 'static> Done<T> {
    /// Done once `ticket`'s batch is decided and `then` has run on its outcome.
    pub fn after_commit(
        journal: Arc<Journal>,
        ticket: Ticket,
        then: impl FnOnce(io::Result<()>) -> Result<T> + Send + 'static,
    ) -> Self {
        Done::AfterCommit(Box::new(AfterCommit {
            journal,
            ticket,
            then: Box::new(then),
        }))
    }

    /// Finishes on this thread (leading the batch when no sync is in flight).
    pub fn wait(self) -> Result<T> {
        match self {
            Done::Now(v) => Ok(v),
            Done::AfterCommit(a) => (a.then)(a.journal.wait(a.ticket)),
        }
    }

    /// Finishes as a task: holds no thread while the batch syncs. Dropped before the batch is
    /// decided (the client cancelled the RPC), it finishes on a thread of its own: a change that
    /// becomes durable is always settled (the index shows it, the trash goes).
    pub async fn finish(self) -> Result<T>
    where
        T: Send,
    {
        match self {
            Done::Now(v) => Ok(v),
            Done::AfterCommit(a) => {
                let mut unfinished = Unfinished(Some(a));
                let a = unfinished.0.as_ref().expect("set above");
                let outcome = a.journal.wait_async(&a.ticket).await;
                let a = unfinished.0.take().expect("set above");
                // On a runtime worker a panic would only reset the stream: answer Internal, as
                // a body that panics on the pool does.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (a.then)(outcome)))
                    .unwrap_or_else(|panic| {
                        let why = panic_message(&*panic);
                        let why = format!("the steps after the commit panicked: {why}");
                        Err(Error::Internal(why))
                    })
            }
        }
    }

    /// The same operation with its answer mapped (after `then`, on success only).
    pub fn map<U: 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Done<U> {
        match self {
            Done::Now(v) => Done::Now(f(v)),
            Done::AfterCommit(a) => {
                let a = *a;
                Done::after_commit(a.journal, a.ticket, move |o| (a.then)(o).map(f))
            }
        }
    }
}

/// An `AfterCommit` whose task may be dropped while it waits.
struct Unfinished<T: Send + 'static>(Option<Box<AfterCommit<T>>>);

impl<T: Send + 'static> Drop for Unfinished<T> {
    fn drop(&mut self) {
        let Some(a) = self.0.take() else {
            return;
        };
        let finish = move || {
            if let Err(e) = Done::AfterCommit(a).wait() {
                tracing::warn!(error = %e, "an operation whose client went away failed after its commit");
            }
        };
        if let Err(e) = crate::state::on_blocking_pool("commit-finish", finish) {
            tracing::error!(error = %e, "cannot finish an abandoned operation; the next start settles it");
        }
    }
}

/// Runs a step that may take long (a tree walk, a wait) from code that may be on a runtime
/// worker, such as the steps after a commit: there tokio first moves the worker's other tasks
/// to another thread. Elsewhere (a pool thread, no runtime) it just runs.
pub fn long_step<R>(step: impl FnOnce() -> R) -> R {
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker {
        tokio::task::block_in_place(step)
    } else {
        step()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Update;
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn an_operation_whose_task_is_dropped_mid_commit_still_runs_its_steps() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let settled = Arc::new(AtomicBool::new(false));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let update = Update::Put {
            key: "k".into(),
            value: b"v".to_vec(),
        };
        let ticket = journal.submit(vec![update]).unwrap();
        let done = {
            let settled = settled.clone();
            Done::after_commit(journal.clone(), ticket, move |outcome| {
                outcome.map_err(crate::error::Error::state("k"))?;
                settled.store(true, Ordering::Release);
                Ok(())
            })
        };
        // The client goes away while the batch syncs: the RPC's future is polled once (its
        // batch not yet decided) and dropped.
        {
            let _rt = rt.enter();
            let mut finish = std::pin::pin!(done.finish());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(finish.as_mut().poll(&mut cx).is_pending());
        }
        for _ in 0..500 {
            if settled.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            settled.load(Ordering::Acquire),
            "the steps after the commit never ran"
        );
        drop(rt);
        drop(journal);
        assert!(Journal::open(dir.path()).unwrap().1.contains_key("k"));
    }
}
