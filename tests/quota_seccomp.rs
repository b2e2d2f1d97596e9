//! A driver whose quota calls a seccomp filter refuses (container runtimes' default profiles
//! answer EPERM to quotactl_fd) starts with advisory sizes instead of exiting.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SYS_QUOTACTL_FD: u32 = 443;

/// Installs a seccomp filter that answers EPERM to quotactl_fd and allows everything else.
fn refuse_quotactl_fd() -> std::io::Result<()> {
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
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
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

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn serve_starts_when_seccomp_refuses_quotactl() {
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
        cmd.pre_exec(refuse_quotactl_fd);
    }
    let mut child = cmd.spawn().expect("start ferrovol serve");
    let endpoint = ferrovol::server::Endpoint::Unix(socket);
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
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    served.unwrap_or_else(|e| panic!("{e}:\n{log}"));
    assert!(log.contains("volume sizes are advisory"), "{log}");
}
