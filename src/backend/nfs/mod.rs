//! nfs backend: a subdirectory per volume on an existing NFS export (driver
//! nfs.csi.ferrovol.io). The controller provisions through the user-space NFS client
//! (`crate::nfs`, NFSv3 or NFSv4.1): no kernel mount, no privilege, and a dead server costs one
//! deadline per call instead of a hung mount. The node mounts `server:share/subdir` with the
//! kernel NFS client (`crate::os::nfsmount`).
//!
//! Versions: the class's `nfsvers` (`3`, `4.1`, or `auto`, the default: a `vers=`/`nfsvers=`
//! mount option when the class has one, else NFSv4.1 where the server serves the share so and
//! NFSv3 elsewhere); `nfsvers` and a mount option that disagree are InvalidArgument. A record
//! keeps the version its handles were taken with (`nfs_vers`; absent: NFSv3) and every proof
//! about a volume uses a client of that version, whatever later classes say. The volume context
//! carries it (`nfsvers`) for the node's `vers=`. A clone of a volume made over another version
//! is FailedPrecondition (its proof is a handle of that version); snapshots keep their source's.
//!
//! Where the truth lives: on the share, never in the local journal (the controller pod has a
//! read-only root filesystem and may move). Each volume has one record,
//! `.ferrovol/volumes/<key>.json` (layout.rs), written atomically; it is also the proof that its
//! directory is ours (NFSv3 has no xattrs). A directory no record names is never touched:
//! CreateVolume meeting one answers FailedPrecondition.
//!
//! Crash safety by intent records: CreateVolume writes the record `Creating` before it makes the
//! directory and `Ready` after; DeleteVolume rewrites it `Deleting` before it removes, retains or
//! archives the directory and removes the record last. Recovery is lazy (no start-up cost per
//! server, and a dead server never delays start-up): the next call that touches a `Creating`
//! record (a retried CreateVolume of the name, a DeleteVolume of the id) rolls it back (its
//! directory is removed only while still empty, so nothing a pod wrote is lost); a `Deleting`
//! record is finished by the next DeleteVolume. Rolling back a create this call did not start,
//! recovery, and resuming a cut-off snapshot copy happen only while this process holds the
//! share's lease (lease.rs): during a rollout two controllers run on one share, and the new one
//! must not undo what the old one is still making.
//!
//! Which servers exist: a volume id names its share, `nfs/<share key>/<key>` (layout.rs), so
//! calls go straight to it. The share registry (shares.rs), a ConfigMap or a file, maps keys to
//! shares and outlives the controller's pod. A share is registered before anything is written on
//! it, so no volume is acknowledged on a share the registry does not hold. An id whose share no
//! registry knows is FailedPrecondition, never "gone"; an unreachable share is Unavailable. Ids
//! of the older form, `nfs/<key>`, are searched for on every known share.
//!
//! root_squash: the controller's requests arrive as the squashed user, so the share root must be
//! writable by it, and `uid`/`gid` cannot be applied (only root may chown): CreateVolume then
//! fails with FailedPrecondition. Use `no_root_squash` (or an anonuid that owns the share) for
//! classes that set them.

mod adopt;
mod alive;
mod controller;
pub mod layout;
mod lease;
mod node;
mod params;
pub mod pattern;
mod readers;
mod recovery;
mod restore;
mod rollback;
mod share_configmap;
mod shares;
mod snapshots;
mod work;

pub use shares::parse_share;

use crate::backend::adopt::{Adopt, AdoptBackend};
use crate::backend::{Backend, BackendCaps, Expansion, Reach};
use crate::error::{Error, Result};
use crate::nfs::{ClientOptions, NfsClient, NfsError, NfsStatus, Version, Want};
use layout::{RecordState, VolumeRecord, RECORDS_DIR};
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
/// The NFS version the volume was made with (`3`, `4.1`); absent in volumes made before.
pub const CTX_NFSVERS: &str = "nfsvers";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryConfig {
    /// A file (standalone; `<state-dir>/nfs-shares.json` unless `--nfs-registry-file`).
    File(PathBuf),
    /// ConfigMap `name` in `namespace` (in Kubernetes; `--nfs-registry-configmap`).
    ConfigMap { namespace: String, name: String },
}

#[derive(Debug, Clone)]
pub struct NfsConfig {
    /// Deadline of every NFS call, kernel mount and unmount (`--nfs-timeout`).
    pub timeout: Duration,
    pub registry: RegistryConfig,
    /// Shares given on the command line (`--nfs-share server:/path`).
    pub shares: Vec<(String, String)>,
    pub default_capacity: u64,
    /// Test machines without a kernel NFS client: publish bind-mounts `<dir>/<subdir>`.
    pub test_export_root: Option<PathBuf>,
    /// This controller instance (host and state directory), as share leases name it.
    pub instance: String,
}

