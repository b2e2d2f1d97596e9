//! nfs backend: a subdirectory per volume on an existing NFS export (driver
//! nfs.csi.ferrovol.io). The controller provisions through the user-space NFSv3 client
//! (`crate::nfs`), so it needs no kernel mount and no privilege, and a dead server costs one
//! deadline per call instead of a hung mount. The node mounts `server:share/subdir` with the
//! kernel NFS client (`crate::os::nfsmount`).
//!
//! Where the truth lives: on the share. The controller pod has a read-only root filesystem and
//! may move between nodes, so NFS volume state is never kept in the local journal. Each volume
//! has one record, `.ferrovol/volumes/<key>.json` (layout.rs), written atomically through the
//! NFS client; the record is also the proof that its directory is ours (NFSv3 has no xattrs).
//! A directory no record names is never touched: CreateVolume meeting one answers
//! FailedPrecondition and leaves it as it is.
//!
//! Crash safety by intent records: CreateVolume writes the record `Creating` before it makes the
//! directory and `Ready` after; DeleteVolume rewrites it `Deleting` before it removes, retains or
//! archives the directory and removes the record last. Recovery is lazy, not a scan at start:
//! the next call that touches a `Creating` record (a retried CreateVolume of the name, a
//! DeleteVolume of the id) rolls it back (its directory is removed only while still empty, so
//! nothing a pod could have written is lost) and the CreateVolume then starts afresh; a
//! `Deleting` record is finished by the next DeleteVolume (the CO retries until it succeeds).
//! Lazy recovery means no start-up cost that grows with the number of servers, and a dead
//! server never delays start-up.
//!
//! Which servers exist: a volume id is a function of the CreateVolume name only (it must be
//! known before the create, to lock it), so DeleteVolume, ControllerGetVolume and ListVolumes
//! search the shares this controller knows: those given with `--nfs-share server:/path`, plus
//! every share a CreateVolume has named, remembered in `<state-dir>/nfs-shares.json` (a hint,
//! not volume state: losing it only means a delete of a volume on a forgotten share answers
//! NotFound and leaves the directory, never that anything is removed). An id whose record is on
//! no reachable known share is NotFound when every share answered, Unavailable otherwise.
//!
//! root_squash: the controller's requests carry uid 0 and arrive as the squashed user (usually
//! nobody). Creating directories then works where that user may write (the share root must be
//! writable by it), but `uid`/`gid` cannot be applied (only root may chown): CreateVolume then
//! fails with FailedPrecondition naming the server. Use `no_root_squash` (or an anonuid that owns
//! the share) when classes set `uid`/`gid`.

mod controller;
mod inventory;
pub mod layout;
mod node;
pub mod params;
pub mod pattern;
mod recovery;
mod restore;
mod rollback;
mod shares;
pub mod snaprecord;
mod snapshots;
mod work;

pub use snapshots::WAIT_ENV as SNAPSHOT_WAIT_ENV;

pub use shares::parse_share;

use crate::backend::{Backend, BackendCaps, Expansion, Reach};
use crate::error::{Error, Result};
use crate::nfs::{ClientOptions, NfsClient, NfsError, NfsStatus};
use layout::{RecordState, VolumeRecord};
use shares::Shares;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use work::Work;

pub const BACKEND: &str = "nfs";

/// Keys of the volume context the node mounts from (the PV carries them).
pub const CTX_SERVER: &str = "server";
pub const CTX_SHARE: &str = "share";
pub const CTX_SUBDIR: &str = "subDir";

#[derive(Debug, Clone)]
pub struct NfsConfig {
    /// Deadline of every NFS call, kernel mount and unmount (`--nfs-timeout`).
    pub timeout: Duration,
    /// Where the list of known shares is remembered (the driver's state directory).
    pub state_dir: PathBuf,
    /// Shares given on the command line (`--nfs-share server:/path`).
    pub shares: Vec<(String, String)>,
    pub default_capacity: u64,
    /// Test machines without a kernel NFS client: publish bind-mounts `<dir>/<subdir>`.
    pub test_export_root: Option<PathBuf>,
}

