//! Generators of plausible and hostile CSI request fields.
//!
//! Values that must refer to the driver's current state (volume ids it created, staging and
//! target paths it mounted) are drawn from a shared [`Pools`] when a case is generated, so a
//! share of the requests reaches deep into the backends instead of bouncing off validation.

use ferrovol::proto as csi;
use ferrovol::proto::volume_capability::{access_mode, AccessMode, AccessType};
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Marks names the fuzz makes up on purpose, so the escape checks can recognise them in / and /tmp.
pub const MARK: &str = "fzz";

/// State the generators draw from and feed.
pub struct Pools {
    /// The scratch directory (the driver's working directory).
    pub scratch: PathBuf,
    /// The publish root (`<scratch>/kubelet`).
    pub kubelet: PathBuf,
    /// A directory outside every root, planted with sentinels.
    pub outside: PathBuf,
    /// Symlinks planted under the publish root (names), pointing out of it.
    pub links: Vec<String>,
    pub ids: Mutex<Vec<String>>,
    pub paths: Mutex<Vec<String>>,
    /// (volume id, staging path) of every successful NodeStageVolume.
    pub staged: Mutex<Vec<(String, String)>>,
    /// Every path component the generators produced, for the checks of / and /tmp.
    pub seen: Mutex<HashSet<String>>,
}

impl Pools {
    pub fn pick(list: &Mutex<Vec<String>>, i: usize) -> String {
        let list = list.lock().unwrap();
        if list.is_empty() {
            String::new()
        } else {
            list[i % list.len()].clone()
        }
    }

    pub fn staged(&self, i: usize) -> Option<(String, String)> {
        let staged = self.staged.lock().unwrap();
        (!staged.is_empty()).then(|| staged[i % staged.len()].clone())
    }

    pub fn add_id(&self, id: String) {
        let mut ids = self.ids.lock().unwrap();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    pub fn add_path(&self, path: &str) {
        let mut paths = self.paths.lock().unwrap();
        if !paths.iter().any(|p| p == path) {
            paths.push(path.to_string());
        }
    }

    pub fn note(&self, value: &str) {
        let mut seen = self.seen.lock().unwrap();
        for part in value
            .split('/')
            .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        {
            seen.insert(part.to_string());
        }
    }
}

pub type P = Arc<Pools>;

/// Hostile literals: traversal, separators, NUL, control and bidi characters, id look-alikes.
const NASTY: &[&str] = &[
    "",
    ".",
    "..",
    "/",
    "//",
    "../..",
    "../../../../tmp/fzz-up",
    "a/../../fzz-up",
    "fzz\0nul",
    "\0",
    " ",
    "\n",
    "fzz-\u{202e}gpj.exe",
    "ünïcödé-fzz",
    "🦀",
    "hostpath/test-node/../../fzz",
    "hostpath/test-node/",
    "hostpath//fzz",
    "hostpath/test-node/fzz/extra",
    "nfs/server/fzz",
    "-1",
    "%2e%2e%2ffzz",
];

/// Any string of 0..300 bytes or characters, or a hostile literal.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::sample::select(NASTY).prop_map(str::to_string),
        3 => vec(proptest::char::range('a', 'z'), 1..20).prop_map(|c| c.into_iter().collect()),
        2 => vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect()),
        2 => vec(any::<u8>(), 0..300).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => (1usize..300).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

/// A volume or snapshot name: plausible PVC names or hostile text; noted for the escape checks.
pub fn name(p: &P) -> BoxedStrategy<String> {
    let p = p.clone();
    prop_oneof![
        2 => "[0-9a-f]{1,12}".prop_map(|h| format!("pvc-{MARK}-{h}")),
        3 => text(),
    ]
    .prop_map(move |n| {
        p.note(&n);
        n
    })
    .boxed()
}

/// A volume id: one the driver handed out, one shaped like ours, or anything.
pub fn volume_id(p: &P) -> BoxedStrategy<String> {
    let p2 = p.clone();
    let p3 = p.clone();
    prop_oneof![
        4 => any::<usize>().prop_map(move |i| Pools::pick(&p2.ids, i)),
        2 => text().prop_map(|t| format!("hostpath/test-node/{t}")),
        1 => text().prop_map(|t| format!("hostpath/other-node/{t}")),
        1 => text().prop_map(|t| format!("device/test-node/{t}")),
        2 => text(),
    ]
    .prop_map(move |id| {
        p3.note(&id);
        id
    })
    .boxed()
}

pub fn node_id() -> BoxedStrategy<String> {
    prop_oneof![3 => Just("test-node".to_string()), 1 => Just(String::new()), 2 => text()].boxed()
}

/// One path component, biased towards the sentinels planted outside the root.
fn component() -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::sample::select(&["empty", "file", "dir", "pods", "staging", "..", ".", ""][..])
            .prop_map(str::to_string),
        2 => "[a-z]{1,8}".prop_map(|s| format!("{MARK}-{s}")),
        1 => text(),
    ]
    .boxed()
}

