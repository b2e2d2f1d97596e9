//! Long copies in flight in this process: snapshot copies (on threads of their own, outliving
//! the RPC that started them) and restores (in their CreateVolume). Recovery and DeleteVolume
//! consult it so they never remove what a copy here is still writing or reading; `copies` shows
//! these copies to the other controllers on the share (alive.rs).

use super::alive::Copies;
use crate::error::Error;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

enum Job {
    Running {
        cancel: Arc<AtomicBool>,
        source: String,
    },
    /// Kept until the next CreateSnapshot of the name reports it.
    Failed(Error),
}

#[derive(Default)]
pub struct Work {
    pub timeout: Duration,
    pub copies: Arc<Copies>,
    jobs: Mutex<HashMap<String, Job>>,
    changed: Condvar,
    restoring: Mutex<HashSet<String>>,
}

impl Work {
    pub fn new(timeout: Duration, instance: &str) -> Self {
        Work {
            timeout,
            copies: Arc::new(Copies::new(instance)),
            ..Work::default()
        }
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<String, Job>> {
        self.jobs.lock().expect("nfs job map poisoned")
    }

    /// Registers a copy of snapshot `id`; `None` when one already runs.
    pub fn claim(&self, id: &str, source: &str) -> Option<Arc<AtomicBool>> {
        let mut jobs = self.jobs();
        if matches!(jobs.get(id), Some(Job::Running { .. })) {
            return None;
        }
        let (cancel, source) = (Arc::new(AtomicBool::new(false)), source.to_string());
        let job = Job::Running {
            cancel: cancel.clone(),
            source,
        };
        jobs.insert(id.to_string(), job);
        Some(cancel)
    }

    pub fn running(&self, id: &str) -> bool {
        matches!(self.jobs().get(id), Some(Job::Running { .. }))
    }

    /// The copy of `id` ended, with `failure` if it failed (and was not cancelled).
    pub fn finish(&self, id: &str, failure: Option<Error>) {
        let mut jobs = self.jobs();
        let cancelled = matches!(jobs.get(id), Some(Job::Running { cancel, .. }) if cancel.load(Ordering::Relaxed));
        match failure {
            Some(e) if !cancelled => jobs.insert(id.to_string(), Job::Failed(e)),
            _ => jobs.remove(id),
        };
        self.changed.notify_all();
    }

    pub fn take_failure(&self, id: &str) -> Option<Error> {
        let mut jobs = self.jobs();
        match jobs.remove(id) {
            Some(Job::Failed(e)) => Some(e),
            Some(running) => {
                jobs.insert(id.to_string(), running);
                None
            }
            None => None,
        }
    }

    /// Waits until no copy of `id` runs, at most `budget` (None: as long as it takes).
    /// True when none runs.
    pub fn wait(&self, id: &str, budget: Option<Duration>) -> bool {
        let running =
            |jobs: &mut HashMap<String, Job>| matches!(jobs.get(id), Some(Job::Running { .. }));
        let jobs = self.jobs();
        let poisoned = "nfs job map poisoned";
        let mut jobs = match budget {
            None => self.changed.wait_while(jobs, running).expect(poisoned),
            Some(b) => {
                self.changed
                    .wait_timeout_while(jobs, b, running)
                    .expect(poisoned)
                    .0
            }
        };
        !running(&mut jobs)
    }

    pub fn cancel_and_wait(&self, id: &str) {
        if let Some(Job::Running { cancel, .. }) = self.jobs().get(id) {
            cancel.store(true, Ordering::Relaxed);
        }
        self.wait(id, None);
    }

    pub fn copying_from(&self, volume: &str) -> Option<String> {
        self.jobs().iter().find_map(|(id, j)| match j {
            Job::Running { source, .. } if source == volume => Some(id.clone()),
            _ => None,
        })
    }

    /// Runs `f` while volume key `key` is marked as being restored here; `None`, without
    /// running it, when it already is.
    pub fn restoring<R>(&self, key: &str, f: impl FnOnce() -> R) -> Option<R> {
        let set = || self.restoring.lock().expect("nfs restore set poisoned");
        if !set().insert(key.to_string()) {
            return None;
        }
        let res = f();
        set().remove(key);
        Some(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_claim_finish_fail_and_cancel() {
        let w = Arc::new(Work::new(Duration::from_secs(1), "test"));
        let cancel = w.claim("s", "nfs/v").unwrap();
        assert!(w.claim("s", "nfs/v").is_none());
        assert_eq!(w.copying_from("nfs/v").as_deref(), Some("s"));
        assert!(!w.wait("s", Some(Duration::from_millis(10))));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            while !cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            w2.finish("s", Some(Error::Internal("cancelled".into())));
        });
        w.cancel_and_wait("s");
        t.join().unwrap();
        assert!(
            w.take_failure("s").is_none(),
            "a cancelled copy reports no failure"
        );
        w.claim("f", "nfs/v").unwrap();
        w.finish("f", Some(Error::Internal("boom".into())));
        assert!(w.wait("f", None));
        assert!(w.take_failure("f").is_some());
        assert!(w.take_failure("f").is_none());
        assert_eq!(w.restoring("k", || w.restoring("k", || 1)), Some(None));
        assert_eq!(w.restoring("k", || 1), Some(1));
    }
}
