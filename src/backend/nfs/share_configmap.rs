//! The share registry as a ConfigMap the controller owns in its namespace
//! (`--nfs-registry-configmap`, namespace from `--nfs-registry-namespace` or POD_NAMESPACE):
//! it outlives the controller's pod, so a rollout, a reschedule or an eviction forgets no
//! share. One entry per share, `<share key>: <server>:<share>`, readable with kubectl.
//!
//! Writers merge: `add` reads the object, adds its entry and writes it back at the
//! resourceVersion it read (a replace), or creates the object when there is none; a conflict
//! (another controller wrote in between) starts over from a fresh read, so no writer's entry is
//! ever lost. The chart's Role allows get/update/patch on this one name, and create (which RBAC
//! cannot limit by name).
//!
//! A controller that finds no ConfigMap (the first start of a version with a registry) seeds it
//! from the PersistentVolumes of this driver: their volume context names the share of every
//! volume issued before, so ids that name no share are searched for where they are.

use super::shares::{by_key, parse_share, Share, ShareRegistry};
use crate::backend::registry::DriverKind;
use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Read-merge-write rounds before a run of conflicts is reported (the CO retries the RPC).
const ATTEMPTS: usize = 8;
const API_SERVER: &str = "Kubernetes API server";

/// The ConfigMap as read: its entries and the resourceVersion a replace must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    pub data: BTreeMap<String, String>,
    pub resource_version: String,
}

#[derive(Debug)]
pub(super) enum ApiError {
    /// 409: the object changed since it was read, or was created meanwhile.
    Conflict,
    Failed(String),
}

/// What the registry needs of the API server, for one ConfigMap.
pub(super) trait ConfigMapApi {
    fn get(&self) -> Result<Option<Stored>, ApiError>;
    fn create(&self, data: &BTreeMap<String, String>) -> Result<(), ApiError>;
    fn replace(
        &self,
        data: &BTreeMap<String, String>,
        resource_version: &str,
    ) -> Result<(), ApiError>;
}

/// The shares a ConfigMap's entries name; an entry that is not `<key of share>: <share>` is an
/// error naming it (an edit by hand that broke it must be repaired, not guessed at).
pub(super) fn decode(data: &BTreeMap<String, String>) -> Result<Vec<Share>, String> {
    let shares = data
        .iter()
        .map(|(key, value)| {
            let (server, share) = parse_share(value).map_err(|e| format!("entry {key}: {e}"))?;
            let s = Share::new(&server, &share);
            if s.key() != *key {
                return Err(format!(
                    "entry {key}: share {s} has key {}, not {key}",
                    s.key()
                ));
            }
            Ok(s)
        })
        .collect::<Result<Vec<Share>, String>>()?;
    by_key(shares.iter().cloned(), "entries")?;
    Ok(shares)
}

pub(super) fn encode(share: &Share) -> (String, String) {
    (share.key(), share.to_string())
}

/// `data` with `share` added: `None` when it is there already, an error when its key names
/// another share or `data` does not decode.
pub(super) fn merged(
    data: &BTreeMap<String, String>,
    share: &Share,
) -> Result<Option<BTreeMap<String, String>>, String> {
    decode(data)?;
    let (key, value) = encode(share);
    match data.get(&key) {
        Some(v) if *v == value => Ok(None),
        Some(v) => Err(format!(
            "key {key} of share {share} already names share {v}; volume ids could not tell them apart"
        )),
        None => {
            let mut out = data.clone();
            out.insert(key, value);
            Ok(Some(out))
        }
    }
}