static CAPS: BackendCaps = BackendCaps {
    reach: Reach::Cluster,
    multi_node: true,
    block: false,
    controller_publish: false,
    // The kubelet calls NodePublishVolume directly: one kernel mount per pod target.
    stage: false,
    expansion: Expansion::Online,
    node_expansion: false,
    quick_provisioning: false,
    clone: true,
};

pub struct NfsBackend {
    cfg: NfsConfig,
    clients: Arc<Clients>,
    shares: Shares,
    /// Snapshot copies and restores running in this process.
    work: Arc<Work>,
    /// Which shares this process may recover (lease.rs).
    leases: Arc<lease::Leases>,
}

impl NfsBackend {
    pub fn open(cfg: NfsConfig) -> std::io::Result<Self> {
        let registry: Box<dyn shares::ShareRegistry> = match &cfg.registry {
            RegistryConfig::File(path) => Box::new(shares::FileRegistry::new(path.clone())),
            RegistryConfig::ConfigMap { namespace, name } => {
                Box::new(share_configmap::ConfigMapRegistry::new(namespace, name)?)
            }
        };
        let shares = Shares::open(registry, &cfg.shares)
            .map_err(|e| std::io::Error::other(format!("NFS share registry: {e}")))?;
        if let Some(root) = &cfg.test_export_root {
            tracing::warn!(root = %root.display(),
                "--nfs-test-export-root is set: NodePublishVolume bind-mounts directories below it instead of mounting NFS; for test machines only");
        }
        let backend = NfsBackend {
            work: Arc::new(Work::new(cfg.timeout, &cfg.instance)),
            leases: Arc::new(lease::Leases::new(&cfg.instance)),
            clients: Arc::new(Clients(cfg.timeout, Mutex::default())),
            cfg,
            shares,
        };
        // Contends for every known share's lease (making its client does); the holder recovers it.
        for (server, share) in backend.shares.list() {
            if let Err(e) = backend.client(&server, &share) {
                tracing::warn!(server = %server, share = %share, error = %e, "NFS share not recovered");
            }
        }
        Ok(backend)
    }

    /// The share's `Want::Auto` client, which reads records; making it starts the share's lease
    /// and recovery.
    fn client(&self, server: &str, share: &str) -> Result<Arc<NfsClient>> {
        let (c, new) = self.clients.get(server, share, Want::Auto)?;
        if new {
            let (auto, work, clients) = (c.clone(), self.work.clone(), self.clients.clone());
            let (sv, sh, leases) = (server.to_string(), share.to_string(), self.leases.clone());
            self.leases.watch(c.clone(), move || {
                let of = |v: Version| clients.get(&sv, &sh, Want::Only(v)).map(|(c, _)| c);
                recovery::recover(&auto, &work, &of, &|| leases.holds(&auto))
            });
        }
        Ok(c)
    }

    fn client_as(&self, server: &str, share: &str, want: Want) -> Result<Arc<NfsClient>> {
        if want == Want::Auto {
            return self.client(server, share);
        }
        self.client(server, share)?;
        Ok(self.clients.get(server, share, want)?.0)
    }

    /// The client whose handles a record's proofs are in (see `VolumeRecord::nfs_vers`).
    fn client_of(&self, rec: &VolumeRecord) -> Result<Arc<NfsClient>> {
        self.client_as(&rec.server, &rec.share, Want::Only(rec.version()))
    }

    /// Maps a client error to the driver's, naming the volume (the client's names the server).
    fn err(&self, volume: &str, e: NfsError) -> Error {
        map_nfs_error(volume, self.cfg.timeout, e)
    }

    fn read_record(&self, volume: &str, c: &NfsClient, key: &str) -> Result<Option<VolumeRecord>> {
        let path = layout::record_path(key);
        let decode = |b: &[u8]| VolumeRecord::from_bytes(key, b);
        read_json(c, &path, ("volume", volume), self.cfg.timeout, decode)
    }

    /// The record of volume `volume` (key `key`): on the share its id names (FailedPrecondition
    /// when the registry does not know it), or for an id of the older form, on every known share
    /// (`search`). A record of the key that belongs to another id is not this volume's.
    fn find(&self, volume: &str, key: &str) -> Result<Option<(Arc<NfsClient>, VolumeRecord)>> {
        let read = |c: &NfsClient| Ok(self.read_record(volume, c, key)?.filter(|r| r.id == volume));
        let Some(share_key) = layout::share_key_of(volume) else {
            return self.search(volume, VolumeRecord::version, read);
        };
        let s = self.shares.resolve(volume, share_key)?;
        let Some(rec) = read(&*self.client(&s.server, &s.share)?)? else {
            return Ok(None);
        };
        let c = self.client_as(&s.server, &s.share, Want::Only(rec.version()))?;
        Ok(Some((c, rec)))
    }

