//! The NFSv3 client against a real nfs-ganesha server; every outcome is checked on the exported
//! directory's disk.

use crate::common::ganesha;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovol::nfs::{ClientOptions, FileType, NfsClient, NfsError, NfsStatus, Outcome, SetAttr};
use ganesha::Ganesha;

fn client(g: &Ganesha, timeout: Duration) -> NfsClient {
    let opts = ClientOptions {
        timeout,
        ..ClientOptions::default()
    };
    NfsClient::new("127.0.0.1", &g.share(), opts).unwrap()
}

fn mode(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn directories_files_and_trees_on_a_real_server() {
    let g = Ganesha::start();
    let c = client(&g, Duration::from_secs(5));
    let disk = &g.export;

    assert_eq!(c.mkdir("a", 0o750).unwrap(), Outcome::Created);
    assert_eq!(mode(&disk.join("a")), 0o750);
    assert_eq!(c.mkdir("a", 0o700).unwrap(), Outcome::Existed);
    assert_eq!(
        mode(&disk.join("a")),
        0o750,
        "an existing directory keeps its mode"
    );
    assert_eq!(c.mkdir_all("x/y/z", 0o755).unwrap(), Outcome::Created);
    assert!(disk.join("x/y/z").is_dir());
    assert_eq!(c.mkdir_all("x/y/z", 0o755).unwrap(), Outcome::Existed);
    let e = c.mkdir("nope/child", 0o755).unwrap_err();
    assert!(e.is_status(NfsStatus::NOENT), "{e}");
    assert!(
        e.to_string().contains("127.0.0.1") && e.to_string().contains("NFS3ERR_NOENT"),
        "{e}"
    );

    c.write_file_atomic("a/rec.json", b"one").unwrap();
    assert_eq!(fs::read(disk.join("a/rec.json")).unwrap(), b"one");
    c.write_file_atomic("a/rec.json", b"two").unwrap();
    assert_eq!(fs::read(disk.join("a/rec.json")).unwrap(), b"two");
    let names: Vec<_> = fs::read_dir(disk.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["rec.json"], "no temporary file left behind");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.write_file_atomic("big", &big).unwrap();
    assert_eq!(fs::read(disk.join("big")).unwrap(), big);
    assert_eq!(c.read_file("big").unwrap().unwrap(), big);
    assert_eq!(c.read_file("a/rec.json").unwrap().unwrap(), b"two");
    assert_eq!(c.read_file("a/missing").unwrap(), None);
    assert_eq!(c.read_file("missing/deeper").unwrap(), None);
    assert!(c.read_file("a").unwrap_err().is_status(NfsStatus::ISDIR));
    assert!(c
        .mkdir("a/rec.json", 0o755)
        .unwrap_err()
        .is_status(NfsStatus::EXIST));

    assert_eq!(c.create_file("a/claim", b"mine").unwrap(), Outcome::Created);
    assert_eq!(
        c.create_file("a/claim", b"theirs").unwrap(),
        Outcome::Existed
    );
    assert_eq!(fs::read(disk.join("a/claim")).unwrap(), b"mine");

    let a = c.lookup("a").unwrap().unwrap();
    assert_eq!((a.kind, a.mode), (FileType::Directory, 0o750));
    assert_eq!(a.fileid, fs::metadata(disk.join("a")).unwrap().ino());
    assert_eq!(c.lookup("a/missing").unwrap(), None);
    assert!(c.lookup("").unwrap().unwrap().is_dir());
    let mut listing = c.readdir("a").unwrap();
    listing.sort_by(|x, y| x.0.cmp(&y.0));
    let summary: Vec<_> = listing
        .iter()
        .map(|(n, a)| (n.as_str(), a.kind, a.size))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("claim", FileType::Regular, 4),
            ("rec.json", FileType::Regular, 3)
        ]
    );
    let mut root: Vec<_> = c.readdir("").unwrap().into_iter().map(|(n, _)| n).collect();
    root.sort();
    assert_eq!(root, vec!["a", "big", "x"]);

    c.setattr(
        "a",
        SetAttr {
            mode: Some(0o711),
            uid: Some(1234),
            gid: Some(5678),
        },
    )
    .unwrap();
    let m = fs::metadata(disk.join("a")).unwrap();
    assert_eq!(
        (m.permissions().mode() & 0o7777, m.uid(), m.gid()),
        (0o711, 1234, 5678)
    );

    c.rename("a/rec.json", "x/y/rec2.json").unwrap();
    assert!(!disk.join("a/rec.json").exists());
    assert_eq!(fs::read(disk.join("x/y/rec2.json")).unwrap(), b"two");
    assert!(c.remove_file("x/y/rec2.json").unwrap());
    assert!(!c.remove_file("x/y/rec2.json").unwrap());
    assert!(!disk.join("x/y/rec2.json").exists());

    // remove_tree: depth first, removes a symlink itself and never what it points to.
    let outside = g.dir().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"k").unwrap();
    fs::write(disk.join("x/y/z/f"), b"f").unwrap();
    fs::write(disk.join("x/file"), b"f").unwrap();
    symlink(&outside, disk.join("x/y/link-out")).unwrap();
    symlink(disk.join("a"), disk.join("x/link-a")).unwrap();
    assert!(c.remove_tree("x").unwrap());
    assert!(!disk.join("x").exists());
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"k");
    assert!(disk.join("a/claim").exists());
    assert!(!c.remove_tree("x").unwrap());
    assert!(c.remove_tree("big").unwrap(), "a plain file is removed too");

    let st = c.fsstat().unwrap();
    let vfs = nix::sys::statvfs::statvfs(disk.as_path()).unwrap();
    assert_eq!(st.total, vfs.blocks() as u64 * vfs.fragment_size() as u64);
    assert!(
        st.avail <= st.free && st.free <= st.total && st.avail > 0,
        "{st:?}"
    );
}

