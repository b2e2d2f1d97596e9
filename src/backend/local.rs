//! What the node-local backends (hostpath, device) share: the attach bookkeeping of their
//! controller side, and the node calls' flow around what differs between them. A stage, publish
//! or unpublish checks the request against the volume's record, takes up a mount the record does
//! not name (a call killed before its commit) only when it provably shows the volume, and
//! commits the record last; the backend says how its volume is staged, bound and proven.

use crate::backend::params::parameters_mismatch;
use crate::backend::{BackendCaps, Capacity, CapacityRequest, ControllerBackend, Done};
use crate::backend::{NodeBackend, Page};
use crate::error::{Error, Result};
use crate::node::Target;
use crate::os::mount::BindOptions;
use crate::os::mountinfo;
use crate::state::{Ledger, Phase, Publication, VolumeRecord};
use crate::volume::{AccessKind, Capability, CapacityRange, CreateRequest, PublishRequest};
use crate::volume::{StageRequest, VolumeCondition, VolumeId};
use crate::volume::{VolumeInfo, VolumeStats};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub type Rec<B> = VolumeRecord<<B as LocalVolumes>::Ext>;

pub(crate) fn is_mounted(path: &Path, volume: &str) -> Result<bool> {
    mountinfo::is_mount_point(path).map_err(Error::os(volume, "check mount point"))
}

/// A node-local backend: one ledger of volume records on this node. Its controller side is the
/// steps below that differ, and the bookkeeping they share (`ControllerBackend`).
pub trait LocalVolumes: Send + Sync {
    /// What the records carry beside the shared fields.
    type Ext: Clone + PartialEq + Serialize + DeserializeOwned;
    const BACKEND: &'static str;
    const CAPS: &'static BackendCaps;

    fn ledger(&self) -> &Ledger<Rec<Self>>;
    fn node_id(&self) -> &str;
    fn volume_info(&self, rec: &Rec<Self>) -> VolumeInfo;
    fn create_volume(&self, req: &CreateRequest) -> Result<Done<VolumeInfo>>;
    fn delete_volume(&self, id: &VolumeId) -> Result<Done<()>>;
    fn capacity_for(&self, req: &CapacityRequest) -> Result<Capacity>;
    fn expand_volume(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)>;

    fn record(&self, id: &VolumeId) -> Result<Rec<Self>> {
        self.ledger()
            .by_id(&id.to_string())
            .ok_or_else(|| Error::not_found(id.to_string()))
    }

    /// The volume's VolumeInfo, its backend, access type and `context` in its volume context
    /// (informative only: the node side finds the volume from its own records).
    fn info_of(
        &self,
        rec: &Rec<Self>,
        context: impl IntoIterator<Item = (&'static str, String)>,
        condition: VolumeCondition,
    ) -> VolumeInfo {
        let kind = format!("{:?}", rec.kind).to_lowercase();
        let shared = [
            ("ferrovol.io/backend", Self::BACKEND.to_string()),
            ("ferrovol.io/access-type", kind),
        ];
        VolumeInfo {
            id: rec.id.clone(),
            node: Some(self.node_id().to_string()),
            capacity_bytes: rec.capacity_bytes,
            context: shared
                .into_iter()
                .chain(context)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            published_nodes: rec.controller_published.keys().cloned().collect(),
            condition,
        }
    }

    /// CreateVolume's topology check: volumes are made on this node only.
    fn check_topology(&self, volume: &str, req: &CreateRequest) -> Result<()> {
        let node = self.node_id();
        if req.topology.as_ref().is_some_and(|t| !t.allows_node(node)) {
            let why = format!(
                "this driver provisions on node {node} only, which the requisite topology excludes"
            );
            return Err(Error::no_space(volume, why));
        }
        Ok(())
    }

    /// GetCapacity: none for a topology without this node or capabilities not served.
    fn no_capacity_for(&self, req: &CapacityRequest) -> Option<Capacity> {
        let node = self.node_id();
        let elsewhere = req.topology.as_ref().is_some_and(|t| !t.allows_node(node));
        let caps = &req.capabilities;
        let refused = !caps.is_empty() && Self::CAPS.access_kind(Self::BACKEND, "", caps).is_err();
        (elsewhere || refused).then(Capacity::default)
    }
}

impl<B: LocalVolumes> ControllerBackend for B {
    fn volume_id(&self, name: &str) -> Result<VolumeId> {
        VolumeId::for_volume(B::BACKEND, self.node_id(), name)
    }

