use super::*;
use crate::discovery::device::{Device, DeviceType};

fn entry(uid: &str, state: State, claim: Claim) -> Entry {
    let mut d = Device::fake("loop1", DeviceType::Loop);
    d.uid = uid.into();
    d.selected = true;
    Entry {
        device: d,
        state,
        claim,
        conflict: Vec::new(),
    }
}

fn claimed() -> Claim {
    Claim::Claimed {
        volume: "v1".into(),
        node: "n1".into(),
    }
}

/// `plan` on node n1 for the inventory `want`, with no other node's claims.
fn plan_n1(want: &[Entry], objects: &[BlockDevice], fresh: bool, held: &Claims) -> Plan {
    plan(
        "n1",
        desired("n1", want),
        objects,
        &BTreeMap::new(),
        fresh,
        held,
    )
}

#[test]
fn desired_skips_only_unclaimed_inactive() {
    let es = [
        entry("bd-a", State::Active, Claim::Unclaimed),
        entry("bd-b", State::Inactive, Claim::Unclaimed),
        entry("bd-c", State::Inactive, claimed()),
    ];
    let names: Vec<String> = desired("n1", &es).iter().map(|o| o.name_any()).collect();
    assert_eq!(names, ["bd-a", "bd-c"]);
    // Not selected by the filters: only a claim keeps it in the cluster.
    let mut unselected = [
        entry("bd-d", State::Active, Claim::Unclaimed),
        entry("bd-e", State::Active, claimed()),
    ];
    for e in &mut unselected {
        e.device.selected = false;
    }
    let names: Vec<String> = desired("n1", &unselected)
        .iter()
        .map(|o| o.name_any())
        .collect();
    assert_eq!(names, ["bd-e"]);
    let c = &desired("n1", &es)[1];
    let st = c.status.as_ref().unwrap();
    assert_eq!(
        (st.claim_state.as_str(), st.state.as_str()),
        ("Claimed", "Inactive")
    );
    assert_eq!(st.volume.as_deref(), Some("v1"));
    assert!(!st.candidate);
    assert_eq!(
        c.metadata
            .labels
            .as_ref()
            .unwrap()
            .get(NODE_LABEL)
            .map(String::as_str),
        Some("n1")
    );
}

#[test]
fn plan_applies_changes_and_deletes_stale_unclaimed_only() {
    let now = [entry("bd-a", State::Active, Claim::Unclaimed)];
    let same = desired("n1", &now);
    // Up to date: nothing to do.
    let p = plan_n1(&now, &same, false, &Claims::new());
    assert!(p.apply.is_empty() && p.delete.is_empty());
    // Changed status: apply.
    let moved = [entry("bd-a", State::Active, claimed())];
    let p = plan_n1(&moved, &same, false, &Claims::new());
    assert_eq!(p.apply.len(), 1);
    assert!(p.delete.is_empty());
    // Stale: the unclaimed one goes, the claimed one and another node's stay.
    let stale_unclaimed = desired("n1", &[entry("bd-x", State::Active, Claim::Unclaimed)]);
    let stale_claimed = desired("n1", &[entry("bd-y", State::Active, claimed())]);
    let other_node = desired("n2", &[entry("bd-z", State::Active, Claim::Unclaimed)]);
    let existing: Vec<BlockDevice> = [stale_unclaimed, stale_claimed, other_node, same]
        .into_iter()
        .flatten()
        .collect();
    let p = plan_n1(&now, &existing, false, &Claims::new());
    assert!(p.apply.is_empty());
    assert_eq!(p.delete, ["bd-x"]);
}

#[test]
fn another_nodes_claim_is_never_overwritten_nor_mirrored() {
    // A LUN both nodes see (one uid): n2's object records its claim.
    let mut theirs = entry("bd-lun", State::Active, claimed());
    if let Claim::Claimed { node, .. } = &mut theirs.claim {
        *node = "n2".into();
    }
    let n2_objects = desired("n2", std::slice::from_ref(&theirs));
    let st = n2_objects[0].status.as_ref().unwrap();
    assert_eq!(st.claim_node.as_deref(), Some("n2"));
    let foreign = foreign_claims("n1", &n2_objects);
    assert_eq!(foreign.get("bd-lun"), Some(&theirs.claim));
    assert!(foreign_claims("n2", &n2_objects).is_empty());

    // n1 sees the LUN unclaimed: it does not apply its own object over n2's.
    let mine = [entry("bd-lun", State::Active, Claim::Unclaimed)];
    let p = plan(
        "n1",
        desired("n1", &mine),
        &[],
        &foreign,
        false,
        &Claims::new(),
    );
    assert!(p.apply.is_empty(), "{:?}", p.apply);
    assert_eq!(foreign.len(), 1);
    // Once recorded in n1's inventory, n2's claim is not n1's to mirror.
    assert!(desired("n1", std::slice::from_ref(&theirs)).is_empty());
}

