//! This node's claims on devices, kept in the state journal with the volume records: a device
//! is Claimed by the volume whose record names its uid, and Released when a delete could not
//! hand it back (`device-released/<uid>`, committed in the batch that removes the record).
//! Everything else is Unclaimed. The inventory shows these claims; it does not store them. A
//! release stays until an operator clears it (`clear`: one commit removing it).

use super::{VolumeRecord, BACKEND};
use crate::discovery::{Claim, Claims};
use crate::state::record::decode;
use crate::state::{Ledger, Phase, Update};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;

const RELEASED: &str = "device-released/";

/// The update that records `claim` (Released) on `uid`.
pub(super) fn release_update(uid: &str, claim: &Claim) -> io::Result<Update> {
    let key = format!("{RELEASED}{uid}");
    let value = serde_json::to_vec(claim).map_err(io::Error::other)?;
    Ok(Update::Put { key, value })
}

/// The update that removes the release of `uid` (an operator cleared it).
pub(super) fn clear_update(uid: &str) -> Update {
    let key = format!("{RELEASED}{uid}");
    Update::Delete { key }
}

/// The claims `node` holds according to the journal's live records. A record's claim stands
/// over a release of the same device (the device was handed on after it). A device two records
/// name (a journal that lost the batch ending one of them) is shown Released with both names:
/// whose it is cannot be told, so neither volume writes or releases it (`contested`).
pub fn from_records(live: &HashMap<String, Vec<u8>>, node: &str) -> io::Result<Claims> {
    let mut claims = Claims::new();
    let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, value) in live {
        if let Some(uid) = key.strip_prefix(RELEASED) {
            claims.insert(uid.to_string(), decode(key, value)?);
        } else if key.starts_with(&format!("{BACKEND}/")) {
            let rec: VolumeRecord = decode(key, value)?;
            named.entry(rec.backend.uid).or_default().insert(rec.id);
        }
    }
    for (uid, volumes) in named {
        let mut ids = volumes.into_iter();
        let (volume, node) = (ids.next().expect("one at least"), node.to_string());
        let others: Vec<String> = ids.collect();
        let claim = if others.is_empty() {
            Claim::Claimed { volume, node }
        } else {
            let reason = contested_reason(&uid, &volume, &others);
            tracing::error!(%uid, %volume, others = ?others, %reason, "device claimed twice");
            Claim::Released {
                volume,
                reason,
                node,
            }
        };
        claims.insert(uid, claim);
    }
    Ok(claims)
}

/// Why the device `uid` that `volume` and `others` all claim is written for none of them.
pub(super) fn contested_reason(uid: &str, volume: &str, others: &[String]) -> String {
    format!(
        "device {uid} is claimed by volume {volume} and by {} in this node's state journal; \
         which one owns it cannot be told, so it is not written, wiped or released for any of \
         them and their records are kept until an operator settles it",
        others.join(", ")
    )
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
    fn a_device_two_records_name_is_released_for_both_in_any_order() {
        let put = |r: &VolumeRecord| (format!("{BACKEND}/{}", r.name), serde_json::to_vec(r));
        let (v, w) = (rec("v", "u", Phase::Deleting), rec("w", "u", Phase::Ready));
        let released = Claim::Released {
            volume: "device/n/old".into(),
            reason: "not wiped".into(),
            node: "n".into(),
        };
        for _ in 0..8 {
            let mut live = HashMap::new();
            for (k, value) in [put(&v), put(&w), put(&rec("x", "u-x", Phase::Ready))] {
                live.insert(k, value.unwrap());
            }
            live.insert(
                format!("{RELEASED}u-x"),
                serde_json::to_vec(&released).unwrap(),
            );
            let claims = from_records(&live, "n").unwrap();
            assert!(
                matches!(&claims["u"], Claim::Released { volume, reason, .. }
                    if volume == "device/n/v" && reason.contains("device/n/w")),
                "{claims:?}"
            );
            assert_eq!(
                claims["u-x"],
                claimed("device/n/x", "n"),
                "the record stands"
            );
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
