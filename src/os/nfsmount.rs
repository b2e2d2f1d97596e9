//! Kernel NFS mounts for the NFS backend's node side: the exact mount(2) arguments and a check
//! that the kernel has an NFS client at all. The calls themselves run under a deadline, bounded
//! per server (`os::nfscalls`).

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use sys_mount::MountFlags;

/// mount(2) arguments for one NFS volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMount {
    /// `server:/share/subdir` (`[v6addr]:/...` for IPv6 literals).
    pub source: String,
    /// `nfs` (v3, or whatever `vers=` below 4 says) or `nfs4`.
    pub fstype: &'static str,
    /// Per-mount flags taken out of the options (mount(2) wants them as flags, not data).
    pub flags: MountFlags,
    /// The NFS options, comma separated, as the kernel's nfs option parser takes them.
    pub data: String,
}

/// True when the running kernel can mount NFS (it lists `nfs` or `nfs4` in /proc/filesystems).
/// A module that is not loaded yet is not listed; we do not load modules.
pub fn kernel_has_nfs() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| filesystems_have_nfs(&t))
        .unwrap_or(false)
}

fn filesystems_have_nfs(text: &str) -> bool {
    text.lines()
        .filter_map(|l| l.split_whitespace().last())
        .any(|fs| fs == "nfs" || fs == "nfs4")
}

/// Mount flags that mount(8) accepts among `-o` options but mount(2) takes as flags.
fn flag_of(opt: &str) -> Option<MountFlags> {
    match opt {
        "sync" => Some(MountFlags::SYNCHRONOUS),
        "async" => Some(MountFlags::empty()),
        o => super::mount::per_mount_flag(o),
    }
}

/// One NFS option: a word or `key=value` of characters the kernel parser knows. Anything else
/// (spaces, quotes, commas inside values) would let a StorageClass smuggle extra options.
fn valid_option(opt: &str) -> bool {
    !opt.is_empty()
        && opt.len() <= 256
        && opt
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.=:/".contains(c))
        && opt.matches('=').count() <= 1
}

/// Builds the mount of `share/subdir` on `server` with the class's mountOptions (each entry may
/// itself be a comma-separated list). `vers=4*`/`nfsvers=4*` selects `nfs4`. `addr` is the
/// server's address as the kernel needs it (mount.nfs resolves names in user space; the kernel
/// does not): pass `None` to leave it to an `addr=` option of the class. `vers` (`3`, `4.1`:
/// the version the volume was provisioned with) becomes `vers=` when no option names one.
pub fn plan<S: AsRef<str>>(
    server: &str,
    share: &str,
    subdir: &str,
    options: &[S],
    read_only: bool,
    addr: Option<IpAddr>,
    vers: Option<&str>,
) -> std::result::Result<NfsMount, String> {
    let mut flags = MountFlags::empty();
    let mut data: Vec<String> = Vec::new();
    let (mut nfs4, mut named_vers) = (false, false);
    for opt in super::mount::split_options(options) {
        if !valid_option(opt) {
            return Err(format!(
                "mount option {opt:?} is not a valid NFS mount option"
            ));
        }
        if let Some(f) = flag_of(opt) {
            flags |= f;
            continue;
        }
        let named = opt
            .split_once('=')
            .filter(|(k, _)| matches!(*k, "vers" | "nfsvers"));
        if let Some((_, v)) = named {
            named_vers = true;
            nfs4 |= v.starts_with('4');
        }
        data.push(opt.to_string());
    }
    if let Some(v) = vers.filter(|_| !named_vers) {
        nfs4 |= v.starts_with('4');
        data.push(format!("vers={v}"));
    }
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    if let Some(a) = addr.filter(|_| !data.iter().any(|o| o.starts_with("addr="))) {
        data.push(format!("addr={a}"));
    }
    let host = match server.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => server.to_string(),
    };
    let share = share.trim_end_matches('/');
    Ok(NfsMount {
        source: if subdir.is_empty() {
            format!("{host}:{}", if share.is_empty() { "/" } else { share })
        } else {
            format!("{host}:{share}/{subdir}")
        },
        fstype: if nfs4 { "nfs4" } else { "nfs" },
        flags,
        data: data.join(","),
    })
}

