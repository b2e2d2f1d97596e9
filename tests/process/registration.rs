//! The driver registers itself with the kubelet: this test plays the kubelet. It starts the real
//! `ferrovol serve` with a plugins_registry directory, finds the registration socket there the
//! way the kubelet's plugin watcher does, calls the registration API over gRPC on that socket,
//! reports a failed and a successful registration, wipes the socket, stops the driver, and
//! checks the driver's own health endpoint.

use crate::common;

use common::*;
use ferrovol::server::registration::proto::{
    registration_client::RegistrationClient, InfoRequest, RegistrationStatus,
};
use ferrovol::server::Endpoint;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the test waits for something the driver must eventually do.
const PATIENCE: Duration = Duration::from_secs(30);

/// The CSI socket path as the kubelet sees it (the driver's own path is its --endpoint).
const KUBELET_CSI_ENDPOINT: &str = "/var/lib/kubelet/plugins/local.csi.ferrovol.io/csi.sock";

#[tokio::test]
async fn registers_with_the_kubelet_and_keeps_its_socket() {
    let registry_dir = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let mut driver = Driver::builder()
        .arg("--kubelet-registration-dir")
        .arg(registry_dir.path())
        .arg("--kubelet-csi-endpoint")
        .arg(KUBELET_CSI_ENDPOINT)
        .arg(format!("--metrics-address={metrics}"))
        .start()
        .await;

    let socket = wait_for_socket(registry_dir.path(), &driver).await;
    assert_eq!(
        socket.file_name().unwrap().to_string_lossy(),
        "local.csi.ferrovol.io-reg.sock",
        "the socket is named after the driver, like node-driver-registrar's"
    );
    let info = get_info(&socket).await;
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, "local.csi.ferrovol.io");
    assert_eq!(info.endpoint, KUBELET_CSI_ENDPOINT);
    assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);

    // The kubelet refuses the plugin: the gauge says so and the log carries its error.
    notify(&socket, false, "plugin version mismatch: test refusal").await;
    let text = http_get(metrics, "/metrics").await;
    assert!(
        text.contains("\nferrovol_kubelet_registered 0\n"),
        "gauge after a refusal:\n{text}"
    );
    assert!(
        driver
            .log()
            .contains("plugin version mismatch: test refusal"),
        "the kubelet's error is logged:\n{}",
        driver.log()
    );
    notify(&socket, true, "").await;
    let text = http_get(metrics, "/metrics").await;
    assert!(
        text.contains("\nferrovol_kubelet_registered 1\n"),
        "gauge after registration:\n{text}"
    );

    let health = http_get(metrics, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // The kubelet's directory is wiped: the socket comes back and answers.
    std::fs::remove_file(&socket).unwrap();
    let again = wait_for_socket(registry_dir.path(), &driver).await;
    assert_eq!(again, socket);
    assert_eq!(get_info(&socket).await.name, "local.csi.ferrovol.io");
    // The whole directory, too.
    std::fs::remove_dir_all(registry_dir.path()).unwrap();
    assert_eq!(wait_for_socket(registry_dir.path(), &driver).await, socket);
    assert_eq!(get_info(&socket).await.name, "local.csi.ferrovol.io");

    // A stopped driver leaves no socket for the kubelet to call.
    let pid = driver.pid().unwrap() as libc::pid_t;
    // SAFETY: kill only sends a signal to the driver this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = driver.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}\n{}", driver.log());
    assert!(
        !socket.exists(),
        "registration socket left behind after exit:\n{}",
        driver.log()
    );
}

#[tokio::test]
async fn healthz_fails_when_probe_would_fail() {
    let metrics = free_port();
    let driver = Driver::builder()
        .arg(format!("--metrics-address={metrics}"))
        .start()
        .await;
    let health = http_get(metrics, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // The hostpath base is gone: Probe is not ready, and neither is the health endpoint.
    std::fs::remove_dir_all(driver.base()).unwrap();
    let health = http_get(metrics, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains("base path"), "{health}");
}

/// Polls `dir` for a Unix socket, as the kubelet's plugin watcher finds plugins.
async fn wait_for_socket(dir: &Path, driver: &Driver) -> PathBuf {
    let deadline = Instant::now() + PATIENCE;
    loop {
        // The directory may be missing until the driver makes it again.
        let found = std::fs::read_dir(dir).ok().and_then(|mut entries| {
            entries.find_map(|e| {
                let e = e.ok()?;
                e.file_type().ok()?.is_socket().then(|| e.path())
            })
        });
        if let Some(path) = found {
            return path;
        }
        assert!(
            Instant::now() < deadline,
            "no registration socket in {}:\n{}",
            dir.display(),
            driver.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(socket: &Path) -> RegistrationClient<tonic::transport::Channel> {
    let channel = ferrovol::client::connect(&Endpoint::Unix(socket.to_path_buf()))
        .await
        .expect("connect to the registration socket");
    RegistrationClient::new(channel)
}

async fn get_info(socket: &Path) -> ferrovol::server::registration::proto::PluginInfo {
    client(socket)
        .await
        .get_info(InfoRequest {})
        .await
        .expect("GetInfo")
        .into_inner()
}

async fn notify(socket: &Path, registered: bool, error: &str) {
    client(socket)
        .await
        .notify_registration_status(RegistrationStatus {
            plugin_registered: registered,
            error: error.to_string(),
        })
        .await
        .expect("NotifyRegistrationStatus");
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One GET on a new connection: the whole reply, as text.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect to the metrics port");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: driver\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    })
    .await
    .unwrap()
}
