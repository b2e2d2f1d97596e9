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
        for opt in opts {
            // A flag may itself be a comma-separated list ("ro,noexec").
            for o in opt
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
            {
                match o {
                    "ro" => flags |= MountFlags::RDONLY,
                    "nosuid" => flags |= MountFlags::NOSUID,
                    "nodev" => flags |= MountFlags::NODEV,
                    "noexec" => flags |= MountFlags::NOEXEC,
                    "noatime" => flags |= MountFlags::NOATIME,
                    "nodiratime" => flags |= MountFlags::NODIRATIME,
                    "relatime" => flags |= MountFlags::RELATIME,
                    "strictatime" => flags |= MountFlags::STRICTATIME,
                    "rw" | "defaults" | "suid" | "dev" | "exec" | "atime" | "bind" | "rbind" => {}
                    other => {
                        return Err(format!(
                            "mount flag {other:?} is not supported on a bind mount"
                        ))
                    }
                }
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