/// The server's address for the kernel's `addr=` option (first answer of the system resolver).
pub fn resolve(server: &str) -> std::io::Result<IpAddr> {
    if let Ok(a) = server.parse::<IpAddr>() {
        return Ok(a);
    }
    (server, 2049)
        .to_socket_addrs()?
        .next()
        .map(|s| s.ip())
        .ok_or_else(|| std::io::Error::other(format!("{server} has no address")))
}

/// Detaches whatever is mounted at `path` now and cleans up when it is no longer busy
/// (umount2 MNT_DETACH): the fallback for a mount whose server is gone. The last component is
/// not followed.
pub fn lazy_unmount(path: &Path) -> std::io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// True when `path` answers ESTALE: its server lost the directory's handle (export re-created,
/// server replaced). Such a mount is dead for good and must be replaced.
pub fn is_stale(path: &Path) -> bool {
    matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(libc::ESTALE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const V4: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)));

    #[test]
    fn v3_source_type_and_options() {
        let m = plan(
            "nfs.example",
            "/srv/nfs/",
            "ns/data",
            &["nfsvers=3,hard", "timeo=600", "nosuid"],
            false,
            V4,
            Some("4.1"),
        )
        .unwrap();
        assert_eq!(m.source, "nfs.example:/srv/nfs/ns/data");
        assert_eq!(m.fstype, "nfs");
        assert_eq!(m.flags, MountFlags::NOSUID);
        assert_eq!(m.data, "nfsvers=3,hard,timeo=600,addr=10.0.0.5");
    }

    #[test]
    fn vers4_selects_nfs4_and_read_only_is_a_flag() {
        for o in ["vers=4.1", "nfsvers=4", "vers=4"] {
            let m = plan("10.0.0.5", "/", "pvc-1", &[o], true, V4, Some("3")).unwrap();
            assert_eq!((m.fstype, m.source.as_str()), ("nfs4", "10.0.0.5:/pvc-1"));
            assert!(m.flags.contains(MountFlags::RDONLY));
            assert_eq!(m.data, format!("{o},addr=10.0.0.5"));
        }
        let m = plan(
            "10.0.0.5",
            "/e",
            "v",
            &["ro", "addr=10.0.0.9"],
            false,
            V4,
            None,
        )
        .unwrap();
        assert_eq!((m.fstype, m.data.as_str()), ("nfs", "addr=10.0.0.9"));
        assert_eq!(m.flags, MountFlags::RDONLY);
    }

    #[test]
    fn the_provisioned_version_is_mounted_unless_options_name_one() {
        let m = plan::<&str>("10.0.0.5", "/e", "v", &[], false, V4, Some("4.1")).unwrap();
        assert_eq!(
            (m.fstype, m.data.as_str()),
            ("nfs4", "vers=4.1,addr=10.0.0.5")
        );
        let m = plan::<&str>("10.0.0.5", "/e", "v", &[], false, V4, Some("3")).unwrap();
        assert_eq!((m.fstype, m.data.as_str()), ("nfs", "vers=3,addr=10.0.0.5"));
        let m = plan("10.0.0.5", "/e", "v", &["hard"], false, V4, None).unwrap();
        assert_eq!((m.fstype, m.data.as_str()), ("nfs", "hard,addr=10.0.0.5"));
    }

    #[test]
    fn ipv6_servers_are_bracketed() {
        let m = plan::<&str>(
            "fd00::5",
            "/e",
            "v",
            &[],
            false,
            "fd00::5".parse().ok(),
            None,
        )
        .unwrap();
        assert_eq!(m.source, "[fd00::5]:/e/v");
        assert_eq!(m.data, "addr=fd00::5");
    }

    #[test]
    fn hostile_options_are_refused() {
        for bad in ["a b", "x=\"y\"", "k=v=w", "sec=sys;rm", "\u{0}"] {
            let e = plan("s", "/e", "v", &[bad], false, V4, None).unwrap_err();
            assert!(e.contains("not a valid NFS mount option"), "{bad}: {e}");
        }
    }

    #[test]
    fn proc_filesystems_parsing() {
        assert!(!filesystems_have_nfs("nodev\tsysfs\n\text4\nnodev\tnfsd\n"));
        assert!(filesystems_have_nfs(
            "nodev\tsysfs\nnodev\tnfs\nnodev\tnfs4\n"
        ));
    }
}
