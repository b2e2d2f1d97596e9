//! This node's pods and the host paths they use, read from the Kubernetes API for adoption's
//! check (`backend::pod_paths` says why): the pods bound to the node (field selector
//! `spec.nodeName`) that may run, other than the driver's own pod (POD_NAMESPACE/POD_NAME, set
//! by the chart), with each `hostPath` volume's path and, for each claim (a
//! `persistentVolumeClaim` or a generic ephemeral volume's), the `hostPath` or `local` path of
//! the PersistentVolume it is bound to. A claim bound to nothing, or a claim or volume that does
//! not exist, leaves the pod's paths unknown: the answer is then an error, never a partial list.

use crate::backend::pod_paths::{PodPath, PodPaths, PodsError};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use std::path::PathBuf;
use std::time::Duration;

/// How long one listing may take, all its calls together.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The lister of a process with a Kubernetes identity (see `discovery::sync::in_cluster`).
#[derive(Debug)]
pub struct KubePods {
    node: String,
    /// The driver's own pod (`namespace/name`), whose volumes are the driver's own paths.
    own: Option<String>,
}

impl KubePods {
    /// The lister for node `node`, when this process has a Kubernetes identity; None standalone.
    pub fn configured(node: &str) -> Option<Self> {
        if !crate::discovery::sync::in_cluster() {
            return None;
        }
        let env = |k| std::env::var(k).ok().filter(|v| !v.is_empty());
        let own = env("POD_NAMESPACE").zip(env("POD_NAME"));
        Some(KubePods {
            node: node.to_string(),
            own: own.map(|(ns, name)| format!("{ns}/{name}")),
        })
    }

    async fn list(&self) -> Result<Vec<PodPath>, PodsError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| PodsError::Unavailable(format!("no Kubernetes client: {e}")))?;
        let node = &self.node;
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| unavailable(format!("list the pods of node {node}"), e))?;
        let mut out = Vec::new();
        for pod in &pods.items {
            let name = pod_name(pod);
            if !may_run(pod) || self.own.as_deref() == Some(name.as_str()) {
                continue;
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            for u in volume_uses(pod) {
                out.extend(match u.to {
                    To::Host(path) => Some(PodPath {
                        pod: name.clone(),
                        via: format!("hostPath volume {:?}", u.volume),
                        path,
                        read_only: u.read_only,
                    }),
                    To::Claim(claim) => {
                        claim_path(&client, &name, ns, &u.volume, &claim, u.read_only).await?
                    }
                });
            }
        }
        Ok(out)
    }
}

impl PodPaths for KubePods {
    /// Runs the listing on a runtime of its own, on a thread of its own: the caller may be on
    /// a runtime's thread or on none.
    fn pod_paths(&self) -> Result<Vec<PodPath>, PodsError> {
        let run = || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PodsError::Unavailable(format!("cannot start a runtime: {e}")))?;
            let secs = TIMEOUT.as_secs();
            let late = format!("the API server did not answer within {secs} s");
            // The timer is made inside the runtime, which it needs.
            let listed = rt.block_on(async { tokio::time::timeout(TIMEOUT, self.list()).await });
            listed.unwrap_or(Err(PodsError::Unavailable(late)))
        };
        std::thread::scope(|s| {
            s.spawn(run)
                .join()
                .unwrap_or_else(|_| Err(PodsError::Unavailable("the listing panicked".into())))
        })
    }
}

fn unavailable(action: String, e: kube::Error) -> PodsError {
    PodsError::Unavailable(format!("{action}: {e}"))
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 404)
}

/// The host path of claim `ns/claim` (pod `pod`'s volume `volume`): its PersistentVolume's
/// `hostPath` or `local` path; None for any other kind of volume.
async fn claim_path(
    client: &kube::Client,
    pod: &str,
    ns: &str,
    volume: &str,
    claim: &str,
    read_only: bool,
) -> Result<Option<PodPath>, PodsError> {
    let unproven = |why: String| {
        PodsError::Unproven(format!(
            "pod {pod}'s volume {volume:?} uses claim {ns}/{claim}, {why}"
        ))
    };
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let pvc = match claims.get(claim).await {
        Ok(c) => c,
        Err(e) if not_found(&e) => return Err(unproven("which does not exist".into())),
        Err(e) => return Err(unavailable(format!("get claim {ns}/{claim}"), e)),
    };
    let Some(pv_name) = bound_volume(&pvc) else {
        let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
        return Err(unproven(format!(
            "which is bound to no PersistentVolume (phase {phase:?})"
        )));
    };
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let pv = match volumes.get(&pv_name).await {
        Ok(v) => v,
        Err(e) if not_found(&e) => {
            return Err(unproven(format!(
                "bound to PersistentVolume {pv_name}, which does not exist"
            )))
        }
        Err(e) => return Err(unavailable(format!("get PersistentVolume {pv_name}"), e)),
    };
    Ok(pv_host_path(&pv).map(|path| PodPath {
        pod: pod.to_string(),
        via: format!("claim {ns}/{claim} (PersistentVolume {pv_name})"),
        path,
        read_only,
    }))
}

/// `namespace/name`.
fn pod_name(pod: &Pod) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    format!("{ns}/{}", pod.metadata.name.as_deref().unwrap_or_default())
}

