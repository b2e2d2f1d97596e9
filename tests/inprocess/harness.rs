//! A real tonic server of the CSI services on a Unix socket in a temporary directory, over fake
//! backends, with real gRPC clients; plus the row type of the tables and request builders.

/// The publish roots of the in-process driver: every staging and target path of the tables.
pub const PUBLISH_ROOTS: &[&str] = &["/var/lib/kubelet", "/pods", "/no", "/dev"];

use crate::fake_backend::FakeBackend;
use ferrovol::backend::registry::DriverKind;
use ferrovol::backend::Backend;
use ferrovol::csi::Driver;
use ferrovol::proto as csi;
use ferrovol::server::{Endpoint, EndpointSecurity, Role};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{oneshot, RwLock, RwLockReadGuard};
use tonic::transport::Channel;
use tonic::{Code, Status};

use csi::controller_client::ControllerClient;
use csi::identity_client::IdentityClient;
use csi::node_client::NodeClient;
use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};

pub const NODE: &str = "node-1";

/// Metrics and logs are per process. Table tests hold this shared; the test that counts metric
/// and log lines holds it exclusively, so its counts are exact.
pub fn process_lock() -> &'static RwLock<()> {
    static LOCK: OnceLock<RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(|| RwLock::new(()))
}

/// The JSON log lines the driver wrote in this process (one subscriber for the whole binary).
pub fn log_lines() -> Vec<String> {
    let text = String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned();
    text.lines().map(str::to_string).collect()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        // The driver logs through `tracing`; capture it as serve.rs formats it (JSON lines).
        let _ = tracing_subscriber::fmt()
            .json()
            .with_writer(move || SharedWriter(sink.clone()))
            .try_init();
        buf
    })
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One driver process, in-process: the services over `backends`, served on a Unix socket.
pub struct Served {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
    pub backends: Vec<Arc<FakeBackend>>,
    /// Shared hold on `process_lock`; None when the caller holds it exclusively.
    _guard: Option<RwLockReadGuard<'static, ()>>,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Served {
    pub async fn start(kind: DriverKind, max_per_node: i64, backends: Vec<FakeBackend>) -> Self {
        let guard = process_lock().read().await;
        Self::start_holding(Some(guard), kind, max_per_node, backends).await
    }

    /// Like `start`, for a caller that already holds the process lock (exclusively).
    pub async fn start_locked(
        kind: DriverKind,
        max_per_node: i64,
        backends: Vec<FakeBackend>,
    ) -> Self {
        Self::start_holding(None, kind, max_per_node, backends).await
    }

    async fn start_holding(
        guard: Option<RwLockReadGuard<'static, ()>>,
        kind: DriverKind,
        max_per_node: i64,
        backends: Vec<FakeBackend>,
    ) -> Self {
        log_buffer();
        let dir = tempfile::tempdir().expect("temp dir for the socket");
        let socket = dir.path().join("csi.sock");
        let backends: Vec<Arc<FakeBackend>> = backends.into_iter().map(Arc::new).collect();
        let dyns: Vec<Arc<dyn Backend>> = backends
            .iter()
            .map(|b| b.clone() as Arc<dyn Backend>)
            .collect();
        let driver = Arc::new(Driver::new(
            kind,
            NODE.into(),
            max_per_node,
            dyns,
            ferrovol::os::beneath::PublishRoots::new(
                PUBLISH_ROOTS.iter().map(std::path::PathBuf::from).collect(),
            )
            .expect("valid publish roots"),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let endpoint = Endpoint::Unix(socket.clone());
        let (ready_tx, ready_rx) = oneshot::channel::<String>();
        tokio::spawn(async move {
            let roles = [Role::Controller, Role::Node];
            let result = ferrovol::server::serve(
                &endpoint,
                driver,
                &roles,
                &EndpointSecurity::default(),
                async {
                    let _ = stopped.await;
                },
            )
            .await;
            if let Err(e) = result {
                let _ = ready_tx.send(e.to_string());
            }
        });
        let channel = connect(&socket, ready_rx).await;
        Served {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
            backends,
            _guard: guard,
            stop: Some(stop),
            _dir: dir,
        }
    }

    pub fn backend(&self, name: &str) -> &FakeBackend {
        self.backends
            .iter()
            .find(|b: &&Arc<FakeBackend>| ferrovol::backend::Backend::name(b.as_ref()) == name)
            .unwrap_or_else(|| panic!("no fake backend {name}"))
    }

    /// Creates a mount volume `name` on `backend` (SINGLE_NODE_WRITER) and returns its id.
    pub async fn create(&mut self, backend: &str, name: &str) -> String {
        let req = create_req(name, backend, vec![mount_cap(Mode::SingleNodeWriter)]);
        self.controller
            .create_volume(req)
            .await
            .unwrap_or_else(|s| panic!("creating {name} on {backend}: {s:?}"))
            .into_inner()
            .volume
            .expect("CreateVolume answers a volume")
            .volume_id
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Connects once the socket accepts; a server that failed to start fails the test with its error.
async fn connect(socket: &std::path::Path, mut failed: oneshot::Receiver<String>) -> Channel {
    let endpoint = Endpoint::Unix(socket.to_path_buf());
    for _ in 0..500 {
        if let Ok(err) = failed.try_recv() {
            panic!("the CSI server did not start: {err}");
        }
        if socket.exists() {
            if let Ok(ch) = ferrovol::client::connect(&endpoint).await {
                return ch;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no CSI server on {} after 5 s", socket.display());
}

/// One row of a table: what is sent, the code expected, and text the message must contain.
pub struct Row<C> {
    pub name: &'static str,
    pub call: C,
    pub code: Code,
    pub msg: &'static str,
}

pub fn row<C>(name: &'static str, call: C, code: Code, msg: &'static str) -> Row<C> {
    Row {
        name,
        call,
        code,
        msg,
    }
}

/// Checks one answer against its row; returns a description of the mismatch, if any.
pub fn check<T>(
    service: &str,
    r: &Row<impl std::fmt::Debug>,
    got: Result<T, Status>,
) -> Option<String> {
    let (code, msg) = match &got {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    };
    if code == r.code && msg.contains(r.msg) {
        None
    } else {
        Some(format!(
            "{service} row {:?}: want {:?} containing {:?}, got {code:?} {msg:?}\n  request: {:?}",
            r.name, r.code, r.msg, r.call
        ))
    }
}

/// Panics with every failed row at once, so one run shows the whole picture.
pub fn report(service: &str, failures: Vec<String>, total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} {service} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

pub fn mount_cap(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn block_cap(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A capability with a raw access mode number (0 is UNKNOWN; 99 is none the spec defines).
pub fn raw_mode_cap(mode: i32) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode }),
    }
}

pub fn swr() -> csi::VolumeCapability {
    mount_cap(Mode::SingleNodeWriter)
}

pub fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn create_req(
    name: &str,
    backend: &str,
    caps: Vec<csi::VolumeCapability>,
) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        volume_capabilities: caps,
        parameters: params(&[("backend", backend)]),
        ..Default::default()
    }
}

pub fn range(required: i64, limit: i64) -> Option<csi::CapacityRange> {
    Some(csi::CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}
