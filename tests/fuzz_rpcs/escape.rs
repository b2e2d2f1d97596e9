//! What the fuzz run must leave untouched: a sentinel tree outside the roots, the scratch
//! directory's top level, the names in / and /tmp, and the mount table outside the roots.

use super::common::loop_devices_under;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Symlinks planted under the publish root, each pointing out of it (or at itself).
pub const LINKS: &[&str] = &["link-out", "link-rel", "link-root", "link-tmp", "link-loop"];

/// Plants the sentinels: `<scratch>/outside/{empty/, file, dir/inner}` and, under the root,
/// symlinks to it, to /, to a missing directory in /tmp and to themselves.
pub fn plant(scratch: &Path, kubelet: &Path, outside: &Path, tmp_target: &Path) {
    fs::create_dir_all(outside.join("empty")).unwrap();
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("file"), b"sentinel").unwrap();
    fs::write(outside.join("dir/inner"), b"sentinel").unwrap();
    fs::create_dir_all(kubelet.join("pods")).unwrap();
    fs::create_dir_all(kubelet.join("staging")).unwrap();
    fs::write(kubelet.join("file"), b"not a directory").unwrap();
    symlink(outside, kubelet.join("link-out")).unwrap();
    symlink("../outside", kubelet.join("link-rel")).unwrap();
    symlink("/", kubelet.join("link-root")).unwrap();
    symlink(tmp_target, kubelet.join("link-tmp")).unwrap();
    symlink("link-loop", kubelet.join("link-loop")).unwrap();
    assert!(scratch.join("outside").is_dir());
}

/// Every entry below `dir` (symlinks not followed): relative path -> kind and content.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&path).unwrap();
            let desc = if meta.is_dir() {
                stack.push(path);
                "dir".to_string()
            } else if meta.file_type().is_symlink() {
                format!("link {:?}", fs::read_link(&path).ok())
            } else {
                format!("file {:?}", fs::read(&path).ok())
            };
            out.insert(rel, desc);
        }
    }
    out
}

pub fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Names that appeared in `dir` since `before` and look generated: they contain the fuzz mark
/// or equal a component the generators produced. (Other processes on the machine create files
/// in /tmp too; those do not look like ours.)
pub fn new_generated(
    dir: &Path,
    before: &BTreeSet<String>,
    seen: &HashSet<String>,
    mark: &str,
) -> Vec<String> {
    names(dir)
        .difference(before)
        .filter(|n| n.contains(mark) || seen.contains(*n))
        .cloned()
        .collect()
}

/// One line of /proc/self/mountinfo: what matters to tell whose mount it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mount {
    pub mount_point: String,
    pub root: String,
    pub source: String,
}

pub fn mounts() -> BTreeSet<Mount> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            let source = tail.split(' ').nth(1).unwrap_or("").to_string();
            Some(Mount {
                root: unescape(f.get(3)?),
                mount_point: unescape(f.get(4)?),
                source,
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts that appeared since `before`, are ours (mount point, source directory or loop
/// backing file in the scratch directory, or a generated name in the mount point) and lie
/// outside every directory the driver may mount in (`allowed`).
pub fn escaped_mounts(
    before: &BTreeSet<Mount>,
    scratch: &Path,
    allowed: &[PathBuf],
    mark: &str,
) -> Vec<Mount> {
    let scratch_name = scratch.file_name().unwrap().to_string_lossy().into_owned();
    let our_loops: HashSet<String> = loop_devices_under(scratch)
        .into_iter()
        .map(|(dev, _)| dev)
        .collect();
    mounts()
        .difference(before)
        .filter(|m| {
            m.mount_point.starts_with(&scratch.display().to_string())
                || m.mount_point.contains(mark)
                || m.root.contains(&scratch_name)
                || our_loops.contains(&m.source)
        })
        .filter(|m| {
            !allowed
                .iter()
                .any(|a| Path::new(&m.mount_point).starts_with(a))
        })
        .cloned()
        .collect()
}
