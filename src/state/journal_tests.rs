use super::*;
use crate::state::frame::encode;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Barrier;

fn put(key: &str, value: &str) -> Update {
    Update::Put {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
    }
}

fn del(key: &str) -> Update {
    Update::Delete {
        key: key.to_string(),
    }
}

fn reopen(dir: &Path) -> HashMap<String, Vec<u8>> {
    Journal::open(dir).unwrap().1
}

#[test]
fn replays_puts_and_deletes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (j, live) = Journal::open(dir.path()).unwrap();
    assert!(live.is_empty());
    j.commit(vec![put("a", "1"), put("b", "2")]).unwrap();
    j.commit(vec![put("a", "3"), del("b")]).unwrap();
    drop(j);
    let live = reopen(dir.path());
    assert_eq!(live.len(), 1);
    assert_eq!(live["a"], b"3");
}

#[test]
fn commits_after_a_reopen_append_to_the_log() {
    // Each open must add to what the earlier opens committed, never write over it.
    let dir = tempfile::tempdir().unwrap();
    for (i, key) in ["first", "second", "third"].iter().enumerate() {
        let (j, live) = Journal::open(dir.path()).unwrap();
        assert_eq!(live.len(), i, "records before open {i}: {:?}", live.keys());
        j.commit(vec![put(key, "v")]).unwrap();
    }
    let live = reopen(dir.path());
    let mut keys: Vec<_> = live.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["first", "second", "third"]);
}

#[test]
fn store_id_is_stable_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let first = Journal::open(dir.path()).unwrap().0.store_id().to_string();
    let second = Journal::open(dir.path()).unwrap().0.store_id().to_string();
    assert_eq!(first.len(), 32);
    assert_eq!(first, second);
}

/// Where each frame of `bytes` starts, and where the frames end (a zero length follows).
fn frame_starts(bytes: &[u8]) -> (Vec<usize>, usize) {
    let mut starts = Vec::new();
    let mut pos = 0;
    loop {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            return (starts, pos);
        }
        starts.push(pos);
        pos += 8 + len;
    }
}

/// Where the frames of log `gen` end.
fn frames_end(dir: &Path, gen: u64) -> usize {
    frame_starts(&fs::read(log_path(dir, gen)).unwrap()).1
}

/// Whether everything in `log` from `from` on is batches that hold no record (each open of
/// the journal commits one) followed by zeros: what was there before was zeroed.
fn only_empty_batches_after(log: &Path, from: usize) -> bool {
    let bytes = fs::read(log).unwrap();
    let (_, end) = frame_starts(&bytes);
    let (updates, _) = {
        let scan = super::super::frame::scan(&bytes[from..end], true);
        (scan.updates, scan.end)
    };
    updates
        .iter()
        .all(|u| matches!(u, Update::Put { key, .. } if key == super::super::frame::SEQ_KEY))
        && bytes[end..].iter().all(|b| *b == 0)
}

#[test]
fn a_torn_tail_is_zeroed_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    j.commit(vec![put("kept", "yes")]).unwrap();
    drop(j);
    let log = log_path(dir.path(), 0);
    let end = frames_end(dir.path(), 0);
    // A torn batch, as a power cut in the middle of a write leaves it: the sector holding the
    // start of its first frame never reached the disk (it keeps its zeros), the next one did,
    // with the batch's second frame whole.
    let mut torn = Vec::new();
    encode(&put("torn", &"x".repeat(600)), &mut torn);
    let first_len = torn.len();
    encode(&put("later", "never acknowledged"), &mut torn);
    let lost = 512 - end;
    assert!(lost < first_len);
    torn[..lost].fill(0);
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.write_all_at(&torn, end as u64).unwrap();
    drop(f);
    let (j, live) = Journal::open(dir.path()).unwrap();
    assert_eq!(live.keys().collect::<Vec<_>>(), vec!["kept"]);
    assert_eq!(j.damage(), None, "a torn tail is no damage");
    let bytes = fs::read(&log).unwrap();
    drop(bytes);
    assert!(
        only_empty_batches_after(&log, end),
        "the torn batch is zeroed"
    );
    // A frame as long as the torn one's first, written where it began, must not revive the
    // torn batch's whole second frame.
    j.commit(vec![put("toRN", &"y".repeat(600))]).unwrap();
    drop(j);
    let live = reopen(dir.path());
    let mut keys: Vec<_> = live.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["kept", "toRN"]);
}

