//! The pods that may use a host directory out of the driver's sight, for adoption's check
//! (`hostpath::adopt_checks`). A pod reaches a directory through a `hostPath` volume, or through a
//! claim bound to a `hostPath` or `local` PersistentVolume; the container runtime's bind mount
//! for it lies in the container's mount namespace and its processes in another PID namespace,
//! so neither the mount table nor the /proc scan of `os::inuse` shows it. The Kubernetes API
//! does. The backend never talks to the API: the server layer passes a [`PodPaths`] in with the
//! request (`server::pods` reads the API); a process without Kubernetes passes none.

use std::path::PathBuf;

/// A host path a pod bound to this node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPath {
    /// `namespace/name`.
    pub pod: String,
    /// How the pod reaches it: `hostPath volume "x"`, `claim "c" (PersistentVolume "p")`.
    pub via: String,
    /// The path as the pod's volume or its PersistentVolume names it (not resolved).
    pub path: PathBuf,
    /// Every container of the pod mounts the volume read-only (or the claim is read-only).
    pub read_only: bool,
}

/// Why the pods' paths are not known: adoption proceeds without them never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodsError {
    /// The API server cannot be reached, or answered an error.
    Unavailable(String),
    /// A pod's volume whose host path cannot be known: a claim bound to nothing, a claim or
    /// PersistentVolume that does not exist.
    Unproven(String),
}

/// The pods bound to this node that may run (phase neither Succeeded nor Failed), other than
/// the driver's own, and every host path each uses.
pub trait PodPaths: Send + Sync + std::fmt::Debug {
    fn pod_paths(&self) -> Result<Vec<PodPath>, PodsError>;
}