    fn create(&self, req: &CreateRequest) -> Result<Done<VolumeInfo>> {
        self.create_volume(req)
    }

    fn delete(&self, id: &VolumeId) -> Result<Done<()>> {
        self.delete_volume(id)
    }

    fn get(&self, id: &VolumeId) -> Result<VolumeInfo> {
        Ok(self.volume_info(&self.record(id)?))
    }

    fn list(&self, after: Option<&str>, max: usize) -> Result<Page> {
        let ready = |r: &Rec<B>| r.phase == Phase::Ready;
        let (entries, next_after) = self
            .ledger()
            .page(after, max, ready, |r| self.volume_info(r));
        Ok(Page {
            entries,
            next_after,
        })
    }

    fn validate(
        &self,
        id: &VolumeId,
        caps: &[Capability],
        parameters: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        let rec = self.record(id)?;
        let refused = || {
            caps.iter()
                .find_map(|c| B::CAPS.refuse_on(B::BACKEND, c, rec.kind))
        };
        Ok(parameters_mismatch(parameters, &rec.parameters).or_else(refused))
    }

    fn capacity(&self, req: &CapacityRequest) -> Result<Capacity> {
        self.capacity_for(req)
    }

    fn expand(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)> {
        self.expand_volume(id, range)
    }

    /// Records the attachment: only this node can attach its volumes (another node is
    /// NotFound, as the spec and csi-sanity expect); a repeat the same way is done, with the
    /// other read-only setting AlreadyExists.
    fn controller_publish(
        &self,
        id: &VolumeId,
        node: &str,
        read_only: bool,
        cap: &Capability,
    ) -> Result<BTreeMap<String, String>> {
        let mut rec = self.record(id)?;
        refuse::<B>(cap, &rec)?;
        let local = self.node_id();
        if node != local {
            let detail = format!("volume {} is local to node {local}", rec.id);
            let node = node.to_string();
            return Err(Error::NodeNotFound { node, detail });
        }
        match rec.controller_published.insert(node.to_string(), read_only) {
            Some(ro) if ro != read_only => {
                let why = format!("already published to node {node} with readonly={ro}");
                Err(Error::exists(rec.id, why))
            }
            Some(_) => Ok(BTreeMap::new()),
            None => self.ledger().save(rec).map(|()| BTreeMap::new()),
        }
    }

    /// Forgets the publication to `node` (to every node when None); a volume that is gone is
    /// unpublished everywhere.
    fn controller_unpublish(&self, id: &VolumeId, node: Option<&str>) -> Result<()> {
        let Some(mut rec) = self.ledger().by_id(&id.to_string()) else {
            return Ok(());
        };
        let before = rec.controller_published.len();
        rec.controller_published
            .retain(|k, _| node.is_some_and(|n| k != n));
        if rec.controller_published.len() != before {
            self.ledger().save(rec)?;
        }
        Ok(())
    }

    fn published_count(&self, node: &str) -> usize {
        self.ledger().published_count(node)
    }
}

/// The node side of a node-local backend: the steps of its node calls that differ.
pub trait LocalNode: LocalVolumes {
    /// What a publication binds from, found before the target is touched.
    type Source;
    /// Prefix of the node calls' failpoints.
    const FAILPOINTS: &'static str;

