//! Endpoint hardening, through the real binary and real gRPC: who may connect
//! (TCP on other interfaces, socket and state directory modes) and how big a request may be.

use ferrovol::proto::{controller_client::ControllerClient, identity_client::IdentityClient};
use ferrovol::proto::{CreateVolumeRequest, ProbeRequest};
use ferrovol::server::Endpoint;
use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_ferrovol");

/// A driver process: killed and reaped on drop; stderr goes to `<dir>/driver.log`.
struct Driver {
    child: Child,
    log: PathBuf,
}

impl Driver {
    /// Starts `sh -c 'umask <umask>; exec ferrovol serve --data-dir <dir>/data ARGS'`.
    fn start(dir: &Path, umask: &str, args: &[&str]) -> Driver {
        let log = dir.join("driver.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
            .arg(BIN)
            .args(["serve", "--node-id", "doors", "--data-dir"])
            .arg(dir.join("data"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        Driver {
            child: cmd.spawn().expect("start ferrovol serve"),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connects and probes, retrying until the driver listens (30 s at most).
    async fn connect(&mut self, endpoint: &Endpoint) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ch) = ferrovol::client::connect(endpoint).await {
                if IdentityClient::new(ch.clone())
                    .probe(ProbeRequest {})
                    .await
                    .is_ok()
                {
                    return ch;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("driver exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "driver never answered:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn tcp_on_all_interfaces_is_refused_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("tcp://0.0.0.0:{}", free_port());
    let mut driver = Driver::start(dir.path(), "022", &["--endpoint", &endpoint]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = driver.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "driver kept running:\n{}",
            driver.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = driver.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("refusing to serve the CSI API on tcp://0.0.0.0"),
        "{log}"
    );
    assert!(log.contains("--insecure-remote-endpoint"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_on_all_interfaces_with_the_flag_serves_and_warns_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("tcp://0.0.0.0:{port}");
    let mut driver = Driver::start(
        dir.path(),
        "022",
        &["--endpoint", &listen, "--insecure-remote-endpoint"],
    );
    let endpoint: Endpoint = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    driver.connect(&endpoint).await;
    let log = driver.log();
    assert!(
        log.contains("WARN") && log.contains("serving the CSI API without authentication"),
        "{log}"
    );
    assert!(log.contains("unauthenticated CSI connection"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_0600_and_state_dir_0700_even_with_umask_000() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = Driver::start(dir.path(), "000", &[]);
    let socket = dir.path().join("data/csi.sock");
    driver.connect(&Endpoint::Unix(socket.clone())).await;
    assert!(fs::metadata(&socket).unwrap().file_type().is_socket());
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(&dir.path().join("data/state")), 0o700);
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_group_makes_the_socket_0660_owned_by_that_group() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let state = dir.path().join("elsewhere/state");
    let mut driver = Driver::start(
        dir.path(),
        "000",
        &[
            "--endpoint",
            &endpoint,
            "--socket-group",
            "4242",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    driver.connect(&Endpoint::Unix(socket.clone())).await;
    assert_eq!(mode(&socket), 0o660);
    assert_eq!(fs::metadata(&socket).unwrap().gid(), 4242);
    assert_eq!(mode(&state), 0o700);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused_quickly_without_a_memory_spike() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = Driver::start(dir.path(), "022", &[]);
    let channel = driver
        .connect(&Endpoint::Unix(dir.path().join("data/csi.sock")))
        .await;
    let mut controller = ControllerClient::new(channel);
    let huge_value = CreateVolumeRequest {
        name: "big".into(),
        parameters: [("p".to_string(), "x".repeat(2 << 20))].into(),
        ..Default::default()
    };
    let many_keys = CreateVolumeRequest {
        name: "many".into(),
        parameters: (0..100_000)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect(),
        ..Default::default()
    };
    let before = driver.rss_kib();
    for round in 0..5 {
        for req in [&huge_value, &many_keys] {
            let started = Instant::now();
            let status = controller.create_volume(req.clone()).await.unwrap_err();
            let elapsed = started.elapsed();
            assert!(
                matches!(
                    status.code(),
                    tonic::Code::OutOfRange
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::InvalidArgument
                ),
                "round {round}: {status:?}"
            );
            assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
            if round == 0 {
                eprintln!("{:?} in {elapsed:?}: {}", status.code(), status.message());
            }
        }
    }
    let after = driver.rss_kib();
    eprintln!("driver VmRSS before {before} KiB, after 10 oversized requests {after} KiB");
    assert!(
        after < before + 8 * 1024,
        "VmRSS grew from {before} KiB to {after} KiB"
    );
}
