//! NFSv3 (RFC 1813) for the client: portmap, MOUNT3 and the NFSv3 procedures.

mod ops;
pub mod proto;
pub mod transport;

pub use transport::Transport;