#[test]
fn a_batch_whose_later_sectors_never_reached_the_disk_is_a_torn_tail() {
    // The common torn write: the batch's first sectors are on disk, the rest still zeros.
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    j.commit(vec![put("kept", "yes")]).unwrap();
    drop(j);
    let log = log_path(dir.path(), 0);
    let end = frames_end(dir.path(), 0);
    let mut torn = Vec::new();
    encode(&put("torn", &"x".repeat(3000)), &mut torn);
    let written = 1024 - end;
    torn.truncate(written);
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.write_all_at(&torn, end as u64).unwrap();
    drop(f);
    let (j, live) = Journal::open(dir.path()).unwrap();
    assert_eq!(live.keys().collect::<Vec<_>>(), vec!["kept"]);
    assert_eq!(j.damage(), None, "a torn tail is no damage");
    assert!(
        only_empty_batches_after(&log, end),
        "the torn batch is zeroed"
    );
}

#[test]
fn logs_are_zero_filled_ahead_and_switch_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    for name in [log_path(dir.path(), 0), log_path(dir.path(), 1)] {
        assert_eq!(fs::metadata(&name).unwrap().len(), LOG_PREALLOC);
    }
    // Overwrite the same few keys (so no compaction is due) until the first log is full.
    let value = "v".repeat(4000);
    let per_frame = 4000 + 16;
    let n = LOG_PREALLOC as usize / per_frame + 2;
    for i in 0..n {
        j.commit(vec![put(&format!("k{}", i % 4), &value)]).unwrap();
    }
    j.wait_compaction();
    assert!(j.lock().gen >= 1, "switched to the spare when full");
    assert_eq!(j.lock().snap_gen, 0, "no snapshot was due");
    assert!(
        log_path(dir.path(), j.lock().gen + 1).exists(),
        "a new spare"
    );
    drop(j);
    let live = reopen(dir.path());
    assert_eq!(live.len(), 4);
}

#[test]
fn a_damaged_frame_before_acknowledged_ones_is_stepped_over_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    j.commit(vec![put("a", "1")]).unwrap();
    j.commit(vec![put("b", "2")]).unwrap();
    j.commit(vec![put("c", "3")]).unwrap();
    drop(j);
    let log = log_path(dir.path(), 0);
    let mut bytes = fs::read(&log).unwrap();
    // A flipped bit in the payload of the frame of "a" (after the batch that opened the
    // journal): later batches prove it was synced.
    let a = frame_starts(&bytes).0[1];
    bytes[a + 8 + 6] ^= 0x01;
    fs::write(&log, &bytes).unwrap();
    let (j, live) = Journal::open(dir.path()).unwrap();
    assert!(!live.contains_key("a"), "a damaged frame is no record");
    assert_eq!(
        (live.get("b"), live.get("c")),
        (Some(&b"2".to_vec()), Some(&b"3".to_vec()))
    );
    let damage = j.damage().expect("the damage is recorded");
    // Batches: the first open, a, b, c.
    assert_eq!(
        damage.through, 4,
        "changes up to the journal's end may be lost"
    );
    assert!(damage.found[0].contains("journal.0.log"), "{damage:?}");
    assert_eq!(
        fs::read(dir.path().join("journal.0.log.damaged")).unwrap(),
        bytes
    );
    // Appends go after the intact frames; the record of the damage survives restarts.
    j.commit(vec![put("d", "4")]).unwrap();
    drop(j);
    let (j, live) = Journal::open(dir.path()).unwrap();
    assert_eq!(live.len(), 3);
    assert_eq!(j.damage().map(|d| d.through), Some(4));
}

