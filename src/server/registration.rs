//! Registration with the kubelet (its plugin registration API, v1): the driver serves
//! `pluginregistration.Registration` on `<plugins_registry>/<driver>-reg.sock`, the socket the
//! kubelet's plugin watcher looks for, so no node-driver-registrar sidecar is needed.
//!
//! - The socket is made only once the CSI endpoint accepts connections: the kubelet calls
//!   NodeGetInfo right after GetInfo, and does not retry a registration that failed.
//! - It is re-checked every [`RECHECK`]: when it is gone (the kubelet's directory was wiped), it
//!   is made again, and the kubelet registers the driver anew. A file another process put there
//!   instead is left alone.
//! - The kubelet's verdict is logged (with its error) and exported as the gauge
//!   `ferrovol_kubelet_registered`.
//! - On shutdown the socket is removed, when it is still the one this process bound (a newer
//!   driver on the same node may have replaced it).

use super::h2_authority::FixAuthority;
use super::{endpoint, BoxResult, Endpoint};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch::Receiver};
use tonic::{Request, Response, Status};

/// The generated types and service traits of proto/pluginregistration.proto.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    tonic::include_proto!("pluginregistration");
}

use proto::registration_server::{Registration as RegistrationApi, RegistrationServer};
use proto::{InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};

/// How often the registration socket is checked to still exist.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The CSI spec versions the kubelet may speak to the driver.
const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

/// What to register, and where.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The kubelet's plugins_registry directory.
    pub dir: PathBuf,
    pub driver_name: String,
    /// The CSI socket path as the kubelet sees it.
    pub kubelet_csi_endpoint: PathBuf,
}

impl Registration {
    /// The socket the kubelet finds: named like node-driver-registrar's.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}-reg.sock", self.driver_name))
    }
}

struct Service {
    info: PluginInfo,
}

#[tonic::async_trait]
impl RegistrationApi for Service {
    async fn get_info(&self, _req: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::debug!("kubelet asked for the plugin's registration info");
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        req: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = req.into_inner();
        crate::metrics::set_kubelet_registered(status.plugin_registered);
        if status.plugin_registered {
            tracing::info!(driver = %self.info.name, "kubelet registered the driver");
        } else {
            tracing::error!(driver = %self.info.name, error = %status.error, "kubelet refused to register the driver");
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Registers the driver with the kubelet until `stop` turns true; then removes the socket.
/// `csi` is the driver's own CSI endpoint, waited for before the socket is made.
pub async fn run(reg: Registration, csi: Endpoint, mut stop: Receiver<bool>) -> BoxResult<()> {
    tokio::select! {
        () = wait_for_csi(&csi) => {}
        () = stopped(&mut stop) => return Ok(()),
    }
    let info = PluginInfo {
        r#type: "CSIPlugin".into(),
        name: reg.driver_name.clone(),
        endpoint: reg.kubelet_csi_endpoint.to_string_lossy().into_owned(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
    };
    crate::metrics::set_kubelet_registered(false);
    // One gRPC server; the socket's connections are fed to it, whichever listener took them.
    let (conns, incoming) = mpsc::channel::<std::io::Result<FixAuthority<UnixStream>>>(16);
    let mut server_stop = stop.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(Service { info }))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(incoming),
                async move { stopped(&mut server_stop).await },
            ),
    );
    let socket = reg.socket();
    let result = accept(&socket, conns, &mut stop).await;
    let _ = server.await;
    result
}

/// Binds the socket (again whenever it disappears) and hands its connections to `conns`
/// until `stop`; removes the socket then, if it is still the one bound here.
async fn accept(
    socket: &Path,
    conns: mpsc::Sender<std::io::Result<FixAuthority<UnixStream>>>,
    stop: &mut Receiver<bool>,
) -> BoxResult<()> {
    let (mut listener, mut ours) = bind(socket)?;
    tracing::info!(socket = %socket.display(), "serving kubelet plugin registration");
    let mut recheck = tokio::time::interval(RECHECK);
    let mut replaced = false;
    loop {
        tokio::select! {
            () = stopped(stop) => break,
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    // The kubelet sends the socket path as :authority (h2_authority.rs).
                    if conns.send(Ok(FixAuthority::new(stream))).await.is_err() {
                        break;
                    }
                }
                // Out of descriptors, or a connection reset in the queue: not this socket's end.
                Err(e) => {
                    tracing::warn!(error = %e, socket = %socket.display(), "registration: accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = recheck.tick() => match std::fs::symlink_metadata(socket) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(socket = %socket.display(), "registration socket is gone; making it again");
                    crate::metrics::set_kubelet_registered(false);
                    (listener, ours) = bind(socket)?;
                    replaced = false;
                }
                // Another process's file now: it is not ours to remove.
                Ok(m) if (m.dev(), m.ino()) != ours && !replaced => {
                    tracing::warn!(socket = %socket.display(), "registration socket was replaced by another process's file; leaving it");
                    replaced = true;
                }
                _ => {}
            }
        }
    }
    if std::fs::symlink_metadata(socket).is_ok_and(|m| (m.dev(), m.ino()) == ours) {
        std::fs::remove_file(socket)
            .map_err(|e| format!("removing registration socket {}: {e}", socket.display()))?;
    }
    Ok(())
}

/// The listener, and (device, inode) of the socket file this process made.
fn bind(socket: &Path) -> BoxResult<(UnixListener, (u64, u64))> {
    let listener = endpoint::bind_unix(socket, None)
        .map_err(|e| format!("registration socket {}: {e}", socket.display()))?;
    let meta = std::fs::symlink_metadata(socket)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// Returns once the driver's CSI endpoint accepts connections.
async fn wait_for_csi(csi: &Endpoint) {
    while crate::client::connect(csi).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
