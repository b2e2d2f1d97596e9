//! The real `ferrovol serve` on a Unix socket, and the CSI calls the benchmark times.

use ferrovol::proto as csi;
use ferrovol::proto::controller_client::ControllerClient;
use ferrovol::proto::identity_client::IdentityClient;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub const NODE: &str = "bench-node";

/// A running driver; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Driver {
    child: Option<Child>,
    dir: PathBuf,
    base: PathBuf,
    pub ctl: Option<ControllerClient<Channel>>,
}

impl Driver {
    /// Starts a driver whose socket, log and state live in `dir` and whose volumes live in
    /// `base` (on the filesystem under test; the state is not, so its fsyncs cost the same on
    /// every filesystem).
    pub async fn start(dir: &Path, base: &Path) -> io::Result<Self> {
        let mut d = Driver {
            child: None,
            dir: dir.to_path_buf(),
            base: base.to_path_buf(),
            ctl: None,
        };
        d.spawn().await?;
        Ok(d)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("csi.sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("driver.log")).unwrap_or_default()
    }

    async fn spawn(&mut self) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("driver.log"))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrovol"));
        cmd.arg("serve")
            .arg("--endpoint")
            .arg(format!("unix://{}", self.socket().display()))
            .args(["--node-id", NODE])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--hostpath-base")
            .arg(&self.base)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        crate::child::die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn()?);
        let endpoint = ferrovol::server::Endpoint::Unix(self.socket());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                return Err(io::Error::other(format!(
                    "ferrovol serve exited at start ({status}); log:\n{}",
                    self.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "ferrovol serve not ready after 30s; log:\n{}",
                    self.log()
                )));
            }
            if let Ok(ch) = ferrovol::client::connect(&endpoint).await {
                if IdentityClient::new(ch.clone())
                    .probe(csi::ProbeRequest {})
                    .await
                    .is_ok()
                {
                    self.ctl = Some(ControllerClient::new(ch));
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, a grace period, then SIGKILL.
    pub fn stop(&mut self) {
        self.ctl = None;
        if let Some(child) = self.child.take() {
            crate::child::terminate(child, Duration::from_secs(10));
        }
    }

    fn c(&self) -> ControllerClient<Channel> {
        self.ctl.clone().expect("driver running")
    }

    pub async fn create_volume(&self, name: &str, bytes: i64, snapshot: Option<&str>) -> String {
        use csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
        use csi::volume_content_source::{SnapshotSource, Type};
        let req = csi::CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![csi::VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume::default())),
                access_mode: Some(AccessMode {
                    mode: Mode::SingleNodeWriter as i32,
                }),
            }],
            volume_content_source: snapshot.map(|s| csi::VolumeContentSource {
                r#type: Some(Type::Snapshot(SnapshotSource {
                    snapshot_id: s.into(),
                })),
            }),
            ..Default::default()
        };
        self.c()
            .create_volume(req)
            .await
            .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}"))
            .into_inner()
            .volume
            .expect("CreateVolume returned no volume")
            .volume_id
    }

    pub async fn delete_volume(&self, id: &str) {
        self.c()
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("DeleteVolume {id}: {e}"));
    }

    pub async fn create_snapshot(&self, name: &str, source: &str) -> String {
        self.c()
            .create_snapshot(csi::CreateSnapshotRequest {
                name: name.into(),
                source_volume_id: source.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("CreateSnapshot {name} of {source}: {e}"))
            .into_inner()
            .snapshot
            .expect("CreateSnapshot returned no snapshot")
            .snapshot_id
    }

    pub async fn delete_snapshot(&self, id: &str) {
        self.c()
            .delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("DeleteSnapshot {id}: {e}"));
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
    }
}
