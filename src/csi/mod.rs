//! The CSI services. Thin by design: decode and validate the request, take the volume's lock,
//! hand the work to a backend on the blocking pool (a short create or delete runs in place and
//! awaits its commit as a task: `rpc_queued`, `in_place`), log one line per RPC, map the error.

pub mod admin;
pub mod controller;
pub mod convert;
pub mod identity;
mod in_place;
pub mod limits;
pub mod node;
mod paging;
pub mod snapshots;

use crate::backend::registry::DriverKind;
use crate::backend::{Backend, BackendCaps, Done};
use crate::error::{Error, Result};
use crate::locks::VolumeLocks;
use crate::volume::VolumeId;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::{Request, Response, Status};

/// Everything the services share.
pub struct Driver {
    pub name: String,
    kind: DriverKind,
    pub node_id: String,
    /// 0: no limit.
    pub max_volumes_per_node: i64,
    pub backends: Vec<Arc<dyn Backend>>,
    pub locks: VolumeLocks,
    /// Where staging and target paths may lie (node role).
    pub paths: crate::os::beneath::PublishRoots,
    /// Serializes ControllerPublish so the per-node volume limit cannot be overrun by a race.
    pub(crate) publish_gate: Mutex<()>,
}

impl Driver {
    pub fn new(
        kind: DriverKind,
        node_id: String,
        max_volumes_per_node: i64,
        backends: Vec<Arc<dyn Backend>>,
        paths: crate::os::beneath::PublishRoots,
    ) -> Self {
        Driver {
            name: kind.csi_name().to_string(),
            kind,
            node_id,
            max_volumes_per_node,
            backends,
            locks: VolumeLocks::default(),
            paths,
            publish_gate: Mutex::new(()),
        }
    }

    /// Whether any backend served here has a capability: the driver advertises the union.
    pub fn any(&self, has: impl Fn(&BackendCaps) -> bool) -> bool {
        self.backends.iter().any(|b| has(b.caps()))
    }

    /// The backend `name` (a StorageClass's `backend:`); the first one served for None.
    pub(crate) fn backend_named(&self, name: Option<&str>) -> Result<&Arc<dyn Backend>> {
        match name {
            Some(name) => self.backend(name),
            None => self
                .backends
                .first()
                .ok_or_else(|| Error::Internal("no backend is served".into())),
        }
    }

    pub fn backend(&self, name: &str) -> Result<&Arc<dyn Backend>> {
        self.backends
            .iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = self.backends.iter().map(|b| b.name()).collect();
                Error::invalid(format!(
                    "backend {name:?} is not served here (available: {known:?})"
                ))
            })
    }

    /// The backend `backend` that owns `id`; ids of backends we do not serve name nothing of
    /// ours (NotFound).
    pub fn backend_for(&self, backend: &str, id: impl ToString) -> Result<&Arc<dyn Backend>> {
        self.backend(backend).map_err(|_| {
            let why = format!("backend {backend} is not served by this process");
            Error::not_found_because(id.to_string(), why)
        })
    }

    /// FailedPrecondition for an id of one of this driver's backends that this process does
    /// not serve (`--backends`): whether it exists cannot be known here, so a delete of it must
    /// not be answered as of nothing.
    pub fn refuse_unserved(&self, id: &VolumeId) -> Result<()> {
        let backend = id.backend.as_str();
        if !self.kind.backends().contains(&backend) || self.backend(backend).is_ok() {
            return Ok(());
        }
        let why = format!("backend {backend} is not served by this process (--backends): delete it where that backend is served");
        Err(Error::precondition(id.to_string(), why))
    }

    /// The backend and id a request's volume_id names, or NotFound. Called after the other
    /// fields are validated, so a malformed request is InvalidArgument whatever its id.
    pub fn resolve(
        &self,
        parsed: Option<VolumeId>,
        raw: &str,
    ) -> Result<(&Arc<dyn Backend>, VolumeId)> {
        let id = parsed.ok_or_else(|| Error::not_found(raw))?;
        Ok((self.backend_for(&id.backend, &id)?, id))
    }
}

/// An RPC that takes its request as it comes: on the blocking pool (`rpc`, logged under the
/// request's volume), the request's size limits are checked, then `body` runs with the driver
/// and the request.
pub(crate) async fn checked_rpc<R: limits::WithinLimits, T: Send + 'static>(
    driver: &Arc<Driver>,
    method: &'static str,
    req: Request<R>,
    body: impl FnOnce(&Driver, R) -> Result<T> + Send + 'static,
) -> Result<Response<T>, Status> {
    let req = req.into_inner();
    let d = driver.clone();
    rpc(method, req.volume_id().to_string(), move || {
        req.check_limits().map_err(Error::InvalidArgument)?;
        body(&d, req)
    })
    .await
}

/// An RPC about one volume: like `checked_rpc`, with the request's id parsed after the limits
/// (an id that could escape a base path is InvalidArgument).
pub(crate) async fn volume_rpc<R: limits::WithinLimits, T: Send + 'static>(
    driver: &Arc<Driver>,
    method: &'static str,
    req: Request<R>,
    body: impl FnOnce(&Driver, R, Option<VolumeId>) -> Result<T> + Send + 'static,
) -> Result<Response<T>, Status> {
    checked_rpc(driver, method, req, |d, req| {
        let id = VolumeId::parse(req.volume_id())?;
        body(d, req, id)
    })
    .await
}

