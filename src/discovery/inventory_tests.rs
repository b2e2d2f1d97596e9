use super::*;
use crate::discovery::device::DeviceType;

fn inventory(entries: &[(&str, Claim)]) -> Inventory {
    let entries = entries.iter().map(|(uid, claim)| {
        let mut device = Device::fake("loop1", DeviceType::Loop);
        device.uid = uid.to_string();
        device.candidate = true;
        let claim = claim.clone();
        Entry {
            device,
            claim,
            ..Default::default()
        }
    });
    let file = PathBuf::from("/nonexistent/devices.json");
    Inventory::fake(file, "n1", entries.collect())
}

fn released(volume: &str) -> Claim {
    Claim::Released {
        volume: volume.into(),
        reason: "remembered".into(),
        node: "n1".into(),
    }
}

#[test]
fn a_remembered_claim_keeps_the_device_from_being_given_out_until_cleared() {
    let own = Claim::Claimed {
        volume: "v-own".into(),
        node: "n1".into(),
    };
    let inv = inventory(&[("u-lost", Claim::Unclaimed), ("u-own", own.clone())]);
    let uids = |es: Vec<Entry>| es.into_iter().map(|e| e.device.uid).collect::<Vec<_>>();
    assert_eq!(uids(inv.candidates()), ["u-lost"]);
    let remembered = Claims::from([
        ("u-lost".into(), released("v")),
        ("u-own".into(), released("w")),
    ]);
    inv.set_remembered_claims(&remembered);
    assert!(inv.candidates().is_empty());
    assert_eq!(inv.get("u-lost").unwrap().claim, released("v"));
    assert_eq!(
        inv.get("u-own").unwrap().claim,
        own,
        "the journal's claim stands"
    );
    let own_view = inv.own_view();
    assert_eq!(own_view[0].claim, Claim::Unclaimed, "{own_view:?}");
    assert_eq!(own_view[1].claim, own);
    // Recomputed at every sync: the same claims change nothing, cleared ones are released.
    inv.set_remembered_claims(&remembered);
    assert_eq!(inv.get("u-lost").unwrap().claim, released("v"));
    inv.set_remembered_claims(&Claims::new());
    assert_eq!(uids(inv.candidates()), ["u-lost"]);
    assert_eq!(inv.get("u-own").unwrap().claim, own);
}

#[test]
fn device_creates_wait_for_the_first_reconcile_in_a_cluster_only() {
    let inv = inventory(&[]);
    assert!(inv.reconciled(), "standalone: no gate");
    inv.await_reconcile();
    assert!(!inv.reconciled());
    inv.mark_reconciled();
    assert!(inv.reconciled());
}
