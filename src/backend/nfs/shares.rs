//! The NFS exports this controller knows (see the module doc of `nfs`): those given with
//! `--nfs-share`, and those in the share registry, which outlives the controller's pod. A share
//! is registered before the first volume on it is acknowledged, so every id this controller
//! issued names a share (by its key, `layout::share_key`) that the registry resolves, whatever
//! happened to the pod and its state directory since.
//!
//! The registry is one small trait with two stores: a ConfigMap the controller owns in its
//! namespace (`share_configmap.rs`, in Kubernetes) and a file (`FileRegistry`, standalone).

use super::layout;
use crate::error::{Error, Result};
use crate::os::fsutil::write_atomic;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One NFS export.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Share {
    pub server: String,
    pub share: String,
}

impl Share {
    pub fn new(server: &str, share: &str) -> Self {
        Share {
            server: server.to_string(),
            share: share.to_string(),
        }
    }

    pub fn key(&self) -> String {
        layout::share_key(&self.server, &self.share)
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.server, self.share)
    }
}

/// Parses `server:/path` (the form of `--nfs-share`, of registry entries and of mount sources).
pub fn parse_share(s: &str) -> Result<(String, String), String> {
    match s.split_once(":/") {
        Some((server, path)) if !server.is_empty() && !server.contains(['/', ' ', '\0']) => {
            let share = format!("/{}", path.trim_end_matches('/'));
            Ok((server.to_string(), share))
        }
        _ => Err(format!("NFS share {s:?} is not of the form server:/path")),
    }
}

/// Where the registered shares are kept, durably and beyond this process.
pub trait ShareRegistry: Send + Sync {
    /// Names the store in messages ("ConfigMap ns/name", "file /path").
    fn describe(&self) -> String;
    fn load(&self) -> Result<Vec<Share>>;
    /// Adds `share`, keeping every entry another writer added meanwhile; returns once stored.
    /// A different share registered under the same key is FailedPrecondition.
    fn add(&self, share: &Share) -> Result<()>;
}

/// The shares by key, refusing two shares under one key. `what` names where they came from.
pub(super) fn by_key(
    shares: impl IntoIterator<Item = Share>,
    what: &str,
) -> Result<BTreeMap<String, Share>, String> {
    let mut out: BTreeMap<String, Share> = BTreeMap::new();
    for s in shares {
        let key = s.key();
        if let Some(have) = out.get(&key).filter(|have| **have != s) {
            return Err(format!(
                "{what}: shares {have} and {s} have the same key {key}; volume ids could not tell them apart"
            ));
        }
        out.insert(key, s);
    }
    Ok(out)
}

pub struct Shares {
    registry: Box<dyn ShareRegistry>,
    /// From `--nfs-share`: known whether or not registered.
    configured: Vec<Share>,
    /// As the registry last said, plus what this process registered since.
    registered: Mutex<BTreeMap<String, Share>>,
}

impl Shares {
    /// Reads the registry: a controller that cannot would answer for volumes it cannot find,
    /// so start-up fails instead (the pod restarts and tries again).
    pub fn open(registry: Box<dyn ShareRegistry>, configured: &[(String, String)]) -> Result<Self> {
        let configured: Vec<Share> = configured.iter().map(|(s, p)| Share::new(s, p)).collect();
        by_key(configured.iter().cloned(), "--nfs-share").map_err(Error::Internal)?;
        let shares = Shares {
            registry,
            configured,
            registered: Mutex::new(BTreeMap::new()),
        };
        shares.refresh()?;
        tracing::info!(registry = %shares.registry.describe(), shares = ?shares.list(), "NFS share registry read");
        Ok(shares)
    }

    /// Reads the registry again (another controller may have registered shares since).
    pub fn refresh(&self) -> Result<()> {
        let loaded = self.registry.load()?;
        let all = self.configured.iter().chain(&loaded).cloned();
        let what = format!("--nfs-share and {}", self.registry.describe());
        by_key(all, &what).map_err(Error::Internal)?;
        *self.registered() = loaded.into_iter().map(|s| (s.key(), s)).collect();
        Ok(())
    }

