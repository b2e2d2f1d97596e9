//! Running a short RPC body on the RPC's own worker thread when nothing else is in flight.
//!
//! A body normally goes to the blocking pool: the worker wakes a pool thread and the pool
//! thread wakes the worker back, two cross-CPU wake-ups per RPC (about 30 us each on a small
//! VM, a tenth of a hostpath CreateVolume). When no other body runs, nobody would use that
//! worker meanwhile, so a short body runs in place instead. The guard keeps the runtime
//! responsive: only one body at a time runs in place (the other worker keeps serving, and every
//! body that arrives meanwhile goes to the pool), never on a runtime with fewer than two
//! workers, and only for bodies the backend declares short (`BackendCaps::quick_provisioning`).
//! A short body that ends in a commit it can await as a task (`enter_queued`, `rpc_queued`) runs
//! in place even while others are in flight: it holds the thread only for its own syscalls.

use std::sync::atomic::{AtomicUsize, Ordering};

/// RPC bodies running now, in place or on the pool.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one body in flight while it lives; says whether that body may run in place.
pub(crate) struct InFlight {
    count: &'static AtomicUsize,
    in_place: bool,
}

impl InFlight {
    /// `short`: the caller's body is one the backend declares short.
    pub(crate) fn enter(short: bool) -> Self {
        Self::enter_on(&IN_FLIGHT, short)
    }

    /// For a short body that ends in a commit it awaits as a task (`rpc_queued`): it runs in
    /// place even while others are in flight, since it does not hold the thread through a sync.
    pub(crate) fn enter_queued(short: bool) -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        InFlight {
            count: &IN_FLIGHT,
            in_place: short && runtime_has_spare_worker(),
        }
    }

    fn enter_on(count: &'static AtomicUsize, short: bool) -> Self {
        let before = count.fetch_add(1, Ordering::AcqRel);
        let in_place = short && before == 0 && runtime_has_spare_worker();
        InFlight { count, in_place }
    }

    pub(crate) fn in_place(&self) -> bool {
        self.in_place
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
    fn only_a_short_body_on_an_idle_two_worker_runtime_runs_in_place() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        runtime(2).block_on(async {
            let first = InFlight::enter_on(&COUNT, true);
            assert!(first.in_place(), "idle server, short body");
            let second = InFlight::enter_on(&COUNT, true);
            assert!(!second.in_place(), "another body is in flight");
            drop(first);
            let third = InFlight::enter_on(&COUNT, true);
            assert!(!third.in_place(), "the pool body still runs");
            drop((second, third));
            assert!(!InFlight::enter_on(&COUNT, false).in_place(), "a long body");
            assert!(InFlight::enter_on(&COUNT, true).in_place(), "idle again");
        });
        assert_eq!(COUNT.load(Ordering::Acquire), 0);
    }

    #[test]
    fn never_in_place_without_a_spare_worker() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        assert!(!InFlight::enter_on(&COUNT, true).in_place(), "no runtime");
        runtime(1).block_on(async {
            assert!(!InFlight::enter_on(&COUNT, true).in_place(), "one worker");
        });
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        current.block_on(async {
            assert!(
                !InFlight::enter_on(&COUNT, true).in_place(),
                "current thread"
            );
        });
    }
}
