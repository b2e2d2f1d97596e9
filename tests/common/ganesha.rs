//! A real nfs-ganesha server (VFS backend) on 127.0.0.1 for tests and benches, with rpcbind.
//!
//! Only one rpcbind serves a host, and a second ganesha would overwrite the first one's
//! registrations, so every `Ganesha` holds an exclusive flock on a host-wide lock file for its
//! lifetime: tests in one binary, in several binaries, or in several worktrees take turns.
//! Benches include this file alone with `#[path]`.
//!
//! Two modes: NFSv3 and NFSv4 on free ports (`start`), or NFSv4 alone on 127.0.0.1:2049
//! (`start_v4`), the port an NFSv4 client uses without asking portmap. ganesha refuses to start
//! unless it can register with rpcbind, so the v4-only server registers and its registration is
//! then deleted: a client that asked portmap would find nothing. Port 2049 is free on test
//! hosts (no kernel NFS server), and the host-wide lock keeps two servers from wanting it.

#![allow(dead_code)]

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOCK: &str = "/tmp/ferrovol-ganesha.lock";

/// True when ganesha and rpcbind are installed (scripts/test.sh installs them).
pub fn available() -> bool {
    ["ganesha.nfsd", "rpcbind", "rpcinfo"].iter().all(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Which protocols a server serves, and how it treats restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// NFSv4 alone, on 127.0.0.1:2049, unregistered from rpcbind.
    pub v4_only: bool,
    /// `Some((grace, lease))` in seconds: a grace period after each start (no `Graceless`).
    pub grace: Option<(u32, u32)>,
    /// NFSv3 and v4 with the NFS port on 2049 (where an NFSv4 client finds it without portmap).
    pub both_on_2049: bool,
}

pub struct Ganesha {
    dir: tempfile::TempDir,
    pub config: Config,
    /// The exported directory, as seen on this host's disk.
    pub export: PathBuf,
    pub nfs_port: u16,
    pub mnt_port: u16,
    pub nlm_port: u16,
    child: Option<Child>,
    _lock: File,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn ensure_rpcbind() {
    if TcpStream::connect("127.0.0.1:111").is_ok() {
        return;
    }
    // -w: warm start; rpcbind daemonizes and stays for the host, like a system service.
    let st = Command::new("rpcbind")
        .arg("-w")
        .status()
        .expect("run rpcbind");
    assert!(st.success(), "rpcbind failed: {st}");
    let t0 = Instant::now();
    while TcpStream::connect("127.0.0.1:111").is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "rpcbind did not listen on 111"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Ganesha {
    /// Starts rpcbind if needed and ganesha exporting a fresh temp directory; returns once
    /// portmap maps NFS v3 and MOUNT v3 to this server's ports.
    pub fn start() -> Ganesha {
        Self::start_with(Config {
            v4_only: false,
            grace: None,
            both_on_2049: false,
        })
    }

    /// NFSv4 only, on 127.0.0.1:2049, with no rpcbind registration.
    pub fn start_v4() -> Ganesha {
        Self::start_with(Config {
            v4_only: true,
            grace: None,
            both_on_2049: false,
        })
    }

    pub fn start_with(config: Config) -> Ganesha {
        let lock = File::create(LOCK).expect("create ganesha lock file");
        // SAFETY: flock on a descriptor we own; blocks until the previous server is gone.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {LOCK}");
        ensure_rpcbind();
        let dir = tempfile::Builder::new()
            .prefix("ferrovol-ganesha")
            .tempdir()
            .unwrap();
        let export = dir.path().join("export");
        fs::create_dir(&export).unwrap();
        fs::create_dir(dir.path().join("recovery")).unwrap();
        let mut g = Ganesha {
            export,
            config,
            nfs_port: if config.v4_only || config.both_on_2049 {
                2049
            } else {
                free_port()
            },
            mnt_port: free_port(),
            nlm_port: free_port(),
            dir,
            child: None,
            _lock: lock,
        };
        g.write_config();
        g.resume();
        g
    }

    /// The share to mount: the export path.
    pub fn share(&self) -> String {
        self.export.to_str().unwrap().to_string()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write_config(&self) {
        let protocols = if self.config.v4_only { "4" } else { "3, 4" };
        let grace = match self.config.grace {
            None => "Graceless = true;".to_string(),
            Some((g, l)) => format!("Graceless = false; Grace_Period = {g}; Lease_Lifetime = {l};"),
        };
        let conf = format!(
            r#"NFS_CORE_PARAM {{
    NFS_Port = {nfs}; MNT_Port = {mnt}; NLM_Port = {nlm};
    Bind_addr = 127.0.0.1; Protocols = {protocols}; Enable_RQUOTA = false; Enable_NLM = {nlm_on};
}}
NFSV4 {{ {grace} Only_Numeric_Owners = true; RecoveryBackend = fs; RecoveryRoot = {rec}; }}
EXPORT {{
    Export_Id = 1; Path = {exp}; Pseudo = {exp};
    Access_Type = RW; Squash = No_Root_Squash; Protocols = {protocols}; Transports = TCP; SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = WARN; }}
"#,
            nfs = self.nfs_port,
            mnt = self.mnt_port,
            nlm = self.nlm_port,
            nlm_on = !self.config.v4_only,
            rec = self.dir.path().join("recovery").display(),
            exp = self.export.display(),
        );
        fs::write(self.dir.path().join("ganesha.conf"), conf).unwrap();
    }

    fn registered(&self) -> bool {
        let Ok(out) = Command::new("rpcinfo").args(["-p", "127.0.0.1"]).output() else {
            return false;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let has = |prog: &str, port: u16| {
            text.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 4
                    && f[0] == prog
                    && f[1] == "3"
                    && f[2] == "tcp"
                    && f[3] == port.to_string()
            })
        };
        // Registered is not yet serving: under load ganesha maps its programs before it answers
        // them (a MOUNT then fails with "program unavailable"), so each must answer a NULL call.
        let answers = |prog: &str| {
            Command::new("rpcinfo")
                .args(["-T", "tcp", "127.0.0.1", prog, "3"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        has("100003", self.nfs_port)
            && has("100005", self.mnt_port)
            && answers("100003")
            && answers("100005")
    }

    /// Starts the server (again) with the same ports and export.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "ganesha already running");
        let d = self.dir.path();
        let log = File::create(d.join("ganesha.out")).unwrap();
        let child = Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-f")
            .arg(d.join("ganesha.conf"))
            .arg("-L")
            .arg(d.join("ganesha.log"))
            .arg("-p")
            .arg(d.join("ganesha.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ganesha.nfsd");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("ganesha exited early ({st}); log:\n{}", self.log());
            }
            let up = TcpStream::connect(("127.0.0.1", self.nfs_port)).is_ok();
            if up && self.config.v4_only {
                // Nothing may find this server through portmap.
                let _ = Command::new("rpcinfo").args(["-d", "100003", "4"]).status();
                return;
            }
            if up && self.registered() {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "ganesha not registered with portmap after 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGTERM, so it unregisters from portmap; SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling the child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        let d = self.dir.path();
        let a = fs::read_to_string(d.join("ganesha.log")).unwrap_or_default();
        let b = fs::read_to_string(d.join("ganesha.out")).unwrap_or_default();
        format!("{a}{b}")
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.stop();
    }
}
