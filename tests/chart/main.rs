//! The Helm chart (charts/ferrovol): what it renders stays equal to the code, the manifests and
//! the docs (`consistency`), its node pod works under a real kubelet's rules (`node_pod`), and
//! every StorageClass it renders provisions against a real driver (`classes`). Needs helm
//! (scripts/chart-check.sh installs it); `classes` also needs root and nfs-ganesha.

#[path = "../common/mod.rs"]
mod common;

mod classes;
mod consistency;
mod node_pod;
