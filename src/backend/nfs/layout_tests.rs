use super::*;
use std::time::Duration;

#[test]
fn a_static_handle_is_never_a_provisioned_volumes_id() {
    for id in ["nfs/static/media", "nfs/static/pvc-1", "nfs/static/a~b"] {
        assert!(is_static_id(id), "{id}");
        assert_eq!(parse_id(id), None, "{id} read as a provisioned id");
        let parsed = crate::volume::VolumeId::parse(id).unwrap().unwrap();
        assert_eq!(
            parsed.backend,
            super::super::BACKEND,
            "{id} reaches the NFS backend"
        );
    }
    // What CreateVolume issues never is one: share keys are 8 hex digits.
    assert!(!is_share_key("static"));
    let issued = share_volume_id(&share_key("srv", "/export"), &volume_key("static"));
    assert!(!is_static_id(&issued), "{issued}");
    assert!(!is_static_id(&volume_id("static")));
    assert!(!is_static_id("nfs/static/"));
    assert!(!is_static_id("nfs/static/a/b"));
}

#[test]
fn short_clean_names_are_their_own_key() {
    let name = "pvc-0b5e2a7c-3f1d-4c55-9a51-6a3c2f1e9d10";
    assert_eq!(volume_key(name), name);
    assert_eq!(parse_volume_id(&volume_id(name)), Some(name));
    assert_eq!(record_path(name), format!(".ferrovol/volumes/{name}.json"));
    assert_eq!(key_of_record_file(&format!("{name}.json")), Some(name));
    assert_eq!(key_of_record_file(".ferrovol-tmp-1-2-3"), None);
}

#[test]
fn long_or_odd_names_are_hashed_into_128_byte_ids() {
    for name in [
        "x".repeat(128),
        "Mixed_Case/../name".into(),
        ".hidden".into(),
        "ü".repeat(80),
        String::new(),
    ] {
        let key = volume_key(&name);
        let id = volume_id(&key);
        assert!(id.len() <= MAX_ID_LEN, "{id}");
        assert!(key.contains('~'), "{key}");
        assert_eq!(parse_volume_id(&id), Some(key.as_str()), "{name:?}");
    }
    assert_ne!(volume_key(&"x".repeat(200)), volume_key(&"x".repeat(201)));
    assert_eq!(volume_key("A"), volume_key("A"), "stable");
}

#[test]
fn foreign_or_hostile_ids_are_not_ours() {
    for id in [
        "hostpath/node/x",
        "nfs/",
        "nfs/../x",
        "nfs/a/b",
        "nfs/.ferrovol",
        "nfs/a\0",
        &format!("nfs/{}", "a".repeat(125)),
    ] {
        assert_eq!(parse_volume_id(id), None, "{id:?}");
    }
}

#[test]
fn ids_name_their_share_and_the_older_form_still_parses() {
    let sk = share_key("10.0.0.5", "/srv/nfs");
    assert!(is_share_key(&sk), "{sk}");
    assert_eq!(sk, share_key("10.0.0.5", "/srv/nfs"), "stable");
    assert_ne!(sk, share_key("10.0.0.5", "/srv/nfs2"));
    assert_ne!(sk, share_key("10.0.0.6", "/srv/nfs"));
    let id = share_volume_id(&sk, "pvc-1");
    assert_eq!(id, format!("nfs/{sk}/pvc-1"));
    assert_eq!(parse_id(&id), Some((Some(sk.as_str()), "pvc-1")));
    assert_eq!(share_key_of(&id), Some(sk.as_str()));
    assert_eq!(parse_id("nfs/pvc-1"), Some((None, "pvc-1")));
    assert_eq!(share_key_of("nfs/pvc-1"), None);
    // Every name's key fits an id that names its share.
    for name in [
        "x".repeat(128),
        "y".repeat(MAX_KEY_LEN),
        "z".repeat(MAX_KEY_LEN + 1),
    ] {
        let id = share_volume_id(&sk, &volume_key(&name));
        assert!(id.len() <= MAX_ID_LEN, "{id}");
        assert_eq!(parse_volume_id(&id), Some(volume_key(&name).as_str()));
    }
    // An id of the older form keeps parsing at its full length.
    let legacy = volume_id(&"k".repeat(MAX_LEGACY_KEY_LEN));
    assert_eq!(parse_id(&legacy).map(|p| p.0), Some(None));
    for id in [
        "nfs/snap/pvc-1",
        "nfs/0123456/pvc-1",
        "nfs/0123456G/pvc-1",
        "nfs/0123ABCD/pvc-1",
        "nfs/01234567/",
        "nfs/01234567/.x",
        "nfs/01234567/a/b",
        &format!("nfs/01234567/{}", "a".repeat(MAX_KEY_LEN + 1)),
    ] {
        assert_eq!(parse_id(id), None, "{id:?}");
    }
}

