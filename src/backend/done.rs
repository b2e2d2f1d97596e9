//! What a backend operation returns when its last step waits for the journal: done now, or done
//! once a queued record change is durable and the steps that follow it have run.
//!
//! The split lets the CSI layer wait for the commit as a task instead of on a thread (see
//! `state::group_commit`). The steps after the commit run wherever the wait ends, so they must be
//! short (index updates, removing an empty directory); anything long stays before the commit.

use crate::error::Result;
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
            Done::AfterCommit(a) => {
                let outcome = a.journal.wait(a.ticket);
                (a.then)(outcome)
            }
        }
    }

    /// Finishes as a task: holds no thread while the batch syncs.
    pub async fn finish(self) -> Result<T> {
        match self {
            Done::Now(v) => Ok(v),
            Done::AfterCommit(a) => {
                let outcome = a.journal.wait_async(a.ticket).await;
                (a.then)(outcome)
            }
        }
    }

    /// The same operation with its answer mapped (after `then`, on success only).
    pub fn map<U: 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Done<U> {
        match self {
            Done::Now(v) => Done::Now(f(v)),
            Done::AfterCommit(a) => {
                let AfterCommit {
                    journal,
                    ticket,
                    then,
                } = *a;
                Done::after_commit(journal, ticket, move |outcome| then(outcome).map(f))
            }
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
