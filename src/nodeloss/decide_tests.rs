//! Which PVs are affected under which policy.

use super::*;
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeNodeAffinity,
};
use std::collections::BTreeMap;

const GRACE: Duration = Duration::from_secs(60);
const GONE: NodeState = NodeState::Missing(Duration::from_secs(120));

fn term(key: &str, op: &str, values: &[&str]) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(vec![NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }]),
        ..Default::default()
    }
}

fn pv_with(driver: &str, terms: Vec<NodeSelectorTerm>, reclaim: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pvc-1".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            csi: Some(CSIPersistentVolumeSource {
                driver: driver.into(),
                volume_handle: "n1/hostpath/pvc-1".into(),
                ..Default::default()
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
            }),
            persistent_volume_reclaim_policy: Some(reclaim.into()),
            claim_ref: Some(ObjectReference {
                namespace: Some("db".into()),
                name: Some("data-db-0".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A local PV pinned to n1, bound to db/data-db-0 (uid-1), reclaim policy Delete.
fn local_pv() -> PersistentVolume {
    pv_with(
        LOCAL_DRIVER,
        vec![term(TOPOLOGY_KEY, "In", &["n1"])],
        "Delete",
    )
}

/// db/data-db-0 (uid-1), bound to the PV of [`local_pv`].
fn claim(opt_in: Option<&str>) -> PersistentVolumeClaim {
    claim_of("uid-1", Some("pvc-1"), opt_in)
}

/// db/data-db-0 with this uid, bound to the PV `volume` (None: not bound yet).
fn claim_of(uid: &str, volume: Option<&str>, opt_in: Option<&str>) -> PersistentVolumeClaim {
    let annotations =
        opt_in.map(|v| BTreeMap::from([(OPT_IN_ANNOTATION.to_string(), v.to_string())]));
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            namespace: Some("db".into()),
            name: Some("data-db-0".into()),
            uid: Some(uid.into()),
            annotations,
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            volume_name: volume.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn opts(policy: Policy) -> Options {
    Options {
        policy,
        recreate_all: false,
        grace: GRACE,
    }
}

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

#[test]
fn pinned_only_for_the_local_driver_and_one_node() {
    assert_eq!(pinned_node(&local_pv()), Some("n1"));
    let two_terms_same = vec![
        term(TOPOLOGY_KEY, "In", &["n1"]),
        term(TOPOLOGY_KEY, "In", &["n1"]),
    ];
    assert_eq!(
        pinned_node(&pv_with(LOCAL_DRIVER, two_terms_same, "Delete")),
        Some("n1")
    );
    let not_pinned = [
        pv_with(
            "nfs.csi.ferrovol.io",
            vec![term(TOPOLOGY_KEY, "In", &["n1"])],
            "Delete",
        ),
        pv_with(
            "other.csi.example",
            vec![term(TOPOLOGY_KEY, "In", &["n1"])],
            "Delete",
        ),
        pv_with(
            LOCAL_DRIVER,
            vec![term(TOPOLOGY_KEY, "In", &["n1", "n2"])],
            "Delete",
        ),
        pv_with(
            LOCAL_DRIVER,
            vec![term(TOPOLOGY_KEY, "NotIn", &["n1"])],
            "Delete",
        ),
        pv_with(
            LOCAL_DRIVER,
            vec![term("kubernetes.io/hostname", "In", &["n1"])],
            "Delete",
        ),
        pv_with(
            LOCAL_DRIVER,
            vec![
                term(TOPOLOGY_KEY, "In", &["n1"]),
                term(TOPOLOGY_KEY, "In", &["n2"]),
            ],
            "Delete",
        ),
        pv_with(LOCAL_DRIVER, vec![], "Delete"),
    ];
    for pv in &not_pinned {
        assert_eq!(pinned_node(pv), None, "{:?}", pv.spec);
    }
    let mut no_affinity = local_pv();
    no_affinity.spec.as_mut().unwrap().node_affinity = None;
    assert_eq!(pinned_node(&no_affinity), None);
}

#[test]
fn other_drivers_are_never_touched_under_any_policy() {
    let pv = pv_with(
        "other.csi.example",
        vec![term(TOPOLOGY_KEY, "In", &["n1"])],
        "Delete",
    );
    let c = claim(Some("recreate"));
    for policy in [Policy::Off, Policy::Report, Policy::Recreate] {
        let o = Options {
            recreate_all: true,
            ..opts(policy)
        };
        assert_eq!(
            decide(&o, &pv, GONE, ClaimState::Bound(&c)),
            Decision::NotOurs
        );
    }
}

#[test]
fn a_present_node_leaves_the_volume_and_clears_a_stale_mark() {
    let c = claim(Some("recreate"));
    let mut pv = local_pv();
    for policy in [Policy::Off, Policy::Report, Policy::Recreate] {
        let d = decide(
            &opts(policy),
            &pv,
            NodeState::Present,
            ClaimState::Bound(&c),
        );
        assert_eq!(d, Decision::NodePresent { unmark: false });
    }
    pv.metadata.annotations = Some(BTreeMap::from([(NODE_LOST_ANNOTATION.into(), "n1".into())]));
    let d = decide(
        &opts(Policy::Report),
        &pv,
        NodeState::Present,
        ClaimState::Bound(&c),
    );
    assert_eq!(d, Decision::NodePresent { unmark: true });
    // Off writes nothing, not even the removal of a mark.
    let d = decide(
        &opts(Policy::Off),
        &pv,
        NodeState::Present,
        ClaimState::Bound(&c),
    );
    assert_eq!(d, Decision::NodePresent { unmark: false });
}

#[test]
fn nothing_happens_within_the_grace_period() {
    let c = claim(Some("recreate"));
    let young = NodeState::Missing(Duration::from_secs(10));
    let d = decide(
        &opts(Policy::Recreate),
        &local_pv(),
        young,
        ClaimState::Bound(&c),
    );
    assert_eq!(d, Decision::Wait(Duration::from_secs(50)));
    let at_grace = NodeState::Missing(GRACE);
    let d = decide(
        &opts(Policy::Recreate),
        &local_pv(),
        at_grace,
        ClaimState::Bound(&c),
    );
    assert_eq!(d, Decision::Recreate { claim: true });
}

#[test]
fn policy_off_leaves_every_lost_volume() {
    let o = Options {
        recreate_all: true,
        ..opts(Policy::Off)
    };
    for c in [claim(None), claim(Some("recreate"))] {
        let d = decide(&o, &local_pv(), GONE, ClaimState::Bound(&c));
        assert_eq!(d, Decision::Leave("policy off"));
    }
    assert_eq!(
        decide(&o, &local_pv(), GONE, ClaimState::Gone),
        Decision::Leave("policy off")
    );
}

#[test]
fn report_marks_but_never_deletes() {
    let o = Options {
        recreate_all: true,
        ..opts(Policy::Report)
    };
    for a in [None, Some("recreate"), Some("report"), Some("bogus")] {
        let c = claim(a);
        assert_eq!(
            decide(&o, &local_pv(), GONE, ClaimState::Bound(&c)),
            Decision::Report,
            "{a:?}"
        );
    }
    assert_eq!(
        decide(&o, &local_pv(), GONE, ClaimState::Gone),
        Decision::Report
    );
    assert_eq!(
        decide(&o, &local_pv(), GONE, ClaimState::Unclaimed),
        Decision::Report
    );
    let ignore = claim(Some("ignore"));
    assert!(matches!(
        decide(&o, &local_pv(), GONE, ClaimState::Bound(&ignore)),
        Decision::Leave(_)
    ));
}

#[test]
fn recreate_deletes_opted_in_claims_only() {
    let o = opts(Policy::Recreate);
    let cases = [
        (Some("recreate"), Decision::Recreate { claim: true }),
        (None, Decision::Report),
        (Some("report"), Decision::Report),
        (Some("Recreate"), Decision::Report),
    ];
    for (a, want) in cases {
        let c = claim(a);
        assert_eq!(
            decide(&o, &local_pv(), GONE, ClaimState::Bound(&c)),
            want,
            "{a:?}"
        );
    }
    let ignore = claim(Some("ignore"));
    assert!(matches!(
        decide(&o, &local_pv(), GONE, ClaimState::Bound(&ignore)),
        Decision::Leave(_)
    ));
}

#[test]
fn recreate_all_takes_unannotated_claims_but_respects_report_and_ignore() {
    let o = Options {
        recreate_all: true,
        ..opts(Policy::Recreate)
    };
    let cases = [
        (None, Decision::Recreate { claim: true }),
        (Some("recreate"), Decision::Recreate { claim: true }),
        (Some("report"), Decision::Report),
        (Some("bogus"), Decision::Report),
    ];
    for (a, want) in cases {
        let c = claim(a);
        assert_eq!(
            decide(&o, &local_pv(), GONE, ClaimState::Bound(&c)),
            want,
            "{a:?}"
        );
    }
    let ignore = claim(Some("ignore"));
    assert!(matches!(
        decide(&o, &local_pv(), GONE, ClaimState::Bound(&ignore)),
        Decision::Leave(_)
    ));
}

#[test]
fn recreate_deletes_an_unclaimed_pv_only_when_its_reclaim_policy_is_delete() {
    let o = opts(Policy::Recreate);
    let delete = local_pv();
    let retain = pv_with(
        LOCAL_DRIVER,
        vec![term(TOPOLOGY_KEY, "In", &["n1"])],
        "Retain",
    );
    for state in [ClaimState::Gone, ClaimState::Unclaimed] {
        assert_eq!(
            decide(&o, &delete, GONE, state),
            Decision::Recreate { claim: false }
        );
        assert_eq!(decide(&o, &retain, GONE, state), Decision::Report);
    }
}

/// The PV's claimRef (uid or none) and the claim found under its name (uid, spec.volumeName):
/// the claim is the PV's only when it names the PV back and, when the claimRef has a uid, has
/// that uid.
#[test]
fn claim_state_needs_the_claim_to_name_the_pv() {
    struct Row {
        what: &'static str,
        ref_uid: Option<&'static str>,
        found: Option<(&'static str, Option<&'static str>)>,
        bound: bool,
    }
    let rows = [
        Row {
            what: "uid and volumeName match",
            ref_uid: Some("uid-1"),
            found: Some(("uid-1", Some("pvc-1"))),
            bound: true,
        },
        Row {
            what: "claimRef without uid, the claim is bound to this PV",
            ref_uid: None,
            found: Some(("uid-9", Some("pvc-1"))),
            bound: true,
        },
        Row {
            what: "claimRef without uid, a claim of that name bound to another PV",
            ref_uid: None,
            found: Some(("uid-9", Some("pvc-other"))),
            bound: false,
        },
        Row {
            what: "claimRef without uid, a claim of that name bound to no PV",
            ref_uid: None,
            found: Some(("uid-9", None)),
            bound: false,
        },
        Row {
            what: "uid matches but the claim names another PV",
            ref_uid: Some("uid-1"),
            found: Some(("uid-1", Some("pvc-other"))),
            bound: false,
        },
        Row {
            what: "uid matches but the claim is not bound yet",
            ref_uid: Some("uid-1"),
            found: Some(("uid-1", None)),
            bound: false,
        },
        Row {
            what: "a newer claim of that name (the workload made it anew)",
            ref_uid: Some("uid-1"),
            found: Some(("uid-2", Some("pvc-1"))),
            bound: false,
        },
        Row {
            what: "no claim of that name",
            ref_uid: Some("uid-1"),
            found: None,
            bound: false,
        },
    ];
    for row in rows {
        let mut pv = local_pv();
        pv.spec.as_mut().unwrap().claim_ref.as_mut().unwrap().uid = row.ref_uid.map(Into::into);
        let found = row
            .found
            .map(|(uid, volume)| claim_of(uid, volume, Some("recreate")));
        let state = claim_state(&pv, found.as_ref());
        if row.bound {
            assert!(matches!(state, ClaimState::Bound(_)), "{}", row.what);
        } else {
            assert!(matches!(state, ClaimState::Gone), "{}", row.what);
            // An opted-in claim that is not this PV's is never deleted with it.
            let d = decide(&opts(Policy::Recreate), &pv, GONE, state);
            assert_ne!(d, Decision::Recreate { claim: true }, "{}", row.what);
        }
    }
    let mut available = local_pv();
    available.spec.as_mut().unwrap().claim_ref = None;
    assert!(matches!(
        claim_state(&available, Some(&claim(None))),
        ClaimState::Unclaimed
    ));
}

#[test]
fn opt_in_values() {
    assert_eq!(opt_in(&claim(None)), OptIn::Unset);
    assert_eq!(opt_in(&claim(Some("recreate"))), OptIn::Recreate);
    assert_eq!(opt_in(&claim(Some("report"))), OptIn::Report);
    assert_eq!(opt_in(&claim(Some("ignore"))), OptIn::Ignore);
    assert_eq!(opt_in(&claim(Some("yes"))), OptIn::Invalid("yes".into()));
}