/// The shares the volume contexts of this driver's PersistentVolumes name.
pub(super) fn shares_of(pvs: &[PersistentVolume]) -> Vec<Share> {
    let mut out: Vec<Share> = pvs
        .iter()
        .filter_map(|pv| pv.spec.as_ref()?.csi.as_ref())
        .filter(|csi| csi.driver == DriverKind::Nfs.csi_name())
        .filter_map(|csi| {
            let ctx = csi.volume_attributes.as_ref()?;
            let server = ctx.get(super::CTX_SERVER)?;
            let share = ctx.get(super::CTX_SHARE)?;
            parse_share(&format!("{server}:{share}")).ok()
        })
        .map(|(server, share)| Share::new(&server, &share))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Adds `share` through `api`, merging with whatever another writer stored meanwhile.
pub(super) fn add_with(api: &dyn ConfigMapApi, share: &Share, what: &str) -> Result<()> {
    let unavailable = |detail: String| Error::Unavailable {
        server: API_SERVER.to_string(),
        detail: format!("registering NFS share {share} in {what}: {detail}"),
    };
    for _ in 0..ATTEMPTS {
        let outcome = match api.get().map_err(|e| unavailable(format!("{e:?}")))? {
            None => api.create(&BTreeMap::from([encode(share)])),
            Some(stored) => match merged(&stored.data, share) {
                Ok(None) => return Ok(()),
                Ok(Some(data)) => api.replace(&data, &stored.resource_version),
                Err(e) => {
                    return Err(Error::precondition(
                        share.to_string(),
                        format!("{what}: {e}"),
                    ))
                }
            },
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(ApiError::Conflict) => continue,
            Err(ApiError::Failed(e)) => return Err(unavailable(e)),
        }
    }
    let why = format!("{ATTEMPTS} attempts met a concurrent change; try again");
    Err(unavailable(why))
}

/// The registry in ConfigMap `namespace/name`, through the Kubernetes client that the process's
/// environment names (in-cluster service account, or KUBECONFIG).
pub struct ConfigMapRegistry {
    namespace: String,
    name: String,
    /// Drives the client; each call runs it on a thread of its own, so callers may be on a
    /// runtime's threads or on none.
    rt: tokio::runtime::Runtime,
    client: Mutex<Option<kube::Client>>,
}

impl ConfigMapRegistry {
    pub fn new(namespace: &str, name: &str) -> std::io::Result<Self> {
        Ok(ConfigMapRegistry {
            namespace: namespace.to_string(),
            name: name.to_string(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: Mutex::new(None),
        })
    }

    fn call<T, F, Fut>(&self, op: F) -> Result<T, ApiError>
    where
        T: Send,
        F: FnOnce(Api<ConfigMap>, String) -> Fut + Send,
        Fut: Future<Output = kube::Result<T>>,
    {
        let mut held = self.client.lock().expect("kube client poisoned");
        let slot: &mut Option<kube::Client> = &mut held;
        let run = || {
            self.rt.block_on(async {
                if slot.is_none() {
                    let made = kube::Client::try_default().await;
                    let made =
                        made.map_err(|e| ApiError::Failed(format!("no Kubernetes client: {e}")));
                    *slot = Some(made?);
                }
                let api = Api::namespaced(slot.clone().expect("made above"), &self.namespace);
                let secs = CALL_TIMEOUT.as_secs();
                match tokio::time::timeout(CALL_TIMEOUT, op(api, self.name.clone())).await {
                    Err(_) => Err(ApiError::Failed(format!("no answer within {secs} s"))),
                    Ok(Err(kube::Error::Api(e))) if e.code == 409 => Err(ApiError::Conflict),
                    Ok(Err(e)) => Err(ApiError::Failed(e.to_string())),
                    Ok(Ok(v)) => Ok(v),
                }
            })
        };
        std::thread::scope(|s| {
            s.spawn(run)
                .join()
                .unwrap_or_else(|_| Err(ApiError::Failed("the API call panicked".into())))
        })
    }

    fn object(&self, data: &BTreeMap<String, String>, resource_version: Option<&str>) -> ConfigMap {
        let managed = (
            "app.kubernetes.io/managed-by".to_string(),
            "ferrovol".to_string(),
        );
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([managed])),
                resource_version: resource_version.map(str::to_string),
                ..ObjectMeta::default()
            },
            data: Some(data.clone()),
            ..ConfigMap::default()
        }
    }

    /// Registers the shares this driver's PersistentVolumes name (see the module doc); what
    /// cannot be read or registered is logged, and tried again at the next load.
    fn seed(&self) -> Vec<Share> {
        let pvs = self.call(|api, _| async move {
            let pvs: Api<PersistentVolume> = Api::all(api.into_client());
            pvs.list(&ListParams::default()).await
        });
        let shares = match pvs {
            Ok(list) => shares_of(&list.items),
            Err(e) => {
                tracing::warn!(registry = %self.describe(), error = ?e,
                    "cannot list PersistentVolumes to seed the NFS share registry; volumes whose ids name no share are found only on --nfs-share shares");
                return Vec::new();
            }
        };
        let mut seeded = Vec::new();
        for s in shares {
            match self.add(&s) {
                Ok(()) => seeded.push(s),
                Err(e) => {
                    tracing::warn!(share = %s, error = %e, "NFS share not seeded into the registry")
                }
            }
        }
        if !seeded.is_empty() {
            tracing::info!(registry = %self.describe(), shares = ?seeded, "NFS share registry seeded from PersistentVolumes");
        }
        seeded
    }
}