/// InvalidArgument when a capability asks for something the volume's backend cannot serve
/// (multi-node access on a node-local backend, raw block on NFS): decided here once, from the
/// backend's declared capabilities, before the backend is called.
pub(crate) fn check_served(
    backend: &dyn Backend,
    volume: &str,
    caps: &[crate::volume::Capability],
) -> Result<()> {
    let refusal = caps
        .iter()
        .find_map(|c| backend.caps().refuse(backend.name(), c));
    refusal.map_or(Ok(()), |why| {
        Err(Error::invalid(format!("volume {volume}: {why}")))
    })
}

/// NodeStage and NodePublish: a multi-node access mode on a backend whose volumes live on one
/// node exceeds the volume's capabilities, which the spec answers there with FailedPrecondition;
/// the rest as `check_served`.
pub(crate) fn check_node_served(
    backend: &dyn Backend,
    volume: &str,
    cap: &crate::volume::Capability,
) -> Result<()> {
    if !cap.mode.single_node() && !backend.caps().multi_node {
        let (mode, name) = (cap.mode, backend.name());
        let why =
            format!("access mode {mode:?} needs several nodes; {name} volumes live on one node");
        return Err(Error::precondition(volume, why));
    }
    check_served(backend, volume, std::slice::from_ref(cap))
}

/// Runs one RPC body on the blocking pool and logs method, volume, duration and result code.
/// The body counts as in flight meanwhile, so a queued body does not take itself to be alone.
pub(crate) async fn rpc<T: Send + 'static>(
    method: &'static str,
    volume: String,
    body: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<Response<T>, Status> {
    rpc_queued(method, volume, false, move || body().map(Done::Now)).await
}

/// Like `rpc`, for a body that ends in a journal commit (`Done`). A short body
/// runs in place even while others are in flight, because it no longer sleeps in the commit:
/// alone, it waits for its commit in place (leading the sync: no thread hand-off at all);
/// otherwise its task awaits the batch's sync, holding no thread, and is woken with its batch.
/// A long body runs on the pool and waits for its commit there.
pub(crate) async fn rpc_queued<T: Send + 'static>(
    method: &'static str,
    volume: String,
    short: bool,
    body: impl FnOnce() -> Result<Done<T>> + Send + 'static,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let in_flight = in_place::InFlight::enter(short);
    let result = if in_flight.in_place {
        match run_caught(method, body) {
            Ok(done) if in_flight.alone() => run_caught(method, || done.wait()),
            // A client that goes away drops this future; `finish` then completes on a thread.
            Ok(done) => done.finish().await,
            Err(e) => Err(e),
        }
    } else {
        let pooled = tokio::task::spawn_blocking(move || body()?.wait()).await;
        pooled.unwrap_or_else(|e| Err(Error::Internal(format!("{method} panicked: {e}"))))
    };
    drop(in_flight);
    finish(method, &volume, start, result)
}

/// Runs a body on this thread; a panic becomes an Internal error naming the method.
fn run_caught<T>(method: &'static str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let why = crate::error::panic_message(&*panic);
        Err(Error::Internal(format!("{method} panicked: {why}")))
    })
}

/// Like `rpc`, for bodies that do no I/O (capabilities, plugin info): run in place.
pub(crate) fn rpc_inline<T>(
    method: &'static str,
    body: impl FnOnce() -> Result<T>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    finish(method, "", start, body())
}

/// Read-only RPCs that sidecars and the kubelet poll (Probe every few seconds, NodeGetVolumeStats
/// per volume every minute): a success logs at debug, so the info log shows what changed. Their
/// failures still log at info (or error), and every call counts in the metrics.
const POLLED: &[&str] = &[
    "Probe",
    "GetPluginInfo",
    "GetPluginCapabilities",
    "ControllerGetCapabilities",
    "NodeGetCapabilities",
    "NodeGetInfo",
    "GetCapacity",
    "ListVolumes",
    "ListSnapshots",
    "ControllerGetVolume",
    "NodeGetVolumeStats",
    "ValidateVolumeCapabilities",
];

fn finish<T>(
    method: &'static str,
    volume: &str,
    start: Instant,
    result: Result<T>,
) -> Result<Response<T>, Status> {
    // Whole microseconds print as `0.734`, not `0.7341719999999999`.
    let ms = start.elapsed().as_micros() as f64 / 1000.0;
    match result {
        Ok(v) => {
            if POLLED.contains(&method) {
                tracing::debug!(method, volume = %volume, duration_ms = ms, code = "OK", "rpc");
            } else {
                tracing::info!(method, volume = %volume, duration_ms = ms, code = "OK", "rpc");
            }
            Ok(Response::new(v))
        }
        Err(e) => {
            let code = e.code();
            if matches!(code, tonic::Code::Internal | tonic::Code::Unknown) {
                tracing::error!(method, volume = %volume, duration_ms = ms, code = ?code, error = %e, "rpc");
            } else {
                tracing::info!(method, volume = %volume, duration_ms = ms, code = ?code, error = %e, "rpc");
            }
            Err(e.into())
        }
    }
}
