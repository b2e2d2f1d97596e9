//! hostpath backend: a directory per volume under a base path on this node; block volumes are a
//! sparse `disk.img` in that directory, attached to a loop device when staged.
//!
//! Ownership: every volume directory carries a `trusted.` xattr naming its volume id, the state
//! store that made it and its create's incarnation; the backend only ever removes a directory
//! that carries its own id.
//!
//! Durability (docs/architecture.md): a create makes and marks the directory, then commits the
//! record (the one sync the CO waits for); a delete commits the removal, then removes the
//! directory (one rmdir when empty, else through a trash name). Recovery decides from the
//! journal and the markers alone, so no step before the commit needs a sync of its own.

/// `state::Record` for a record with `id`, `name` and `capacity_bytes` fields.
macro_rules! record_of {
    ($t:ty) => {
        impl crate::state::Record for $t {
            fn name(&self) -> &str {
                &self.name
            }
            fn id(&self) -> &str {
                &self.id
            }
            fn capacity_bytes(&self) -> u64 {
                self.capacity_bytes
            }
        }
    };
}

mod adopt;
mod adopt_checks;
mod base;
mod controller;
mod node;
pub mod pool_config;
pub mod pools;
mod pools_dispatch;
mod provision;
mod recovery;
pub mod snapshot;

use crate::backend::local::LocalVolumes;
use crate::backend::{BackendCaps, Expansion, Reach};
use crate::error::{Error, Result};
use crate::os::statfs;
use crate::state::{Journal, Ledger};
use crate::volume::{AccessKind, VolumeCondition, VolumeId, VolumeInfo};
use pool_config::PoolSpec;
use provision::Limiter;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How the volume's capacity is enforced, when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Enforcement {
    ProjectQuota { id: u32 },
    BtrfsQgroup,
}

/// What the hostpath backend persists about one volume, beside the shared record fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostpathData {
    /// Set when the capacity is a hard limit; None when it is advisory.
    #[serde(default)]
    pub enforced_by: Option<Enforcement>,
    /// The snapshot or volume id the volume was created from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A random token naming this create of the volume, also set on its directory
    /// (in its markers, `os::markers`). Recovery finishes a delete only when the trash carries
    /// the incarnation of the record, so the trash of an earlier volume of the same name never
    /// takes the current one with it. None in records written before incarnations existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Where an adopted volume's directory was before adoption moved it into the base (see
    /// `adopt`); None for a volume the driver made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_from: Option<std::path::PathBuf>,
}

pub type VolumeRecord = crate::state::VolumeRecord<HostpathData>;

pub const BACKEND: &str = "hostpath";
const IMAGE_FILE: &str = "disk.img";
/// Room a block volume's directory needs beside its image (directory blocks, xattrs).
const BLOCK_QUOTA_SLACK: u64 = 1 << 20;
/// Prefix of a volume directory being deleted (volume names cannot begin with '.').
const TRASH_PREFIX: &str = ".trash-";

/// `name` for the default pool (as before pools existed), `name@pool` for another: the journal
/// keys of a pool's records, and the identity its base carries (see `base`). A base moved to
/// another pool name keeps the old identity, so it is refused there rather than swept as a base
/// whose volumes have no records.
fn pool_key(name: &str, pool: &str) -> String {
    if pool == pool_config::DEFAULT_POOL {
        name.to_string()
    } else {
        format!("{name}@{pool}")
    }
}

static CAPS: BackendCaps = BackendCaps {
    reach: Reach::NodeLocal,
    multi_node: false,
    block: true,
    controller_publish: true,
    stage: true,
    expansion: Expansion::Online,
    node_expansion: true,
    quick_provisioning: true,
    clone: true,
};

/// What the base's filesystem offers volumes.
struct BaseFeatures {
    /// How sizes become hard limits; None: they are advisory.
    limiter: Option<Limiter>,
    snap_method: snapshot::SnapMethod,
}

