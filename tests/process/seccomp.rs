//! Drivers under a seccomp filter that refuses quotactl_fd, as container runtimes' default
//! profiles do (EPERM): the driver starts, probes the base only when a volume needs it, and then
//! takes EPERM as "no quota here" (sizes advisory). A driver that creates no volume (the local
//! resizer) never makes the call, so even an error that is no such refusal cannot stop it.

use ferrovol::proto as csi;
use ferrovol::proto::controller_client::ControllerClient;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SYS_QUOTACTL_FD: u32 = 443;

/// Installs a seccomp filter that answers `errno` to quotactl_fd and allows everything else.
fn refuse_quotactl_fd(errno: i32) -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut prog = [
        stmt(load, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, 0), // seccomp_data.nr
        jeq(SYS_QUOTACTL_FD, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | errno as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl reads the filter program, which lives across the calls.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A driver serving on its socket with quotactl_fd answered `errno`; killed on drop.
struct Refused {
    child: std::process::Child,
    log: std::path::PathBuf,
    controller: ControllerClient<tonic::transport::Channel>,
    _dir: tempfile::TempDir,
}

impl Refused {
    async fn start(errno: i32) -> Refused {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("csi.sock");
        let log = dir.path().join("driver.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrovol"));
        cmd.args(["serve", "--node-id", "seccomp", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        // SAFETY: the filter is installed with prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || refuse_quotactl_fd(errno));
        }
        let mut child = cmd.spawn().expect("start ferrovol serve");
        let endpoint = ferrovol::server::Endpoint::Unix(socket);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let failed = if let Some(status) = child.try_wait().unwrap() {
                Some(format!("driver exited with {status}"))
            } else if Instant::now() > deadline {
                Some("driver never served".to_string())
            } else {
                None
            };
            if let Some(failed) = failed {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{failed}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(channel) = ferrovol::client::connect(&endpoint).await {
                return Refused {
                    child,
                    log,
                    controller: ControllerClient::new(channel),
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn create(&mut self, name: &str) -> Result<csi::CreateVolumeResponse, tonic::Status> {
        let cap = csi::VolumeCapability {
            access_type: Some(csi::volume_capability::AccessType::Mount(Default::default())),
            access_mode: Some(csi::volume_capability::AccessMode {
                mode: csi::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        };
        self.controller
            .create_volume(csi::CreateVolumeRequest {
                name: name.to_string(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: 1 << 20,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap],
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

impl Drop for Refused {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn eperm_from_seccomp_means_no_quota() {
    let mut d = Refused::start(libc::EPERM).await;
    let created = d.create("vol").await;
    let log = d.log();
    created.unwrap_or_else(|e| panic!("CreateVolume: {e}\n{log}"));
    assert!(log.contains("volume sizes are advisory"), "{log}");
}

/// EACCES is no refusal of the kind EPERM is: a volume cannot be made, but the process still
/// serves, because nothing probes the base before a volume needs it.
#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn a_driver_without_volumes_never_probes_the_base() {
    let mut d = Refused::start(libc::EACCES).await;
    let err = d.create("vol").await.expect_err("the quota probe fails");
    assert_eq!(err.code(), tonic::Code::Internal, "{err}");
    assert!(err.message().contains("Permission denied"), "{err}");
}
