//! Controller calls that read or amend existing volumes in bulk or by size: ListVolumes over
//! the known shares (the registry read again first), GetCapacity from FSSTAT, and
//! ControllerExpandVolume (a record update).

use super::controller::class_params;
use super::layout::{self, RecordState};
use super::params::NfsParams;
use super::NfsBackend;
use crate::backend::{Capacity, CapacityRequest, Page};
use crate::error::{Error, Result};
use crate::nfs::NfsStatus;
use crate::volume::{CapacityRange, VolumeCondition, VolumeId};

impl NfsBackend {
    /// Volumes in (key, share key) order; the paging token is `<key>/<share key>`, since one
    /// name can be a volume on each of two shares.
    pub(super) fn list_volumes(&self, after: Option<&str>, max_entries: usize) -> Result<Page> {
        // Another controller may have registered shares since this one read the registry.
        self.shares.refresh()?;
        let after = after.map(|a| a.split_once('/').unwrap_or((a, "")));
        let shares = self.shares.list();
        let mut keys: Vec<(String, String, usize)> = Vec::new();
        for (i, (server, share)) in shares.iter().enumerate() {
            let c = self.client(server, share)?;
            let entries = match c.readdir(layout::RECORDS_DIR) {
                Ok(e) => e,
                Err(e) if e.is_status(NfsStatus::NOENT) => continue,
                Err(e) => return Err(self.err("(list)", e)),
            };
            let share_key = layout::share_key(server, share);
            keys.extend(
                entries
                    .iter()
                    .filter_map(|(n, _)| layout::key_of_record_file(n))
                    .filter(|k| after.is_none_or(|a| (*k, share_key.as_str()) > a))
                    .map(|k| (k.to_string(), share_key.clone(), i)),
            );
        }
        keys.sort();
        let mut entries = Vec::new();
        let mut next_after = None;
        for (n, (key, _, i)) in keys.iter().enumerate() {
            if max_entries != 0 && entries.len() == max_entries {
                let (k, sk, _) = &keys[n - 1];
                next_after = Some(format!("{k}/{sk}"));
                break;
            }
            let (server, share) = &shares[*i];
            let c = self.client(server, share)?;
            let vid = layout::share_volume_id(&layout::share_key(server, share), key);
            match self.read_record(&vid, &c, key)? {
                Some(rec) if rec.state == RecordState::Ready => {
                    entries.push(self.info(&rec, VolumeCondition::healthy()))
                }
                _ => {} // in flight, or gone since the listing
            }
        }
        Ok(Page {
            entries,
            next_after,
        })
    }

    pub(super) fn capacity_of(&self, req: &CapacityRequest) -> Result<Capacity> {
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
            let st = c
                .fsstat()
                .map_err(|e| self.err(&format!("(capacity of {server}:{share})"), e))?;
            cap.available += st.avail;
            // A directory volume can grow to whatever its export has free.
            cap.maximum_volume_size = cap.maximum_volume_size.max(st.avail);
        }
        Ok(cap)
    }

    pub(super) fn expand_volume(&self, id: &VolumeId, range: CapacityRange) -> Result<(u64, bool)> {
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
            self.write_record(&c, &rec)?;
        }
        // Sizes on a shared export are recorded, not enforced: nothing to do on the node.
        Ok((rec.capacity_bytes, false))
    }
}
