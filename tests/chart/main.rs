//! The Helm chart (charts/ferrovol): what it renders stays equal to the code, the manifests and
//! the docs (`consistency`), its node pod works under a real kubelet's rules (`node_pod`), its
//! device config's node sections reach each node (`device_config`), its hostpath pools reach
//! each node (`hostpath_pools`), and every StorageClass it
//! renders provisions against a real driver (`classes`); scripts/image.sh builds the image the
//! Dockerfile describes (`image_recipe`). Needs helm (scripts/chart-check.sh installs it);
//! `classes` also needs root and nfs-ganesha.

#[path = "../common/mod.rs"]
mod common;

mod classes;
mod consistency;
mod device_config;
mod hostpath_pools;
mod image_recipe;
mod node_pod;
