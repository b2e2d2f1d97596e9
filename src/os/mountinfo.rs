//! The kernel's mount table (/proc/self/mountinfo), parsed.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// major:minor of the mounted filesystem.
    pub device: String,
    /// The directory of that filesystem that is mounted here ("/" for a whole-fs mount).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (ro/rw, nosuid, ...).
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.iter().any(|o| o == opt)
    }

    pub fn read_only(&self) -> bool {
        self.has_option("ro")
    }
}

pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount at exactly `path`, if `path` is a mount point.
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// All mounts at or below `dir`.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<MountEntry>> {
    Ok(read()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect())
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

// Format: id parent major:minor root mount_point options [optional fields...] - fstype source super_options
fn parse_line(line: &str) -> Option<MountEntry> {
    let (head, tail) = line.split_once(" - ")?;
    let fields: Vec<&str> = head.split(' ').collect();
    if fields.len() < 6 {
        return None;
    }
    let mut tail = tail.split(' ');
    let fs_type = tail.next()?.to_string();
    let source = unescape(tail.next().unwrap_or(""));
    Some(MountEntry {
        device: fields[2].to_string(),
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        options: fields[5].split(',').map(str::to_string).collect(),
        fs_type,
        source,
    })
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|oct| u8::from_str_radix(oct, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_mount_with_escaped_space() {
        let text = "36 35 98:0 /vol\\040one /mnt/t\\040x rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n";
        let m = &parse(text)[0];
        assert_eq!(m.root, PathBuf::from("/vol one"));
        assert_eq!(m.mount_point, PathBuf::from("/mnt/t x"));
        assert!(m.has_option("noatime"));
        assert!(!m.read_only());
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.device, "98:0");
    }

    #[test]
    fn skips_garbage_lines() {
        assert!(parse("not a mount line\n").is_empty());
    }
}