pub struct HostpathBackend {
    /// The backend itself, for the steps a create or delete runs after its commit.
    me: Weak<HostpathBackend>,
    node: String,
    pool: String,
    /// What the base carries when it is this store's (`pool_key`).
    identity: String,
    base: PathBuf,
    create_base: bool,
    default_capacity: u64,
    ledger: Ledger<VolumeRecord>,
    base_fs: &'static str,
    /// What the base's filesystem offers, probed when a volume first needs it (`features`).
    features: OnceLock<BaseFeatures>,
    /// Held while probing: the reflink probe's files have fixed names.
    probing: Mutex<()>,
    snaps: Ledger<snapshot::SnapRecord>,
    /// Adoptions under way (`adopt`).
    adoptions: Ledger<adopt::AdoptIntent>,
    /// The last statfs of the base: (when, size, bytes available), for `space_for`.
    recent_space: Mutex<Option<(Instant, u64, u64)>>,
    /// Why the base was refused at start (see `base`); None when it was this store's.
    refused: Option<String>,
}

/// How long a statfs of the base answers for the creates after it (`space_for`).
const SPACE_REUSE: Duration = Duration::from_secs(1);

impl HostpathBackend {
    /// Opens the state, checks the base's identity (see `base`), then, on a base that is this
    /// store's, adopts older state and reconciles records with the disk and the mount table (see
    /// `recovery`). A refused base is left exactly as found. Records of ferrovol 0.1 in
    /// `<state_dir>/hostpath/` are adopted into the default pool.
    pub fn open(
        node: &str,
        spec: &PoolSpec,
        state_dir: &Path,
        default_capacity: u64,
        journal: Arc<Journal>,
        live: &HashMap<String, Vec<u8>>,
    ) -> std::io::Result<Arc<Self>> {
        // Each pool's records under its own journal keys (see `pools`).
        let key = |kind| pool_key(kind, &spec.name);
        let (snap_key, adopt_key) = (key(snapshot::LEDGER), key(adopt::LEDGER));
        let snaps = Ledger::open_counted(journal.clone(), &snap_key, snapshot::LEDGER, live)?;
        let ledger = Ledger::open_counted(journal.clone(), &key(BACKEND), BACKEND, live)?;
        let adoptions = Ledger::open_counted(journal.clone(), &adopt_key, adopt::LEDGER, live)?;
        let recorded = Self::recorded_dirs(spec, state_dir, &ledger, &snaps)?;
        // With nothing recorded there is nothing to prove: the base is adopted (its identity
        // written) by the first change that needs it, so a process that never holds a volume
        // (the local resizer, which may write no trusted xattr) never writes to it.
        let identity = pool_key(journal.store_id(), &spec.name);
        let verdict = if recorded.is_empty() {
            base::ensure_exists(&spec.path, spec.create_missing)?
                .and_then(|()| base::check_unrecorded(&spec.path, &identity))
        } else {
            base::settle(&spec.path, &identity, &recorded, spec.create_missing)?
        };
        let (base, base_fs, refused) = match verdict {
            Err(why) => {
                tracing::error!(pool = %spec.name, base = %spec.path.display(), reason = %why,
                    "refusing the base path: its volumes are reported abnormal and nothing on it is changed until it is this driver's again (restart then)");
                let base = std::fs::canonicalize(&spec.path).unwrap_or(spec.path.clone());
                (base, "unknown", Some(why))
            }
            // Mount-table checks compare paths textually: work with the resolved base.
            Ok(()) => {
                let base = std::fs::canonicalize(&spec.path)?;
                let base_fs = statfs::fs_type(&base)?;
                (base, base_fs, None)
            }
        };
        let backend = Arc::new_cyclic(|me| HostpathBackend {
            me: me.clone(),
            snaps,
            adoptions,
            node: node.to_string(),
            pool: spec.name.clone(),
            identity,
            base,
            create_base: spec.create_missing,
            default_capacity,
            ledger,
            base_fs,
            features: OnceLock::new(),
            probing: Mutex::new(()),
            recent_space: Mutex::new(None),
            refused,
        });
        if backend.refused.is_none() {
            backend.recover(state_dir)?;
            backend.recover_snapshots()?;
        }
        Ok(backend)
    }

