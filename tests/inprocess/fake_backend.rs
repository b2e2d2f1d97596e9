//! An in-memory `Backend` for in-process tests of the CSI services: no files, no mounts, no root.
//!
//! It keeps the CSI semantics the services rely on (create is idempotent by name and
//! AlreadyExists on a mismatch, unknown ids are NotFound, ControllerPublish records the
//! attachment per node, unknown StorageClass keys are InvalidArgument through the shared
//! `backend::params::decode`), and records every call so tests can see what reached it.

use ferrovol::backend::params::{decode, defining};
use ferrovol::backend::{
    Backend, BackendCaps, Capacity, CapacityRequest, ControllerBackend, Done, Expansion, Page,
    Reach,
};
use ferrovol::error::{Error, Result};
use ferrovol::volume::{
    AccessKind, Capability, CapacityRange, CreateRequest, VolumeCondition, VolumeId, VolumeInfo,
};
use serde::Deserialize;

mod node;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub const GIB: u64 = 1 << 30;
const ALIGN: u64 = 4096;

/// The StorageClass parameters the fake knows; any other key is refused by `decode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FakeParams {
    #[serde(default)]
    #[allow(dead_code)] // only its presence in the known-keys list matters
    tier: String,
}

#[derive(Debug, Clone)]
struct FakeVolume {
    id: VolumeId,
    capacity: u64,
    kind: AccessKind,
    parameters: BTreeMap<String, String>,
    /// node -> readonly, as ControllerPublish recorded it.
    published: BTreeMap<String, bool>,
}

#[derive(Default)]
struct State {
    /// By volume name: list order is name order, as in the real ledger.
    volumes: BTreeMap<String, FakeVolume>,
    staged: BTreeSet<(String, PathBuf)>,
    /// (id, target) -> readonly
    node_published: BTreeMap<(String, PathBuf), bool>,
}

pub struct FakeBackend {
    name: &'static str,
    node: String,
    caps: BackendCaps,
    /// Sum of all volume sizes this backend can hold.
    total: u64,
    /// The largest single volume (smaller than `total`, so the two GetCapacity numbers differ).
    max_volume: u64,
    ready: AtomicBool,
    state: Mutex<State>,
    calls: Mutex<Vec<String>>,
}

impl FakeBackend {
    /// A backend whose volumes live on `node` (like hostpath): single-node access modes,
    /// mount and block, ControllerPublish bookkeeping, staging, online expansion with a node step.
    pub fn node_local(name: &'static str, node: &str) -> Self {
        Self::with_caps(
            name,
            node,
            BackendCaps {
                reach: Reach::NodeLocal,
                multi_node: false,
                block: true,
                controller_publish: true,
                stage: true,
                expansion: Expansion::Online,
                node_expansion: true,
                quick_provisioning: true,
                clone: false,
            },
        )
    }

    /// A backend whose volumes any node reaches (like NFS): multi-node modes, mount only, no
    /// attach step, no staging, no expansion.
    pub fn cluster(name: &'static str) -> Self {
        Self::with_caps(
            name,
            "",
            BackendCaps {
                reach: Reach::Cluster,
                multi_node: true,
                block: false,
                controller_publish: false,
                stage: false,
                expansion: Expansion::None,
                node_expansion: false,
                quick_provisioning: false,
                clone: false,
            },
        )
    }

    pub fn with_caps(name: &'static str, node: &str, caps: BackendCaps) -> Self {
        FakeBackend {
            name,
            node: node.to_string(),
            caps,
            total: 100 * GIB,
            max_volume: 10 * GIB,
            ready: AtomicBool::new(true),
            state: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    /// Changes the capabilities (builder style).
    pub fn caps_mut(mut self, f: impl FnOnce(&mut BackendCaps)) -> Self {
        f(&mut self.caps);
        self
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Every call that reached this backend, as "method argument", in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls of one method (the text before the first space).
    pub fn calls_of(&self, method: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.split(' ').next() == Some(method))
            .collect()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn info(&self, v: &FakeVolume) -> VolumeInfo {
        VolumeInfo {
            id: v.id.to_string(),
            node: (self.caps.reach == Reach::NodeLocal).then(|| self.node.clone()),
            capacity_bytes: v.capacity,
            context: BTreeMap::from([("fake/backend".to_string(), self.name.to_string())]),
            published_nodes: v.published.keys().cloned().collect(),
            condition: VolumeCondition::healthy(),
        }
    }

    /// The name of the volume `id` names, or NotFound.
    fn find<'a>(st: &'a State, id: &VolumeId) -> Result<(&'a String, &'a FakeVolume)> {
        st.volumes
            .iter()
            .find(|(_, v)| &v.id == id)
            .ok_or_else(|| Error::not_found(id.to_string()))
    }

    fn find_mut<'a>(st: &'a mut State, id: &VolumeId) -> Result<&'a mut FakeVolume> {
        st.volumes
            .values_mut()
            .find(|v| &v.id == id)
            .ok_or_else(|| Error::not_found(id.to_string()))
    }

