//! The Prometheus endpoint: `GET /metrics` (and the liveness check `GET /healthz`, see
//! `respond_health`) over HTTP/1.1 (hyper), on a port every host of the node's network may reach,
//! so no client can hold it or the process down:
//!
//! - at most `max_connections` connections are served at once; the next is accepted only when
//!   one ends, so clients beyond the cap wait in the kernel's listen queue and use none of the
//!   process's file descriptors;
//! - a client must send its request headers within `timeout` (hyper's header read timeout, which
//!   runs from the moment a connection is accepted: an idle connection is closed then too), and
//!   a connection ends after `2 * timeout` whatever it does (a client that never reads its
//!   answer); each serves one request (`Connection: close`);
//! - a failed accept (out of descriptors, a connection reset in the queue) is logged and retried
//!   after a pause; serving stops only when the address cannot be bound.

use crate::csi::Driver;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long the accept loop pauses after a failed accept, so running out of descriptors does
/// not become a busy loop.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `GET /metrics` with the text `render` makes on `addr`, until the process ends, to at
/// most `max_connections` clients at once, each given `timeout` to send its request headers (the
/// whole connection gets twice this). Returns only when the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    render: fn() -> String,
    timeout: Duration,
    max_connections: usize,
) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving Prometheus metrics on /metrics");
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false);
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut accept_failing = false;
    loop {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if !accept_failing {
                    tracing::warn!(error = %e, %addr, "metrics: accept failed; retrying");
                    accept_failing = true;
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        if accept_failing {
            tracing::info!(%addr, "metrics: accepting connections again");
            accept_failing = false;
        }
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| async move {
                if req.method() == Method::GET && req.uri().path() == "/healthz" {
                    return Ok::<_, Infallible>(respond_health().await);
                }
                Ok(respond(&req, render))
            }),
        );
        tokio::spawn(async move {
            // Declared first, dropped last: the slot frees only once the socket is closed.
            let _slot = slot;
            match tokio::time::timeout(timeout.saturating_mul(2), conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection failed"),
                Err(_) => tracing::debug!("metrics connection closed at its deadline"),
            }
        });
    }
}

fn respond(req: &Request<Incoming>, render: fn() -> String) -> Response<String> {
    let (status, body) = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        (StatusCode::OK, render())
    } else {
        (StatusCode::NOT_FOUND, "see /metrics\n".to_string())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// `GET /healthz` for the kubelet's liveness probe: 200 when the driver's CSI Probe would answer
/// ready, 503 with the reason otherwise. A process that registered no check (the node-loss
/// controller) is healthy while it answers at all.
static CHECK: OnceLock<Check> = OnceLock::new();

/// Makes the health endpoint run the checks of Probe: every backend of `driver` ready.
pub fn check_driver(driver: Arc<Driver>) {
    let _ = CHECK.set(Box::new(move || {
        driver
            .backends
            .iter()
            .try_for_each(|b| b.check_ready())
            .map_err(|e| e.to_string())
    }));
}

/// The answer to `GET /healthz`: the registered check's (file system calls: on a blocking
/// thread).
async fn respond_health() -> Response<String> {
    let checked = match CHECK.get() {
        Some(check) => tokio::task::spawn_blocking(check)
            .await
            .unwrap_or_else(|e| Err(format!("health check failed: {e}"))),
        None => Ok(()),
    };
    let (status, body) = match checked {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}
