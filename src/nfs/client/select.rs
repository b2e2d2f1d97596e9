//! Which protocol a client speaks, and its current session (the share's root handle).
//!
//! `Want::Auto` tries NFSv4.1 first and settles on NFSv3 only when the server shows it does not
//! serve the share over NFSv4.1: the NFS port refuses the connection or the RPC program
//! version, the server refuses minor version 1, or the share is not in its pseudo-filesystem.
//! A server that does not answer in time decides nothing. The choice holds for the client's
//! life, so the handles it gives never change protocol.

use super::*;
use crate::nfs::types::Want;

pub(crate) type Sess<'a> = Arc<dyn Proto + 'a>;

/// True when `e` (from resolving the share over NFSv4.1) shows the server does not serve the
/// share over NFSv4.1, rather than that it did not answer.
fn not_served_over_v4(e: &NfsError) -> bool {
    const MINOR_VERS_MISMATCH: u32 = 10021;
    const WRONGSEC: u32 = 10016;
    match e {
        // A server in its grace period, or asking to wait, does serve NFSv4.1.
        NfsError::Unavailable { cause, .. } => !cause.contains("NFS4ERR_"),
        NfsError::Protocol { .. } => true,
        NfsError::Status { status, .. } => [
            NfsStatus::NOENT.0,
            NfsStatus::NOTDIR.0,
            NfsStatus::ACCES.0,
            MINOR_VERS_MISMATCH,
            WRONGSEC,
        ]
        .contains(&status.0),
        _ => false,
    }
}

impl NfsClient {
    /// The protocol this client speaks, deciding it (with I/O) when not decided yet.
    pub fn version(&self) -> Result<Version> {
        self.session()
            .map(|s| if s.is_v4() { Version::V41 } else { Version::V3 })
    }

    /// The version this client speaks when known without I/O.
    pub fn settled_version(&self) -> Option<Version> {
        match self.ep.opts.version {
            Want::Only(v) => Some(v),
            Want::Auto => *self.chosen.lock().unwrap(),
        }
    }

    pub(super) fn session(&self) -> Result<Sess<'_>> {
        match self.settled_version() {
            Some(Version::V3) => Ok(Arc::new(self.v3.share()?)),
            Some(Version::V41) => Ok(Arc::new(self.v4.share()?)),
            None => match self.v4.share() {
                Ok(s) => {
                    *self.chosen.lock().unwrap() = Some(Version::V41);
                    Ok(Arc::new(s))
                }
                Err(e4) if not_served_over_v4(&e4) => {
                    let s = self.v3.share().map_err(|e3| match e3 {
                        // A server that hangs over NFSv3 is a hung server, whatever NFSv4.1 said.
                        NfsError::DeadlineExceeded { .. } => e3,
                        e3 => (self.ep)
                            .unavailable(format!("neither NFSv4.1 ({e4}) nor NFSv3 ({e3})")),
                    })?;
                    tracing::info!(server = %self.ep.server, share = %self.ep.share, why = %e4,
                        "NFS share not served over NFSv4.1: this client speaks NFSv3");
                    *self.chosen.lock().unwrap() = Some(Version::V3);
                    Ok(Arc::new(s))
                }
                Err(e4) => Err(e4),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_that_does_not_serve_v41_makes_auto_speak_v3() {
        let unavailable = |cause: &str| NfsError::Unavailable {
            server: "s".into(),
            cause: cause.into(),
        };
        let status = |n: u32| NfsError::Status {
            server: "s".into(),
            op: "LOOKUP".into(),
            path: "/e".into(),
            status: NfsStatus(n),
            v4: true,
        };
        assert!(not_served_over_v4(&unavailable(
            "EXCHANGE_ID: Connection refused"
        )));
        assert!(
            not_served_over_v4(&status(2)),
            "the share is not in the pseudo-filesystem"
        );
        assert!(
            not_served_over_v4(&status(10021)),
            "minor version 1 refused"
        );
        assert!(!not_served_over_v4(&unavailable(
            "the server is in its grace period after a restart (NFS4ERR_GRACE), still after 5s"
        )));
        assert!(!not_served_over_v4(&NfsError::DeadlineExceeded {
            server: "s".into(),
            op: "EXCHANGE_ID".into()
        }));
        assert!(
            !not_served_over_v4(&status(5)),
            "an I/O error says nothing about versions"
        );
    }
}
