//! Whether anything on this node uses a directory: the proof adoption asks for before it moves
//! a directory that a pod or a process may still be writing to.
//!
//! A directory is in use when
//! - it, or anything below it, is a mount point (`mountinfo::first_mount_below`);
//! - a mount in any mount namespace on the node shows it or part of it: a pod's volume is a bind
//!   mount of the directory, in the kubelet's namespace (`/var/lib/kubelet/pods/.../volumes/...`)
//!   or in the container's own namespace (hostPath volumes). Found by reading the mount table of
//!   one process per mount namespace (`/proc/<pid>/mountinfo`) and comparing the mounted
//!   filesystem (major:minor) and the directory it shows (the `root` field) with the
//!   directory's;
//! - a process has a file below it open, or its working or root directory below it
//!   (`/proc/<pid>/{fd/*,cwd,root}`). The link text is a path in that process's own mount
//!   namespace, so this finds the host's processes; a container's processes see the directory
//!   through a mount of it, which the check above finds.
//!
//! What the driver can see bounds the proof. In the chart's node pod the kubelet directory is
//! mounted with Bidirectional propagation, so every pod volume the kubelet mounts (local and CSI
//! PersistentVolumes) shows in the driver's own mount table and is found. Processes and mount
//! namespaces are those of the driver's PID namespace: the pod's own unless it runs with
//! `hostPID`. A container that reaches the directory through a hostPath volume (the container
//! runtime's bind mount in the container's namespace) is therefore seen only with `hostPID`;
//! adoption finds such pods through the Kubernetes API instead (`backend::pod_paths`).

use super::mountinfo;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why `dir` (absolute, canonical) is in use, or None when nothing uses it.
pub fn in_use(dir: &Path) -> io::Result<Option<String>> {
    if let Some(m) = mountinfo::first_mount_below(dir)? {
        return Ok(Some(format!("{} is a mount point", m.display())));
    }
    if let Some(why) = mounted_elsewhere(dir)? {
        return Ok(Some(why));
    }
    open_by_process(dir)
}

/// A mount, in any mount namespace, of `dir` or of something below it.
fn mounted_elsewhere(dir: &Path) -> io::Result<Option<String>> {
    // The mount of this namespace that holds `dir`, and `dir`'s path inside that filesystem.
    let holder = mountinfo::holding_mount(dir)?;
    let rel = dir.strip_prefix(&holder.mount_point);
    let inside = holder
        .root
        .join(rel.expect("the holder's mount point is a prefix"));
    let mut seen = HashSet::new();
    for pid in pids()? {
        // One process per mount namespace; one whose namespace cannot be read is skipped.
        if !fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| seen.insert(ns)) {
            continue;
        }
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
            continue;
        };
        let hit = mountinfo::parse(&text)
            .into_iter()
            .find(|m| m.device == holder.device && m.root.starts_with(&inside));
        if let Some(m) = hit {
            return Ok(Some(format!(
                "{} is mounted at {} in the mount namespace of process {pid} ({}): a pod's volume?",
                m.root.display(),
                m.mount_point.display(),
                comm(pid)
            )));
        }
    }
    Ok(None)
}

/// A process with a file, its working directory or its root below `dir`.
fn open_by_process(dir: &Path) -> io::Result<Option<String>> {
    let me = std::process::id();
    for pid in pids()? {
        if pid == me {
            continue;
        }
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let mut links = vec![proc.join("cwd"), proc.join("root")];
        if let Ok(fds) = fs::read_dir(proc.join("fd")) {
            links.extend(fds.filter_map(|e| e.ok().map(|e| e.path())));
        }
        for target in links.iter().filter_map(|link| fs::read_link(link).ok()) {
            if target.starts_with(dir) {
                return Ok(Some(format!(
                    "process {pid} ({}) has {} open",
                    comm(pid),
                    target.display()
                )));
            }
        }
    }
    Ok(None)
}

fn pids() -> io::Result<Vec<u32>> {
    Ok(fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_file_and_a_working_directory_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let dir = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(in_use(&dir).unwrap(), None, "a fresh directory is unused");
        fs::write(dir.join("f"), b"x").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&dir)
            .spawn()
            .unwrap();
        let why = in_use(&dir).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let why = why.expect("a process working in the directory uses it");
        assert!(why.contains(&format!("process {}", child.id())), "{why}");
        assert_eq!(in_use(&dir).unwrap(), None);
    }
}