    /// What the base's filesystem offers. Probed on first use, not at start: a process that
    /// holds no volumes (the local resizer, which defers every volume to its node) never
    /// probes, and needs no quota or snapshot system calls its seccomp profile may refuse.
    fn features(&self) -> std::io::Result<&BaseFeatures> {
        if let Some(f) = self.features.get() {
            return Ok(f);
        }
        let _probing = self.probing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = self.features.get() {
            return Ok(f);
        }
        let (base, fs) = (&self.base, self.base_fs);
        let limiter = Limiter::probe(base)?;
        if let Some(l) = &limiter {
            tracing::info!(base = %base.display(), fs, limit = l.describe(), "volume sizes are hard limits");
        } else {
            tracing::warn!(base = %base.display(), fs,
                "no quota on the base path: volume sizes are advisory (use XFS mounted prjquota, ext4 with the project feature mounted prjquota, or btrfs with quota enabled)");
        }
        let snap_method = if matches!(limiter, Some(Limiter::Btrfs(_))) {
            snapshot::SnapMethod::Btrfs
        } else if crate::os::copytree::reflink_supported(base)? {
            snapshot::SnapMethod::Reflink
        } else {
            snapshot::SnapMethod::Copy
        };
        tracing::info!(base = %base.display(), fs, method = ?snap_method,
            "snapshots and clones: btrfs subvolume snapshots, reflink copies, or full copies");
        Ok(self.features.get_or_init(|| BaseFeatures {
            limiter,
            snap_method,
        }))
    }

    fn limiter(&self) -> Result<Option<&Limiter>> {
        Ok(self.probed()?.limiter.as_ref())
    }

    fn probed(&self) -> Result<&BaseFeatures> {
        self.features().map_err(|e| {
            Error::Internal(format!(
                "probing quota and snapshot support of base path {}: {e}",
                self.base.display()
            ))
        })
    }

    /// The directories the recorded volumes and snapshots (in the journal, or in the state of
    /// ferrovol 0.1 still to be adopted) have on the base, with their ids: what proves a base
    /// without an identity to be the recorded one.
    fn recorded_dirs(
        spec: &PoolSpec,
        state_dir: &Path,
        ledger: &Ledger<VolumeRecord>,
        snaps: &Ledger<snapshot::SnapRecord>,
    ) -> std::io::Result<Vec<base::Evidence>> {
        let base = spec.path.as_path();
        let mut out = Vec::new();
        // A volume's directory, and its trash (a delete stopped half-way), either of which
        // carries its id on the recorded base.
        let mut volume = |r: &VolumeRecord| {
            for name in [r.name.clone(), format!("{TRASH_PREFIX}{}", r.name)] {
                out.push((r.id.clone(), base.join(name)));
            }
        };
        if let Some(dir) = (spec.name == pool_config::DEFAULT_POOL)
            .then(|| crate::state::legacy::dir_with_records(state_dir, BACKEND))
            .flatten()
        {
            let old: Vec<VolumeRecord> = crate::state::legacy::load(&dir)?;
            old.iter().for_each(&mut volume);
        }
        ledger.for_each(&mut volume);
        snaps.for_each(|r| {
            if let Ok(key) = Self::snap_key(&r.id) {
                out.push((r.id.clone(), snapshot::snapshot_dir_in(base, &key)))
            }
        });
        Ok(out)
    }

    /// Whether the base may be used now: refused at start, or no longer carrying this store's
    /// identity (its filesystem unmounted or replaced while the driver runs) is Err(why).
    fn base_usable(&self) -> std::result::Result<(), String> {
        if let Some(why) = &self.refused {
            return Err(why.clone());
        }
        match base::check(&self.base, &self.identity) {
            // Not adopted yet, and nothing recorded on it that a wrong base could hide.
            Err(_) if self.nothing_recorded() => Ok(()),
            checked => checked,
        }
    }

    /// `base_usable` as the FailedPrecondition of an operation on `volume`; with nothing
    /// recorded yet, adopts the base first, so every volume directory lies on a base that
    /// carries this store's identity.
    fn require_base(&self, volume: &str) -> Result<()> {
        let refused = |why| Error::precondition(volume, format!("{why}; nothing was changed"));
        if self.refused.is_none() && self.nothing_recorded() {
            let settled = base::settle(&self.base, &self.identity, &[], self.create_base)
                .map_err(Error::os(volume, "record the base path's identity"))?;
            settled.map_err(refused)?;
        }
        self.base_usable().map_err(refused)
    }

