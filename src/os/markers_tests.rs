use super::*;

/// The store id recorded on `path`, or None.
fn store_marker(path: &Path) -> io::Result<Option<String>> {
    read_marker(path, STORE_MARKER, |m| m.store)
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `trusted.` xattrs need CAP_SYS_ADMIN; the tests that write them run as root (as CI does).
fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn one_xattr_carries_all_three_markers() {
    if !root() {
        return;
    }
    let d = dir();
    set_markers(d.path(), "hostpath/n1/pvc-a", "store1", Some("00ff"), 7).unwrap();
    assert_eq!(
        owner_marker(d.path()).unwrap().as_deref(),
        Some("hostpath/n1/pvc-a")
    );
    assert_eq!(store_marker(d.path()).unwrap().as_deref(), Some("store1"));
    assert_eq!(
        incarnation_marker(d.path()).unwrap().as_deref(),
        Some("00ff")
    );
    assert!(
        get_xattr(d.path(), MARKER).unwrap().is_none(),
        "wrote the old form too"
    );
    // Without an incarnation (snapshots), and marking again replaces everything.
    set_markers(d.path(), "hostpath/n1/pvc-b", "store2", None, 8).unwrap();
    assert_eq!(
        owner_marker(d.path()).unwrap().as_deref(),
        Some("hostpath/n1/pvc-b")
    );
    assert_eq!(store_marker(d.path()).unwrap().as_deref(), Some("store2"));
    assert_eq!(incarnation_marker(d.path()).unwrap(), None);
}

#[test]
fn directories_marked_before_0_3_read_and_change_in_their_own_form() {
    if !root() {
        return;
    }
    let d = dir();
    assert_eq!(owner_marker(d.path()).unwrap(), None, "unmarked");
    set_xattr(d.path(), MARKER, "hostpath/n1/old").unwrap();
    set_xattr(d.path(), STORE_MARKER, "store0").unwrap();
    assert_eq!(
        owner_marker(d.path()).unwrap().as_deref(),
        Some("hostpath/n1/old")
    );
    assert_eq!(store_marker(d.path()).unwrap().as_deref(), Some("store0"));
    assert_eq!(incarnation_marker(d.path()).unwrap(), None);
    // Adoption re-marks the store in place, without inventing the one-xattr form.
    set_store_marker(d.path(), "store1").unwrap();
    assert_eq!(store_marker(d.path()).unwrap().as_deref(), Some("store1"));
    assert!(get_xattr(d.path(), MARKERS).unwrap().is_none());
}

#[test]
fn a_single_marker_change_keeps_the_others_of_the_one_xattr_form() {
    if !root() {
        return;
    }
    let d = dir();
    set_markers(d.path(), "hostpath/n1/src", "store1", Some("aa"), 1).unwrap();
    set_owner_marker(d.path(), "hostpath/n1/clone").unwrap();
    assert_eq!(
        owner_marker(d.path()).unwrap().as_deref(),
        Some("hostpath/n1/clone")
    );
    assert_eq!(store_marker(d.path()).unwrap().as_deref(), Some("store1"));
    assert_eq!(incarnation_marker(d.path()).unwrap().as_deref(), Some("aa"));
    assert!(get_xattr(d.path(), MARKER).unwrap().is_none());
}

#[test]
fn an_unreadable_one_xattr_marker_is_an_error_not_an_absent_one() {
    // Read as "unmarked", a damaged marker could make an owned directory look foreign, or the
    // reverse; recovery must see the error and leave the directory alone.
    for raw in ["", "v2\0id\0s\0i", "v1", "v1\0\0store\0inc"] {
        assert!(Markers::decode(raw).is_err(), "{raw:?} decoded");
    }
    let m = Markers::decode("v1\0hostpath/n1/x\0\0").unwrap();
    assert_eq!(m.volume, "hostpath/n1/x");
    assert_eq!((m.store, m.incarnation, m.seq), (None, None, None));
}

#[test]
fn markers_without_a_sequence_number_still_read() {
    // Written before markers carried the journal's sequence number: four fields.
    let old = Markers::decode("v1\0hostpath/n1/x\0store1\0inc").unwrap();
    assert_eq!(old.incarnation.as_deref(), Some("inc"));
    assert_eq!(old.seq, None);
    let new = Markers::decode("v1\0hostpath/n1/x\0store1\0inc\x0012").unwrap();
    assert_eq!(
        (new.incarnation.as_deref(), new.seq),
        (Some("inc"), Some(12))
    );
    // A reader that knows only four fields reads the same four from the new form.
    let mut parts = new
        .encode()
        .split('\0')
        .map(str::to_string)
        .collect::<Vec<_>>();
    parts.truncate(4);
    assert_eq!(
        Markers::decode(&parts.join("\0")).unwrap().incarnation,
        new.incarnation
    );
}

#[test]
fn all_markers_read_at_once_in_either_form() {
    if !root() {
        return;
    }
    let new = dir();
    assert_eq!(read_markers(new.path()).unwrap(), None, "unmarked");
    set_markers(new.path(), "hostpath/n1/a", "store1", Some("0a"), 42).unwrap();
    assert_eq!(
        read_markers(new.path()).unwrap(),
        Some(Markers {
            volume: "hostpath/n1/a".into(),
            store: Some("store1".into()),
            incarnation: Some("0a".into()),
            seq: Some(42),
        })
    );
    let old = dir();
    set_xattr(old.path(), STORE_MARKER, "store0").unwrap();
    assert_eq!(
        read_markers(old.path()).unwrap(),
        None,
        "a store marker without a volume marker owns nothing"
    );
    set_xattr(old.path(), MARKER, "hostpath/n1/old").unwrap();
    assert_eq!(
        read_markers(old.path()).unwrap(),
        Some(Markers {
            volume: "hostpath/n1/old".into(),
            store: Some("store0".into()),
            incarnation: None,
            seq: None,
        })
    );
}