fn components(n: std::ops::Range<usize>) -> BoxedStrategy<String> {
    vec(component(), n).prop_map(|c| c.join("/")).boxed()
}

/// A staging, target or volume path: under the root, through planted symlinks, one used
/// before, the root itself, outside it (sentinels, other driver dirs, / and /tmp), relative.
pub fn path(p: &P) -> BoxedStrategy<String> {
    let kubelet = p.kubelet.display().to_string();
    let outside = p.outside.display().to_string();
    let scratch = p.scratch.display().to_string();
    let links = p.links.clone();
    let (k1, k2, k3) = (kubelet.clone(), kubelet.clone(), kubelet.clone());
    let p_known = p.clone();
    let p_note = p.clone();
    prop_oneof![
        4 => components(1..4).prop_map(move |c| format!("{k1}/{c}")),
        3 => (proptest::sample::select(links), components(0..3))
            .prop_map(move |(l, c)| format!("{k2}/{l}/{c}")),
        4 => any::<usize>().prop_map(move |i| Pools::pick(&p_known.paths, i)),
        1 => proptest::sample::select(&["", "/", "/.", "/pods/.."][..])
            .prop_map(move |s| format!("{k3}{s}")),
        1 => components(0..3).prop_map(move |c| format!("{outside}/{c}")),
        1 => (proptest::sample::select(&["hostpath", "state", "data", ""][..]), components(0..2))
            .prop_map(move |(d, c)| format!("{scratch}/{d}/{c}")),
        1 => components(1..3),
        1 => "[a-z]{1,8}".prop_map(|s| format!("/{MARK}-{s}")),
        1 => "[a-z]{1,8}".prop_map(|s| format!("/tmp/{MARK}-{s}/x")),
        1 => text(),
    ]
    .prop_map(move |path| {
        p_note.note(&path);
        if path.starts_with(&kubelet) {
            p_note.add_path(&path);
        }
        path
    })
    .boxed()
}

/// A map field: empty, a few known or hostile entries, or more entries than the limit allows.
pub fn map(known_keys: &'static [&'static str]) -> BoxedStrategy<HashMap<String, String>> {
    let key = prop_oneof![
        2 => proptest::sample::select(known_keys).prop_map(str::to_string),
        1 => text(),
    ];
    let value = prop_oneof![
        2 => proptest::sample::select(
            &["hostpath", "device", "nfs", "enforce", "none", "auto", "true", "/etc", ""][..]
        )
        .prop_map(str::to_string),
        1 => text(),
    ];
    prop_oneof![
        3 => Just(HashMap::new()),
        4 => pairs(key, value, 1..6),
        1 => pairs(letters(1..12), letters(0..4), 400..700),
    ]
    .boxed()
}

/// Lower-case letters (cheaper to draw than a regex strategy, for maps of hundreds of entries).
fn letters(len: std::ops::Range<usize>) -> BoxedStrategy<String> {
    vec(proptest::char::range('a', 'z'), len)
        .prop_map(|c| c.into_iter().collect())
        .boxed()
}

/// A map of exactly as many entries as drawn: keys repeated by the generator get the entry's
/// index appended (proptest's own `hash_map` rejects and redraws until the keys are distinct,
/// which for a few hundred entries costs seconds per case).
fn pairs(
    key: impl Strategy<Value = String> + 'static,
    value: impl Strategy<Value = String> + 'static,
    size: std::ops::Range<usize>,
) -> BoxedStrategy<HashMap<String, String>> {
    vec((key, value), size)
        .prop_map(|kv| {
            let mut out = HashMap::with_capacity(kv.len());
            for (i, (k, v)) in kv.into_iter().enumerate() {
                let k = if out.contains_key(&k) {
                    format!("{k}{i}")
                } else {
                    k
                };
                out.insert(k, v);
            }
            out
        })
        .boxed()
}

pub const PARAM_KEYS: &[&str] = &[
    "backend",
    "quota",
    "csi.storage.k8s.io/pvc/name",
    "csi.storage.k8s.io/pvc/namespace",
    "csi.storage.k8s.io/pv/name",
    "basePath",
    "fsType",
];
pub const CONTEXT_KEYS: &[&str] = &[
    "path",
    "hostPath",
    "device",
    "server",
    "share",
    "subdir",
    "csi.storage.k8s.io/ephemeral",
];
pub const SECRET_KEYS: &[&str] = &[
    "token",
    "password",
    "csi.storage.k8s.io/serviceAccount.tokens",
];

