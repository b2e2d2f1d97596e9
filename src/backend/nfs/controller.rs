//! Controller side of the NFS backend: create, delete, get, list, capacity, expand. Every step
//! goes through the user-space client; see the module doc for the record protocol. DeleteVolume
//! turns the record `Deleting`, then removes, archives or retains the directory by its class's
//! `onDelete` (each only while its file handle is the one recorded), and removes the record last.

use super::layout::{self, RecordState, VolumeRecord, RECORD_VERSION};
use super::params::{NfsParams, OnDelete};
use super::pattern::{Values, Var};
use super::rollback::undo_create;
use super::{
    names, needless, recorded_handle, remove_record, write_record, NfsBackend, BACKEND, CAPS,
};
use super::{CTX_NFSVERS, CTX_SERVER, CTX_SHARE, CTX_SUBDIR};
use crate::backend::{Capacity, CapacityRequest, ControllerBackend, Done, Page};
use crate::error::{Error, Result};
use crate::nfs::{Guarded, NfsClient};
use crate::volume::{
    validate_component, Capability, CapacityRange, CreateRequest, VolumeCondition, VolumeId,
    VolumeInfo,
};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Mode of parent directories a nested pattern creates (shared by many volumes: traversable by
/// all, writable by the owner only).
const PARENT_MODE: u32 = 0o755;
/// Archive names taken in the same second get `-<n>`; give up after this many.
const ARCHIVE_ATTEMPTS: u32 = 100;
/// The StorageClass parameters, without the keys the CSI layer and the sidecars own.
pub(super) fn class_params(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .filter(|(k, _)| k.as_str() != "backend")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The first field in which an existing volume differs from a repeated CreateVolume.
fn mismatch(have: &VolumeRecord, want: &VolumeRecord, range: &CapacityRange) -> Option<String> {
    fn field<T: PartialEq + std::fmt::Debug>(what: &str, a: &T, b: &T) -> Option<String> {
        (a != b).then(|| format!("it exists with {what} {a:?}, this request asks for {b:?}"))
    }
    let (h, w) = (have, want);
    let (size, perms) = (h.capacity_bytes, "mountPermissions");
    field("subDir", &h.sub_dir, &w.sub_dir)
        .or_else(|| field("content source", &h.source, &w.source))
        .or_else(|| field("onDelete", &h.on_delete, &w.on_delete))
        .or_else(|| field(perms, &h.mount_permissions, &w.mount_permissions))
        .or_else(|| field("uid/gid", &(h.uid, h.gid), &(w.uid, w.gid)))
        .or_else(|| {
            let why = format!("it exists with {size} bytes, outside the requested range");
            (!range.admits(size)).then_some(why)
        })
}

impl NfsBackend {
    pub(super) fn info(&self, rec: &VolumeRecord, condition: VolumeCondition) -> VolumeInfo {
        let mut context = BTreeMap::from([
            (CTX_SERVER.to_string(), rec.server.clone()),
            (CTX_SHARE.to_string(), rec.share.clone()),
            (CTX_SUBDIR.to_string(), rec.sub_dir.clone()),
        ]);
        if let Some(v) = &rec.nfs_vers {
            context.insert(CTX_NFSVERS.to_string(), v.clone());
        }
        VolumeInfo {
            id: rec.id.clone(),
            node: None,
            capacity_bytes: rec.capacity_bytes,
            context,
            published_nodes: Vec::new(),
            condition,
        }
    }

    fn condition(&self, c: &NfsClient, rec: &VolumeRecord) -> Result<VolumeCondition> {
        let (dir, server, share) = (&rec.sub_dir, &rec.server, &rec.share);
        let found = c.handle_of(dir).map_err(|e| self.err(&rec.id, e))?;
        let abnormal = |why: &str| VolumeCondition {
            abnormal: true,
            message: format!("directory {dir} on {server}:{share} {why}"),
        };
        Ok(match found {
            Some((h, _)) if rec.dir_handle.as_ref().is_some_and(|mine| *mine != h) => {
                abnormal("is not the one made for this volume (another file handle)")
            }
            Some((_, a)) if a.is_dir() => VolumeCondition::healthy(),
            _ => abnormal("is gone"),
        })
    }

    /// Intent record, directory, Ready record. A failure after the intent rolls back.
    fn make(&self, c: &NfsClient, mut rec: VolumeRecord) -> Result<VolumeInfo> {
        write_record(c, &rec, self.cfg.timeout)?;
        crate::failpoint::hit("nfs-create:after-intent");
        let (mode, t) = (rec.mount_permissions, self.cfg.timeout);
        let mut made = self.claim_dir(c, &mut rec, mode);
        // MKDIR's mode is applied by the server as given; owners need a SETATTR (root only).
        if made.is_ok() && (rec.uid.is_some() || rec.gid.is_some()) {
            made = c
                .setattr(&rec.sub_dir, rec.root_attr())
                .map_err(|e| self.err(&rec.id, e));
        }
        if let Err(e) = made {
            if matches!(e, Error::FailedPrecondition { .. }) {
                // Not ours: nothing of it may be touched, so only the record goes.
                let _ = remove_record(c, &rec, self.cfg.timeout);
            } else if let Err(undo) = self.restoring(&rec.id, || undo_create(c, &rec, t)) {
                tracing::warn!(volume = %rec.id, error = %undo, "rollback of a failed create incomplete; the next call on this volume finishes it");
            }
            return Err(e);
        }
        crate::failpoint::hit("nfs-create:before-ready");
        rec.state = RecordState::Ready;
        write_record(c, &rec, self.cfg.timeout)?;
        Ok(self.info(&rec, VolumeCondition::healthy()))
    }

    /// Makes `rec`'s directory (and its parents) with `mode` and keeps its handle in `rec`;
    /// FailedPrecondition when something is there already (not ours: left untouched).
    pub(super) fn claim_dir(&self, c: &NfsClient, rec: &mut VolumeRecord, mode: u32) -> Result<()> {
        let err = |e| self.err(&rec.id, e);
        if let Some((parent, _)) = rec.sub_dir.rsplit_once('/') {
            // Never inside another volume's directory: deleting or archiving that volume
            // would take this one with it. (The subDir itself is the claim's to prove: a
            // record of a deleted volume may still name it.)
            let place = format!("subDir {}", rec.sub_dir);
            self.refuse_owned(&rec.id, c, &rec.sub_dir, &place, true)?;
            c.mkdir_all(parent, PARENT_MODE).map_err(err)?;
        }
        let Some(handle) = c.mkdir_claim(&rec.sub_dir, mode).map_err(err)? else {
            let (dir, server, share) = (&rec.sub_dir, &rec.server, &rec.share);
            let why = format!("{dir} already exists on {server}:{share} and is not a volume of this driver; left untouched");
            return Err(Error::precondition(&rec.id, why));
        };
        rec.dir_handle = Some(handle);
        Ok(())
    }

    /// `nfs/<share key>/<key>`: the share the parameters name, and the key of the name.
    fn id_and_params(&self, req: &CreateRequest) -> Result<(VolumeId, NfsParams)> {
        validate_component("name", &req.name)?;
        let p = NfsParams::parse(&class_params(&req.parameters))
            .map_err(|e| Error::invalid(format!("volume {}: {e}", req.name)))?;
        let id = VolumeId {
            backend: BACKEND.to_string(),
            node: Some(layout::share_key(&p.server, &p.share)),
            key: layout::volume_key(&req.name),
        };
        Ok((id, p))
    }

    /// Carries out onDelete on the volume's own directory (never a parent, never a directory
    /// without the recorded handle), then drops the record. Each step is idempotent, so a retry
    /// after a crash or a failed step finishes the job.
    pub(super) fn finish_delete(&self, c: &NfsClient, rec: &VolumeRecord) -> Result<()> {
        let vid = &rec.id;
        let err = |e| self.err(vid, e);
        let done = match (rec.on_delete, &rec.dir_handle) {
            (OnDelete::Retain, _) => Guarded::Absent,
            (OnDelete::Archive, Some(handle)) => self.archive(c, rec, handle)?,
            (OnDelete::Delete, Some(h)) => c.remove_tree_if(&rec.sub_dir, Some(h)).map_err(err)?,
            (_, None) if c.lookup(&rec.sub_dir).map_err(err)?.is_some() => {
                let (dir, server, share) = (&rec.sub_dir, &rec.server, &rec.share);
                let record = layout::record_path(rec.key());
                return Err(Error::precondition(vid, format!("its record, from an earlier driver version, was being deleted and keeps no file handle: {dir} on {server}:{share} cannot be proven to be this volume's directory rather than one made since; remove the directory or the record {record} by hand")));
            }
            (_, None) => Guarded::Absent,
        };
        if done == Guarded::Foreign {
            tracing::warn!(volume = %vid, dir = %rec.sub_dir, server = %rec.server,
                "the directory there is not the one made for this volume (another file handle): left untouched, only the record goes");
        }
        remove_record(c, rec, self.cfg.timeout)?;
        tracing::info!(volume = %vid, server = %rec.server, dir = %rec.sub_dir, on_delete = ?rec.on_delete, "volume deleted");
        Ok(())
    }

    /// Moves the volume's directory (the one with `handle`) to a free archive name beside it.
    fn archive(&self, c: &NfsClient, rec: &VolumeRecord, handle: &str) -> Result<Guarded> {
        let vid = &rec.id;
        let err = |e| self.err(vid, e);
        match c.handle_of(&rec.sub_dir).map_err(err)? {
            Some((h, _)) if h == handle => {}
            // Already archived by an earlier attempt (or removed by hand): nothing to move.
            None => return Ok(Guarded::Absent),
            Some(_) => return Ok(Guarded::Foreign),
        }
        let at = SystemTime::now();
        for attempt in 0..ARCHIVE_ATTEMPTS {
            let to = layout::archive_path(&rec.sub_dir, at, attempt);
            // RENAME replaces an empty directory silently: only onto a name that is free.
            let done = c.rename_if(&rec.sub_dir, handle, &to, None).map_err(err)?;
            if done == Guarded::Done {
                tracing::info!(volume = %vid, to = %to, "volume directory archived");
            }
            if done != Guarded::Foreign {
                return Ok(done);
            }
        }
        let (dir, server) = (&rec.sub_dir, &rec.server);
        let why = format!("volume {vid}: no free archive name beside {dir} on {server}");
        Err(Error::Internal(why))
    }
}

impl ControllerBackend for NfsBackend {
    /// An NFS id names its share, which only the CreateVolume parameters give: see `create_id`.
    fn volume_id(&self, name: &str) -> Result<VolumeId> {
        Err(Error::Internal(format!(
            "volume {name}: an NFS volume id names its share, known only from the parameters"
        )))
    }

    fn create_id(&self, req: &CreateRequest) -> Result<VolumeId> {
        self.id_and_params(req).map(|(id, _)| id)
    }

    fn create(&self, req: &CreateRequest) -> Result<Done<VolumeInfo>> {
        let (id, p) = self.id_and_params(req)?;
        let vid = id.to_string();
        let invalid = |e: &dyn std::fmt::Display| Error::invalid(format!("volume {vid}: {e}"));
        let refused = match &req.capabilities[..] {
            [] => Some("volume_capabilities are required".to_string()),
            caps => caps.iter().find_map(|c| CAPS.refuse(BACKEND, c)),
        };
        if let Some(why) = refused {
            return Err(invalid(&why));
        }
        let caps = req.capabilities.iter();
        let mount_options: Vec<String> = caps.flat_map(|c| c.mount_flags.clone()).collect();
        let want_vers = p.want(&mount_options).map_err(|e| invalid(&e))?;
        let c = self.client_as(&p.server, &p.share, want_vers)?;
        let requested_source = req.content_source.as_ref().map(|s| s.id());
        let mut existing = self.read_record(&vid, &c, &id.key)?;
        // A create of this name that never finished is undone first, whatever this attempt
        // meets next: a source gone since must not leave its record behind.
        if let Some(rec) = existing
            .as_ref()
            .filter(|r| r.state == RecordState::Creating && r.name == req.name)
        {
            self.roll_back_other(&*self.client_of(rec)?, rec)?;
            existing = None;
        }
        // A repeat of a create from a source that already finished needs the source no more:
        // answering from the record lets a retry succeed after the snapshot was deleted.
        let finished = existing.as_ref().filter(|r| {
            requested_source.is_some()
                && r.state == RecordState::Ready
                && r.name == req.name
                && r.source == requested_source
        });
        let source = match &req.content_source {
            Some(src) if finished.is_none() => {
                Some(self.resolve_source(&vid, src, &p.server, &p.share)?)
            }
            _ => None,
        };
        let capacity = match (&source, finished) {
            (_, Some(rec)) => rec.capacity_bytes,
            (None, None) => req.capacity.resolve(self.cfg.default_capacity, 1, &vid)?,
            (Some(src), None) => match req.capacity.resolve(src.capacity, 1, &vid)? {
                size if size < src.capacity => {
                    let (id, least) = (&src.id, src.capacity);
                    let detail =
                        format!("{size} bytes is smaller than the source {id} ({least} bytes)");
                    let volume = vid.clone();
                    return Err(Error::OutOfRange { volume, detail });
                }
                size => size,
            },
        };
        let mut values = Values::from_parameters(&req.parameters);
        // external-provisioner names the volume after its PV: without --extra-create-metadata
        // the name is still the PV name.
        values.0[Var::PvName as usize].get_or_insert_with(|| req.name.clone());
        let sub_dir = p.sub_dir.expand(&values).map_err(|e| invalid(&e))?;
        let want = VolumeRecord {
            version: RECORD_VERSION,
            id: vid.clone(),
            name: req.name.clone(),
            state: RecordState::Creating,
            server: p.server.clone(),
            share: p.share.clone(),
            sub_dir,
            on_delete: p.on_delete,
            capacity_bytes: capacity,
            mount_permissions: p.mount_permissions,
            uid: p.uid,
            gid: p.gid,
            created_at: layout::now_secs(),
            source: requested_source.clone(),
            nfs_vers: Some(c.version().map_err(|e| self.err(&vid, e))?.to_string()),
            ..VolumeRecord::default()
        };
        // A volume source is proven by a handle of the version it was made with: the new volume
        // must be made in that version to copy it.
        let proof = source
            .as_ref()
            .and_then(|s| Some((&s.id, &s.proof.as_ref()?.1)));
        if let (Some((id, v)), Some(new)) = (proof, &want.nfs_vers) {
            if v.as_str() != new {
                let why = format!("source volume {id} was made over NFSv{v}, and its directory is proven by a handle of that version; this class provisions over NFSv{new} (set nfsvers to match)");
                return Err(Error::precondition(&vid, why));
            }
        }
        self.shares.register(&vid, &p.server, &p.share)?;

        if let Some(rec) = existing {
            if rec.name != req.name {
                let why = format!("this id already belongs to volume {:?}", rec.name);
                return Err(Error::exists(&vid, why));
            }
            match rec.state {
                RecordState::Ready => {
                    if let Some(why) = mismatch(&rec, &want, &req.capacity) {
                        return Err(Error::exists(&vid, why));
                    }
                    let cond = self.condition(&*self.client_of(&rec)?, &rec)?;
                    return Ok(Done::Now(self.info(&rec, cond)));
                }
                RecordState::Creating => self.roll_back_other(&*self.client_of(&rec)?, &rec)?,
                RecordState::Deleting => self.finish_delete(&*self.client_of(&rec)?, &rec)?,
            }
        }
        let made = match &source {
            Some(src) => self.restoring(&vid, || self.restore(&c, want, src)),
            None => self.make(&c, want),
        };
        made.map(Done::Now)
    }

    fn delete(&self, id: &VolumeId) -> Result<Done<()>> {
        let vid = id.to_string();
        if layout::is_static_id(&vid) {
            tracing::info!(volume = %vid, "a static volume: nothing of it is the driver's, nothing deleted");
            return Ok(Done::Now(()));
        }
        if layout::parse_volume_id(&vid).is_none() {
            return Ok(Done::Now(())); // not an id this backend ever issued: nothing of ours to delete
        }
        // Snapshots are copies of their own: they stay when the volume goes, but not while one
        // is still being read from it.
        if let Some(snap) = self.work.copying_from(&vid) {
            return Err(Error::Busy(format!(
                "{vid} (snapshot {snap} is being copied from it)"
            )));
        }
        let Some((c, rec)) = self.find(&vid, &id.key)? else {
            return Ok(Done::Now(()));
        };
        self.refuse_read_elsewhere(&c, &vid)?;
        crate::failpoint::hit("nfs-delete:before-intent");
        let deleted = match rec.state {
            RecordState::Creating => self.roll_back_other(&c, &rec),
            RecordState::Deleting => self.finish_delete(&c, &rec),
            RecordState::Ready => {
                let mut intent = rec.clone();
                intent.state = RecordState::Deleting;
                if intent.dir_handle.is_none() && intent.on_delete != OnDelete::Retain {
                    // A Ready record from before handles were kept: no delete has removed its
                    // directory, so the one there is the volume's (layout.rs). Its handle goes
                    // into the intent, before anything is touched; with no directory there,
                    // the empty handle, so one made later is never taken for the volume's.
                    let found = recorded_handle(&c, &rec).map_err(|e| self.err(&vid, e))?;
                    intent.dir_handle = Some(found.unwrap_or_default());
                }
                write_record(&c, &intent, self.cfg.timeout)?;
                crate::failpoint::hit("nfs-delete:after-intent");
                // A copy that read the volume `Ready` before the intent shows life by now.
                self.recheck_volume_readers(&c, &rec, &intent)
                    .and_then(|()| self.finish_delete(&c, &intent))
            }
        };
        deleted.map(Done::Now)
    }

    fn get(&self, id: &VolumeId) -> Result<VolumeInfo> {
        let vid = id.to_string();
        match self.find_live(&vid, &id.key)? {
            Some((c, rec)) if rec.state == RecordState::Ready => {
                let cond = self.condition(&c, &rec)?;
                Ok(self.info(&rec, cond))
            }
            _ => Err(Error::not_found(vid)),
        }
    }

    /// Volumes in (key, share key) order; the paging token is `<key>/<share key>`, since one
    /// name can be a volume on each of two shares.
    fn list(&self, after: Option<&str>, max_entries: usize) -> Result<Page> {
        // Another controller may have registered shares since this one read the registry.
        self.shares.refresh()?;
        let after = after.map(|a| a.split_once('/').unwrap_or((a, "")));
        let shares = self.shares.list();
        let mut keys: Vec<(String, String, usize)> = Vec::new();
        for (i, (server, share)) in shares.iter().enumerate() {
            let c = self.client(server, share)?;
            let files = names(&c, layout::RECORDS_DIR).map_err(|e| self.err("(list)", e))?;
            let share_key = layout::share_key(server, share);
            for k in files.iter().filter_map(|n| layout::key_of_record_file(n)) {
                if after.is_none_or(|a| (k, share_key.as_str()) > a) {
                    keys.push((k.to_string(), share_key.clone(), i));
                }
            }
        }
        keys.sort();
        let mut entries = Vec::new();
        let mut next_after = None;
        for (n, (key, share_key, i)) in keys.iter().enumerate() {
            if max_entries != 0 && entries.len() == max_entries {
                let (k, sk, _) = &keys[n - 1];
                next_after = Some(format!("{k}/{sk}"));
                break;
            }
            let (server, share) = &shares[*i];
            let vid = layout::share_volume_id(share_key, key);
            // Left out: records in flight, or gone since the listing.
            let rec = self.read_record(&vid, &*self.client(server, share)?, key)?;
            let ready = rec.filter(|r| r.state == RecordState::Ready);
            entries.extend(ready.map(|r| self.info(&r, VolumeCondition::healthy())));
        }
        Ok(Page {
            entries,
            next_after,
        })
    }

    fn validate(
        &self,
        id: &VolumeId,
        caps: &[Capability],
        _parameters: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        self.get(id)?;
        Ok(caps.iter().find_map(|c| CAPS.refuse(BACKEND, c)))
    }

    fn capacity(&self, req: &CapacityRequest) -> Result<Capacity> {
        let params = class_params(&req.parameters);
        let own = params.keys().any(|k| !k.starts_with("csi.storage.k8s.io/"));
        let targets = if own {
            let p = NfsParams::parse(&params).map_err(|e| Error::invalid(e.to_string()))?;
            vec![(p.server, p.share)]
        } else {
            // No class named: the shares known here, each a pool of its own.
            self.shares.list()
        };
        let mut cap = Capacity::default();
        for (server, share) in targets {
            let c = self.client(&server, &share)?;
            let what = format!("(capacity of {server}:{share})");
            let st = c.fsstat().map_err(|e| self.err(&what, e))?;
            cap.available += st.avail;
            // A directory volume can grow to whatever its export has free.
            cap.maximum_volume_size = cap.maximum_volume_size.max(st.avail);
        }
        Ok(cap)
    }

    fn expand(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)> {
        let vid = id.to_string();
        let Some((c, mut rec)) = self.find_live(&vid, &id.key)? else {
            return Err(Error::not_found(vid));
        };
        if rec.state != RecordState::Ready {
            return Err(Error::precondition(vid, "the volume is being deleted"));
        }
        let new = range.resolve(rec.capacity_bytes, 1, &vid)?;
        if new > rec.capacity_bytes {
            rec.capacity_bytes = new;
            write_record(&c, &rec, self.cfg.timeout)?;
        }
        // Sizes on a shared export are recorded, not enforced: nothing to do on the node.
        Ok((rec.capacity_bytes, false))
    }

    fn controller_publish(
        &self,
        id: &VolumeId,
        _node: &str,
        _read_only: bool,
        _cap: &Capability,
    ) -> Result<BTreeMap<String, String>> {
        needless(id, "need no ControllerPublishVolume")
    }

    fn controller_unpublish(&self, id: &VolumeId, _node: Option<&str>) -> Result<()> {
        needless(id, "need no ControllerUnpublishVolume")
    }

    fn published_count(&self, _node: &str) -> usize {
        0
    }
}
