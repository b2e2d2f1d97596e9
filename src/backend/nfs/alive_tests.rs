use super::*;

fn key(name: &str) -> Key {
    ("server".into(), "/share".into(), name.into())
}

#[test]
fn a_copy_shows_life_until_its_record_stands_still_for_the_ttl() {
    let me = Copies::new("host-b /state");
    let t0 = Instant::now();
    let mut beat = Beat::first("host-a /state", "nfs/abc/v");
    beat.beats = 1;
    assert!(me.shows_life(key("snapshot-s"), Some(beat.clone()), t0));
    assert!(me.shows_life(key("snapshot-s"), Some(beat.clone()), t0 + TTL / 2));
    let dead_at = t0 + TTL;
    assert!(!me.shows_life(key("snapshot-s"), Some(beat.clone()), dead_at));
    // Rewritten: alive again, for another TTL from this sighting.
    beat.beats = 2;
    assert!(me.shows_life(key("snapshot-s"), Some(beat.clone()), dead_at));
    // No record, or one of this instance (a process of it that restarted): no one copies.
    assert!(!me.shows_life(key("snapshot-s"), None, dead_at));
    let mine = Beat::first("host-b /state", "nfs/abc/v");
    assert!(!me.shows_life(key("restore-v"), Some(mine), t0));
}

#[test]
fn a_new_copy_of_a_name_is_never_taken_for_an_old_one_seen_long_ago() {
    let me = Copies::new("host-b /state");
    let t0 = Instant::now();
    // A first copy of snapshot s by controller A, seen once; it then fails and its record goes
    // while this process does not look at that name.
    let mut old = Beat::first("host-a /state", "nfs/abc/v");
    old.beats = 1;
    assert!(me.shows_life(key("snapshot-s"), Some(old), t0));
    // Much later A copies s again: its first record must not match the old sighting.
    let mut new = Beat::first("host-a /state", "nfs/abc/v");
    new.beats = 1;
    let later = t0 + 2 * TTL;
    assert!(
        me.shows_life(key("snapshot-s"), Some(new), later),
        "a fresh copy was taken for dead"
    );
}

#[test]
fn a_copy_that_lapsed_never_stands_again() {
    let t0 = Instant::now();
    let mut s = Standing::new(t0);
    assert!(s.since(t0 + VALID / 2).is_none());
    // Its rewrites failed or hung until VALID passed: the lease holder may count it dead.
    assert!(s.since(t0 + VALID).is_some());
    // A rewrite that succeeds later does not bring it back, and none is tried any more.
    s.written(t0 + VALID + RENEW, t0 + VALID + RENEW);
    assert!(
        s.since(t0 + VALID + RENEW).is_some(),
        "a lapsed copy stood again"
    );
    assert!(!s.may_renew(t0 + VALID + RENEW));
}

#[test]
fn a_rewrite_that_took_too_long_does_not_count() {
    let t0 = Instant::now();
    let mut s = Standing::new(t0);
    // Began in time, but landed after another controller may have seen the record stand
    // still for TTL (it began RENEW after the last write, which landed at once).
    let began = t0 + RENEW;
    s.written(began, began + (TTL - VALID));
    assert!(
        s.since(began + Duration::from_secs(1)).is_some(),
        "a write that landed TTL - VALID after it began made the copy stand"
    );
}
