//! This node's claims on devices, kept in the state journal with the volume records: a device
//! is Claimed by the volume whose record names its uid, and Released when a delete could not
//! hand it back (`device-released/<uid>`, committed in the batch that removes the record).
//! Everything else is Unclaimed. The inventory shows these claims; it does not store them.

use super::{VolumeRecord, BACKEND};
use crate::discovery::{Claim, Claims};
use crate::state::record::decode;
use crate::state::{Ledger, Phase, Update};
use std::collections::{BTreeSet, HashMap};
use std::io;

const RELEASED: &str = "device-released/";

/// The update that records `claim` (Released) on `uid`.
pub(super) fn release_update(uid: &str, claim: &Claim) -> io::Result<Update> {
    let key = format!("{RELEASED}{uid}");
    let value = serde_json::to_vec(claim).map_err(io::Error::other)?;
    Ok(Update::Put { key, value })
}

/// The claims `node` holds according to the journal's live records.
pub fn from_records(live: &HashMap<String, Vec<u8>>, node: &str) -> io::Result<Claims> {
    let mut claims = Claims::new();
    for (key, value) in live {
        if let Some(uid) = key.strip_prefix(RELEASED) {
            claims.insert(uid.to_string(), decode(key, value)?);
        } else if key.starts_with(&format!("{BACKEND}/")) {
            let rec: VolumeRecord = decode(key, value)?;
            let (volume, node) = (rec.id, node.to_string());
            claims.insert(rec.backend.uid, Claim::Claimed { volume, node });
        }
    }
    Ok(claims)
}

/// The claims this node holds, once state of older builds is adopted into the journal (one
/// batch): a record still `Creating` (an intent committed before its claim) is rolled back,
/// its device never written; a claim in an older `devices.json` that the journal lacks becomes
/// a release: a Released one as it was, a Claimed one whose volume has no record because this
/// driver cannot tell what is on the device.
pub(super) fn adopt(
    ledger: &Ledger<VolumeRecord>,
    live: &HashMap<String, Vec<u8>>,
    node: &str,
    legacy: Claims,
) -> io::Result<Claims> {
    let mut unwritten = BTreeSet::new();
    for rec in ledger
        .records()
        .into_iter()
        .filter(|r| r.phase == Phase::Creating)
    {
        ledger.remove(&rec).map_err(io::Error::other)?;
        tracing::info!(volume = %rec.id, uid = %rec.backend.uid, "rolled back an unfinished create");
        unwritten.insert(rec.backend.uid);
    }
    let mut updates = Vec::new();
    let mut claims = from_records(live, node)?;
    claims.retain(|uid, _| !unwritten.contains(uid));
    for (uid, claim) in legacy {
        let release = match claim {
            _ if claims.contains_key(&uid) || unwritten.contains(&uid) => continue,
            Claim::Unclaimed => continue,
            Claim::Released { .. } => claim,
            Claim::Claimed { volume, node } => {
                let reason = format!(
                    "claimed by volume {volume}, of which this driver has no record; not reused"
                );
                tracing::warn!(%uid, %reason, "device released");
                Claim::Released {
                    volume,
                    reason,
                    node,
                }
            }
        };
        updates.push(release_update(&uid, &release)?);
        claims.insert(uid, release);
    }
    if !updates.is_empty() {
        ledger.journal().commit(updates)?;
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::device::DeviceData;
    use crate::state::Journal;
    use crate::volume::AccessKind;

    fn rec(name: &str, uid: &str, phase: Phase) -> VolumeRecord {
        let data = DeviceData {
            uid: uid.into(),
            ..Default::default()
        };
        let mut r = VolumeRecord::new(
            format!("device/n/{name}"),
            name.into(),
            AccessKind::Block,
            1,
            data,
        );
        r.phase = phase;
        r
    }

    fn claimed(volume: &str, node: &str) -> Claim {
        Claim::Claimed {
            volume: volume.into(),
            node: node.into(),
        }
    }

    #[test]
    fn older_state_is_adopted_into_the_journal_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (j, live) = Journal::open(dir.path()).unwrap();
        let ledger: Ledger<VolumeRecord> =
            Ledger::open_counted(j, BACKEND, BACKEND, &live).unwrap();
        ledger.save(rec("ready", "u-ready", Phase::Ready)).unwrap();
        ledger.save(rec("half", "u-half", Phase::Creating)).unwrap();
        drop(ledger);
        let (j, live) = Journal::open(dir.path()).unwrap();
        let ledger: Ledger<VolumeRecord> =
            Ledger::open_counted(j, BACKEND, BACKEND, &live).unwrap();
        let released = Claim::Released {
            volume: "device/n/old".into(),
            reason: "not wiped".into(),
            node: "n".into(),
        };
        let legacy = Claims::from([
            ("u-ready".into(), claimed("device/n/ready", "n")),
            ("u-half".into(), claimed("device/n/half", "n")),
            ("u-lost".into(), claimed("device/n/lost", "n")),
            ("u-rel".into(), released.clone()),
        ]);
        let claims = adopt(&ledger, &live, "n", legacy).unwrap();
        assert_eq!(claims["u-ready"], claimed("device/n/ready", "n"));
        assert!(
            !claims.contains_key("u-half"),
            "the unfinished create is rolled back"
        );
        assert_eq!(claims["u-rel"], released);
        assert!(
            matches!(&claims["u-lost"], Claim::Released { volume, reason, .. }
                if volume == "device/n/lost" && reason.contains("no record")),
            "{claims:?}"
        );
        assert!(ledger.get("half").is_none());
        drop(ledger);
        let (_j, live) = Journal::open(dir.path()).unwrap();
        assert_eq!(from_records(&live, "n").unwrap(), claims, "durable");
    }
}
