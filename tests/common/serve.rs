//! Waiting for a freshly spawned `ferrovol serve` to answer Probe on its Unix socket: the one
//! start-up check of the test kit's `Driver` and of the operations bench (benches/ops.rs
//! includes this file alone).

use ferrovol::proto::identity_client::IdentityClient;
use ferrovol::proto::ProbeRequest;
use ferrovol::server::Endpoint;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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