impl ConfigMapApi for ConfigMapRegistry {
    fn get(&self) -> Result<Option<Stored>, ApiError> {
        let cm = self.call(|api, name| async move { api.get_opt(&name).await })?;
        Ok(cm.map(|cm| Stored {
            data: cm.data.unwrap_or_default(),
            resource_version: cm.metadata.resource_version.unwrap_or_default(),
        }))
    }

    fn create(&self, data: &BTreeMap<String, String>) -> Result<(), ApiError> {
        let cm = self.object(data, None);
        self.call(|api, _| async move { api.create(&PostParams::default(), &cm).await })
            .map(|_| ())
    }

    fn replace(
        &self,
        data: &BTreeMap<String, String>,
        resource_version: &str,
    ) -> Result<(), ApiError> {
        let cm = self.object(data, Some(resource_version));
        self.call(|api, name| async move { api.replace(&name, &PostParams::default(), &cm).await })
            .map(|_| ())
    }
}

impl ShareRegistry for ConfigMapRegistry {
    fn describe(&self) -> String {
        format!("ConfigMap {}/{}", self.namespace, self.name)
    }

    fn load(&self) -> Result<Vec<Share>> {
        let what = self.describe();
        match self.get() {
            Ok(None) => Ok(self.seed()),
            Ok(Some(stored)) => {
                decode(&stored.data).map_err(|e| Error::Internal(format!("{what}: {e}")))
            }
            Err(e) => Err(Error::Unavailable {
                server: API_SERVER.to_string(),
                detail: format!("reading the NFS share registry {what}: {e:?}"),
            }),
        }
    }

