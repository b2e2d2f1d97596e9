//! `GET /healthz` for the kubelet's liveness probe, answered on the metrics port: 200 when the
//! driver's CSI Probe would answer ready, 503 with the reason otherwise. A process that
//! registered no check (the node-loss controller) is healthy while it answers at all.

use crate::csi::Driver;
use hyper::{Response, StatusCode};
use std::sync::{Arc, OnceLock};

type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

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
pub async fn respond() -> Response<String> {
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