#[test]
fn archive_names_sit_beside_the_directory() {
    let t = UNIX_EPOCH + Duration::from_secs(1_764_107_174); // 2025-11-25T21:46:14Z
    assert_eq!(utc_timestamp(0), "19700101T000000Z");
    assert_eq!(utc_timestamp(951_782_400), "20000229T000000Z");
    assert_eq!(
        archive_path("ns/data", t, 0),
        "ns/archived-data-20251125T214614Z"
    );
    assert_eq!(
        archive_path("pvc-1", t, 2),
        "archived-pvc-1-20251125T214614Z-2"
    );
    let long = archive_path(&format!("ns/{}", "é".repeat(127)), t, 0);
    let name = long.strip_prefix("ns/").unwrap();
    assert!(
        name.len() <= 255 && name.ends_with("-20251125T214614Z"),
        "{}",
        name.len()
    );
}

#[test]
fn records_round_trip_and_check_their_key() {
    let r = VolumeRecord {
        version: RECORD_VERSION,
        id: volume_id("pvc-1"),
        name: "pvc-1".into(),
        state: RecordState::Ready,
        server: "10.0.0.5".into(),
        share: "/srv/nfs".into(),
        sub_dir: "ns/data".into(),
        on_delete: OnDelete::Archive,
        capacity_bytes: 1 << 30,
        mount_permissions: 0o777,
        uid: None,
        gid: Some(5),
        created_at: 1,
        source: None,
        dir_handle: Some("01ab".into()),
        staging: None,
        staging_handle: None,
        staging_fileid: None,
        nfs_vers: Some("4.1".into()),
    };
    let b = to_bytes(&r);
    assert_eq!(
        VolumeRecord::from_bytes("pvc-1", &b).unwrap().version(),
        Version::V41
    );
    assert!(String::from_utf8_lossy(&b).contains("\"on_delete\": \"archive\""));
    assert_eq!(VolumeRecord::from_bytes("pvc-1", &b).unwrap(), r);
    assert!(VolumeRecord::from_bytes("pvc-2", &b)
        .unwrap_err()
        .contains("not \"nfs/pvc-2\""));
    assert!(VolumeRecord::from_bytes("pvc-1", b"{").is_err());
}

#[test]
fn records_without_a_handle_still_read() {
    // As written before the handle was recorded.
    let old = br#"{"version": 1, "id": "nfs/pvc-1", "name": "pvc-1", "state": "creating",
        "server": "s", "share": "/x", "sub_dir": "ns/data", "on_delete": "delete",
        "capacity_bytes": 1, "mount_permissions": 511, "created_at": 1,
        "staging": ".ferrovol/staging/pvc-1", "staging_fileid": 7}"#;
    let r = VolumeRecord::from_bytes("pvc-1", old).unwrap();
    assert_eq!((&r.dir_handle, &r.staging_handle), (&None, &None));
    assert_eq!(r.staging_fileid, Some(7));
    assert_eq!(
        r.version(),
        Version::V3,
        "records without a version were made over NFSv3"
    );
}

#[test]
fn keys_paths_and_records() {
    let id = SnapshotId::new(super::super::BACKEND, None, "snap-1").unwrap();
    assert_eq!(id.to_string(), "nfs/snap/snap-1");
    assert_eq!(snapshot_id("snap-1"), Some(id.clone()));
    assert_eq!(snapshot_id(".x"), None);
    assert_eq!(key_of_snap_record("snap-1.json"), Some("snap-1"));
    assert_eq!(key_of_snap_record(".ferrovol-tmp-1-2-3"), None);
    assert_eq!(snap_data_path("a"), ".ferrovol/snapshot-data/a");
    let r = SnapshotRecord {
        version: 1,
        id: id.to_string(),
        name: "snap-1".into(),
        state: RecordState::Creating,
        source_volume_id: "nfs/pvc-1".into(),
        source_sub_dir: "pvc-1".into(),
        server: "s".into(),
        share: "/x".into(),
        size_bytes: 1,
        created_at_ms: 2,
        content_bytes: 0,
        source_handle: None,
        nfs_vers: None,
    };
    assert_eq!(r.key(), "snap-1");
    assert_eq!(
        SnapshotRecord::from_bytes("snap-1", &to_bytes(&r)).unwrap(),
        r
    );
    assert!(SnapshotRecord::from_bytes("snap-2", &to_bytes(&r)).is_err());
}
