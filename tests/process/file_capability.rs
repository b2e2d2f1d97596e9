//! The image's file capability (Dockerfile: `setcap cap_net_bind_service=+p`), on a copy of
//! the real binary run as a non-root user: it executes in a container that dropped every
//! capability, and where the bounding set keeps NET_BIND_SERVICE the driver binds a port
//! below 1024.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The UID and GID the chart's controller pods run as.
const NON_ROOT: u32 = 65532;

/// A copy of the binary carrying the file capability `caps`, in a directory `NON_ROOT` may
/// enter and write.
fn binary_with(caps: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(NON_ROOT), Some(NON_ROOT)).unwrap();
    let bin = dir.path().join("ferrovol");
    std::fs::copy(env!("CARGO_BIN_EXE_ferrovol"), &bin).unwrap();
    let out = Command::new("setcap")
        .arg(caps)
        .arg(&bin)
        .output()
        .expect("setcap (Debian package libcap2-bin) is installed");
    assert!(
        out.status.success(),
        "setcap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, bin)
}

/// Runs as `NON_ROOT`; with `drop_all`, every capability is first dropped from the bounding
/// set (a container with `capabilities: {drop: [ALL]}`); with `no_new_privs`, as a container
/// with `allowPrivilegeEscalation: false`.
fn as_non_root(bin: &Path, drop_all: bool, no_new_privs: bool) -> Command {
    let mut cmd = Command::new(bin);
    // SAFETY: only prctl, setgroups, setgid and setuid run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if drop_all {
                for cap in 0..64 {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
                }
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NON_ROOT) != 0
                || libc::setuid(NON_ROOT) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The local resizer's and node-loss controller's containers: every capability dropped,
/// privilege escalation not allowed.
#[test]
fn executes_where_every_capability_is_dropped() {
    let (_dir, bin) = binary_with("cap_net_bind_service=+p");
    let out = as_non_root(&bin, true, true)
        .arg("--version")
        .output()
        .expect("exec the binary with an empty bounding set");
    assert!(out.status.success(), "{out:?}");
}

/// The NFS controller's container: NET_BIND_SERVICE added, privilege escalation allowed (exec
/// grants no file capability under no_new_privs).
#[tokio::test]
async fn binds_a_reserved_port_when_the_bounding_set_keeps_the_capability() {
    let (dir, bin) = binary_with("cap_net_bind_service=+p");
    if let Err(e) = serve_on_a_reserved_port(dir.path(), &bin, false).await {
        panic!("{e}");
    }
    // allowPrivilegeEscalation: false voids the file capability.
    assert!(serve_on_a_reserved_port(dir.path(), &bin, true)
        .await
        .is_err());
}

/// Runs `ferrovol serve` from `bin` as `NON_ROOT` on a port below 1024; Ok once it serves there,
/// else what happened and its log.
async fn serve_on_a_reserved_port(
    dir: &Path,
    bin: &Path,
    no_new_privs: bool,
) -> Result<(), String> {
    // A port below 1024 that is free now.
    let port = (600..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free reserved port");
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let log = dir.join(format!("driver-{no_new_privs}.log"));
    let mut child = as_non_root(bin, false, no_new_privs)
        .args([
            "serve",
            "--driver=nfs",
            "--roles=controller",
            "--node-id=caps",
        ])
        .arg(format!(
            "--data-dir={}",
            dir.join(format!("data-{no_new_privs}")).display()
        ))
        .arg(format!("--endpoint={endpoint}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let endpoint: ferrovol::server::Endpoint = endpoint.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("driver exited with {status}"));
        }
        if ferrovol::client::connect(&endpoint).await.is_ok() {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err("driver never served".to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    served.map_err(|e| {
        format!(
            "{e}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })
}
