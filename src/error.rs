//! The one error type of the driver, and its single mapping to gRPC status codes.
//!
//! Backends and the state layer return `Error`; only `impl From<Error> for Status` decides the
//! code a CO sees, so the CSI spec's error table lives in one place.

use std::io;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The volume (or the path it should be at) does not exist.
    #[error("volume {volume}: not found{}", suffix(.detail))]
    VolumeNotFound { volume: String, detail: String },
    /// Some other named object (node, path) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A volume with this name exists with other properties, or a target is used otherwise.
    #[error("volume {volume}: {detail}")]
    AlreadyExists { volume: String, detail: String },
    /// The requested capacity is outside what this driver can ever provide.
    #[error("volume {volume}: {detail}")]
    OutOfRange { volume: String, detail: String },
    /// Not enough space, or too many volumes on the node.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The volume is in a state that forbids the operation (in use, wrong node).
    #[error("volume {volume}: {detail}")]
    FailedPrecondition { volume: String, detail: String },
    /// Another operation on the same volume is in flight; the CO retries.
    #[error("volume {0}: another operation is in progress")]
    Busy(String),
    /// A pagination token this driver did not issue.
    #[error("invalid starting_token {0:?}")]
    BadToken(String),
    /// The OS refused an operation on a volume: names the volume, what was attempted and why.
    #[error("volume {volume}: {action}: {source}")]
    Os {
        volume: String,
        action: String,
        #[source]
        source: io::Error,
    },
    /// The driver itself cannot work (state dir unwritable, base path gone).
    #[error("{0}")]
    Internal(String),
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub fn not_found(volume: impl Into<String>) -> Self {
        Error::VolumeNotFound {
            volume: volume.into(),
            detail: String::new(),
        }
    }

    pub fn precondition(volume: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::FailedPrecondition {
            volume: volume.into(),
            detail: detail.into(),
        }
    }

    pub fn exists(volume: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::AlreadyExists {
            volume: volume.into(),
            detail: detail.into(),
        }
    }

    /// Wraps an OS error with the volume and the action that failed.
    pub fn os(
        volume: impl Into<String>,
        action: impl Into<String>,
    ) -> impl FnOnce(io::Error) -> Self {
        let (volume, action) = (volume.into(), action.into());
        move |source| Error::Os {
            volume,
            action,
            source,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::VolumeNotFound { .. } | Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::OutOfRange { .. } => Code::OutOfRange,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::Busy(_) | Error::BadToken(_) => Code::Aborted,
            Error::Os { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(err.code(), err.to_string())
    }
}