static CAPS: BackendCaps = BackendCaps {
    reach: Reach::Cluster,
    multi_node: true,
    block: false,
    mount: true,
    controller_publish: false,
    // The kubelet calls NodePublishVolume directly: one kernel mount per pod target.
    stage: false,
    expansion: Expansion::Online,
    node_expansion: false,
    snapshots: true,
    quick_provisioning: false,
    clone: true,
};

pub struct NfsBackend {
    cfg: NfsConfig,
    clients: Mutex<HashMap<(String, String), Arc<NfsClient>>>,
    shares: Shares,
    /// Snapshot copies and restores running in this process.
    work: Arc<Work>,
}

impl NfsBackend {
    pub fn open(cfg: NfsConfig) -> std::io::Result<Self> {
        let shares = Shares::open(&cfg.state_dir.join("nfs-shares.json"), &cfg.shares)?;
        if let Some(root) = &cfg.test_export_root {
            tracing::warn!(root = %root.display(),
                "--nfs-test-export-root is set: NodePublishVolume bind-mounts directories below it instead of mounting NFS; for test machines only");
        }
        let backend = NfsBackend {
            work: Arc::new(Work::new(cfg.timeout)),
            cfg,
            clients: Mutex::new(HashMap::new()),
            shares,
        };
        backend.start_recovery();
        Ok(backend)
    }

    /// The client of one export; one per (server, share), kept for the process's lifetime so its
    /// pooled connections are reused across calls.
    fn client(&self, server: &str, share: &str) -> Result<Arc<NfsClient>> {
        let key = (server.to_string(), share.to_string());
        let mut map = self.clients.lock().expect("nfs client map poisoned");
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let opts = ClientOptions {
            timeout: self.cfg.timeout,
            ..ClientOptions::default()
        };
        let c = Arc::new(
            NfsClient::new(server, share, opts)
                .map_err(|e| Error::invalid(format!("NFS export {server}:{share}: {e}")))?,
        );
        map.insert(key, c.clone());
        Ok(c)
    }

    /// Maps a client error to the driver's, naming the volume (the client's names the server).
    fn err(&self, volume: &str, e: NfsError) -> Error {
        map_nfs_error(volume, self.cfg.timeout, e)
    }

    /// The record of `key` on one share, if there is one.
    fn read_record(&self, volume: &str, c: &NfsClient, key: &str) -> Result<Option<VolumeRecord>> {
        let bytes = c
            .read_file(&layout::record_path(key))
            .map_err(|e| self.err(volume, e))?;
        bytes
            .map(|b| {
                VolumeRecord::from_bytes(key, &b).map_err(|e| {
                    Error::Internal(format!(
                        "volume {volume} on {}:{}: {e}",
                        c.server(),
                        c.share()
                    ))
                })
            })
            .transpose()
    }

    fn write_record(&self, c: &NfsClient, rec: &VolumeRecord) -> Result<()> {
        let key = layout::parse_volume_id(&rec.id).expect("records carry our ids");
        write_meta(
            c,
            layout::RECORDS_DIR,
            &layout::record_path(key),
            &rec.to_bytes(),
        )
        .map_err(|e| self.err(&rec.id, e))
    }

