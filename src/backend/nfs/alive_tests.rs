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