    /// Every known share as (server, share): the configured ones first.
    pub fn list(&self) -> Vec<(String, String)> {
        let registered = self.registered();
        let more = registered.values().filter(|s| !self.configured.contains(s));
        let all = self.configured.iter().chain(more);
        all.map(|s| (s.server.clone(), s.share.clone())).collect()
    }

    /// The share whose key is `key`, reading the registry again when it is not known here.
    /// FailedPrecondition, naming the registry, when no share has that key: the volume cannot
    /// be found, and must not be answered for as if it were gone.
    pub fn resolve(&self, volume: &str, key: &str) -> Result<Share> {
        if let Some(s) = self.known(key) {
            return Ok(s);
        }
        self.refresh()?;
        self.known(key).ok_or_else(|| {
            let registry = self.registry.describe();
            let why = format!("its NFS share (key {key}) is not registered in {registry} nor given with --nfs-share; register the share with --nfs-share server:/path or restore the registry");
            Error::precondition(volume, why)
        })
    }

    fn known(&self, key: &str) -> Option<Share> {
        let configured = self.configured.iter().find(|s| s.key() == key);
        configured.or(self.registered().get(key)).cloned()
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Share>> {
        self.registered.lock().expect("shares poisoned")
    }

    /// Registers `server:share` unless the registry has it already; returns its key. Called
    /// before anything is written on the share, so a volume is never acknowledged on a share
    /// the registry does not hold.
    pub fn register(&self, volume: &str, server: &str, share: &str) -> Result<String> {
        let s = Share::new(server, share);
        let key = s.key();
        match self.known(&key) {
            Some(have) if have != s => {
                let registry = self.registry.describe();
                let why = format!("NFS share {s} has key {key}, which already names share {have} in {registry}; ids could not tell them apart");
                return Err(Error::precondition(volume, why));
            }
            Some(_) if self.registered().contains_key(&key) => return Ok(key),
            _ => {}
        }
        self.registry.add(&s)?;
        self.registered().insert(key.clone(), s.clone());
        tracing::info!(share = %s, key = %key, registry = %self.registry.describe(), "NFS share registered");
        Ok(key)
    }
}

/// The share registry as a file, for a controller outside Kubernetes (standalone `serve`,
/// csi-sanity): a JSON list of `[server, share]` pairs, rewritten atomically and synced.
/// Default `<state-dir>/nfs-shares.json` (`--nfs-registry-file` puts it elsewhere); the format
/// is the one earlier versions kept there, so their shares are read as registered.
pub struct FileRegistry {
    file: PathBuf,
    /// Serialises this process's read-modify-write of the file.
    write: Mutex<()>,
}

impl FileRegistry {
    pub fn new(file: PathBuf) -> Self {
        FileRegistry {
            file,
            write: Mutex::new(()),
        }
    }

    fn failed(&self, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("NFS share registry {}: {e}", self.file.display()))
    }
}

impl ShareRegistry for FileRegistry {
    fn describe(&self) -> String {
        format!("file {}", self.file.display())
    }