    /// Finds the record of `key` on the known shares. `Ok(None)` only when every share
    /// answered; a share that did not makes the answer that share's error.
    fn find(&self, volume: &str, key: &str) -> Result<Option<(Arc<NfsClient>, VolumeRecord)>> {
        let mut failure = None;
        for (server, share) in self.shares.list() {
            let c = self.client(&server, &share)?;
            match self.read_record(volume, &c, key) {
                Ok(Some(rec)) => return Ok(Some((c, rec))),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(volume, server = %server, share = %share, error = %e, "share not searched");
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Like `find`, but a volume whose create has not finished (a `Creating` record) counts as
    /// absent. Rolls nothing back: it serves calls that do not hold the volume's lock, and a
    /// create in flight is not theirs to undo (only CreateVolume and DeleteVolume roll back).
    fn find_live(&self, volume: &str, key: &str) -> Result<Option<(Arc<NfsClient>, VolumeRecord)>> {
        match self.find(volume, key)? {
            Some((_, rec)) if rec.state == RecordState::Creating => Ok(None),
            found => Ok(found),
        }
    }

    /// Undoes a create that never reached Ready (see `undo_create`), unless a restore in this
    /// process is still making it: that one is Busy.
    fn roll_back(&self, c: &NfsClient, rec: &VolumeRecord) -> Result<()> {
        let key = layout::parse_volume_id(&rec.id).expect("records carry our ids");
        if !self.work.claim_restore(key) {
            return Err(Error::Busy(rec.id.clone()));
        }
        let res = rollback::undo_create(c, rec, self.cfg.timeout);
        self.work.release_restore(key);
        res
    }

    fn remove_record(&self, c: &NfsClient, rec: &VolumeRecord) -> Result<()> {
        remove_record(c, rec, self.cfg.timeout)
    }
}

/// Writes a metadata file atomically, making its directory (mode 0755) the first time.
fn write_meta(c: &NfsClient, dir: &str, path: &str, bytes: &[u8]) -> crate::nfs::Result<()> {
    match c.write_file_atomic(path, bytes) {
        Err(e) if e.is_status(NfsStatus::NOENT) => {
            c.mkdir_all(dir, 0o755)?;
            c.write_file_atomic(path, bytes)
        }
        r => r,
    }
}

fn remove_record(c: &NfsClient, rec: &VolumeRecord, timeout: Duration) -> Result<()> {
    let key = layout::parse_volume_id(&rec.id).expect("records carry our ids");
    // A server that fails the removal (a timeout, JUKEBOX) after the directory went.
    crate::failpoint::fail("nfs-record:remove").map_err(|e| Error::Unavailable {
        server: c.server().to_string(),
        detail: format!("volume {}: {e}", rec.id),
    })?;
    c.remove_file(&layout::record_path(key))
        .map(|_| ())
        .map_err(|e| map_nfs_error(&rec.id, timeout, e))
}

/// See `NfsBackend::err`. Public for the node side and tests.
pub fn map_nfs_error(volume: &str, timeout: Duration, e: NfsError) -> Error {
    match e {
        NfsError::Unavailable { server, cause } => Error::Unavailable {
            server,
            detail: format!("volume {volume}: {cause}"),
        },
        NfsError::DeadlineExceeded { server, op } => Error::DeadlineExceeded {
            server,
            action: format!("{op} for volume {volume}"),
            seconds: timeout.as_secs().max(1),
        },
        e if e.is_status(NfsStatus::JUKEBOX) => Error::Unavailable {
            server: server_of(&e),
            detail: format!("volume {volume}: {e}"),
        },
        e if e.is_status(NfsStatus::NOSPC) || e.is_status(NfsStatus::DQUOT) => {
            Error::no_space(volume, e.to_string())
        }
        e if e.is_status(NfsStatus::ACCES)
            || e.is_status(NfsStatus::PERM)
            || e.is_status(NfsStatus::ROFS) =>
        {
            Error::precondition(
                volume,
                format!("{e} (a root_squash export maps the controller to an unprivileged user)"),
            )
        }
        NfsError::InvalidPath { .. } => Error::invalid(format!("volume {volume}: {e}")),
        e => Error::Internal(format!("volume {volume}: {e}")),
    }
}

fn server_of(e: &NfsError) -> String {
    match e {
        NfsError::Unavailable { server, .. }
        | NfsError::DeadlineExceeded { server, .. }
        | NfsError::Status { server, .. }
        | NfsError::Protocol { server, .. }
        | NfsError::Cancelled { server, .. } => server.clone(),
        NfsError::InvalidPath { path, .. } => path.clone(),
    }
}

impl Backend for NfsBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn caps(&self) -> &BackendCaps {
        &CAPS
    }

    /// Ready without asking any server: one dead export must not make the whole driver unready
    /// (its RPCs fail on their own, naming it).
    fn check_ready(&self) -> Result<()> {
        Ok(())
    }
}