    /// The record `read` finds on a known share, with the client of the version its handles
    /// are in (`version`). `Ok(None)` only when every share answered; a share that did not
    /// makes the answer its error.
    fn search<R>(
        &self,
        id: &str,
        version: impl Fn(&R) -> Version,
        read: impl Fn(&NfsClient) -> Result<Option<R>>,
    ) -> Result<Option<(Arc<NfsClient>, R)>> {
        let mut failure = None;
        for (server, share) in self.shares.list() {
            match read(&*self.client(&server, &share)?) {
                Ok(Some(rec)) => {
                    let c = self.client_as(&server, &share, Want::Only(version(&rec)))?;
                    return Ok(Some((c, rec)));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(id, server = %server, share = %share, error = %e, "share not searched");
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(None), Err)
    }

    /// Like `find`, but a volume whose create has not finished (a `Creating` record) counts as
    /// absent. Rolls nothing back: it serves calls that do not hold the volume's lock, and a
    /// create in flight is not theirs to undo (only CreateVolume and DeleteVolume roll back).
    fn find_live(&self, volume: &str, key: &str) -> Result<Option<(Arc<NfsClient>, VolumeRecord)>> {
        let found = self.find(volume, key)?;
        Ok(found.filter(|(_, rec)| rec.state != RecordState::Creating))
    }

    /// Undoes a create this call did not start (see `undo_create`): only while this process
    /// holds the share's lease, since another controller on the share may still be making it
    /// (Busy).
    fn roll_back_other(&self, c: &NfsClient, rec: &VolumeRecord) -> Result<()> {
        let (id, server, share) = (&rec.id, c.server(), c.share());
        if !self.leases.wait_held(c) {
            return Err(Error::Busy(format!("{id} (an unfinished create on {server}:{share}, which another controller holds the lease of)")));
        }
        let name = restore::restore_name(rec.key());
        let shown = self.work.copies.others_copying(c, &name);
        if shown.map_err(|e| self.err(id, e))? {
            return Err(Error::Busy(format!(
                "{id} (another controller on {server}:{share} is still copying its content)"
            )));
        }
        // Unless a restore in this process is still making it: that one is Busy.
        self.restoring(id, || rollback::undo_create(c, rec, self.cfg.timeout))?;
        self.work.copies.forget(c, &name);
        Ok(())
    }

    /// Runs `f` while volume `vid` is marked as being restored here; Busy when it already is.
    fn restoring<R>(&self, vid: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let key = layout::parse_volume_id(vid).expect("records carry our ids");
        let res = self.work.restoring(key, f);
        res.unwrap_or_else(|| Err(Error::Busy(vid.to_string())))
    }
}

/// One client per (server, share, version wanted), kept for the process's lifetime so their
/// pooled connections and sessions are reused; their calls have the deadline given first.
struct Clients(
    Duration,
    Mutex<HashMap<(String, String, Want), Arc<NfsClient>>>,
);

impl Clients {
    /// The client, and whether this call made it.
    fn get(&self, server: &str, share: &str, want: Want) -> Result<(Arc<NfsClient>, bool)> {
        let key = (server.to_string(), share.to_string(), want);
        let mut map = self.1.lock().expect("nfs client map poisoned");
        // The share's `Auto` client, once it settled on the version asked for, serves it too:
        // one session and one connection pool per share.
        let auto = (key.0.clone(), key.1.clone(), Want::Auto);
        let settled =
            |c: &&Arc<NfsClient>| matches!(want, Want::Only(v) if c.settled_version() == Some(v));
        if let Some(c) = map.get(&key).or_else(|| map.get(&auto).filter(settled)) {
            return Ok((c.clone(), false));
        }
        let opts = ClientOptions {
            timeout: self.0,
            version: want,
            ..ClientOptions::default()
        };
        let invalid = |e| Error::invalid(format!("NFS export {server}:{share}: {e}"));
        let c = Arc::new(NfsClient::new(server, share, opts).map_err(invalid)?);
        map.insert(key, c.clone());
        Ok((c, true))
    }
}

/// The record at `path`, decoded by `decode`; `None` when there is none. `(kind, id)` name what
/// it records in errors.
fn read_json<T>(
    c: &NfsClient,
    path: &str,
    (kind, id): (&str, &str),
    timeout: Duration,
    decode: impl FnOnce(&[u8]) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    let bytes = c
        .read_file(path)
        .map_err(|e| map_nfs_error(id, timeout, e))?;
    let internal = |e| Error::Internal(format!("{kind} {id} on {}:{}: {e}", c.server(), c.share()));
    bytes.map(|b| decode(&b).map_err(internal)).transpose()
}

/// The handle `rec` keeps, or for a record from before handles were kept, that of the directory
/// at its subDir now (`None`: no directory there).
fn recorded_handle(c: &NfsClient, rec: &VolumeRecord) -> crate::nfs::Result<Option<String>> {
    if let Some(h) = &rec.dir_handle {
        return Ok(Some(h.clone()));
    }
    let found = c.handle_of(&rec.sub_dir)?;
    Ok(found.filter(|(_, a)| a.is_dir()).map(|(h, _)| h))
}

/// Names in the metadata directory `dir`; none when it does not exist (yet).
fn names(c: &NfsClient, dir: &str) -> crate::nfs::Result<Vec<String>> {
    match c.readdir(dir) {
        Ok(e) => Ok(e.into_iter().map(|(n, _)| n).collect()),
        Err(e) if e.is_status(NfsStatus::NOENT) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// `op`, tried again after making the metadata directory `dir` (mode 0755) when it was missing.
fn in_meta_dir<T>(
    c: &NfsClient,
    dir: &str,
    op: impl Fn() -> crate::nfs::Result<T>,
) -> crate::nfs::Result<T> {
    match op() {
        Err(e) if e.is_status(NfsStatus::NOENT) => {
            c.mkdir_all(dir, 0o755)?;
            op()
        }
        r => r,
    }
}

fn write_record(c: &NfsClient, rec: &VolumeRecord, timeout: Duration) -> Result<()> {
    let (path, bytes) = (layout::record_path(rec.key()), layout::to_bytes(rec));
    in_meta_dir(c, RECORDS_DIR, || c.write_file_atomic(&path, &bytes))
        .map_err(|e| map_nfs_error(&rec.id, timeout, e))
}

fn remove_record(c: &NfsClient, rec: &VolumeRecord, timeout: Duration) -> Result<()> {
    // A server that fails the removal (a timeout, JUKEBOX) after the directory went.
    crate::failpoint::fail("nfs-record:remove").map_err(|e| Error::Unavailable {
        server: c.server().to_string(),
        detail: format!("volume {}: {e}", rec.id),
    })?;
    c.remove_file(&layout::record_path(rec.key()))
        .map(|_| ())
        .map_err(|e| map_nfs_error(&rec.id, timeout, e))
}

/// The answer to a CSI call NFS volumes have no use for: "volume <id>: NFS volumes <why>".
fn needless<T>(id: &impl std::fmt::Display, why: &str) -> Result<T> {
    Err(Error::Unimplemented(format!(
        "volume {id}: NFS volumes {why}"
    )))
}

/// See `NfsBackend::err`. Public for the node side and tests.
pub fn map_nfs_error(volume: &str, timeout: Duration, e: NfsError) -> Error {
    let status = e.status();
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
        NfsError::Status { ref server, .. } if status == Some(NfsStatus::JUKEBOX) => {
            Error::Unavailable {
                server: server.clone(),
                detail: format!("volume {volume}: {e}"),
            }
        }
        e if matches!(status, Some(NfsStatus::NOSPC | NfsStatus::DQUOT)) => {
            Error::no_space(volume, e.to_string())
        }
        e if matches!(
            status,
            Some(NfsStatus::ACCES | NfsStatus::PERM | NfsStatus::ROFS)
        ) =>
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

    fn snapshots(&self) -> Option<&dyn crate::backend::SnapshotBackend> {
        Some(self)
    }

    fn adoption(&self) -> Option<&dyn AdoptBackend> {
        Some(self)
    }
}

impl AdoptBackend for NfsBackend {
    fn adopt_id(&self, req: &Adopt) -> Result<crate::volume::VolumeId> {
        adopt::adopt_id(nfs_dir(req)?)
    }

    fn adopt(&self, req: &Adopt) -> Result<crate::volume::VolumeInfo> {
        self.adopt_nfs_dir(nfs_dir(req)?)
    }
}

fn nfs_dir(req: &Adopt) -> Result<&crate::backend::adopt::AdoptNfsDir> {
    match req {
        Adopt::NfsDir(dir) => Ok(dir),
        other => Err(crate::backend::adopt::not_here(BACKEND, other)),
    }
}
