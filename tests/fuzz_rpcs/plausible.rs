//! Plausible field values: a well-formed request reaches the backends (mounts, records,
//! images), where hostile state (planted links, earlier half-done calls) can still trip them.
//! Each `*_g(good)` gives the plausible generator when `good`, else the hostile one.

use super::strategies::*;
use ferrovol::proto as csi;
use ferrovol::proto::volume_capability::{access_mode, AccessMode, AccessType};
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::HashMap;
use std::fmt::Debug;

/// Half the cases of an RPC are built from plausible fields, half from hostile ones.
pub fn either<T: Debug + 'static>(build: impl Fn(bool) -> BoxedStrategy<T>) -> BoxedStrategy<T> {
    prop_oneof![build(true), build(false)].boxed()
}

pub fn good_capability() -> BoxedStrategy<csi::VolumeCapability> {
    use access_mode::Mode;
    let mode = proptest::sample::select(
        &[
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ][..],
    );
    const FLAGS: &[&[&str]] = &[&[], &["noatime"], &["ro", "nosuid"]];
    let flags = proptest::sample::select(FLAGS);
    (mode, any::<bool>(), flags)
        .prop_map(|(mode, block, flags)| csi::VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(if block {
                AccessType::Block(csi::volume_capability::BlockVolume {})
            } else {
                AccessType::Mount(csi::volume_capability::MountVolume {
                    fs_type: String::new(),
                    mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                    volume_mount_group: String::new(),
                })
            }),
        })
        .boxed()
}

pub fn capabilities_g(good: bool) -> BoxedStrategy<Vec<csi::VolumeCapability>> {
    if good {
        vec(good_capability(), 1..2).boxed()
    } else {
        capabilities()
    }
}

pub fn opt_capability_g(good: bool) -> BoxedStrategy<Option<csi::VolumeCapability>> {
    if good {
        good_capability().prop_map(Some).boxed()
    } else {
        opt_capability()
    }
}

pub fn range_g(good: bool) -> BoxedStrategy<Option<csi::CapacityRange>> {
    const MIB: i64 = 1 << 20;
    if !good {
        return range();
    }
    (1i64..=32, prop_oneof![Just(0i64), 32i64..=64])
        .prop_map(|(r, l)| {
            Some(csi::CapacityRange {
                required_bytes: r * MIB,
                limit_bytes: l * MIB,
            })
        })
        .boxed()
}

pub fn map_g(keys: &'static [&'static str], good: bool) -> BoxedStrategy<HashMap<String, String>> {
    if good {
        prop_oneof![
            Just(HashMap::new()),
            Just(HashMap::from([(
                "backend".to_string(),
                "hostpath".to_string()
            )])),
            Just(HashMap::from([("quota".to_string(), "none".to_string())])),
        ]
        .boxed()
    } else {
        map(keys)
    }
}

pub fn name_g(p: &P, good: bool) -> BoxedStrategy<String> {
    if good {
        let p = p.clone();
        "[0-9a-f]{4,12}"
            .prop_map(move |h| {
                let n = format!("pvc-{MARK}-{h}");
                p.note(&n);
                n
            })
            .boxed()
    } else {
        name(p)
    }
}

pub fn volume_id_g(p: &P, good: bool) -> BoxedStrategy<String> {
    if good {
        let p = p.clone();
        any::<usize>()
            .prop_map(move |i| Pools::pick(&p.ids, i))
            .boxed()
    } else {
        volume_id(p)
    }
}

/// A fresh path under the root shaped like kubelet's, or one used before.
pub fn path_g(p: &P, good: bool) -> BoxedStrategy<String> {
    if !good {
        return path(p);
    }
    let kubelet = p.kubelet.display().to_string();
    let (p1, p2) = (p.clone(), p.clone());
    prop_oneof![
        (
            "[a-z]{3,8}",
            proptest::sample::select(&["staging", "pods"][..])
        )
            .prop_map(move |(n, d)| format!("{kubelet}/{d}/{MARK}-{n}")),
        any::<usize>().prop_map(move |i| Pools::pick(&p1.paths, i)),
    ]
    .prop_map(move |path| {
        p2.note(&path);
        p2.add_path(&path);
        path
    })
    .boxed()
}
