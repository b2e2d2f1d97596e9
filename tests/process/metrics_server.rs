//! The Prometheus endpoint of the real `ferrovol serve` under clients that hold connections:
//! idle connections beyond the connection cap, a slow-loris header, and a process that runs
//! out of file descriptors. Each test shortens `--metrics-timeout` so the server's own timeout
//! fires within the test; the deadlines below only keep a broken server from hanging the test.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferrovol");

/// How long a test waits for something the server must eventually do.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A driver serving metrics on a loopback port: killed and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `ferrovol serve` with metrics on a free loopback port and `args`; with
    /// `max_files`, the process's RLIMIT_NOFILE is lowered to it before exec.
    fn start(args: &[&str], max_files: Option<u64>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("driver.log");
        let addr = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--node-id", "metrics", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--endpoint")
            .arg(format!("unix://{}", dir.path().join("csi.sock").display()))
            .arg(format!("--metrics-address={addr}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        if let Some(n) = max_files {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut server = Server {
            child: cmd.spawn().expect("start ferrovol serve"),
            addr,
            log,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("driver exited with {status}:\n{}", self.log());
        }
    }

    /// Polls until `GET /metrics` answers 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Ok(reply) = get_metrics(self.addr) {
                assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "metrics never answered:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// A connection that sends nothing, established with the listener (though perhaps not yet
    /// accepted by the server).
    fn idle_connection(&self) -> TcpStream {
        TcpStream::connect(self.addr).expect("connect to the metrics port")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One `GET /metrics` on a new connection: the whole reply, as text.
fn get_metrics(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(HANG_GUARD))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Reads what the server has sent on `s` without waiting: whether it has closed the
/// connection, and the bytes it sent before.
fn closed_by_server(mut s: &TcpStream) -> (bool, Vec<u8>) {
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    (closed, got)
}

/// Waits until the server has closed `s`; returns what it sent before.
fn wait_closed(s: &TcpStream, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + HANG_GUARD;
    let mut sent = Vec::new();
    loop {
        let (closed, got) = closed_by_server(s);
        sent.extend(got);
        if closed {
            return sent;
        }
        assert!(Instant::now() < deadline, "the server never closed {what}");
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_connections_beyond_the_cap_are_closed_and_metrics_answers_a_new_client() {
    const CAP: usize = 2;
    let mut server = Server::start(
        &[
            "--metrics-timeout=1s",
            &format!("--metrics-max-connections={CAP}"),
        ],
        None,
    );
    let idle: Vec<TcpStream> = (0..CAP + 3).map(|_| server.idle_connection()).collect();

    // The new client queues behind every idle connection: with at most CAP connections
    // served at once it is answered only once all but fewer than CAP of them are gone.
    let reply = get_metrics(server.addr).expect("GET /metrics");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("ferrovol_state_commits_total"), "{reply}");
    let still_open = idle.iter().filter(|s| !closed_by_server(s).0).count();
    assert!(
        still_open < CAP,
        "{still_open} of {} idle connections were still open when a new client was answered \
         (at most {CAP} are served at once)",
        CAP + 3
    );
    // And none is kept: each idle connection is closed by the server's timeout.
    for (i, s) in idle.iter().enumerate() {
        let sent = wait_closed(s, &format!("idle connection {i}"));
        let sent = String::from_utf8_lossy(&sent);
        assert!(!sent.contains(" 200 "), "idle connection {i} got {sent}");
    }
    server.assert_running();
}

#[test]
fn a_slow_loris_header_is_cut_off_without_an_answer() {
    let mut server = Server::start(&["--metrics-timeout=1s"], None);
    let mut loris = server.idle_connection();
    loris
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n")
        .unwrap();
    // One more header line now and then, never the blank line that ends the request.
    let deadline = Instant::now() + HANG_GUARD;
    let mut sent_by_server = Vec::new();
    loop {
        let (closed, got) = closed_by_server(&loris);
        sent_by_server.extend(got);
        if closed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow client was never cut off"
        );
        if loris.write_all(b"X-Slow: 1\r\n").is_err() {
            // Reset by the server: it has closed the connection.
            sent_by_server.extend(wait_closed(&loris, "the slow client"));
            break;
        }
        sleep(Duration::from_millis(100));
    }
    let sent = String::from_utf8_lossy(&sent_by_server);
    assert!(
        !sent.contains("HTTP/1.1 200") && !sent.contains("ferrovol_state_commits_total"),
        "the server answered a request whose header never ended:\n{sent}"
    );
    let reply = get_metrics(server.addr).expect("GET /metrics after the slow client");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    server.assert_running();
}

#[test]
fn metrics_keeps_serving_after_running_out_of_file_descriptors() {
    // Few descriptors, a cap above them and a timeout longer than the test needs: the idle
    // connections below use up every descriptor the process has, so accept fails (EMFILE).
    let mut server = Server::start(
        &["--metrics-timeout=10m", "--metrics-max-connections=1000"],
        Some(64),
    );
    let idle: Vec<TcpStream> = (0..100).map(|_| server.idle_connection()).collect();
    let deadline = Instant::now() + HANG_GUARD;
    while !server.log().contains("Too many open files") {
        server.assert_running();
        assert!(
            Instant::now() < deadline,
            "the driver never ran out of descriptors:\n{}",
            server.log()
        );
        sleep(Duration::from_millis(50));
    }
    // Closing them frees the server's descriptors (it sees end of file on each).
    for s in &idle {
        // One the server never accepted may already be reset.
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    drop(idle);
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        match get_metrics(server.addr) {
            Ok(reply) if reply.starts_with("HTTP/1.1 200") => break,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                panic!("the metrics listener is gone:\n{}", server.log())
            }
            _ => {}
        }
        server.assert_running();
        assert!(
            Instant::now() < deadline,
            "metrics never answered again:\n{}",
            server.log()
        );
        sleep(Duration::from_millis(50));
    }
    server.assert_running();
}

