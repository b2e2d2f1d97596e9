//! What only NFSv4.1 has: the choice of version (`Want::Auto`), handles that differ from
//! NFSv3's, and a server's grace period, which a call meets for at most its deadline.

use crate::common::ganesha::{self, Ganesha};
use crate::common::nfs::Proto;

use std::fs;
use std::time::{Duration, Instant};

use ferrovol::nfs::{ClientOptions, NfsClient, NfsError, Version, Want};

fn opts(want: Want, port: Option<u16>, timeout: Duration) -> ClientOptions {
    ClientOptions {
        version: want,
        nfs_port: port,
        timeout,
        ..ClientOptions::default()
    }
}

#[test]
fn auto_speaks_v41_where_served_and_v3_elsewhere() {
    let t = Duration::from_secs(5);
    let g = Ganesha::start();
    fs::create_dir(g.export.join("d")).unwrap();
    // Nothing listens on 2049: NFSv3 through portmap.
    let auto = NfsClient::new("127.0.0.1", &g.share(), opts(Want::Auto, None, t)).unwrap();
    assert_eq!(auto.version().unwrap(), Version::V3);
    assert!(auto.lookup("d").unwrap().unwrap().is_dir());
    // The same directory has another handle in each version.
    let port = Some(g.nfs_port);
    let v3 = NfsClient::new(
        "127.0.0.1",
        &g.share(),
        opts(Want::Only(Version::V3), port, t),
    );
    let v4 = NfsClient::new(
        "127.0.0.1",
        &g.share(),
        opts(Want::Only(Version::V41), port, t),
    );
    let auto_on_port = NfsClient::new("127.0.0.1", &g.share(), opts(Want::Auto, port, t));
    let (v3, v4) = (v3.unwrap(), v4.unwrap());
    assert_eq!(auto_on_port.unwrap().version().unwrap(), Version::V41);
    let (h3, a3) = v3.handle_of("d").unwrap().unwrap();
    let (h4, a4) = v4.handle_of("d").unwrap().unwrap();
    assert_eq!(a3.fileid, a4.fileid);
    assert_ne!(h3, h4, "NFSv3 and NFSv4 handles of one directory differ");
    // A handle proves nothing to a client of the other version.
    assert_eq!(
        v4.rmdir_if_empty("d", Some(&h3)).unwrap(),
        ferrovol::nfs::Rmdir::Kept
    );
    assert!(g.export.join("d").is_dir());
    drop(g);

    let g = Ganesha::start_v4();
    let auto = NfsClient::new("127.0.0.1", &g.share(), opts(Want::Auto, None, t)).unwrap();
    assert_eq!(auto.version().unwrap(), Version::V41);
    auto.mkdir("v4", 0o755).unwrap();
    assert!(g.export.join("v4").is_dir());
    // A share the pseudo-filesystem does not have is not served over NFSv4.1, and this
    // server has no NFSv3: the error names both.
    let none = NfsClient::new("127.0.0.1", "/no/such", opts(Want::Auto, None, t)).unwrap();
    let e = none.lookup("x").unwrap_err();
    assert!(e.to_string().contains("neither NFSv4.1"), "{e}");
}

#[test]
fn grace_period_is_unavailable_within_the_deadline() {
    let mut g = Ganesha::start_with(ganesha::Config {
        v4_only: true,
        grace: Some((20, 10)),
        both_on_2049: false,
    });
    let deadline = Duration::from_secs(2);
    let share = g.share();
    let v41 = Proto::V41.opts().version;
    let client = |t| NfsClient::new("127.0.0.1", &share, opts(v41, None, t)).unwrap();
    // A client with open state the server records, kept alive (not reclaiming) over the
    // restart, so the server keeps its grace period for it.
    let first = client(Duration::from_secs(30));
    first.write_file_atomic("before", b"1").unwrap();
    g.stop();
    g.resume();
    let c = client(deadline);
    let t0 = Instant::now();
    let e = c.write_file_atomic("during", b"2").unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(&e, NfsError::Unavailable { cause, .. } if cause.contains("NFS4ERR_GRACE")),
        "{e}"
    );
    assert!(e.is_transient());
    assert!(
        took < deadline + Duration::from_millis(500),
        "took {took:?}"
    );
    assert!(!g.export.join("during").exists());
    // Records are read through OPEN too: refused or answered, never past the deadline.
    let t0 = Instant::now();
    let _ = c.read_file("before");
    assert!(t0.elapsed() < deadline + Duration::from_millis(500));
    // Once the grace period ends the same client succeeds.
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        match c.write_file_atomic("during", b"2") {
            Ok(()) => break,
            Err(e) if e.is_transient() && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(fs::read(g.export.join("during")).unwrap(), b"2");
    drop(first);
}