    /// The record a stage or publish works on.
    fn node_record(&self, id: &VolumeId) -> Result<Rec<Self>> {
        self.record(id)
    }
    /// FailedPrecondition when the volume's storage may not be used now.
    fn usable(&self, _volume: &str) -> Result<()> {
        Ok(())
    }
    /// Whether `path` shows the volume (a mount its record does not name is ours only then):
    /// by default, whether it shows the volume's source.
    fn shows(&self, rec: &Rec<Self>, path: &Path) -> bool {
        self.source(rec)
            .is_ok_and(|src| self.shows_source(rec, &src, path))
    }
    /// Makes the volume appear at the staging path (the record is saved after).
    fn stage_volume(&self, rec: &mut Rec<Self>, req: &StageRequest) -> Result<()>;
    /// Takes down what a stage of a raw block volume made.
    fn unstage_block(&self, _rec: &Rec<Self>) -> Result<()> {
        Ok(())
    }
    fn source(&self, rec: &Rec<Self>) -> Result<Self::Source>;
    /// Whether `path` (the staging path, or an unrecorded mount at a target) shows `src`.
    fn shows_source(&self, rec: &Rec<Self>, src: &Self::Source, path: &Path) -> bool;
    fn bind_options(&self, vid: &str, flags: &[String], read_only: bool) -> Result<BindOptions>;
    fn bind_block(
        &self,
        rec: &Rec<Self>,
        src: &Self::Source,
        target: &Target,
        opts: BindOptions,
        wanted: &Publication,
    ) -> Result<()>;
    /// After an unpublish took down the target (`removed`: its recorded publication).
    fn unpublished(&self, rec: &Rec<Self>, removed: Option<&Publication>) -> Result<()>;
    fn volume_stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats>;
    fn expand_on_node(&self, id: &VolumeId, path: &Path, range: CapacityRange) -> Result<u64>;
}

/// InvalidArgument when `cap` cannot be served on the volume.
fn refuse<B: LocalVolumes>(cap: &Capability, rec: &Rec<B>) -> Result<()> {
    match B::CAPS.refuse_on(B::BACKEND, cap, rec.kind) {
        Some(why) => Err(Error::invalid(format!("volume {}: {why}", rec.id))),
        None => Ok(()),
    }
}

/// NotFound for a mount at `path` the volume's record does not name and that does not show
/// the volume: it is not ours to take down.
fn left_alone(vid: String, what: &str, path: &Path) -> Error {
    let why = format!("not {what} at {}; its mount is left alone", path.display());
    Error::not_found_because(vid, why)
}

fn hit<B: LocalNode>(point: &str) {
    crate::failpoint::hit(&format!("{}{point}", B::FAILPOINTS));
}

impl<B: LocalNode> NodeBackend for B {
    fn stage(&self, req: &StageRequest) -> Result<()> {
        let staging = req.staging.as_path();
        let mut rec = self.node_record(&req.id)?;
        refuse::<B>(&req.capability, &rec)?;
        self.usable(&rec.id)?;
        if let Some(prev) = rec.staged_at.as_ref().filter(|p| *p != staging) {
            let why = format!("already staged at {}", prev.display());
            return Err(Error::precondition(rec.id, why));
        }
        let before = rec.clone();
        self.stage_volume(&mut rec, req)?;
        rec.staged_at = Some(staging.to_path_buf());
        if rec != before {
            self.ledger().save(rec)?;
        }
        Ok(())
    }

    fn unstage(&self, id: &VolumeId, staging_t: &Target) -> Result<()> {
        let staging = staging_t.as_path();
        let Ok(mut rec) = self.record(id) else {
            return crate::backend::nothing_mounted_at(&id.to_string(), staging);
        };
        let vid = rec.id.clone();
        if let Some(t) = rec.published.keys().next() {
            let why = format!("still published at {}; unpublish it first", t.display());
            return Err(Error::precondition(vid, why));
        }
        match rec.kind {
            AccessKind::Mount if is_mounted(staging, &vid)? => {
                if rec.staged_at.as_deref() != Some(staging) && !self.shows(&rec, staging) {
                    return Err(left_alone(vid, "staged", staging));
                }
                staging_t.unmount_all(&vid)?;
                hit::<B>("unstage:after-unmount");
            }
            AccessKind::Mount => {}
            AccessKind::Block => self.unstage_block(&rec)?,
        }
        if rec.staged_at.take().is_some() {
            self.ledger().save(rec)?;
        }
        Ok(())
    }

