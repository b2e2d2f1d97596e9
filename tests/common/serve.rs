//! The `ferrovol serve` process both the test kit's `Driver` and the operations bench run
//! (benches/ops.rs includes this file alone): its command line, its log, and the wait for it
//! to answer Probe on its Unix socket.

use ferrovol::proto::identity_client::IdentityClient;
use ferrovol::proto::ProbeRequest;
use ferrovol::server::Endpoint;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Where one driver keeps its socket, data, state, hostpath volumes and log.
#[derive(Debug, Clone)]
pub struct ServeDirs {
    pub socket: PathBuf,
    pub data: PathBuf,
    pub state: PathBuf,
    pub base: PathBuf,
    pub log: PathBuf,
}

/// `<bin> serve` as node `node` in `dirs`, its stdout and stderr appended to the log. Only
/// flags every release knows: the ops bench runs an older one as its baseline.
pub fn serve_command(bin: &Path, node: &str, dirs: &ServeDirs) -> io::Result<Command> {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&dirs.log)?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--endpoint")
        .arg(format!("unix://{}", dirs.socket.display()))
        .args(["--node-id", node])
        .arg("--data-dir")
        .arg(&dirs.data)
        .arg("--state-dir")
        .arg(&dirs.state)
        .arg("--hostpath-base")
        .arg(&dirs.base)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}

/// The last `n` lines of a driver's log.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Why a driver did not come up.
#[derive(Debug)]
pub enum StartFailure {
    /// The process exited first.
    Exited(ExitStatus),
    /// The deadline passed; the last error seen.
    TimedOut(String),
}

/// Polls `socket` every `poll` until Probe answers: an answer that is not "not ready", or, when
/// `ready` is false, also an error other than Unavailable (returned beside the channel). Fails
/// when `child` exits or `deadline` passes first. `tick` runs every round.
pub async fn wait_for_probe(
    child: &mut Child,
    socket: &Path,
    ready: bool,
    deadline: Instant,
    poll: Duration,
    mut tick: impl FnMut(),
) -> Result<(Channel, Option<tonic::Status>), StartFailure> {
    let endpoint = Endpoint::Unix(socket.to_path_buf());
    let mut last_err = String::from("no attempt");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartFailure::Exited(status));
        }
        if Instant::now() > deadline {
            return Err(StartFailure::TimedOut(last_err));
        }
        tick();
        match ferrovol::client::connect(&endpoint).await {
            Ok(channel) => {
                let answer = IdentityClient::new(channel.clone())
                    .probe(ProbeRequest {})
                    .await;
                match answer {
                    Ok(r) if r.get_ref().ready != Some(false) => return Ok((channel, None)),
                    Err(e) if !ready && e.code() != tonic::Code::Unavailable => {
                        return Ok((channel, Some(e)))
                    }
                    Ok(r) => last_err = format!("probe answered {:?}", r.get_ref()),
                    Err(e) => last_err = format!("probe: {e}"),
                }
            }
            Err(e) => last_err = format!("connect: {e}"),
        }
        tokio::time::sleep(poll).await;
    }
}

/// [`wait_for_probe`] until `deadline`, panicking with the tail of the driver's `log` when the
/// driver exits or the deadline passes first.
pub async fn wait_started(
    child: &mut Child,
    dirs: &ServeDirs,
    ready: bool,
    deadline: Instant,
    poll: Duration,
    tick: impl FnMut(),
) -> (Channel, Option<tonic::Status>) {
    match wait_for_probe(child, &dirs.socket, ready, deadline, poll, tick).await {
        Ok(answer) => answer,
        Err(StartFailure::Exited(status)) => panic!(
            "ferrovol serve exited during start ({status}); log:\n{}",
            log_tail(&dirs.log, 40)
        ),
        Err(StartFailure::TimedOut(last)) => panic!(
            "ferrovol serve did not answer Probe in time ({last}); log:\n{}",
            log_tail(&dirs.log, 40)
        ),
    }
}
