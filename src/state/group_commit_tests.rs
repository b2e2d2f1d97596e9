use super::*;
use std::path::Path;

fn put(key: &str) -> Update {
    Update::Put {
        key: key.to_string(),
        value: b"v".to_vec(),
    }
}

fn reopen(dir: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    Journal::open(dir).unwrap().1
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
