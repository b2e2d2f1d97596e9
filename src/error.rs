//! The one error type of the driver, and its single mapping to gRPC status codes.
//!
//! Variants name causes, not codes; each carries the object it is about (a volume, a node, a
//! server) and, where the OS or a server refused, its source error. Only `Error::code` decides
//! the code a CO sees, so the CSI spec's error table lives in one place.

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
    /// The device a request names is not in this node's device inventory.
    #[error("device {device}: not found{}", suffix(.detail))]
    DeviceNotFound { device: String, detail: String },
    /// The node a request names is not one this volume can reach.
    #[error("node {node} not found: {detail}")]
    NodeNotFound { node: String, detail: String },
    /// A volume with this name exists with other properties, or a target is used otherwise.
    #[error("volume {volume}: {detail}")]
    AlreadyExists { volume: String, detail: String },
    /// The requested capacity is outside what this driver can ever provide.
    #[error("volume {volume}: {detail}")]
    OutOfRange { volume: String, detail: String },
    /// Not enough free space (or devices) for the volume right now.
    #[error("volume {volume}: {detail}")]
    NoSpace { volume: String, detail: String },
    #[error(
        "volume {volume}: node {node} already has {count} volumes published, the most it takes"
    )]
    NodeFull {
        volume: String,
        node: String,
        count: usize,
    },
    /// The volume is in a state that forbids the operation (in use, wrong node, in the way).
    #[error("volume {volume}: {detail}")]
    FailedPrecondition { volume: String, detail: String },
    #[error("volume {0}: another operation is in progress")]
    Busy(String),
    #[error("invalid starting_token {0:?}")]
    BadToken(String),
    #[error("volume {volume}: {action}: {source}")]
    Os {
        volume: String,
        action: String,
        source: io::Error,
    },
    /// The driver's state journal could not commit the change: nothing was acknowledged.
    #[error("volume {volume}: could not commit the driver's state: {source}")]
    State { volume: String, source: io::Error },
    /// The storage a backend serves from (base path, export) cannot be read.
    #[error("{what}: {source}")]
    Storage { what: String, source: io::Error },
    /// A storage server did not answer or refused the connection.
    #[error("server {server}: unavailable: {detail}")]
    Unavailable { server: String, detail: String },
    #[error("server {server}: {action} did not finish within {seconds} s")]
    DeadlineExceeded {
        server: String,
        action: String,
        seconds: u64,
    },
    /// The driver does not offer this call (or this call for this volume's backend).
    #[error("{0}")]
    Unimplemented(String),
    /// The driver itself cannot work (a bug, or a self-check that failed).
    #[error("{0}")]
    Internal(String),
}

fn suffix(detail: &str) -> String {
    match detail {
        "" => String::new(),
        _ => format!(" ({detail})"),
    }
}

/// Constructors `name(volume, detail)` of the variants that carry a volume and a detail.
macro_rules! volume_detail {
    ($($name:ident => $variant:ident,)*) => {$(
        pub fn $name(volume: impl Into<String>, detail: impl Into<String>) -> Self {
            Error::$variant { volume: volume.into(), detail: detail.into() }
        }
    )*};
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub fn not_found(volume: impl Into<String>) -> Self {
        Self::not_found_because(volume, "")
    }

    volume_detail! {
        not_found_because => VolumeNotFound,
        precondition => FailedPrecondition,
        exists => AlreadyExists,
        no_space => NoSpace,
        out_of_range => OutOfRange,
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

    pub fn state(volume: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let volume = volume.into();
        move |source| Error::State { volume, source }
    }

    /// Wraps a failure to read the storage a backend serves from.
    pub fn storage(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Error::Storage { what, source }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::VolumeNotFound { .. }
            | Error::NodeNotFound { .. }
            | Error::DeviceNotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::OutOfRange { .. } => Code::OutOfRange,
            Error::NoSpace { .. } | Error::NodeFull { .. } => Code::ResourceExhausted,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::Busy(_) | Error::BadToken(_) => Code::Aborted,
            Error::Os { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT) => Code::ResourceExhausted,
                // Something in the way that an operator can clear: a mount inside the volume,
                // an immutable file, a busy device.
                Some(libc::EXDEV | libc::EPERM | libc::EBUSY) => Code::FailedPrecondition,
                _ => Code::Internal,
            },
            Error::State { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT) => Code::ResourceExhausted,
                _ => Code::Unavailable,
            },
            Error::Storage { .. } | Error::Unavailable { .. } => Code::Unavailable,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

/// The message a caught panic carried, for the Internal error that reports it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    (panic.downcast_ref::<&str>().copied())
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_maps_to_the_spec_code() {
        let io = |errno| io::Error::from_raw_os_error(errno);
        let cases = [
            (Error::invalid("x"), Code::InvalidArgument),
            (Error::not_found("v"), Code::NotFound),
            (
                Error::NodeNotFound {
                    node: "n".into(),
                    detail: "d".into(),
                },
                Code::NotFound,
            ),
            (
                Error::DeviceNotFound {
                    device: "bd-1".into(),
                    detail: String::new(),
                },
                Code::NotFound,
            ),
            (Error::exists("v", "d"), Code::AlreadyExists),
            (Error::no_space("v", "d"), Code::ResourceExhausted),
            (Error::precondition("v", "d"), Code::FailedPrecondition),
            (Error::Busy("v".into()), Code::Aborted),
            (
                Error::os("v", "write")(io(libc::ENOSPC)),
                Code::ResourceExhausted,
            ),
            (
                Error::os("v", "remove")(io(libc::EXDEV)),
                Code::FailedPrecondition,
            ),
            (
                Error::os("v", "remove")(io(libc::EPERM)),
                Code::FailedPrecondition,
            ),
            (Error::os("v", "read")(io(libc::EIO)), Code::Internal),
            (Error::state("v")(io(libc::EIO)), Code::Unavailable),
            (
                Error::Unavailable {
                    server: "s".into(),
                    detail: "refused".into(),
                },
                Code::Unavailable,
            ),
            (
                Error::DeadlineExceeded {
                    server: "s".into(),
                    action: "MKDIR".into(),
                    seconds: 5,
                },
                Code::DeadlineExceeded,
            ),
            (Error::Unimplemented("x".into()), Code::Unimplemented),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn messages_name_the_volume_and_the_cause() {
        let e =
            Error::os("hostpath/n/v", "remove /base/v")(io::Error::from_raw_os_error(libc::EXDEV));
        let text = e.to_string();
        assert!(
            text.contains("hostpath/n/v") && text.contains("remove /base/v"),
            "{text}"
        );
    }
}