#[test]
fn a_sector_of_zeros_before_later_batches_is_damage_not_a_torn_write() {
    // Zeros look like a write that never reached the disk, but batches after them were written
    // only once the batch they belong to was synced.
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    for i in 0..40 {
        j.commit(vec![put(&format!("k{i}"), "some value")]).unwrap();
    }
    drop(j);
    let log = log_path(dir.path(), 0);
    assert!(frames_end(dir.path(), 0) > 1024);
    let mut bytes = fs::read(&log).unwrap();
    bytes[100..512].fill(0);
    fs::write(&log, &bytes).unwrap();
    let (j, live) = Journal::open(dir.path()).unwrap();
    assert!(
        j.damage().is_some(),
        "the lost sector is recorded as damage"
    );
    assert!(live.contains_key("k0") && live.contains_key("k39"));
    assert!(live.len() < 40, "the frames of the lost sector are gone");
}

#[test]
fn a_flipped_bit_in_the_last_batch_is_damage_not_a_torn_write() {
    // A torn write leaves a sector of zeros; a frame with none that fails its check was
    // written whole and changed afterwards: acknowledged, so not cut silently.
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    j.commit(vec![put("a", "1")]).unwrap();
    j.commit(vec![put("b", "2")]).unwrap();
    drop(j);
    let log = log_path(dir.path(), 0);
    let end = frames_end(dir.path(), 0);
    let mut bytes = fs::read(&log).unwrap();
    bytes[end - 1] ^= 0x40;
    fs::write(&log, &bytes).unwrap();
    let (j, live) = Journal::open(dir.path()).unwrap();
    assert!(live.contains_key("a") && live.contains_key("b"));
    assert!(j.damage().is_some(), "the damage is recorded");
    assert_eq!(
        &fs::read(&log).unwrap()[..end],
        &bytes[..end],
        "nothing was cut"
    );
}

#[test]
fn concurrent_commits_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    const THREADS: usize = 16;
    const EACH: usize = 50;
    let barrier = Arc::new(Barrier::new(THREADS));
    let before = crate::metrics::commits();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (j, barrier) = (j.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..EACH {
                    j.commit(vec![put(&format!("t{t}-{i}"), "v")]).unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let syncs = crate::metrics::commits() - before;
    // Other tests in this process may commit too; the bound still shows sharing.
    assert!(
        (syncs as usize) < THREADS * EACH,
        "{syncs} syncs for {} commits",
        THREADS * EACH
    );
    drop(j);
    assert_eq!(reopen(dir.path()).len(), THREADS * EACH);
}

#[test]
fn compaction_keeps_exactly_the_live_records() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let rounds = 2 * COMPACT_SLACK;
    for i in 0..rounds {
        j.commit(vec![put("churn", &i.to_string())]).unwrap();
        if i % 7 == 0 {
            j.commit(vec![put(&format!("keep{i}"), "k")]).unwrap();
        }
    }
    // Each commit is its record's frame and its batch's closing frame.
    let frames_written = 2 * (rounds + rounds.div_ceil(7));
    j.wait_compaction();
    assert!(
        j.frames_in_log() < frames_written / 2,
        "{} frames in the log after {frames_written} commits",
        j.frames_in_log()
    );
    let expected: usize = 1 + (0..rounds).filter(|i| i % 7 == 0).count();
    drop(j);
    let live = reopen(dir.path());
    assert_eq!(live.len(), expected);
    assert_eq!(live["churn"], (rounds - 1).to_string().as_bytes());
    let files: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("journal."))
        .collect();
    // The snapshot, the log appended to, and the next log made ahead of use (reopening keeps
    // that one as the spare rather than making another).
    assert_eq!(files.len(), 3, "one snapshot and two logs: {files:?}");
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".snap")).count(),
        1,
        "{files:?}"
    );
}