#[test]
fn hostile_paths_are_rejected_before_any_io() {
    let g = Ganesha::start();
    let c = client(&g, Duration::from_secs(5));
    fs::create_dir(g.export.join("d")).unwrap();
    let before = fs::read_dir(g.dir()).unwrap().count();
    let long = "n".repeat(256);
    for p in [
        "..",
        "../x",
        "d/../../x",
        "/abs",
        "d//e",
        "d/",
        ".",
        "d/./e",
        "a\0b",
        &long,
    ] {
        let t0 = Instant::now();
        for r in [
            c.mkdir(p, 0o755).map(|_| ()),
            c.mkdir_all(p, 0o755).map(|_| ()),
            c.write_file_atomic(p, b"x"),
            c.remove_tree(p).map(|_| ()),
            c.rename("d", p),
            c.read_file(p).map(|_| ()),
        ] {
            assert!(
                matches!(r, Err(NfsError::InvalidPath { .. })),
                "{p:?}: {r:?}"
            );
        }
        assert!(
            t0.elapsed() < Duration::from_millis(50),
            "rejected without a round trip"
        );
    }
    assert!(
        matches!(c.remove_tree(""), Err(NfsError::InvalidPath { .. })),
        "the share root is never removed"
    );
    assert_eq!(fs::read_dir(g.dir()).unwrap().count(), before);
    assert_eq!(fs::read_dir(&g.export).unwrap().count(), 1);
    assert!(g.export.join("d").is_dir());
}

#[test]
fn unknown_share_is_a_mount_error_naming_the_share() {
    let g = Ganesha::start();
    let c = NfsClient::new("127.0.0.1", "/no/such/export", ClientOptions::default()).unwrap();
    match c.lookup("x") {
        Err(NfsError::Status { op, path, .. }) => assert_eq!(
            (op.as_str(), path.as_str()),
            ("MOUNT MNT", "/no/such/export")
        ),
        other => panic!("{other:?}"),
    }
    drop(g);
    assert!(NfsClient::new("127.0.0.1", "relative", ClientOptions::default()).is_err());
}

