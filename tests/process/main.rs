//! The real `ferrovol serve` process from the outside: endpoint hardening (who may connect,
//! socket and state directory modes, request sizes), the TCP endpoint, registration with the
//! kubelet, the metrics server under hostile clients, the image's file capability, and a
//! seccomp filter that refuses quotactl_fd.

#[path = "../common/mod.rs"]
mod common;

mod endpoint_hardening;
mod file_capability;
mod metrics_server;
mod registration;
mod seccomp;
mod tcp_endpoint;