#[test]
fn compaction_syncs_are_not_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let background = crate::metrics::background_syncs();
    for i in 0..COMPACT_SLACK + 8 {
        j.commit(vec![put("k", &i.to_string())]).unwrap();
    }
    j.wait_compaction();
    // Other tests in this process compact too, so only the lower bound is exact.
    assert!(crate::metrics::background_syncs() >= background + 2);
    assert!(j.lock().snap_gen >= 1, "compacted into a snapshot");
}

#[test]
fn logs_after_the_snapshot_replay_in_order_and_an_empty_newest_stays_the_spare() {
    // A compaction that crashed before its snapshot leaves several logs after the old one (and
    // an empty log made ahead of use): they replay in order.
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    j.commit(vec![put("a", "1"), put("b", "1")]).unwrap();
    drop(j);
    let mut second = Vec::new();
    encode(&put("a", "2"), &mut second);
    encode(&del("b"), &mut second);
    fs::write(log_path(dir.path(), 1), &second).unwrap();
    fs::write(log_path(dir.path(), 2), b"").unwrap();
    let (j, live) = Journal::open(dir.path()).unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live["a"], b"2");
    j.commit(vec![put("c", "3")]).unwrap();
    drop(j);
    let frames_in = |g| {
        files::replay(&log_path(dir.path(), g), true, &mut Records::new())
            .unwrap()
            .frames
    };
    assert_eq!(
        frames_in(1),
        5,
        "appended to the last log that holds frames (the open's closing frame, a record and its closing frame)"
    );
    assert_eq!(frames_in(2), 0, "the spare stays empty");
    assert!(!log_path(dir.path(), 3).exists());
    let live = reopen(dir.path());
    assert_eq!(live.len(), 2);
    assert_eq!(live["c"], b"3");
}

#[test]
fn commits_during_a_compaction_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let total = 3 * COMPACT_SLACK;
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in (t..total).step_by(4) {
                    j.commit(vec![put(&format!("k{}", i % 1000), &i.to_string())])
                        .unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    j.wait_compaction();
    let expected = peek(dir.path()).unwrap();
    drop(j);
    let live = reopen(dir.path());
    assert_eq!(live.len(), 1000);
    assert_eq!(live, expected);
}

#[test]
fn a_failed_sync_acknowledges_nothing_and_poisons_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    j.commit(vec![put("before", "1")]).unwrap();
    crate::failpoint::set_fail_at(Some("journal:sync"));
    let err = j.commit(vec![put("lost", "1")]).unwrap_err();
    crate::failpoint::set_fail_at(None);
    assert!(err.to_string().contains("journal:sync"), "{err}");
    let again = j.commit(vec![put("after", "1")]).unwrap_err();
    assert!(again.to_string().contains("restart the driver"), "{again}");
    assert!(j.check_writable().is_err());
    drop(j);
    let live = reopen(dir.path());
    assert!(live.contains_key("before"));
    assert!(!live.contains_key("lost"));
    assert!(!live.contains_key("after"));
}

#[test]
fn a_batch_queued_before_a_failed_sync_fails_too() {
    // A later sync that succeeds says nothing about the pages the failed one lost: callers that
    // queued while the failing batch was in flight are not acknowledged either.
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    j.commit(vec![put("before", "1")]).unwrap();
    // Stand in for a leader whose write and sync are in flight.
    j.lock().leader_active = true;
    let queued = {
        let j = j.clone();
        std::thread::spawn(move || j.commit(vec![put("queued", "1")]))
    };
    while j.lock().queued_frames == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // That leader's sync fails: it poisons the journal and hands the next batch on.
    {
        let mut inner = j.lock();
        inner.poisoned = Some(Arc::new(std::io::Error::other("sync failed: EIO")));
        inner.leader_active = false;
        inner.queue_cv.cv.notify_one();
    }
    let err = queued.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("restart the driver"), "{err}");
    drop(j);
    let live = reopen(dir.path());
    assert!(live.contains_key("before"));
    assert!(
        !live.contains_key("queued"),
        "a batch after a failed sync was acknowledged"
    );
}
