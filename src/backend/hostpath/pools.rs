//! Hostpath pools: a node may hold hostpath volumes under several base paths (disks), each a
//! named pool (`pool_config`) that a StorageClass chooses with the parameter `pool` (none:
//! `default`). Each pool is one `HostpathBackend` (its own base identity, quota, snapshot
//! method, capacity and recovery); `HostpathPools`, the backend the CSI layer sees, routes every
//! call to one.
//!
//! Ids do not name the pool: they stay `hostpath/<node>/<name>`, so every id ever issued stays
//! valid and none grows past CSI's 128 bytes. Each pool keeps its records under its own journal
//! keys (`default` under `hostpath/` and `hostpath-snap/`, the keys of earlier versions; pool `p`
//! under `hostpath@p/` and `hostpath-snap@p/`), and a call by id asks the pools' indexes which
//! holds it. Names are unique across a node's pools (CreateVolume of a name another pool holds
//! is AlreadyExists), so an id names one volume.
//!
//! A pool whose path is missing at start (its disk not mounted) is not created and keeps no
//! other pool from serving: it reports zero capacity, its CreateVolume answers
//! ResourceExhausted (so the scheduler picks another node), `ferrovol_hostpath_pool_up{pool}` is
//! 0, and Probe stays ready while another pool is usable. With nothing recorded in it, it is
//! picked up once its path appears (at the next GetCapacity or CreateVolume naming it); a pool
//! with recorded volumes whose base is refused needs a restart once it is right.
use super::pool_config::{PoolSpec, DEFAULT_POOL};
use super::HostpathBackend;
use crate::error::{Error, Result};
use crate::state::Journal;
use crate::volume::VolumeId;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub(super) struct Slot {
    pub(super) spec: PoolSpec,
    backend: RwLock<Arc<HostpathBackend>>,
    /// Its path was missing when opened, with nothing recorded: `refresh` opens it again.
    missing: AtomicBool,
}

impl Slot {
    pub(super) fn get(&self) -> Arc<HostpathBackend> {
        Arc::clone(&self.backend.read().unwrap_or_else(|p| p.into_inner()))
    }
}

pub struct HostpathPools {
    pub(super) node: String,
    pub(super) slots: Vec<Slot>,
    journal: Arc<Journal>,
    state_dir: PathBuf,
    default_capacity: u64,
    /// Held while a pool whose path was missing is opened.
    reopening: Mutex<()>,
    /// Ids of volumes and snapshots whose records lie under a pool the configuration no
    /// longer names, with that pool: a delete of one is refused, not answered as of nothing.
    unserved: HashMap<String, String>,
}

impl HostpathPools {
    /// Opens every pool (see `HostpathBackend::open`). Two pools on one path, or one inside
    /// another, are refused: each would take the other's volumes for unrecorded ones.
    pub fn open(
        node_id: &str,
        pools: &[PoolSpec],
        state_dir: &Path,
        default_capacity: u64,
        journal: Arc<Journal>,
        live: &HashMap<String, Vec<u8>>,
    ) -> io::Result<Arc<Self>> {
        check_disjoint(pools)?;
        let mut me = HostpathPools {
            node: node_id.to_string(),
            slots: Vec::new(),
            journal,
            state_dir: state_dir.to_path_buf(),
            default_capacity,
            reopening: Mutex::new(()),
            unserved: unserved_records(pools, live),
        };
        for spec in pools {
            let backend = me.open_pool(spec, live)?;
            if let Some(why) = &backend.refused {
                tracing::error!(pool = %spec.name, base = %spec.path.display(), reason = %why,
                    "hostpath pool unusable: it reports no capacity and the other pools serve on");
            } else {
                tracing::info!(pool = %spec.name, base = %backend.base.display(), "hostpath pool ready");
            }
            let missing =
                backend.refused.is_some() && backend.nothing_recorded() && !spec.path.is_dir();
            me.slots.push(Slot {
                spec: spec.clone(),
                backend: RwLock::new(backend),
                missing: AtomicBool::new(missing),
            });
        }
        let pools = Arc::new(me);
        crate::metrics::watch_pools(super::BACKEND, Arc::downgrade(&pools) as _);
        Ok(pools)
    }

