//! Adoption of an existing directory on an NFS share as a managed volume: one record written
//! on the share (`.ferrovol/volumes/<key>.json`, atomically, state Ready), naming the directory
//! and the file handle found there now. That record is what every managed volume has, so from
//! then on ControllerGetVolume, ListVolumes, expansion and DeleteVolume with the record's
//! onDelete treat it as any other; the handle proves, before DeleteVolume removes, archives or
//! retains anything, that the directory is the one adopted. Nothing else is written: a crash
//! leaves the record or no record, and the directory as it was.
//!
//! A directory that another record names, lies inside one, or holds one, is refused, as is one
//! inside the driver's own `.ferrovol` or an archived volume's directory, and one that is or
//! holds another share (a nested export this controller knows, or one with its own `.ferrovol`). Only the controller
//! that holds the share's lease adopts (lease.rs), so those checks and the record's write are
//! never raced by a second controller on the share.

use super::layout::now_secs;
use super::layout::{self, RecordState, VolumeRecord, META_DIR, RECORD_VERSION};
use super::params::OnDelete;
use super::pattern::ARCHIVE_PREFIX;
use super::{names, write_record, NfsBackend, CTX_SERVER, CTX_SHARE, CTX_SUBDIR};
use crate::backend::adopt::AdoptNfsDir;
use crate::error::{Error, Result};
use crate::nfs::NfsClient;
use crate::volume::{validate_component, VolumeCondition, VolumeId, VolumeInfo};
use std::collections::BTreeMap;

/// The id adopting `req` yields: `nfs/<share key>/<key of the name>`, as CreateVolume's.
pub(super) fn adopt_id(req: &AdoptNfsDir) -> Result<VolumeId> {
    validate_component("name", &req.name)?;
    let (server, share) = super::parse_share(&format!("{}:{}", req.server, req.share))
        .map_err(|e| Error::invalid(format!("volume {}: {e}", req.name)))?;
    Ok(VolumeId {
        backend: super::BACKEND.to_string(),
        node: Some(layout::share_key(&server, &share)),
        key: layout::volume_key(&req.name),
    })
}

/// `retain` (the default: the data was not the driver's), `archive` or `delete`.
fn on_delete(vid: &str, raw: &str) -> Result<OnDelete> {
    if raw.is_empty() {
        return Ok(OnDelete::Retain);
    }
    serde_json::from_value(serde_json::Value::String(raw.to_string())).map_err(|_| {
        Error::invalid(format!(
            "volume {vid}: onDelete {raw:?} is not one of retain, archive, delete"
        ))
    })
}

