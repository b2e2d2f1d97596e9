//! The gRPC server: which services a role serves, on which endpoint.

pub mod endpoint;

use crate::csi::controller::ControllerService;
use crate::csi::identity::IdentityService;
use crate::csi::node::NodeService;
use crate::csi::Driver;
use crate::proto::{
    controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer,
};
pub use endpoint::Endpoint;
use std::future::Future;
use std::sync::Arc;
use tonic::transport::Server;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// CSI Controller service: create, delete, attach, expand volumes.
    Controller,
    /// CSI Node service: stage, publish and measure volumes on this node.
    Node,
}

pub async fn serve(
    endpoint: &Endpoint,
    driver: Arc<Driver>,
    roles: &[Role],
    shutdown: impl Future<Output = ()> + Send,
) -> BoxResult<()> {
    let controller = roles.contains(&Role::Controller);
    let node = roles.contains(&Role::Node);
    let router = Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(
            driver.clone(),
            controller,
        )))
        .add_optional_service(
            controller.then(|| ControllerServer::new(ControllerService::new(driver.clone()))),
        )
        .add_optional_service(node.then(|| NodeServer::new(NodeService::new(driver.clone()))));
    match endpoint {
        Endpoint::Unix(path) => {
            let listener = endpoint::bind_unix(path)?;
            tracing::info!(endpoint = %endpoint, driver = %driver.name, node = %driver.node_id, ?roles, "serving CSI");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
            let _ = std::fs::remove_file(path);
        }
        Endpoint::Tcp(addr) => {
            tracing::info!(endpoint = %endpoint, driver = %driver.name, node = %driver.node_id, ?roles, "serving CSI");
            router.serve_with_shutdown(*addr, shutdown).await?;
        }
    }
    Ok(())
}

/// The binary's top-level result: any error, printed once by main.
pub type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
