//! The gRPC server: which services a role serves, on which endpoint.

pub mod endpoint;
mod h2_authority;
pub mod metrics;
pub mod pods;
pub mod registration;

use crate::csi::admin::AdminService;
use crate::csi::controller::ControllerService;
use crate::csi::identity::IdentityService;
use crate::csi::node::NodeService;
use crate::csi::Driver;
use crate::proto::admin::admin_server::AdminServer;
use crate::proto::{
    controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer,
};
pub use endpoint::{Endpoint, EndpointSecurity, MAX_REQUEST_BYTES};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio_stream::StreamExt;
use tonic::codegen::http;
use tonic::transport::Server;
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// CSI Controller service: create, delete, attach, expand volumes.
    Controller,
    /// CSI Node service: stage, publish and measure volumes on this node.
    Node,
}

/// Serves the CSI services of `roles` on `endpoint` until `shutdown` completes. The endpoint
/// is locked down per `security` (see [`EndpointSecurity`]); every service decodes requests of
/// at most [`MAX_REQUEST_BYTES`].
pub async fn serve(
    endpoint: &Endpoint,
    driver: Arc<Driver>,
    roles: &[Role],
    security: &EndpointSecurity,
    shutdown: impl Future<Output = ()> + Send,
) -> BoxResult<()> {
    // Settle every refusal before anything listens.
    let group = match (endpoint, &security.socket_group) {
        (Endpoint::Unix(_), Some(g)) => Some(endpoint::resolve_group(g)?),
        _ => None,
    };
    let remote = match endpoint {
        Endpoint::Tcp(addr) => endpoint::check_tcp(addr, security)?,
        Endpoint::Unix(_) => false,
    };
    let controller = roles.contains(&Role::Controller);
    let router = Server::builder()
        .layer(RpcMetricsLayer)
        .add_service(
            IdentityServer::new(IdentityService {
                driver: driver.clone(),
                controller,
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_optional_service(controller.then(|| {
            ControllerServer::new(ControllerService(driver.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES)
        }))
        .add_optional_service(roles.contains(&Role::Node).then(|| {
            NodeServer::new(NodeService(driver.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES)
        }))
        // The admin API moves data on this node: only on a Unix socket, never over TCP.
        .add_optional_service(matches!(endpoint, Endpoint::Unix(_)).then(|| {
            let admin = AdminService {
                driver: driver.clone(),
                controller,
                pods: pods::KubePods::configured(&driver.node_id)
                    .map(|p| Arc::new(p) as Arc<dyn crate::backend::pod_paths::PodPaths>),
            };
            AdminServer::new(admin).max_decoding_message_size(MAX_REQUEST_BYTES)
        }));
    match endpoint {
        Endpoint::Unix(path) => {
            let listener = endpoint::bind_unix(path, group)?;
            tracing::info!(endpoint = %endpoint, driver = %driver.name, node = %driver.node_id, ?roles, "serving CSI");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
            let _ = std::fs::remove_file(path);
        }
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("binding {endpoint}: {e}"))?;
            if remote {
                tracing::warn!(endpoint = %endpoint, "--insecure-remote-endpoint: serving the CSI API without authentication to every host that can reach this address");
            }
            tracing::info!(endpoint = %endpoint, driver = %driver.name, node = %driver.node_id, ?roles, "serving CSI");
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(
                move |conn: std::io::Result<tokio::net::TcpStream>| {
                    if let Ok(stream) = &conn {
                        // gRPC sends small frames; don't let Nagle delay them.
                        let _ = stream.set_nodelay(true);
                        if remote {
                            let peer = stream
                                .peer_addr()
                                .map_or_else(|e| e.to_string(), |a| a.to_string());
                            tracing::warn!(%peer, "unauthenticated CSI connection on an insecure remote endpoint");
                        }
                    }
                    conn
                },
            );
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
    }
    Ok(())
}

/// The binary's top-level result: any error, printed once by main.
pub type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A tower layer around the CSI services that times every call into
/// `ferrovol_rpc_duration_seconds`, labelled by service, method and gRPC code: one place for
/// every RPC, whatever the handler does. CSI calls are unary, so the response headers come when
/// the handler is done; a failed call carries its code in them (`grpc-status`, a trailers-only
/// response), a successful one does not.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics(inner)
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S>(S);

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let start = Instant::now();
        let call = self.0.call(req);
        Box::pin(async move {
            let result = call.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            crate::metrics::observe_rpc(&path, code, start.elapsed());
            result
        })
    }
}