#[test]
fn identity_from_auth_sys_owns_new_directories() {
    let g = Ganesha::start();
    fs::create_dir(g.export.join("pub")).unwrap();
    fs::set_permissions(g.export.join("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    let opts = ClientOptions {
        uid: 1500,
        gid: 1600,
        ..ClientOptions::default()
    };
    let c = NfsClient::new("127.0.0.1", &g.share(), opts).unwrap();
    c.mkdir("pub/mine", 0o700).unwrap();
    let m = fs::metadata(g.export.join("pub/mine")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1500, 1600));
    let e = c.mkdir("notmine", 0o700).unwrap_err();
    assert!(
        e.is_status(NfsStatus::ACCES),
        "a non-root user may not write the root-owned share root: {e}"
    );
}

#[test]
fn concurrent_calls_share_one_client() {
    let g = Ganesha::start();
    let c = Arc::new(client(&g, Duration::from_secs(5)));
    c.mkdir("v", 0o755).unwrap();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                for j in 0..10 {
                    c.mkdir_all(&format!("v/{i}/{j}"), 0o755).unwrap();
                    c.write_file_atomic(&format!("v/{i}/{j}.json"), format!("{i}-{j}").as_bytes())
                        .unwrap();
                }
                assert!(c.remove_tree(&format!("v/{i}/0")).unwrap());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for i in 0..16 {
        for j in 0..10 {
            assert_eq!(
                fs::read_to_string(g.export.join(format!("v/{i}/{j}.json"))).unwrap(),
                format!("{i}-{j}")
            );
            assert_eq!(g.export.join(format!("v/{i}/{j}")).is_dir(), j != 0);
        }
    }
}

#[test]
fn server_restart_is_survived_without_a_new_client() {
    let mut g = Ganesha::start();
    let deadline = Duration::from_secs(2);
    let c = client(&g, deadline);
    c.mkdir("before", 0o755).unwrap();
    g.stop();
    for _ in 0..2 {
        let t0 = Instant::now();
        let e = c.mkdir("during", 0o755).unwrap_err();
        assert!(
            t0.elapsed() < deadline + Duration::from_millis(500),
            "took {:?}",
            t0.elapsed()
        );
        assert!(
            matches!(
                e,
                NfsError::Unavailable { .. } | NfsError::DeadlineExceeded { .. }
            ),
            "{e}"
        );
        assert!(
            e.is_transient() && e.to_string().contains("127.0.0.1"),
            "{e}"
        );
    }
    // The second call found no pooled connection and asked portmap, which has no mapping.
    let e = c.lookup("before").unwrap_err();
    assert!(e.to_string().contains("portmap has no TCP mapping"), "{e}");
    assert!(!g.export.join("during").exists());
    g.resume();
    assert_eq!(c.mkdir("after", 0o755).unwrap(), Outcome::Created);
    assert!(g.export.join("after").is_dir());
    assert!(c.lookup("before").unwrap().is_some());
}

#[test]
fn silent_server_times_out_while_a_live_server_keeps_answering() {
    let g = Ganesha::start();
    let live = Arc::new(client(&g, Duration::from_secs(5)));
    live.mkdir("live", 0o755).unwrap();

    // 127.0.0.2 accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
            let _ = held.last_mut().unwrap().read(&mut [0u8; 1]).ok();
        }
    });
    let deadline = Duration::from_secs(2);
    let opts = ClientOptions {
        timeout: deadline,
        nfs_port: Some(port),
        mount_port: Some(port),
        ..ClientOptions::default()
    };
    let dead = Arc::new(NfsClient::new("127.0.0.2", "/export", opts).unwrap());
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let dead = dead.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let e = dead.mkdir(&format!("v{i}"), 0o755).unwrap_err();
                (e, t0.elapsed())
            })
        })
        .collect();
    // While four calls hang on the silent server, the live one answers promptly.
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    while t0.elapsed() < deadline - Duration::from_millis(300) {
        let t = Instant::now();
        assert!(live.lookup("live").unwrap().is_some());
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(200),
        "live call took {slowest:?}"
    );
    for h in callers {
        let (e, took) = h.join().unwrap();
        match &e {
            NfsError::DeadlineExceeded { server, op } => {
                assert_eq!((server.as_str(), op.as_str()), ("127.0.0.2", "MOUNT MNT"))
            }
            other => panic!("{other}"),
        }
        assert!(
            took >= deadline && took < deadline + Duration::from_millis(500),
            "took {took:?}"
        );
    }
}
