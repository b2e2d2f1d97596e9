//! Running a short create or delete on the RPC's own worker thread instead of the blocking pool.
//!
//! A body normally goes to the blocking pool: the worker wakes a pool thread and the pool
//! thread wakes the worker back, two cross-CPU wake-ups per RPC (about 30 us each on a small
//! VM, a tenth of a hostpath CreateVolume). A short body that ends in a journal commit it can
//! await as a task (`rpc_queued`) runs in place instead: it holds the thread only for its own
//! syscalls, never through a sync. Only bodies the backend declares short
//! (`BackendCaps::quick_provisioning`) do so, and never on a runtime with fewer than two
//! workers, so the other worker keeps serving.

use std::sync::atomic::{AtomicUsize, Ordering};

/// RPC bodies running now, in place or on the pool.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one body in flight while it lives; says whether that body may run in place.
pub(crate) struct InFlight {
    count: &'static AtomicUsize,
    pub(crate) in_place: bool,
}

impl InFlight {
    /// A body that runs on the pool, or, `short` (one the backend declares short, ending in a
    /// commit it awaits as a task: `rpc_queued`), in place.
    pub(crate) fn enter(short: bool) -> Self {
        Self::enter_on(&IN_FLIGHT, short)
    }

    fn enter_on(count: &'static AtomicUsize, short: bool) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        let in_place = short && runtime_has_spare_worker();
        InFlight { count, in_place }
    }

    /// No other body is in flight now: nobody would use this thread while it waits.
    pub(crate) fn alone(&self) -> bool {
        self.count.load(Ordering::Acquire) == 1
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A multi-threaded runtime with a second worker to serve while this one is busy.
fn runtime_has_spare_worker() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| {
        h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && h.metrics().num_workers() >= 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(workers: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_short_body_on_a_two_worker_runtime_runs_in_place_and_knows_whether_it_is_alone() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        runtime(2).block_on(async {
            let first = InFlight::enter_on(&COUNT, true);
            assert!(first.in_place, "short body");
            assert!(first.alone(), "nothing else in flight");
            let second = InFlight::enter_on(&COUNT, true);
            assert!(second.in_place, "in place beside another body too");
            assert!(!first.alone() && !second.alone(), "two in flight");
            drop(first);
            assert!(second.alone(), "the other one ended");
            assert!(!InFlight::enter_on(&COUNT, false).in_place, "a long body");
        });
        assert_eq!(COUNT.load(Ordering::Acquire), 0);
    }

    #[test]
    fn never_in_place_without_a_spare_worker() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        assert!(!InFlight::enter_on(&COUNT, true).in_place, "no runtime");
        runtime(1).block_on(async {
            assert!(!InFlight::enter_on(&COUNT, true).in_place, "one worker");
        });
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        current.block_on(async {
            assert!(!InFlight::enter_on(&COUNT, true).in_place, "current thread");
        });
    }
}