    fn add(&self, share: &Share) -> Result<()> {
        add_with(self, share, &self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An API server's behaviour for one object: resourceVersions, 409 on a stale replace or
    /// an existing create, and a second writer that acts between a get and a write.
    #[derive(Default)]
    struct Fake {
        stored: RefCell<Option<Stored>>,
        version: RefCell<u64>,
        /// Shares another controller registers right after each of our gets, once each.
        racing: RefCell<Vec<Share>>,
        writes: RefCell<usize>,
    }

    impl Fake {
        fn store(&self, data: BTreeMap<String, String>) {
            *self.version.borrow_mut() += 1;
            *self.stored.borrow_mut() = Some(Stored {
                data,
                resource_version: self.version.borrow().to_string(),
            });
        }

        fn race(&self) {
            if let Some(other) = self.racing.borrow_mut().pop() {
                let mut data = self
                    .stored
                    .borrow()
                    .as_ref()
                    .map(|s| s.data.clone())
                    .unwrap_or_default();
                data.insert(other.key(), other.to_string());
                self.store(data);
            }
        }
    }

    impl ConfigMapApi for Fake {
        fn get(&self) -> Result<Option<Stored>, ApiError> {
            let now = self.stored.borrow().clone();
            self.race();
            Ok(now)
        }

        fn create(&self, data: &BTreeMap<String, String>) -> Result<(), ApiError> {
            if self.stored.borrow().is_some() {
                return Err(ApiError::Conflict);
            }
            *self.writes.borrow_mut() += 1;
            self.store(data.clone());
            Ok(())
        }

        fn replace(&self, data: &BTreeMap<String, String>, rv: &str) -> Result<(), ApiError> {
            let current = self
                .stored
                .borrow()
                .as_ref()
                .map(|s| s.resource_version.clone());
            if current.as_deref() != Some(rv) {
                return Err(ApiError::Conflict);
            }
            *self.writes.borrow_mut() += 1;
            self.store(data.clone());
            Ok(())
        }
    }

    fn shares_in(f: &Fake) -> Vec<Share> {
        decode(&f.stored.borrow().as_ref().unwrap().data).unwrap()
    }

    #[test]
    fn entries_serialise_as_key_and_share() {
        let s = Share::new("10.0.0.5", "/srv/nfs");
        let (k, v) = encode(&s);
        assert_eq!(
            (k.as_str(), v.as_str()),
            (s.key().as_str(), "10.0.0.5:/srv/nfs")
        );
        let data = BTreeMap::from([(k.clone(), v)]);
        assert_eq!(decode(&data).unwrap(), vec![s.clone()]);
        assert_eq!(merged(&data, &s).unwrap(), None, "already there");
        let t = Share::new("10.0.0.5", "/srv/other");
        assert_eq!(merged(&data, &t).unwrap().unwrap().len(), 2);
        for bad in [
            BTreeMap::from([(k.clone(), "no-path".to_string())]),
            BTreeMap::from([("00000000".to_string(), "10.0.0.5:/srv/nfs".to_string())]),
        ] {
            let e = decode(&bad).unwrap_err();
            assert!(e.starts_with("entry "), "{e}");
            assert!(merged(&bad, &t).is_err());
        }
        // A key that names another share refuses the newcomer.
        let squatted = BTreeMap::from([(t.key(), "elsewhere:/x".to_string())]);
        assert!(decode(&squatted).is_err());
    }

    #[test]
    fn persistent_volumes_of_this_driver_seed_the_registry() {
        let pv = |driver: &str, server: &str, share: &str| -> PersistentVolume {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pv"},
                "spec": {"csi": {"driver": driver, "volumeHandle": "nfs/x",
                    "volumeAttributes": {"server": server, "share": share, "subDir": "x"}}}
            }))
            .unwrap()
        };
        let nfs = DriverKind::Nfs.csi_name();
        let pvs = [
            pv(nfs, "10.0.0.5", "/srv/nfs"),
            pv(nfs, "10.0.0.5", "/srv/nfs/"),
            pv(nfs, "10.0.0.6", "/x"),
            pv(DriverKind::Local.csi_name(), "10.0.0.7", "/y"),
            pv(nfs, "", "/z"),
        ];
        assert_eq!(
            shares_of(&pvs),
            vec![
                Share::new("10.0.0.5", "/srv/nfs"),
                Share::new("10.0.0.6", "/x")
            ]
        );
    }

    #[test]
    fn the_first_share_creates_the_object_and_a_create_race_merges() {
        let f = Fake::default();
        let a = Share::new("a", "/x");
        add_with(&f, &a, "cm").unwrap();
        assert_eq!(shares_in(&f), vec![a.clone()]);
        // Another controller creates the object between our get (none) and our create.
        let f = Fake::default();
        let b = Share::new("b", "/y");
        f.racing.borrow_mut().push(b.clone());
        add_with(&f, &a, "cm").unwrap();
        let mut got = shares_in(&f);
        got.sort();
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn a_stale_resource_version_reads_again_and_keeps_both_entries() {
        let f = Fake::default();
        let a = Share::new("a", "/x");
        add_with(&f, &a, "cm").unwrap();
        let (b, c) = (Share::new("b", "/y"), Share::new("c", "/z"));
        f.racing.borrow_mut().extend([b.clone(), c.clone()]);
        let d = Share::new("d", "/w");
        add_with(&f, &d, "cm").unwrap();
        let mut got = shares_in(&f);
        got.sort();
        assert_eq!(got, vec![a.clone(), b, c, d.clone()]);
        // Registering again writes nothing.
        let writes = *f.writes.borrow();
        add_with(&f, &a, "cm").unwrap();
        add_with(&f, &d, "cm").unwrap();
        assert_eq!(*f.writes.borrow(), writes);
    }

    #[test]
    fn endless_conflicts_are_unavailable_and_a_broken_entry_is_a_precondition() {
        let f = Fake::default();
        add_with(&f, &Share::new("a", "/x"), "cm").unwrap();
        f.racing
            .borrow_mut()
            .extend((0..ATTEMPTS).map(|i| Share::new("r", &format!("/{i}"))));
        let e = add_with(&f, &Share::new("b", "/y"), "cm").unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        f.store(BTreeMap::from([("zz".to_string(), "a:/x".to_string())]));
        let e = add_with(&f, &Share::new("b", "/y"), "cm").unwrap_err();
        assert!(
            matches!(e, Error::FailedPrecondition { .. }) && e.to_string().contains("entry zz"),
            "{e}"
        );
    }
}
