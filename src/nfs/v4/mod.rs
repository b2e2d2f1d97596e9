//! NFSv4.1 (RFC 8881, minor version 1) for the client: COMPOUNDs on one session, on the NFS
//! port alone (no portmap, no MOUNT). See the crate-level `nfs` module doc for what the client
//! does and refuses.

pub mod attr;
mod ops;
pub mod proto;
mod session;
mod transport;

pub use transport::Transport;