    fn open_pool(
        &self,
        spec: &PoolSpec,
        live: &HashMap<String, Vec<u8>>,
    ) -> io::Result<Arc<HostpathBackend>> {
        let (node, dir, journal) = (&self.node, &self.state_dir, self.journal.clone());
        HostpathBackend::open(node, spec, dir, self.default_capacity, journal, live)
    }

    pub(super) fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.spec.name == name)
    }

    /// The pool that answers for ids no pool holds: `default`, else the first.
    pub(super) fn fallback(&self) -> Arc<HostpathBackend> {
        self.slot(DEFAULT_POOL).unwrap_or(&self.slots[0]).get()
    }

    pub(super) fn pools(&self) -> impl Iterator<Item = Arc<HostpathBackend>> + '_ {
        self.slots.iter().map(Slot::get)
    }

    /// FailedPrecondition when `id`'s record lies under a pool no longer configured: a delete
    /// there would answer OK and leave its record and data behind for good.
    pub(super) fn refuse_unserved(&self, id: &str) -> Result<()> {
        let Some(pool) = self.unserved.get(id) else {
            return Ok(());
        };
        let why = format!("its record is in hostpath pool {pool:?}, which this node's pool configuration no longer names: configure the pool again to delete it");
        Err(Error::precondition(id, why))
    }

    pub(super) fn holder(&self, id: &str) -> Option<Arc<HostpathBackend>> {
        self.pools().find(|b| b.ledger.by_id(id).is_some())
    }

    /// The pool whose records hold volume `id`, else the fallback (which answers NotFound).
    pub(super) fn for_volume(&self, id: &VolumeId) -> Arc<HostpathBackend> {
        self.holder(&id.to_string())
            .unwrap_or_else(|| self.fallback())
    }

    pub(super) fn holder_of_name(&self, name: &str) -> Option<Arc<HostpathBackend>> {
        self.pools().find(|b| b.ledger.get(name).is_some())
    }

    /// Pool `name` for a new volume, picked up first if its path appeared since start.
    /// ResourceExhausted when this node has no such pool or its path is missing (the scheduler
    /// saw no capacity here; the provisioner then lets it pick another node). A pool with
    /// volumes whose base is refused answers itself (FailedPrecondition).
    pub(super) fn for_create(&self, name: &str, volume: &str) -> Result<Arc<HostpathBackend>> {
        let Some(slot) = self.slot(name) else {
            let names: Vec<&str> = self.slots.iter().map(|s| s.spec.name.as_str()).collect();
            return Err(Error::no_space(
                volume,
                format!(
                    "node {} has no hostpath pool {name:?} (its pools: {})",
                    self.node,
                    names.join(", ")
                ),
            ));
        };
        let pool = self.refresh(slot);
        // A pool without volumes whose path is missing is like no pool.
        if slot.missing.load(Ordering::Acquire) || (pool.nothing_recorded() && !pool.base.is_dir())
        {
            return Err(Error::no_space(
                volume,
                format!(
                    "hostpath pool {name:?} on node {}: its path {} is missing (is its \
                     filesystem mounted?)",
                    self.node,
                    slot.spec.path.display()
                ),
            ));
        }
        Ok(pool)
    }

    /// The slot's pool, opened again first if it was refused at start with nothing recorded
    /// (its path was missing) and its path is a directory now.
    pub(super) fn refresh(&self, slot: &Slot) -> Arc<HostpathBackend> {
        if !slot.missing.load(Ordering::Acquire) || !slot.spec.path.is_dir() {
            return slot.get();
        }
        let _one = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.missing.load(Ordering::Acquire) {
            return slot.get();
        }
        // Nothing was recorded in it at start, and a refused pool records nothing since.
        match self.open_pool(&slot.spec, &HashMap::new()) {
            Ok(b) => {
                if let Some(why) = &b.refused {
                    tracing::error!(pool = %slot.spec.name, reason = %why,
                        "hostpath pool path appeared, but the pool is unusable (restart once it is right)");
                } else {
                    tracing::info!(pool = %slot.spec.name, base = %b.base.display(), "hostpath pool appeared: serving it");
                }
                *slot.backend.write().unwrap_or_else(|p| p.into_inner()) = b;
                slot.missing.store(false, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(pool = %slot.spec.name, error = %e, "hostpath pool could not be opened")
            }
        }
        slot.get()
    }
}