    fn load(&self) -> Result<Vec<Share>> {
        let pairs: Vec<(String, String)> = match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.failed(e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.failed(e)),
        };
        Ok(pairs.iter().map(|(s, p)| Share::new(s, p)).collect())
    }

    fn add(&self, share: &Share) -> Result<()> {
        let _held = self.write.lock().expect("registry file lock poisoned");
        let mut shares = self.load()?;
        if shares.contains(share) {
            return Ok(());
        }
        shares.push(share.clone());
        if let Err(e) = by_key(shares.iter().cloned(), &self.describe()) {
            return Err(Error::precondition(share.to_string(), e));
        }
        let pairs: Vec<(&str, &str)> = shares
            .iter()
            .map(|s| (s.server.as_str(), s.share.as_str()))
            .collect();
        let bytes = serde_json::to_vec_pretty(&pairs).expect("pairs serialise");
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .and_then(|_| write_atomic(&self.file, &bytes))
            .map_err(|e| self.failed(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(file: &std::path::Path, configured: &[(&str, &str)]) -> Shares {
        let configured: Vec<(String, String)> = configured
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Shares::open(Box::new(FileRegistry::new(file.to_path_buf())), &configured).unwrap()
    }

    #[test]
    fn shares_parse() {
        assert_eq!(
            parse_share("10.0.0.5:/srv/nfs/").unwrap(),
            ("10.0.0.5".into(), "/srv/nfs".into())
        );
        assert_eq!(parse_share("s:/").unwrap(), ("s".into(), "/".into()));
        assert!(parse_share("nocolon").is_err());
        assert!(parse_share(":/x").is_err());
    }

    #[test]
    fn registered_shares_outlive_the_process_and_resolve_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("registry/nfs-shares.json");
        let s = open(&f, &[("a", "/x")]);
        let kb = s.register("nfs/v", "b", "/y").unwrap();
        assert_eq!(s.register("nfs/v", "b", "/y").unwrap(), kb, "idempotent");
        let again = open(&f, &[]);
        assert_eq!(again.list(), vec![("b".into(), "/y".into())]);
        assert_eq!(again.resolve("nfs/v", &kb).unwrap(), Share::new("b", "/y"));
        // A configured share is known, and registered the first time a volume goes on it.
        let ka = Share::new("a", "/x").key();
        let e = again.resolve("nfs/v", &ka).unwrap_err();
        assert!(
            matches!(e, Error::FailedPrecondition { .. }) && e.to_string().contains(&ka),
            "{e}"
        );
        assert_eq!(s.resolve("nfs/v", &ka).unwrap(), Share::new("a", "/x"));
        s.register("nfs/w", "a", "/x").unwrap();
        assert_eq!(open(&f, &[]).list().len(), 2);
    }

    #[test]
    fn a_share_registered_by_another_process_is_found_on_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nfs-shares.json");
        let first = open(&f, &[]);
        let second = open(&f, &[]);
        let k = second.register("nfs/v", "c", "/z").unwrap();
        assert_eq!(first.resolve("nfs/v", &k).unwrap(), Share::new("c", "/z"));
    }

    #[test]
    fn two_shares_with_one_key_are_refused() {
        let collide = by_key([Share::new("a", "/x"), Share::new("a", "/x")], "t");
        assert_eq!(collide.unwrap().len(), 1, "the same share twice is one");
        // Find two shares whose keys collide (32 bits: a birthday search stays small).
        let mut seen: BTreeMap<String, Share> = BTreeMap::new();
        let (a, b) = (0..)
            .map(|i| Share::new("s", &format!("/e{i}")))
            .find_map(|s| seen.insert(s.key(), s.clone()).map(|prev| (prev, s)))
            .unwrap();
        let e = by_key([a.clone(), b.clone()], "t").unwrap_err();
        assert!(e.contains(&a.key()), "{e}");
    }

    #[test]
    fn reads_the_format_earlier_versions_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nfs-shares.json");
        std::fs::write(&f, r#"[["a", "/x"], ["b", "/y"]]"#).unwrap();
        let r = FileRegistry::new(f.clone());
        assert_eq!(
            r.load().unwrap(),
            vec![Share::new("a", "/x"), Share::new("b", "/y")]
        );
        r.add(&Share::new("c", "/z")).unwrap();
        r.add(&Share::new("a", "/x")).unwrap();
        let raw: Vec<(String, String)> =
            serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(raw.len(), 3);
        std::fs::write(&f, "{").unwrap();
        assert!(r
            .load()
            .unwrap_err()
            .to_string()
            .contains("nfs-shares.json"));
    }
}