    /// Why a capability cannot be served on a volume of `kind`, as the real backends answer.
    fn unsupported(&self, cap: &Capability, kind: AccessKind) -> Option<String> {
        self.caps.refuse(self.name, cap).or_else(|| {
            (cap.kind != kind).then(|| {
                format!(
                    "access type {:?} does not match the volume's {kind:?}",
                    cap.kind
                )
            })
        })
    }
}

impl ControllerBackend for FakeBackend {
    fn volume_id(&self, name: &str) -> Result<VolumeId> {
        match self.caps.reach {
            Reach::NodeLocal => VolumeId::for_volume(self.name, &self.node, name),
            Reach::Cluster => VolumeId::cluster(self.name, name),
        }
    }

    fn create(&self, req: &CreateRequest) -> Result<Done<VolumeInfo>> {
        self.record(format!("create {}", req.name));
        let id = self.volume_id(&req.name)?;
        let vol = id.to_string();
        decode::<FakeParams>(self.name, &req.parameters)?;
        let kind = req.capabilities[0].kind;
        if let Some(why) = req
            .capabilities
            .iter()
            .find_map(|c| self.unsupported(c, kind))
        {
            return Err(Error::invalid(format!("volume {vol}: {why}")));
        }
        if self.caps.reach == Reach::NodeLocal
            && req
                .topology
                .as_ref()
                .is_some_and(|t| !t.allows_node(&self.node))
        {
            return Err(Error::no_space(
                vol,
                format!("the requisite topology excludes node {}", self.node),
            ));
        }
        let capacity = req.capacity.resolve(GIB, ALIGN, &vol)?;
        let mut st = self.state();
        if let Some(v) = st.volumes.get(&req.name) {
            if v.kind == kind
                && req.capacity.admits(v.capacity)
                && v.parameters == defining(&req.parameters)
            {
                return Ok(Done::Now(self.info(v)));
            }
            return Err(Error::exists(
                vol,
                "a volume of this name exists with another size, access type or parameters",
            ));
        }
        if capacity > self.max_volume {
            return Err(Error::OutOfRange {
                volume: vol,
                detail: format!(
                    "{capacity} bytes exceed the largest volume, {}",
                    self.max_volume
                ),
            });
        }
        let used: u64 = st.volumes.values().map(|v| v.capacity).sum();
        if used + capacity > self.total {
            return Err(Error::no_space(vol, "the fake backend is full"));
        }
        let v = FakeVolume {
            id,
            capacity,
            kind,
            parameters: defining(&req.parameters),
            published: BTreeMap::new(),
        };
        let info = self.info(&v);
        st.volumes.insert(req.name.clone(), v);
        Ok(Done::Now(info))
    }

    fn delete(&self, id: &VolumeId) -> Result<Done<()>> {
        self.record(format!("delete {id}"));
        let mut st = self.state();
        let Ok((name, v)) = Self::find(&st, id) else {
            return Ok(Done::Now(()));
        };
        if !v.published.is_empty() {
            return Err(Error::precondition(
                id.to_string(),
                "still published to a node",
            ));
        }
        let name = name.clone();
        st.volumes.remove(&name);
        Ok(Done::Now(()))
    }

    fn get(&self, id: &VolumeId) -> Result<VolumeInfo> {
        self.record(format!("get {id}"));
        let st = self.state();
        Ok(self.info(Self::find(&st, id)?.1))
    }

