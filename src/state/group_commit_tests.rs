use super::*;
use std::path::Path;
use std::time::Duration;

fn put(key: &str) -> Update {
    Update::Put {
        key: key.to_string(),
        value: b"v".to_vec(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime")
}

fn reopen(dir: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    Journal::open(dir).unwrap().1
}

/// Waits until `cond` holds on the journal's state.
fn until(j: &Journal, cond: impl Fn(&Inner) -> bool) {
    while !cond(&j.lock()) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn tasks_awaiting_commits_share_syncs_and_every_change_lands() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    const TASKS: usize = 16;
    const EACH: usize = 40;
    let before = crate::metrics::commits();
    runtime().block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let j = j.clone();
            set.spawn(async move {
                for i in 0..EACH {
                    let ticket = j.submit(vec![put(&format!("t{t}-{i}"))]).unwrap();
                    j.wait_async(&ticket).await.unwrap();
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    });
    let syncs = crate::metrics::commits() - before;
    // Other tests in this process may commit too; the bound still shows sharing.
    assert!(
        (syncs as usize) < TASKS * EACH,
        "{syncs} syncs for {} commits",
        TASKS * EACH
    );
    assert!(!j.lock().leader_active, "a leader outlived the last batch");
    drop(j);
    assert_eq!(reopen(dir.path()).len(), TASKS * EACH);
}

#[test]
fn tasks_and_threads_waiting_together_are_all_decided() {
    // Threads lead their own batches and hand the next on; tasks start pool leaders. Mixed,
    // nobody may be left waiting for a batch nobody leads.
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    j.commit(vec![put(&format!("thread{t}-{i}"))]).unwrap();
                }
            })
        })
        .collect();
    runtime().block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for t in 0..4 {
            let j = j.clone();
            set.spawn(async move {
                for i in 0..50 {
                    let ticket = j.submit(vec![put(&format!("task{t}-{i}"))]).unwrap();
                    j.wait_async(&ticket).await.unwrap();
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    });
    threads.into_iter().for_each(|h| h.join().unwrap());
    drop(j);
    assert_eq!(reopen(dir.path()).len(), 400);
}

#[test]
fn a_thread_leader_hands_a_batch_only_tasks_wait_for_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let rt = runtime();
    // Stand in for a leader whose sync is in flight, so both changes below queue.
    j.lock().leader_active = true;
    let task = {
        let j = j.clone();
        rt.spawn(async move {
            let ticket = j.submit(vec![put("task")]).unwrap();
            j.wait_async(&ticket).await
        })
    };
    until(&j, |i| i.wakers.len() == 1);
    // A thread's change queued behind it leads the next batch when the stand-in is done.
    let thread = {
        let j = j.clone();
        std::thread::spawn(move || j.commit(vec![put("thread")]))
    };
    until(&j, |i| i.queued_blocking == 1);
    {
        let mut inner = j.lock();
        inner.leader_active = false;
        inner.queue_cv.cv.notify_one();
    }
    thread.join().unwrap().unwrap();
    // The task's change was in the thread's batch, or in one the thread handed to the pool.
    rt.block_on(task).unwrap().unwrap();
    until(&j, |i| !i.leader_active);
    drop(j);
    assert_eq!(reopen(dir.path()).len(), 2);
}

#[test]
fn a_failed_sync_fails_every_task_of_its_batch_and_acknowledges_none() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    j.commit(vec![put("before")]).unwrap();
    let rt = runtime();
    // Queue three tasks' changes behind a stand-in leader, then let its sync fail.
    j.lock().leader_active = true;
    let tasks: Vec<_> = (0..3)
        .map(|t| {
            let j = j.clone();
            rt.spawn(async move {
                let ticket = j.submit(vec![put(&format!("task{t}"))]).unwrap();
                j.wait_async(&ticket).await
            })
        })
        .collect();
    until(&j, |i| i.wakers.len() == 3);
    let wakers = {
        let mut inner = j.lock();
        inner.poisoned = Some(Arc::new(io::Error::other("sync failed: EIO")));
        inner.leader_active = false;
        std::mem::take(&mut inner.wakers)
    };
    // Woken, they find no leader, start one, and that leader fails their batch.
    wakers.into_iter().for_each(|(_, w)| w.wake());
    for t in tasks {
        let err = rt.block_on(t).unwrap().unwrap_err();
        assert!(err.to_string().contains("restart the driver"), "{err}");
    }
    assert!(
        j.submit(vec![put("after")]).is_err(),
        "a poisoned journal took a change"
    );
    drop(j);
    let live = reopen(dir.path());
    assert!(live.contains_key("before"));
    assert_eq!(
        live.len(),
        1,
        "acknowledged after a failed sync: {:?}",
        live.keys()
    );
}

#[test]
fn threads_of_a_full_blocking_pool_never_wait_for_a_leader_that_has_no_thread() {
    // A task starts a leader on the blocking pool while every pool thread is busy; those
    // threads then commit. Were they to wait for the started leader, nothing would ever run it.
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let (open_gate, gate) = std::sync::mpsc::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel::<&str>();
    // The pool's only thread, busy until the gate opens, then committing.
    {
        let (j, done_tx) = (j.clone(), done_tx.clone());
        rt.spawn_blocking(move || {
            gate.recv().unwrap();
            j.commit(vec![put("thread")]).unwrap();
            done_tx.send("thread").unwrap();
        });
    }
    // A task's change starts a leader, which must queue behind that thread.
    {
        let j = j.clone();
        rt.spawn(async move {
            let ticket = j.submit(vec![put("task")]).unwrap();
            j.wait_async(&ticket).await.unwrap();
            done_tx.send("task").unwrap();
        });
    }
    until(&j, |i| i.leader_started);
    open_gate.send(()).unwrap();
    let mut finished: Vec<_> = (0..2)
        .map(|_| {
            done.recv_timeout(Duration::from_secs(10))
                .expect("a commit hung")
        })
        .collect();
    finished.sort();
    assert_eq!(finished, ["task", "thread"]);
    drop(rt);
    drop(j);
    assert_eq!(reopen(dir.path()).len(), 2);
}

#[test]
fn a_waiter_woken_after_many_later_failed_batches_still_sees_its_own_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    // Queued, not yet waited for: its batch is decided by the first failing commit below.
    let early = j.submit(vec![put("early")]).unwrap();
    // A failed write (ENOSPC, EIO) cuts the log back and fails only its batch: the journal
    // keeps taking commits, so any number of later batches can fail before `early` looks.
    crate::failpoint::set_fail_at(Some("journal:write"));
    for i in 0..100 {
        assert!(j.commit(vec![put(&format!("late{i}"))]).is_err());
    }
    crate::failpoint::set_fail_at(None);
    j.commit(vec![put("after")]).unwrap();
    assert!(
        j.wait(early).is_err(),
        "a change whose batch failed was reported committed"
    );
    drop(j);
    let live = reopen(dir.path());
    assert!(!live.contains_key("early"));
    assert!(live.contains_key("after"));
}