fn view(
    os: &[BlockDevice],
) -> Vec<(
    String,
    String,
    Option<crate::discovery::crd::BlockDeviceStatus>,
)> {
    let view = |o: &BlockDevice| (o.name_any(), o.spec.node_name.clone(), o.status.clone());
    os.iter().map(view).collect()
}

#[test]
fn plan_keeps_a_claim_of_this_node_that_only_its_object_remembers() {
    // The state dir is lost (the first sync sees fresh state): the inventory shows the
    // device unclaimed, its object still says Claimed by v1 on this node.
    let lost = [entry("bd-a", State::Active, Claim::Unclaimed)];
    let object = desired("n1", &[entry("bd-a", State::Active, claimed())]);
    let p = plan_n1(&lost, &object, true, &Claims::new());
    let unclaimed = |o: &BlockDevice| o.status.as_ref().unwrap().claim_state == "Unclaimed";
    assert!(!p.apply.iter().any(unclaimed), "{:?}", p.apply);
    assert!(p.delete.is_empty());
    let held = p.remembered.get("bd-a").cloned();
    assert!(
        matches!(&held, Some(Claim::Released { volume, reason, node })
            if volume == "v1" && node == "n1" && reason.contains("v1")
                && reason.contains("BlockDevice")),
        "{:?}",
        p.remembered
    );
    // What it applies is what the inventory holding that claim mirrors.
    let holding = [entry("bd-a", State::Active, held.unwrap())];
    assert_eq!(view(&p.apply), view(&desired("n1", &holding)));
    // The next sync (the inventory's own state still unclaimed) keeps it, changing nothing.
    let again = plan_n1(&lost, &p.apply, false, &p.remembered);
    assert!(again.apply.is_empty(), "{:?}", again.apply);
    assert_eq!(again.remembered, p.remembered);
    // A Released object is remembered too.
    let released = Claim::Released {
        volume: "v0".into(),
        reason: "not wiped".into(),
        node: "n1".into(),
    };
    let object = desired("n1", &[entry("bd-a", State::Active, released)]);
    let p = plan_n1(&lost, &object, true, &Claims::new());
    assert!(
        matches!(p.remembered.get("bd-a"), Some(Claim::Released { volume, .. }) if volume == "v0")
    );
    // An operator clears the claim or deletes the object: nothing remembered any more.
    let cleared = desired("n1", &lost);
    let p = plan_n1(&lost, &cleared, true, &Claims::new());
    assert!(p.remembered.is_empty() && p.apply.is_empty());
    let p = plan_n1(&lost, &[], true, &Claims::new());
    assert!(p.remembered.is_empty());
    assert_eq!(view(&p.apply), view(&cleared));
    // A claim this node's state holds stands over the object's.
    let now = Claim::Claimed {
        volume: "v2".into(),
        node: "n1".into(),
    };
    let mine = [entry("bd-a", State::Active, now)];
    let object = desired("n1", &[entry("bd-a", State::Active, claimed())]);
    let p = plan_n1(&mine, &object, true, &Claims::new());
    assert!(p.remembered.is_empty());
    assert_eq!(view(&p.apply), view(&desired("n1", &mine)));
    // Another node's object is not this node's memory.
    let theirs = desired("n2", &[entry("bd-b", State::Active, claimed())]);
    let p = plan_n1(&[], &theirs, true, &Claims::new());
    assert!(p.remembered.is_empty());
}

#[test]
fn plan_brings_a_deleted_volumes_object_to_this_nodes_state() {
    // DeleteVolume of v1 just released the device: this node's state (intact) shows it
    // unclaimed, its object still says Claimed by v1 until this sync.
    let now = [entry("bd-a", State::Active, Claim::Unclaimed)];
    let object = desired("n1", &[entry("bd-a", State::Active, claimed())]);
    let p = plan_n1(&now, &object, false, &Claims::new());
    assert!(p.remembered.is_empty(), "{:?}", p.remembered);
    assert_eq!(view(&p.apply), view(&desired("n1", &now)));
    assert!(p.delete.is_empty());
}

