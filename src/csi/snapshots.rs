//! The snapshot RPCs of the Controller service and CreateVolume's content source: validation
//! and dispatch only. The backend that holds a snapshot is the one its id names.

use super::convert::{self, require};
use super::limits::WithinLimits;
use super::Driver;
use crate::error::{Error, Result};
use crate::proto as csi;
use crate::snapshot::{ContentSource, SnapshotFilter, SnapshotId, SnapshotInfo, SnapshotRequest};
use crate::volume::VolumeId;
use csi::volume_content_source::Type as SourceType;

/// Decodes `volume_content_source`: a malformed id is InvalidArgument, an id that names nothing
/// of ours NotFound (the spec's answer for a source that does not exist), and a source kind the
/// backend cannot serve InvalidArgument.
pub fn content_source(
    d: &Driver,
    volume: &str,
    src: Option<&csi::VolumeContentSource>,
) -> Result<Option<ContentSource>> {
    let Some(src) = src else { return Ok(None) };
    let source = match &src.r#type {
        None => {
            return Err(Error::invalid(format!(
                "volume {volume}: volume_content_source names neither a snapshot nor a volume"
            )))
        }
        Some(SourceType::Snapshot(s)) => {
            let id = SnapshotId::parse(&s.snapshot_id)?.ok_or_else(|| {
                Error::not_found_because(
                    &s.snapshot_id,
                    "no such snapshot (not a snapshot id of this driver)",
                )
            })?;
            ContentSource::Snapshot(id)
        }
        Some(SourceType::Volume(v)) => {
            let id =
                VolumeId::parse(&v.volume_id)?.ok_or_else(|| Error::not_found(&v.volume_id))?;
            ContentSource::Volume(id)
        }
    };
    let backend = d.backend_for(source.backend(), source.id())?;
    let (served, what) = match &source {
        ContentSource::Snapshot(_) => (backend.snapshots().is_some(), "snapshots"),
        ContentSource::Volume(_) => (backend.caps().clone, "cloning"),
    };
    if !served {
        return Err(Error::invalid(format!(
            "volume {volume}: backend {} offers no {what}",
            backend.name()
        )));
    }
    Ok(Some(source))
}

fn snapshot(info: &SnapshotInfo) -> csi::Snapshot {
    csi::Snapshot {
        size_bytes: info.size_bytes as i64,
        snapshot_id: info.id.clone(),
        source_volume_id: info.source_volume_id.clone(),
        creation_time: Some(prost_types::Timestamp::from(info.created)),
        ready_to_use: info.ready,
        group_snapshot_id: String::new(),
    }
}

/// Unimplemented when no backend served here takes snapshots (nothing is advertised then).
fn offered(d: &Driver, rpc: &str) -> Result<()> {
    if d.backends.iter().any(|b| b.snapshots().is_some()) {
        return Ok(());
    }
    Err(Error::Unimplemented(format!(
        "{rpc}: no backend served here offers snapshots"
    )))
}

pub fn create(d: &Driver, req: csi::CreateSnapshotRequest) -> Result<csi::CreateSnapshotResponse> {
    offered(d, "CreateSnapshot")?;
    req.check_limits().map_err(Error::InvalidArgument)?;
    require("name", &req.name)?;
    require("source_volume_id", &req.source_volume_id)?;
    let source = VolumeId::parse(&req.source_volume_id)?
        .ok_or_else(|| Error::not_found(&req.source_volume_id))?;
    let backend = d.backend_for(&source.backend, &source)?;
    let snaps = backend.snapshots().ok_or_else(|| {
        Error::Unimplemented(format!("backend {} offers no snapshots", backend.name()))
    })?;
    let id = snaps.snapshot_id(&req.name)?;
    let _guard = d.locks.try_lock(&id.to_string())?;
    let _reading = d.locks.try_read(&source.to_string())?;
    let info = snaps.create_snapshot(&SnapshotRequest {
        name: req.name.clone(),
        source,
        parameters: convert::parameters(&req.parameters),
    })?;
    Ok(csi::CreateSnapshotResponse {
        snapshot: Some(snapshot(&info)),
    })
}

pub fn delete(d: &Driver, req: csi::DeleteSnapshotRequest) -> Result<csi::DeleteSnapshotResponse> {
    offered(d, "DeleteSnapshot")?;
    req.check_limits().map_err(Error::InvalidArgument)?;
    // Deleting what never existed succeeds.
    let Some(id) = SnapshotId::parse(&req.snapshot_id)? else {
        return Ok(csi::DeleteSnapshotResponse {});
    };
    let Some(snaps) = d.backend(&id.backend).ok().and_then(|b| b.snapshots()) else {
        return Ok(csi::DeleteSnapshotResponse {});
    };
    let _guard = d.locks.try_lock_delete(&id.to_string())?;
    snaps.delete_snapshot(&id)?;
    Ok(csi::DeleteSnapshotResponse {})
}

/// Pages run across the backends that take snapshots, in backend order; the token names
/// "backend/last name" like ListVolumes'.
pub fn list(d: &Driver, req: csi::ListSnapshotsRequest) -> Result<csi::ListSnapshotsResponse> {
    offered(d, "ListSnapshots")?;
    req.check_limits().map_err(Error::InvalidArgument)?;
    if req.max_entries < 0 {
        return Err(Error::invalid("max_entries must not be negative"));
    }
    let empty = csi::ListSnapshotsResponse::default();
    let mut filter = SnapshotFilter::default();
    if !req.snapshot_id.is_empty() {
        match SnapshotId::parse(&req.snapshot_id).ok().flatten() {
            Some(id) => filter.snapshot = Some(id),
            None => return Ok(empty),
        }
    }
    if !req.source_volume_id.is_empty() {
        match VolumeId::parse(&req.source_volume_id).ok().flatten() {
            Some(id) => filter.source = Some(id),
            None => return Ok(empty),
        }
    }
    let named = [
        filter.snapshot.as_ref().map(|s| &s.backend),
        filter.source.as_ref().map(|v| &v.backend),
    ];
    let backends: Vec<_> = (d.backends.iter())
        .filter(|b| b.snapshots().is_some())
        .filter(|b| named.iter().flatten().all(|n| *n == b.name()))
        .collect();
    let (entries, next_token) = super::paging::page_across(
        &backends,
        |b| b.name(),
        &req.starting_token,
        req.max_entries as usize,
        |b, after, room| {
            let snaps = b.snapshots().expect("filtered above");
            let page = snaps.list_snapshots(&filter, after, room)?;
            Ok((page.entries, page.next_after))
        },
    )?;
    Ok(csi::ListSnapshotsResponse {
        entries: entries
            .iter()
            .map(|s| csi::list_snapshots_response::Entry {
                snapshot: Some(snapshot(s)),
            })
            .collect(),
        next_token,
    })
}
