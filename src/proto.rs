//! The CSI v1.12 wire types and service traits, generated from proto/csi.proto at build time.
#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

tonic::include_proto!("csi.v1");

/// ferrovol's admin API (proto/admin.proto): adoption of existing data on one node.
pub mod admin {
    #![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    tonic::include_proto!("ferrovol.admin.v1");
}