#[test]
fn plan_keeps_a_claim_only_the_object_records_after_a_fresh_start_or_once_held() {
    let lost = [entry("bd-a", State::Active, Claim::Unclaimed)];
    let object = desired("n1", &[entry("bd-a", State::Active, claimed())]);
    let none = Claims::new();
    let plan =
        |existing: &[BlockDevice], fresh, held: &Claims| plan_n1(&lost, existing, fresh, held);
    // Fresh state (state dir lost, or first start): the first sync holds the claim.
    let p = plan(&object, true, &none);
    let held = p.remembered.clone();
    assert!(
        matches!(held.get("bd-a"), Some(Claim::Released { volume, .. }) if volume == "v1"),
        "{held:?}"
    );
    // Later syncs of this process: the watched object may still say Claimed; the
    // inventory holds the claim, so it stays held.
    let lagging = plan(&object, false, &held);
    assert_eq!(lagging.remembered, held);
    assert_eq!(view(&lagging.apply), view(&p.apply));
    // A later start (state not fresh, nothing held yet): the object shows the hold.
    let restarted = plan(&p.apply, false, &none);
    assert_eq!(restarted.remembered, held);
    assert!(restarted.apply.is_empty(), "{:?}", restarted.apply);
    // Held for another volume, or Released for another reason: the state's view stands.
    let other = Claims::from([(
        "bd-a".into(),
        Claim::Released {
            volume: "v0".into(),
            reason: "remembered".into(),
            node: "n1".into(),
        },
    )]);
    assert!(plan(&object, false, &other).remembered.is_empty());
    let released = Claim::Released {
        volume: "v1".into(),
        reason: "not wiped".into(),
        node: "n1".into(),
    };
    let object = desired("n1", &[entry("bd-a", State::Active, released)]);
    let p = plan(&object, false, &none);
    assert!(p.remembered.is_empty(), "{:?}", p.remembered);
    assert_eq!(view(&p.apply), view(&desired("n1", &lost)));
}

#[test]
fn plan_writes_the_hold_into_the_object_of_a_device_missing_at_a_fresh_first_sync() {
    // The state dir is lost and the claimed device is unplugged at the first sync: only its
    // object remembers v1's claim.
    let object = desired("n1", &[entry("bd-a", State::Active, claimed())]);
    let p = plan_n1(&[], &object, true, &Claims::new());
    assert!(
        matches!(p.remembered.get("bd-a"), Some(Claim::Released { volume, .. }) if volume == "v1"),
        "{:?}",
        p.remembered
    );
    assert!(p.delete.is_empty());
    // The hold goes into the object, so that a later start keeps it once the device is back.
    let hold = p.apply.iter().find(|o| o.name_any() == "bd-a");
    let hold = hold.unwrap_or_else(|| panic!("the object gets the hold: {:?}", p.apply));
    let status = hold.status.as_ref().unwrap();
    assert_eq!(
        (status.claim_state.as_str(), status.state.as_str()),
        ("Released", "Inactive")
    );
    assert_eq!(hold.metadata.resource_version, None);
    let back = [entry("bd-a", State::Active, Claim::Unclaimed)];
    let restarted = plan_n1(&back, std::slice::from_ref(hold), false, &Claims::new());
    assert_eq!(restarted.remembered, p.remembered);
    let unclaimed = |o: &BlockDevice| o.status.as_ref().unwrap().claim_state == "Unclaimed";
    assert!(
        !restarted.apply.iter().any(unclaimed),
        "{:?}",
        restarted.apply
    );
    // Still missing at that start: nothing to send again.
    let missing = plan_n1(&[], std::slice::from_ref(hold), false, &Claims::new());
    assert_eq!(missing.remembered, p.remembered);
    assert!(missing.apply.is_empty(), "{:?}", missing.apply);
}

#[test]
fn the_hold_reason_objects_carry_stays_as_written() {
    // Objects in clusters carry this text; a start recognises its holds by it.
    assert_eq!(
        remembered_reason("v1"),
        "claimed by volume v1 per its BlockDevice; this node's state has no record of it: not \
         reused until an operator releases it (delete the BlockDevice object or clear its claim)"
    );
}