/// A pod that ended (Succeeded, Failed) runs no container again; any other may.
fn may_run(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// How a pod's volume may reach a host path.
#[derive(Debug, PartialEq, Eq)]
struct Use {
    volume: String,
    to: To,
    read_only: bool,
}

/// A host path, or a claim whose PersistentVolume may name one.
#[derive(Debug, PartialEq, Eq)]
enum To {
    Host(PathBuf),
    Claim(String),
}

/// Whether every container of the pod (init and ephemeral ones too) that mounts `volume`
/// mounts it read-only.
fn mounted_read_only(pod: &Pod, volume: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    let mounts = (spec.containers.iter())
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .chain(ephemeral.flat_map(|c| c.volume_mounts.iter().flatten()));
    mounts
        .filter(|m| m.name == volume)
        .all(|m| m.read_only == Some(true))
}

/// The pod's volumes that may reach a host path: `hostPath` volumes, and the claims of
/// `persistentVolumeClaim` and generic ephemeral volumes (the latter's claim is named
/// `<pod>-<volume>`).
fn volume_uses(pod: &Pod) -> Vec<Use> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let mut read_only = mounted_read_only(pod, &v.name);
            let to = if let Some(h) = &v.host_path {
                To::Host(PathBuf::from(&h.path))
            } else if let Some(c) = &v.persistent_volume_claim {
                read_only |= c.read_only == Some(true);
                To::Claim(c.claim_name.clone())
            } else {
                v.ephemeral.as_ref()?;
                To::Claim(format!("{pod_name}-{}", v.name))
            };
            let volume = v.name.clone();
            Some(Use {
                volume,
                to,
                read_only,
            })
        })
        .collect()
}

/// The PersistentVolume a claim is bound to.
fn bound_volume(pvc: &PersistentVolumeClaim) -> Option<String> {
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
    name.filter(|n| bound && !n.is_empty())
}

/// A PersistentVolume's path on its node: `hostPath` or `local`.
fn pv_host_path(pv: &PersistentVolume) -> Option<PathBuf> {
    let spec = pv.spec.as_ref()?;
    let path = spec.host_path.as_ref().map(|h| h.path.clone());
    path.or_else(|| spec.local.as_ref().map(|l| l.path.clone()))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_pods_host_paths_and_claims_are_its_hostpath_claim_and_ephemeral_volumes() {
        let pod: Pod = from_json(serde_json::json!({
            "metadata": {"name": "app", "namespace": "ns"},
            "spec": {"containers": [
                {"name": "a", "volumeMounts": [
                    {"name": "logs", "mountPath": "/logs", "readOnly": true},
                    {"name": "data", "mountPath": "/data", "readOnly": true}
                ]},
                {"name": "b", "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "scratch", "mountPath": "/scratch", "readOnly": false}
                ]}
            ], "initContainers": [
                {"name": "i", "volumeMounts": [{"name": "logs", "mountPath": "/l", "readOnly": true}]}
            ], "volumes": [
                {"name": "logs", "hostPath": {"path": "/var/log/app/", "type": "DirectoryOrCreate"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-app"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "tmp", "emptyDir": {}}
            ]},
            "status": {"phase": "Running"}
        }));
        assert_eq!(pod_name(&pod), "ns/app");
        assert_eq!(
            volume_uses(&pod),
            [
                // Read-only in every container that mounts it.
                Use {
                    volume: "logs".into(),
                    to: To::Host("/var/log/app/".into()),
                    read_only: true,
                },
                // Read-only in one container, written in another.
                Use {
                    volume: "data".into(),
                    to: To::Claim("data-app".into()),
                    read_only: false,
                },
                Use {
                    volume: "scratch".into(),
                    to: To::Claim("app-scratch".into()),
                    read_only: false,
                },
            ]
        );
    }

    #[test]
    fn only_pods_that_ended_are_left_out() {
        for (phase, runs) in [
            (Some("Pending"), true),
            (Some("Running"), true),
            (Some("Unknown"), true),
            (None, true),
            (Some("Succeeded"), false),
            (Some("Failed"), false),
        ] {
            let pod: Pod = from_json(serde_json::json!({
                "metadata": {"name": "p"},
                "status": {"phase": phase}
            }));
            assert_eq!(may_run(&pod), runs, "phase {phase:?}");
        }
    }

    #[test]
    fn a_claim_is_bound_only_with_a_volume_name_in_phase_bound() {
        for (spec, phase, want) in [
            (
                serde_json::json!({"volumeName": "pv-1"}),
                "Bound",
                Some("pv-1"),
            ),
            (serde_json::json!({"volumeName": "pv-1"}), "Lost", None),
            (serde_json::json!({}), "Pending", None),
            (serde_json::json!({"volumeName": ""}), "Bound", None),
        ] {
            let pvc: PersistentVolumeClaim = from_json(serde_json::json!({
                "metadata": {"name": "c"}, "spec": spec, "status": {"phase": phase}
            }));
            assert_eq!(bound_volume(&pvc).as_deref(), want, "{phase}");
        }
    }

    #[test]
    fn a_volumes_host_path_is_its_hostpath_or_local_path_and_none_for_others() {
        for (spec, want) in [
            (
                serde_json::json!({"hostPath": {"path": "/srv/a"}}),
                Some("/srv/a"),
            ),
            (
                serde_json::json!({"local": {"path": "/mnt/disks/b"}}),
                Some("/mnt/disks/b"),
            ),
            (
                serde_json::json!({"csi": {"driver": "d", "volumeHandle": "h"}}),
                None,
            ),
            (
                serde_json::json!({"nfs": {"server": "s", "path": "/export"}}),
                None,
            ),
        ] {
            let pv: PersistentVolume =
                from_json(serde_json::json!({"metadata": {"name": "v"}, "spec": spec}));
            assert_eq!(pv_host_path(&pv), want.map(PathBuf::from), "{spec}");
        }
    }
}