    fn publish(&self, req: &PublishRequest) -> Result<()> {
        let mut rec = self.node_record(&req.id)?;
        let vid = rec.id.clone();
        let (cap, target) = (&req.capability, req.target.as_path());
        refuse::<B>(cap, &rec)?;
        let staging_t = req.staging.as_ref().ok_or_else(|| {
            let why = "staging_target_path is required (the driver stages volumes)";
            Error::precondition(&vid, why)
        })?;
        let staging = staging_t.as_path();
        let at = staging.display();
        self.usable(&vid)?;
        if rec.staged_at.as_deref() != Some(staging) {
            return Err(Error::precondition(vid, format!("not staged at {at}")));
        }
        let src = self.source(&rec)?;
        // A staging mount that vanished (manual unmount, a crashed kubelet) would turn into an
        // empty directory on the node's root filesystem: never publish that to a pod.
        if rec.kind == AccessKind::Mount && !self.shows_source(&rec, &src, staging) {
            let why = format!("{at} no longer shows the volume; stage it again");
            return Err(Error::precondition(vid, why));
        }
        let opts = self.bind_options(
            &vid,
            &cap.mount_flags,
            req.read_only || cap.mode.read_only(),
        )?;
        let wanted = Publication {
            read_only: opts.read_only(),
            mount_flags: cap.mount_flags.clone(),
        };
        if is_mounted(target, &vid)? {
            // Already mounted (a retry): only the rare unrecorded case needs the mount table.
            let same = match rec.published.get(target) {
                Some(p) => *p == wanted,
                None => {
                    self.shows_source(&rec, &src, target)
                        && mountinfo::mount_at(target)
                            .map_err(Error::os(&vid, "read mount table"))?
                            .is_some_and(|entry| opts.matches(&entry))
                }
            };
            if !same {
                let why = "is already mounted with other options or another volume";
                return Err(Error::exists(vid, format!("{} {why}", target.display())));
            }
        } else {
            match rec.kind {
                AccessKind::Mount => req.target.bind_staged(&vid, staging_t, opts)?,
                AccessKind::Block => self.bind_block(&rec, &src, &req.target, opts, &wanted)?,
            }
            hit::<B>("publish:after-bind");
        }
        if rec.published.get(target) != Some(&wanted) {
            rec.published.insert(target.to_path_buf(), wanted);
            self.ledger().save(rec)?;
        }
        Ok(())
    }

    fn unpublish(&self, id: &VolumeId, target_t: &Target) -> Result<()> {
        let target = target_t.as_path();
        let Ok(mut rec) = self.record(id) else {
            return crate::backend::nothing_mounted_at(&id.to_string(), target);
        };
        let vid = rec.id.clone();
        if is_mounted(target, &vid)? {
            // A publish killed between its bind and its record leaves a mount the record does
            // not name: it is ours when it shows the volume.
            if !rec.published.contains_key(target) && !self.shows(&rec, target) {
                return Err(left_alone(vid, "published", target));
            }
            target_t.unmount_all(&vid)?;
            hit::<B>("unpublish:after-unmount");
        }
        let removed = rec.published.remove(target);
        self.unpublished(&rec, removed.as_ref())?;
        target_t.remove(&vid);
        if removed.is_some() {
            self.ledger().save(rec)?;
        }
        Ok(())
    }

    fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats> {
        self.volume_stats(id, path)
    }

    fn node_expand(&self, id: &VolumeId, path: &Path, range: CapacityRange) -> Result<u64> {
        self.expand_on_node(id, path, range)
    }
}

/// NodeGetVolumeStats' check that `path` is where the volume is staged or published (or, when
/// `shows`, a path that shows it).
pub(crate) fn require_at<E>(
    rec: &VolumeRecord<E>,
    path: &Path,
    shows: impl FnOnce() -> bool,
) -> Result<()> {
    let known = rec.staged_at.as_deref() == Some(path) || rec.published.contains_key(path);
    if !path.exists() || !(known || shows()) {
        let why = format!("it is not published at {}", path.display());
        return Err(Error::not_found_because(&rec.id, why));
    }
    Ok(())
}
