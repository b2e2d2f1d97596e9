//! CSI endpoints: `unix:///path/to/csi.sock` or `tcp://host:port`.

use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode};
use nix::unistd::{self, Gid, Group};
use socket2::{Domain, SockAddr, Socket, Type};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// endpoint needs a socket path".into());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return addr
                .parse()
                .map(Endpoint::Tcp)
                .map_err(|e| format!("tcp endpoint {addr:?}: {e} (use tcp://IP:PORT)"));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        Err(format!("endpoint {s:?} must start with unix:// or tcp://"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Largest gRPC request message the driver decodes (1 MiB). The biggest legitimate CSI request
/// is a CreateVolume with a few hundred StorageClass parameters (Kubernetes caps them at 256 KiB)
/// and one topology segment per node of a large cluster (5,000 nodes at ~70 bytes is ~350 KiB);
/// ferrovol takes no secrets. A larger message is refused by the transport with OutOfRange from
/// its length prefix, before the body is buffered, so it cannot cost memory.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Who may reach the endpoint: the two knobs `serve` exposes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSecurity {
    /// Group (name or numeric gid) allowed to connect to the Unix socket: the socket becomes
    /// 0660 owned by that group. None: 0600, root (the process owner) only.
    pub socket_group: Option<String>,
    /// Serve a TCP endpoint on a non-loopback address. There is no authentication: anyone who
    /// can reach the port gets root's mount and delete powers on this node.
    pub insecure_remote: bool,
}

/// Refuses a TCP endpoint reachable from other hosts unless the operator opted in.
/// Returns whether the endpoint is remote (so the caller warns on every connection).
pub fn check_tcp(addr: &SocketAddr, security: &EndpointSecurity) -> Result<bool, String> {
    // ::ffff:127.0.0.1 is loopback too: its canonical form is 127.0.0.1.
    if addr.ip().to_canonical().is_loopback() {
        return Ok(false);
    }
    if !security.insecure_remote {
        return Err(format!(
            "refusing to serve the CSI API on tcp://{addr}: it is not a loopback address, and \
             the endpoint has no authentication (any host that reaches it could mount and \
             delete volumes as root). Use a unix:// socket or tcp://127.0.0.1:PORT, or pass \
             --insecure-remote-endpoint if the network is trusted"
        ));
    }
    Ok(true)
}

/// Resolves `--socket-group`: a group name from the group database, else a numeric gid.
pub fn resolve_group(spec: &str) -> Result<Gid, String> {
    match Group::from_name(spec) {
        Ok(Some(g)) => return Ok(g.gid),
        Ok(None) => {}
        Err(e) => return Err(format!("looking up socket group {spec:?}: {e}")),
    }
    spec.parse::<u32>().map(Gid::from_raw).map_err(|_| {
        format!("socket group {spec:?} is neither a known group name nor a numeric gid")
    })
}

/// Binds a Unix socket, replacing a stale socket file left by a previous run (never another
/// file). The socket file is made 0600 (or 0660 owned by `group`) after bind and before
/// listen: until listen, a connect() is refused, so no client ever reaches a socket with the
/// process umask's mode.
pub fn bind_unix(path: &Path, group: Option<Gid>) -> io::Result<tokio::net::UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket
        .bind(&SockAddr::unix(path)?)
        .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", path.display())))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    if let Err(e) = restrict_socket_file(path, mode, group) {
        let _ = std::fs::remove_file(path);
        return Err(io::Error::new(
            e.kind(),
            format!("securing socket {}: {e}", path.display()),
        ));
    }
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(socket.into())
}

/// Sets owner group and mode of the socket file just bound at `path`. The file is opened
/// O_PATH|O_NOFOLLOW and checked to be a socket, then changed through that descriptor, so a
/// path swapped for a symlink in between cannot redirect the chmod to another file.
fn restrict_socket_file(path: &Path, mode: u32, group: Option<Gid>) -> io::Result<()> {
    let fd = fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = stat::fstat(&fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::other(
            "the path is no longer the socket just bound",
        ));
    }
    if let Some(gid) = group {
        unistd::fchownat(&fd, "", None, Some(gid), AtFlags::AT_EMPTY_PATH)?;
    }
    // fchmod refuses O_PATH descriptors; the /proc link reaches the same inode.
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(&proc_path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_tcp() {
        assert_eq!(
            "unix:///run/csi.sock".parse(),
            Ok(Endpoint::Unix("/run/csi.sock".into()))
        );
        assert_eq!(
            "tcp://127.0.0.1:10000"
                .parse::<Endpoint>()
                .unwrap()
                .to_string(),
            "tcp://127.0.0.1:10000"
        );
        assert!("http://x".parse::<Endpoint>().is_err());
        assert!("tcp://nohost".parse::<Endpoint>().is_err());
    }

    #[test]
    fn remote_tcp_needs_the_insecure_flag() {
        let strict = EndpointSecurity::default();
        let open = EndpointSecurity {
            insecure_remote: true,
            ..Default::default()
        };
        for local in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert_eq!(check_tcp(&local.parse().unwrap(), &strict), Ok(false));
        }
        for remote in ["0.0.0.0:1", "10.1.2.3:1", "[::]:1"] {
            let addr = remote.parse().unwrap();
            let err = check_tcp(&addr, &strict).unwrap_err();
            assert!(err.contains("--insecure-remote-endpoint"), "{err}");
            assert!(err.contains(remote), "{err}");
            assert_eq!(check_tcp(&addr, &open), Ok(true));
        }
    }

    #[test]
    fn resolves_group_names_and_numbers() {
        assert_eq!(resolve_group("root"), Ok(Gid::from_raw(0)));
        assert_eq!(resolve_group("4242"), Ok(Gid::from_raw(4242)));
        let err = resolve_group("no-such-group-x").unwrap_err();
        assert!(err.contains("no-such-group-x"), "{err}");
    }
}
