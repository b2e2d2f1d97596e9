//! Bind mount options, and unmounting.

use super::mountinfo;
use std::io;
use std::path::Path;
use sys_mount::{unmount, MountFlags, UnmountFlags};

/// Per-mount options a bind mount can carry, decoded from a VolumeCapability's mount_flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOptions {
    pub flags: MountFlags,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            flags: MountFlags::empty(),
        }
    }
}

impl BindOptions {
    /// Decodes mount flags; an option a bind mount cannot honour is an error naming it.
    pub fn parse<S: AsRef<str>>(opts: &[S], read_only: bool) -> Result<Self, String> {
        let mut flags = MountFlags::empty();
        for o in split_options(opts) {
            match per_mount_flag(o) {
                Some(f) => flags |= f,
                None if matches!(o, "bind" | "rbind") => {}
                None => return Err(format!("mount flag {o:?} is not supported on a bind mount")),
            }
        }
        if read_only {
            flags |= MountFlags::RDONLY;
        }
        Ok(BindOptions { flags })
    }

    pub fn read_only(&self) -> bool {
        self.flags.contains(MountFlags::RDONLY)
    }

    /// Whether an existing mount carries (at least) these options.
    pub fn matches(&self, entry: &mountinfo::MountEntry) -> bool {
        let want = [
            (MountFlags::RDONLY, "ro"),
            (MountFlags::NOSUID, "nosuid"),
            (MountFlags::NODEV, "nodev"),
            (MountFlags::NOEXEC, "noexec"),
            (MountFlags::NOATIME, "noatime"),
        ];
        want.iter()
            .all(|(flag, name)| self.flags.contains(*flag) == entry.has_option(name))
    }
}

/// The options of a list whose entries may themselves be comma-separated lists ("ro,noexec").
pub fn split_options<S: AsRef<str>>(opts: &[S]) -> impl Iterator<Item = &str> {
    opts.iter()
        .flat_map(|o| o.as_ref().split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
}

/// The per-mount flag that the mount(8) option `opt` stands for (empty for an option that asks
/// for the default); None for any other option.
pub fn per_mount_flag(opt: &str) -> Option<MountFlags> {
    Some(match opt {
        "ro" => MountFlags::RDONLY,
        "nosuid" => MountFlags::NOSUID,
        "nodev" => MountFlags::NODEV,
        "noexec" => MountFlags::NOEXEC,
        "noatime" => MountFlags::NOATIME,
        "nodiratime" => MountFlags::NODIRATIME,
        "relatime" => MountFlags::RELATIME,
        "strictatime" => MountFlags::STRICTATIME,
        "rw" | "defaults" | "suid" | "dev" | "exec" | "atime" => MountFlags::empty(),
        _ => return None,
    })
}

/// Unmounts every mount stacked on `target`; succeeds when nothing is mounted there.
pub fn unmount_all(target: &Path) -> io::Result<()> {
    while mountinfo::is_mount_point(target)? {
        unmount(target, UnmountFlags::empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_flags_and_rejects_unknown() {
        let o = BindOptions::parse(&["noexec,nosuid", "rw"], true).unwrap();
        assert!(o.read_only());
        assert!(o.flags.contains(MountFlags::NOEXEC | MountFlags::NOSUID));
        let err = BindOptions::parse(&["uid=1000"], false).unwrap_err();
        assert!(err.contains("uid=1000"), "{err}");
    }
}