    fn list(&self, after: Option<&str>, max: usize) -> Result<Page> {
        self.record(format!("list {} {max}", after.unwrap_or("-")));
        let st = self.state();
        let mut entries = Vec::new();
        let mut last = None;
        // As the real ledger: next_after only when a further volume exists.
        for (name, v) in st
            .volumes
            .iter()
            .filter(|(n, _)| after.is_none_or(|a| n.as_str() > a))
        {
            if max != 0 && entries.len() == max {
                return Ok(Page {
                    entries,
                    next_after: last,
                });
            }
            entries.push(self.info(v));
            last = Some(name.clone());
        }
        Ok(Page {
            entries,
            next_after: None,
        })
    }

    fn validate(
        &self,
        id: &VolumeId,
        caps: &[Capability],
        parameters: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        self.record(format!("validate {id}"));
        let st = self.state();
        let v = Self::find(&st, id)?.1;
        if !parameters.is_empty() && defining(parameters) != v.parameters {
            return Ok(Some("parameters differ from the volume's".into()));
        }
        Ok(caps.iter().find_map(|c| self.unsupported(c, v.kind)))
    }

    fn capacity(&self, req: &CapacityRequest) -> Result<Capacity> {
        self.record("capacity".into());
        decode::<FakeParams>(self.name, &req.parameters)?;
        let excluded = self.caps.reach == Reach::NodeLocal
            && req
                .topology
                .as_ref()
                .is_some_and(|t| !t.allows_node(&self.node));
        if excluded
            || req
                .capabilities
                .iter()
                .any(|c| self.caps.refuse(self.name, c).is_some())
        {
            return Ok(Capacity::default());
        }
        let used: u64 = self.state().volumes.values().map(|v| v.capacity).sum();
        let available = self.total - used;
        Ok(Capacity {
            available,
            maximum_volume_size: available.min(self.max_volume),
        })
    }

    fn expand(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)> {
        self.record(format!("expand {id}"));
        let mut st = self.state();
        let v = Self::find_mut(&mut st, id)?;
        if self.caps.expansion == Expansion::None {
            return Err(Error::Unimplemented(format!(
                "volume {id}: {} volumes cannot grow",
                self.name
            )));
        }
        if range.limit != 0 && range.limit < v.capacity {
            return Err(Error::OutOfRange {
                volume: id.to_string(),
                detail: format!(
                    "limit_bytes {} is below the current {}; volumes do not shrink",
                    range.limit, v.capacity
                ),
            });
        }
        let want = range.resolve(v.capacity, ALIGN, &id.to_string())?;
        v.capacity = v.capacity.max(want);
        Ok((v.capacity, self.caps.node_expansion))
    }

    fn controller_publish(
        &self,
        id: &VolumeId,
        node: &str,
        read_only: bool,
        cap: &Capability,
    ) -> Result<BTreeMap<String, String>> {
        self.record(format!("controller_publish {id} {node}"));
        let mut st = self.state();
        let v = Self::find_mut(&mut st, id)?;
        if self.caps.reach == Reach::NodeLocal && node != self.node {
            return Err(Error::NodeNotFound {
                node: node.to_string(),
                detail: format!("volume {id} is local to node {}", self.node),
            });
        }
        if let Some(why) = self.unsupported(cap, v.kind) {
            return Err(Error::invalid(format!("volume {id}: {why}")));
        }
        match v.published.get(node) {
            Some(ro) if *ro == read_only => {}
            Some(ro) => {
                return Err(Error::exists(
                    id.to_string(),
                    format!("already published to node {node} with readonly={ro}"),
                ))
            }
            None => {
                v.published.insert(node.to_string(), read_only);
            }
        }
        Ok(BTreeMap::from([(
            "fake/attached-to".to_string(),
            node.to_string(),
        )]))
    }

    fn controller_unpublish(&self, id: &VolumeId, node: Option<&str>) -> Result<()> {
        self.record(format!("controller_unpublish {id} {}", node.unwrap_or("*")));
        let mut st = self.state();
        if let Ok(v) = Self::find_mut(&mut st, id) {
            match node {
                Some(n) => {
                    v.published.remove(n);
                }
                None => v.published.clear(),
            }
        }
        Ok(())
    }

    fn published_count(&self, node: &str) -> usize {
        self.state()
            .volumes
            .values()
            .filter(|v| v.published.contains_key(node))
            .count()
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn caps(&self) -> &BackendCaps {
        &self.caps
    }

    fn check_ready(&self) -> Result<()> {
        self.record("check_ready".into());
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::Unavailable {
                server: self.name.to_string(),
                detail: "the fake backend was told it is not ready".into(),
            })
        }
    }
}