    fn nothing_recorded(&self) -> bool {
        self.ledger.is_empty() && self.snaps.is_empty()
    }

    /// This backend, owned: for the steps that run after a commit, off this call.
    fn arc(&self) -> Arc<Self> {
        self.me
            .upgrade()
            .expect("a backend in use is held by the registry")
    }

    fn store_id(&self) -> &str {
        self.ledger.journal().store_id()
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    fn image_path(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join(IMAGE_FILE)
    }

    fn is_local(&self, node_tag: Option<&str>) -> bool {
        node_tag == Some(VolumeId::node_tag(&self.node).as_str())
    }

    /// One statfs of the base: (size of the whole filesystem, bytes free for new volumes, that is
    /// free space less what existing volumes may still claim).
    fn space(&self) -> Result<(u64, u64)> {
        let fs = statfs::fs_stats(&self.base)
            .map_err(Error::storage(format!("statfs {}", self.base.display())))?;
        *self.recent_space.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), fs.total_bytes, fs.available_bytes));
        let reserved = self.ledger.reserved_bytes();
        Ok((fs.total_bytes, fs.available_bytes.saturating_sub(reserved)))
    }

    /// `space` for a new volume of `capacity` bytes. One needing at most half of what a statfs
    /// less than `SPACE_REUSE` old left free takes that answer: it could change only if writers
    /// had used more than half the free space since, and the check is advisory anyway. One
    /// closer to the edge asks again. Saves a statfs per create under a burst of creates.
    fn space_for(&self, capacity: u64) -> Result<(u64, u64)> {
        let recent = *self.recent_space.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, total, available)) = recent {
            let free = available.saturating_sub(self.ledger.reserved_bytes());
            if at.elapsed() < SPACE_REUSE && capacity <= free / 2 {
                return Ok((total, free));
            }
        }
        self.space()
    }

    /// Refuses a volume of `size` bytes, `needed` of them new, that the base cannot hold: more
    /// than the whole filesystem is OutOfRange, more than is free ResourceExhausted.
    fn check_room(&self, volume: &str, size: u64, needed: u64, space: (u64, u64)) -> Result<()> {
        let (total, available) = space;
        if size > total {
            let why =
                format!("{size} bytes is more than the whole base filesystem ({total} bytes)");
            return Err(Error::out_of_range(volume, why));
        }
        if needed > available {
            let why = format!(
                "{needed} bytes needed, {available} bytes available on node {}",
                self.node
            );
            return Err(Error::no_space(volume, why));
        }
        Ok(())
    }

    fn info_with(&self, rec: &VolumeRecord, condition: VolumeCondition) -> VolumeInfo {
        let enforced = rec.backend.enforced_by.is_some().to_string();
        let path = self.volume_dir(&rec.name).display().to_string();
        let context = [
            ("ferrovol.io/capacity-enforced", enforced),
            ("ferrovol.io/path", path),
        ];
        self.info_of(rec, context, condition)
    }

    fn condition(&self, rec: &VolumeRecord) -> VolumeCondition {
        let dir = self.volume_dir(&rec.name);
        let missing = || match rec.kind {
            AccessKind::Mount => !dir.is_dir(),
            AccessKind::Block => !self.image_path(&rec.name).is_file(),
        };
        let message = match self.base_usable() {
            Err(why) => why,
            Ok(()) if missing() => format!("backing storage {} is gone", dir.display()),
            Ok(()) => return VolumeCondition::healthy(),
        };
        VolumeCondition {
            abnormal: true,
            message,
        }
    }

    /// Probe's check of this pool: its base usable and present, its state writable.
    pub(super) fn check_ready(&self) -> Result<()> {
        self.base_usable()
            .map_err(|why| Error::precondition(BACKEND, why))?;
        if !self.base.is_dir() {
            let why = format!("base path {} is missing", self.base.display());
            return Err(Error::Internal(why));
        }
        self.ledger.check_writable()
    }
}