/// The series docs/metrics.md lists for `ferrovol serve` (the table of its section "Series of
/// ferrovol serve"), each with whether the table says it is always served (its "served" column
/// reads `always`) rather than only once it has a sample.
fn documented_series() -> BTreeMap<String, bool> {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Series of ferrovol serve"))
        .expect("docs/metrics.md has a section \"Series of ferrovol serve\"");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `ferrovol_"))
        .map(|rest| {
            let name = format!("ferrovol_{}", rest.split('`').next().unwrap());
            (name, rest.contains("| always |"))
        })
        .collect()
}

/// The series names a scrape declares: each `# TYPE` family, counters with the `_total` their
/// samples carry.
fn served_series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| match l.split_once(' ') {
            Some((family, "counter")) => format!("{family}_total"),
            Some((family, _)) => family.to_string(),
            None => l.to_string(),
        })
        .collect()
}

#[test]
fn every_documented_series_is_served_and_every_served_one_documented() {
    let dir = tempfile::tempdir().unwrap();
    let registration = format!("--kubelet-registration-dir={}", dir.path().display());
    let server = Server::start(&[&registration], None);
    let deadline = Instant::now() + HANG_GUARD;
    // The registration gauge appears once the CSI socket is up.
    let reply = loop {
        let reply = get_metrics(server.addr).expect("GET /metrics");
        if reply.contains("ferrovol_kubelet_registered") || Instant::now() > deadline {
            break reply;
        }
        sleep(Duration::from_millis(50));
    };
    assert!(
        reply.contains("application/openmetrics-text"),
        "the content type names the format: {reply}"
    );
    let served = served_series(&reply);
    let documented = documented_series();
    let always: Vec<&String> = documented
        .iter()
        .filter(|(_, a)| **a)
        .map(|(n, _)| n)
        .collect();
    assert!(always.len() >= 4, "{documented:?}");
    let missing: Vec<&&String> = always.iter().filter(|n| !served.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "documented as always served but not served: {missing:?}\n{reply}"
    );
    let undocumented: Vec<&String> = served
        .iter()
        .filter(|n| !documented.contains_key(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented in docs/metrics.md: {undocumented:?}\n{reply}"
    );
}
