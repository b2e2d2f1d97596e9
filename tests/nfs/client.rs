//! The NFS client against a real nfs-ganesha server, over NFSv3 (ganesha serving v3 and v4)
//! and over NFSv4.1 (ganesha serving v4 only, no portmap); every outcome is checked on the
//! exported directory's disk. Each test runs once per version (`client::v3::*`, `client::v41::*`).

use crate::common::ganesha;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovol::nfs::{ClientOptions, FileType, NfsClient, NfsError, NfsStatus, Outcome, SetAttr};
use ganesha::Ganesha;

use crate::common::nfs::Proto;

both_versions!(
    directories_files_and_trees_on_a_real_server,
    hostile_paths_are_rejected_before_any_io,
    unknown_share_is_an_error_naming_the_share,
    identity_from_auth_sys_owns_new_directories,
    concurrent_calls_share_one_client,
    server_restart_is_survived_without_a_new_client,
    silent_server_times_out_while_a_live_server_keeps_answering,
);

fn client(p: Proto, g: &Ganesha, timeout: Duration) -> NfsClient {
    let opts = ClientOptions {
        timeout,
        ..p.opts()
    };
    NfsClient::new("127.0.0.1", &g.share(), opts).unwrap()
}

fn mode(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn directories_files_and_trees_on_a_real_server(p: Proto) {
    let g = p.start();
    let c = client(p, &g, Duration::from_secs(5));
    assert_eq!(c.version().unwrap(), p.version());
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
        e.to_string().contains("127.0.0.1") && e.to_string().contains(p.name("NOENT").as_str()),
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

fn hostile_paths_are_rejected_before_any_io(p: Proto) {
    let g = p.start();
    let c = client(p, &g, Duration::from_secs(5));
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

fn unknown_share_is_an_error_naming_the_share(p: Proto) {
    let g = p.start();
    let c = NfsClient::new("127.0.0.1", "/no/such/export", p.opts()).unwrap();
    // NFSv3 asks MOUNT; NFSv4.1 looks the share up in the server's pseudo-filesystem.
    let op = match p {
        Proto::V3 => "MOUNT MNT",
        Proto::V41 => "LOOKUP",
    };
    match c.lookup("x") {
        Err(NfsError::Status { op: got, path, .. }) => {
            assert_eq!((got.as_str(), path.as_str()), (op, "/no/such/export"))
        }
        other => panic!("{other:?}"),
    }
    drop(g);
    assert!(NfsClient::new("127.0.0.1", "relative", ClientOptions::default()).is_err());
}

fn identity_from_auth_sys_owns_new_directories(p: Proto) {
    let g = p.start();
    fs::create_dir(g.export.join("pub")).unwrap();
    fs::set_permissions(g.export.join("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    let opts = ClientOptions {
        uid: 1500,
        gid: 1600,
        ..p.opts()
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

fn concurrent_calls_share_one_client(p: Proto) {
    let g = p.start();
    let c = Arc::new(client(p, &g, Duration::from_secs(5)));
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

fn server_restart_is_survived_without_a_new_client(p: Proto) {
    let mut g = p.start();
    let deadline = Duration::from_secs(2);
    let c = client(p, &g, deadline);
    // Over NFSv4.1 an open file's state lives in the session the restart loses.
    c.write_file_atomic("rec", b"1").unwrap();
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
    let e = c.lookup("before").unwrap_err();
    match p {
        // The call found no pooled connection and asked portmap, which has no mapping.
        Proto::V3 => assert!(e.to_string().contains("portmap has no TCP mapping"), "{e}"),
        // No portmap: the NFS port itself refuses.
        Proto::V41 => assert!(matches!(e, NfsError::Unavailable { .. }), "{e}"),
    }
    assert!(!g.export.join("during").exists());
    g.resume();
    // The NFSv4.1 client finds its session gone and establishes a new one.
    assert_eq!(c.mkdir("after", 0o755).unwrap(), Outcome::Created);
    assert!(g.export.join("after").is_dir());
    assert!(c.lookup("before").unwrap().is_some());
    c.write_file_atomic("rec", b"2").unwrap();
    assert_eq!(c.read_file("rec").unwrap().unwrap(), b"2");
}

fn silent_server_times_out_while_a_live_server_keeps_answering(p: Proto) {
    let g = p.start();
    let live = Arc::new(client(p, &g, Duration::from_secs(5)));
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
        ..p.opts()
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
                let first = match p {
                    Proto::V3 => "MOUNT MNT",
                    Proto::V41 => "EXCHANGE_ID",
                };
                assert_eq!((server.as_str(), op.as_str()), ("127.0.0.2", first))
            }
            other => panic!("{other}"),
        }
        assert!(
            took >= deadline && took < deadline + Duration::from_millis(500),
            "took {took:?}"
        );
    }
}