/// Held through each adoption in this process: two adoptions of one directory under two names
/// (two locks) must not both find it unowned and both write a record naming it.
static ADOPTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl NfsBackend {
    pub(super) fn adopt_nfs_dir(&self, req: &AdoptNfsDir) -> Result<VolumeInfo> {
        let _one_at_a_time = ADOPTING.lock().unwrap_or_else(|p| p.into_inner());
        let id = adopt_id(req)?;
        let vid = id.to_string();
        let on_delete = on_delete(&vid, &req.on_delete)?;
        // The checks a PersistentVolume's volume context gets at publish: a plain host, a clean
        // absolute share, a clean relative subDir outside `.ferrovol`.
        let sub_dir = req.sub_dir.trim_end_matches('/').to_string();
        let ctx = BTreeMap::from([
            (CTX_SERVER.to_string(), req.server.clone()),
            (CTX_SHARE.to_string(), req.share.clone()),
            (CTX_SUBDIR.to_string(), sub_dir),
        ]);
        let loc = super::node::location(&vid, &ctx)?;
        let sub_dir = loc.subdir.clone();
        let place = format!("{sub_dir} on {}:{}", loc.server, loc.share);
        if sub_dir.split('/').any(|c| c.starts_with(ARCHIVE_PREFIX)) {
            let why = format!(
                "{place} is an archived volume's directory or lies in one; nothing was changed"
            );
            return Err(Error::precondition(&vid, why));
        }
        if sub_dir.split('/').any(|c| c == META_DIR) {
            let why = format!("{place} lies in the {META_DIR} directory of a share inside this one; nothing was changed");
            return Err(Error::precondition(&vid, why));
        }
        let c = self.client(&loc.server, &loc.share)?;
        self.hold_lease(&vid, &c)?;
        if let Some(rec) = self.read_record(&vid, &c, &id.key)? {
            if rec.id == vid
                && rec.name == req.name
                && rec.sub_dir == sub_dir
                && rec.state == RecordState::Ready
            {
                return Ok(self.info(&rec, VolumeCondition::healthy()));
            }
            let (name, dir) = (&rec.name, &rec.sub_dir);
            let why = format!("this id is volume {name:?} with subDir {dir}; choose another name");
            return Err(Error::exists(&vid, why));
        }
        let (handle, attr) = match c.handle_of(&sub_dir).map_err(|e| self.err(&vid, e))? {
            Some((h, a)) if a.is_dir() => (h, a),
            other => {
                let why = match other {
                    Some(_) => "is not a directory",
                    None => "does not exist",
                };
                return Err(Error::invalid(format!("volume {vid}: {place} {why}")));
            }
        };
        self.refuse_shares_within(&vid, &c, &sub_dir, &place)?;
        self.refuse_owned(&vid, &c, &sub_dir, &place, false)?;
        let rec = VolumeRecord {
            version: RECORD_VERSION,
            id: vid.clone(),
            name: req.name.clone(),
            state: RecordState::Ready,
            server: loc.server.clone(),
            share: loc.share.clone(),
            sub_dir,
            on_delete,
            capacity_bytes: req.capacity,
            mount_permissions: attr.mode,
            created_at: now_secs(),
            dir_handle: Some(handle),
            // The handle above is in the protocol this client settled on.
            nfs_vers: Some(c.version().map_err(|e| self.err(&vid, e))?.to_string()),
            ..VolumeRecord::default()
        };
        // Registered before anything is written on the share, as for a create.
        self.shares.register(&vid, &loc.server, &loc.share)?;
        self.hold_lease(&vid, &c)?;
        write_record(&c, &rec, self.cfg.timeout)?;
        tracing::info!(volume = %vid, dir = %place, on_delete = ?on_delete,
            "adopted an NFS directory as a volume");
        Ok(self.info(&rec, VolumeCondition::healthy()))
    }

    /// Aborted unless this process holds the share's lease: a second controller's check that
    /// no record names the directory could pass beside this one's, and two records naming one
    /// directory would let a delete of either remove what the other publishes.
    fn hold_lease(&self, vid: &str, c: &NfsClient) -> Result<()> {
        if self.leases.wait_held(c) {
            return Ok(());
        }
        let (server, share) = (c.server(), c.share());
        Err(Error::Busy(format!(
            "{vid}: another controller holds the lease of {server}:{share}; adopt through that one. \
             Nothing was changed"
        )))
    }

    /// FailedPrecondition when `sub_dir` is or holds another share (a nested export): one this
    /// controller knows, or one whose `.ferrovol` directory sits right in it. Deleting or
    /// archiving the adopted volume would take that share's volumes and records along.
    fn refuse_shares_within(
        &self,
        vid: &str,
        c: &NfsClient,
        sub_dir: &str,
        place: &str,
    ) -> Result<()> {
        let root = format!("{}/{sub_dir}", c.share().trim_end_matches('/'));
        let nested = self.shares.list().into_iter().find(|(server, share)| {
            server == c.server() && (*share == root || share.starts_with(&format!("{root}/")))
        });
        let meta = format!("{sub_dir}/{META_DIR}");
        let holds = match nested {
            Some((server, share)) => Some(format!("share {server}:{share}")),
            None => (c.handle_of(&meta).map_err(|e| self.err(vid, e))?)
                .map(|_| format!("{meta}, the metadata of another share")),
        };
        match holds {
            Some(what) => Err(Error::precondition(
                vid,
                format!("{place} is or holds {what}; nothing was changed"),
            )),
            None => Ok(()),
        }
    }

    /// FailedPrecondition when a record on the share other than `vid`'s own names a directory
    /// above `sub_dir`, or unless `above_only`, `sub_dir` itself or one below it (a restore's
    /// staging directory included).
    pub(super) fn refuse_owned(
        &self,
        vid: &str,
        c: &NfsClient,
        sub_dir: &str,
        place: &str,
        above_only: bool,
    ) -> Result<()> {
        let files = names(c, layout::RECORDS_DIR).map_err(|e| self.err(vid, e))?;
        let within =
            |inner: &str, outer: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
        for key in files.iter().filter_map(|n| layout::key_of_record_file(n)) {
            let Some(rec) = self.read_record(vid, c, key)?.filter(|r| r.id != vid) else {
                continue;
            };
            let dirs = std::iter::once(&rec.sub_dir).chain(rec.staging.as_ref());
            for dir in dirs {
                let how = if above_only {
                    if !sub_dir.starts_with(&format!("{dir}/")) {
                        continue;
                    }
                    "lies inside"
                } else if within(sub_dir, dir) {
                    "is or lies inside"
                } else if within(dir, sub_dir) {
                    "holds"
                } else {
                    continue;
                };
                let id = &rec.id;
                let why = format!(
                    "{place} {how} the directory {dir} of volume {id}; nothing was changed"
                );
                return Err(Error::precondition(vid, why));
            }
        }
        Ok(())
    }
}