/// One capability: access type missing, mount (odd fs types, flag lists up to past the
/// limit) or block; access mode missing or any i32 near the enum.
pub fn capability() -> BoxedStrategy<csi::VolumeCapability> {
    let flag = prop_oneof![
        3 => proptest::sample::select(
            &["ro", "rw", "noatime", "nosuid", "nodev", "noexec", "bind", "rbind", "remount",
              "uid=0", "mode=4777", "shared", "loop", "", "=", "defaults", "context=\"x\""][..]
        )
        .prop_map(str::to_string),
        1 => text(),
    ];
    let flags = prop_oneof![4 => vec(flag.clone(), 0..6), 1 => vec(flag, 60..80)];
    let fs_type = prop_oneof![
        3 => proptest::sample::select(&["", "ext4", "xfs", "btrfs", "nfs", "tmpfs", "proc", "bind"][..])
            .prop_map(str::to_string),
        1 => text(),
    ];
    let mount = (
        fs_type,
        flags,
        prop_oneof![3 => Just(String::new()), 1 => text()],
    )
        .prop_map(|(fs_type, mount_flags, volume_mount_group)| {
            AccessType::Mount(csi::volume_capability::MountVolume {
                fs_type,
                mount_flags,
                volume_mount_group,
            })
        });
    let access_type = prop_oneof![
        1 => Just(None),
        4 => mount.prop_map(Some),
        2 => Just(Some(AccessType::Block(csi::volume_capability::BlockVolume {}))),
    ];
    let mode = prop_oneof![
        1 => Just(None),
        4 => (0..=access_mode::Mode::MultiNodeSingleWriter as i32).prop_map(Some),
        1 => any::<i32>().prop_map(Some),
    ];
    (access_type, mode)
        .prop_map(|(access_type, mode)| csi::VolumeCapability {
            access_type,
            access_mode: mode.map(|mode| AccessMode { mode }),
        })
        .boxed()
}

pub fn capabilities() -> BoxedStrategy<Vec<csi::VolumeCapability>> {
    prop_oneof![1 => Just(Vec::new()), 6 => vec(capability(), 1..3), 1 => vec(capability(), 10..20)]
        .boxed()
}

pub fn opt_capability() -> BoxedStrategy<Option<csi::VolumeCapability>> {
    proptest::option::weighted(0.85, capability()).boxed()
}

fn bytes() -> BoxedStrategy<i64> {
    const MIB: i64 = 1 << 20;
    prop_oneof![
        2 => Just(0i64),
        4 => (1i64..=64).prop_map(|m| m * MIB),
        1 => 1i64..4096,
        1 => i64::MIN..0,
        1 => proptest::sample::select(&[i64::MAX, i64::MAX - 1, 1i64 << 62, 1 << 50, -1][..]),
    ]
    .boxed()
}

/// Missing, zero, plausible, negative, inverted (limit below required) or huge.
pub fn range() -> BoxedStrategy<Option<csi::CapacityRange>> {
    proptest::option::weighted(
        0.85,
        (bytes(), bytes()).prop_map(|(required_bytes, limit_bytes)| csi::CapacityRange {
            required_bytes,
            limit_bytes,
        }),
    )
    .boxed()
}

pub fn topology() -> BoxedStrategy<csi::Topology> {
    let key = prop_oneof![
        2 => Just("topology.ferrovol.io/node".to_string()),
        1 => Just("kubernetes.io/hostname".to_string()),
        1 => text(),
    ];
    let value = prop_oneof![2 => Just("test-node".to_string()), 1 => text()];
    prop_oneof![3 => pairs(key.clone(), value.clone(), 0..3), 1 => pairs(key, value, 30..40)]
        .prop_map(|segments| csi::Topology { segments })
        .boxed()
}

pub fn topology_requirement() -> BoxedStrategy<Option<csi::TopologyRequirement>> {
    let list = prop_oneof![4 => vec(topology(), 0..3), 1 => vec(topology(), 50..120)];
    proptest::option::weighted(
        0.4,
        (list.clone(), list).prop_map(|(requisite, preferred)| csi::TopologyRequirement {
            requisite,
            preferred,
        }),
    )
    .boxed()
}

/// A pagination token: empty, numbers (negative, huge, past the end) or anything.
pub fn token() -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (0u32..50).prop_map(|n| n.to_string()),
        2 => text(),
    ]
    .boxed()
}

pub fn max_entries() -> BoxedStrategy<i32> {
    prop_oneof![2 => Just(0), 2 => 1i32..5, 1 => any::<i32>()].boxed()
}

pub fn content_source(p: &P) -> BoxedStrategy<Option<csi::VolumeContentSource>> {
    use csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
    let ty = prop_oneof![
        1 => Just(None),
        2 => volume_id(p).prop_map(|volume_id| Some(Type::Volume(VolumeSource { volume_id }))),
        1 => text().prop_map(|snapshot_id| Some(Type::Snapshot(SnapshotSource { snapshot_id }))),
    ];
    proptest::option::weighted(
        0.3,
        ty.prop_map(|r#type| csi::VolumeContentSource { r#type }),
    )
    .boxed()
}