impl crate::metrics::PoolStates for HostpathPools {
    fn pool_states(&self) -> Vec<(String, bool)> {
        self.slots
            .iter()
            .map(|s| (s.spec.name.clone(), s.get().pool_down().is_none()))
            .collect()
    }
}

impl HostpathBackend {
    /// Why this pool cannot take new volumes now, if it cannot.
    pub(super) fn pool_down(&self) -> Option<String> {
        self.base_usable().err().or_else(|| {
            (!self.base.is_dir()).then(|| {
                format!(
                    "pool path {} is missing: is its filesystem mounted?",
                    self.base.display()
                )
            })
        })
    }
}

/// Refuses two pools on one path or one inside another (compared as resolved where they
/// exist, as written where not).
fn check_disjoint(pools: &[PoolSpec]) -> io::Result<()> {
    let resolved: Vec<PathBuf> = pools
        .iter()
        .map(|p| std::fs::canonicalize(&p.path).unwrap_or_else(|_| p.path.clone()))
        .collect();
    for (i, a) in resolved.iter().enumerate() {
        for (j, b) in resolved.iter().enumerate() {
            if i != j && a.starts_with(b) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "hostpath pools {} ({}) and {} ({}) overlap: give each pool its own directory, none inside another",
                        pools[i].name,
                        a.display(),
                        pools[j].name,
                        b.display()
                    ),
                ));
            }
        }
    }
    let names: std::collections::HashSet<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    if names.len() != pools.len() || pools.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "hostpath pools need distinct names, and at least one pool",
        ));
    }
    Ok(())
}

/// The `unserved` map: records under `hostpath[@pool]/` or the snapshot ledger's keys whose
/// pool is not configured (`default` for keys without `@`).
fn unserved_records(
    pools: &[PoolSpec],
    live: &HashMap<String, Vec<u8>>,
) -> HashMap<String, String> {
    let ledgers = [super::BACKEND, super::snapshot::LEDGER];
    let mut out = HashMap::new();
    for (key, value) in live {
        let Some((store, _)) = key.split_once('/') else {
            continue;
        };
        let (ledger, pool) = store.split_once('@').unwrap_or((store, DEFAULT_POOL));
        if !ledgers.contains(&ledger) || pools.iter().any(|p| p.name == pool) {
            continue;
        }
        let record = serde_json::from_slice::<serde_json::Value>(value).ok();
        if let Some(id) = record.as_ref().and_then(|r| r["id"].as_str()) {
            out.insert(id.to_string(), pool.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, path: &Path) -> PoolSpec {
        PoolSpec {
            name: name.into(),
            path: path.into(),
            create_missing: false,
        }
    }

    #[test]
    fn pools_on_one_path_or_nested_or_of_one_name_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        assert!(check_disjoint(&[spec("x", &a), spec("y", &b)]).is_ok());
        let err = check_disjoint(&[spec("x", &a), spec("y", &a)]).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        assert!(check_disjoint(&[spec("x", &a), spec("y", &a.join("in"))]).is_err());
        assert!(check_disjoint(&[spec("x", &a), spec("x", &b)]).is_err());
        assert!(check_disjoint(&[]).is_err());
    }

    #[test]
    fn journal_keys_and_identity_of_the_default_pool_are_the_earlier_ones() {
        use crate::backend::hostpath::{pool_key, snapshot};
        let keys = |pool| {
            (
                pool_key(super::super::BACKEND, pool),
                pool_key(snapshot::LEDGER, pool),
            )
        };
        assert_eq!(
            keys(DEFAULT_POOL),
            ("hostpath".to_string(), "hostpath-snap".to_string())
        );
        assert_eq!(
            keys("fast"),
            (
                "hostpath@fast".to_string(),
                "hostpath-snap@fast".to_string()
            )
        );
        assert_eq!(pool_key("s1", "default"), "s1");
        assert_eq!(pool_key("s1", "fast"), "s1@fast");
    }
}
