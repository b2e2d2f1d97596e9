//! The node pod as the chart renders it, checked for what a real kubelet needs: the driver
//! registers itself (or the sidecars do), liveness probes reach something that answers, every
//! container can write its termination message, debug logging stays on ferrovol's own code,
//! and only the container that binds a reserved port may.

use crate::common::helm;

use helm::{helm, root, template};
use serde_yaml::Value;
use std::path::Path;

/// Every resource `helm template` renders with `--set` of `sets`; None without helm.
fn render(sets: &[&str]) -> Option<Vec<Value>> {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm is not installed; scripts/chart-check.sh installs it");
        return None;
    };
    let args = sets.iter().flat_map(|s| ["--set", *s]);
    let text = template(&helm, args, &format!("{sets:?}"));
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect(),
    )
}

use serde::Deserialize;

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// The containers of every workload rendered, as (workload name, container).
fn containers(docs: &[Value]) -> Vec<(String, Value)> {
    docs.iter()
        .filter(|d| d["spec"]["template"]["spec"]["containers"].is_sequence())
        .flat_map(|d| {
            let name = str_of(&d["metadata"], "name").to_string();
            d["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(move |c| (name.clone(), c.clone()))
        })
        .collect()
}

fn node_containers(docs: &[Value]) -> Vec<Value> {
    containers(docs)
        .into_iter()
        .filter(|(w, _)| w == "ferrovol-node")
        .map(|(_, c)| c)
        .collect()
}

fn container<'a>(cs: &'a [Value], name: &str) -> &'a Value {
    cs.iter()
        .find(|c| str_of(c, "name") == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_sequence()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The port number a container's liveness probe calls (resolving a named port).
fn liveness_port(c: &Value) -> i64 {
    let port = &c["livenessProbe"]["httpGet"]["port"];
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = port.as_str().expect("liveness probe has an HTTP port");
    c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| str_of(p, "name") == name)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("port {name} is not declared"))
}

fn port_of_flag(args: &[String], flag: &str) -> Option<i64> {
    args.iter()
        .find_map(|a| a.strip_prefix(flag))
        .and_then(|v| v.rsplit(':').next())
        .and_then(|p| p.parse().ok())
}

#[test]
fn builtin_registration_needs_no_sidecars_and_probes_the_driver() {
    for sets in [
        &["nfs.enabled=true"][..],
        &["nfs.enabled=true", "metrics.enabled=false"][..],
    ] {
        let Some(docs) = render(sets) else { return };
        let cs = node_containers(&docs);
        let names: Vec<&str> = cs.iter().map(|c| str_of(c, "name")).collect();
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("registrar") || n.starts_with("livenessprobe")),
            "{sets:?}: builtin registration runs no registrar or livenessprobe sidecar: {names:?}"
        );
        for (name, driver) in [
            ("ferrovol", "local.csi.ferrovol.io"),
            ("ferrovol-nfs", "nfs.csi.ferrovol.io"),
        ] {
            let c = container(&cs, name);
            let a = args(c);
            assert!(
                a.contains(&"--kubelet-registration-dir=/var/lib/kubelet/plugins_registry".into()),
                "{sets:?} {name}: {a:?}"
            );
            let endpoint =
                format!("--kubelet-csi-endpoint=/var/lib/kubelet/plugins/{driver}/csi.sock");
            assert!(a.contains(&endpoint), "{sets:?} {name}: {a:?}");
            assert_eq!(
                c["livenessProbe"]["httpGet"]["path"].as_str(),
                Some("/healthz"),
                "{name}"
            );
            assert_eq!(
                Some(liveness_port(c)),
                port_of_flag(&a, "--metrics-address="),
                "{sets:?} {name}: the liveness probe calls the driver's own HTTP port"
            );
        }
    }
}

#[test]
fn sidecar_registration_keeps_the_upstream_containers() {
    let Some(docs) = render(&["nfs.enabled=true", "node.registration=sidecar"]) else {
        return;
    };
    let cs = node_containers(&docs);
    for (name, sidecar, probe) in [
        ("ferrovol", "registrar-local", "livenessprobe-local"),
        ("ferrovol-nfs", "registrar-nfs", "livenessprobe-nfs"),
    ] {
        let a = args(container(&cs, sidecar));
        assert!(
            a.iter()
                .any(|a| a.starts_with("--kubelet-registration-path=")),
            "{a:?}"
        );
        let c = container(&cs, name);
        assert!(
            !args(c)
                .iter()
                .any(|a| a.starts_with("--kubelet-registration-dir")),
            "{name} must not register itself next to the registrar"
        );
        let health = port_of_flag(&args(container(&cs, probe)), "--health-port=");
        assert_eq!(Some(liveness_port(c)), health, "{name}");
    }
}

/// The kubelet writes each container's termination message to terminationMessagePath
/// (default /dev/termination-log) and cannot create it below a read-only mount.
#[test]
fn termination_message_paths_are_writable() {
    for sets in [
        &[
            "nfs.enabled=true",
            "local.device.enabled=true",
            "snapshots.enabled=true",
        ][..],
        &[
            "nfs.enabled=true",
            "node.registration=sidecar",
            "nodeLoss.enabled=true",
        ][..],
    ] {
        let Some(docs) = render(sets) else { return };
        for (workload, c) in containers(&docs) {
            let path = c["terminationMessagePath"]
                .as_str()
                .unwrap_or("/dev/termination-log");
            for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
                let mount = str_of(m, "mountPath");
                let read_only = m["readOnly"].as_bool().unwrap_or(false);
                assert!(
                    !(read_only && Path::new(path).starts_with(mount)),
                    "{workload}/{}: terminationMessagePath {path} lies below the read-only mount {mount}",
                    str_of(&c, "name")
                );
            }
        }
    }
}

#[test]
fn debug_logging_is_scoped_to_ferrovol() {
    let Some(docs) = render(&["nfs.enabled=true", "logging.level=debug"]) else {
        return;
    };
    let mut seen = 0;
    for (workload, c) in containers(&docs) {
        for e in c["env"].as_sequence().into_iter().flatten() {
            if str_of(e, "name") == "RUST_LOG" {
                assert_eq!(str_of(e, "value"), "ferrovol=debug,info", "{workload}");
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "RUST_LOG set in {seen} containers");
    let Some(docs) = render(&[]) else { return };
    let c = container(&node_containers(&docs), "ferrovol").clone();
    let level = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| str_of(e, "name") == "RUST_LOG")
        .map(|e| str_of(e, "value").to_string());
    assert_eq!(level.as_deref(), Some("info"));
}

/// A file capability with the effective bit makes exec fail (EPERM) in every container whose
/// bounding set lacks it (drop: ALL); only the NFS controller, which binds reserved source
/// ports, adds NET_BIND_SERVICE.
#[test]
fn only_the_nfs_controller_may_bind_reserved_ports() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for line in dockerfile.lines().filter(|l| l.contains("setcap")) {
        assert!(
            !line.contains("+ep") && !line.contains("=ep"),
            "Dockerfile sets an effective file capability: {line}"
        );
    }
    let Some(docs) = render(&[
        "nfs.enabled=true",
        "nodeLoss.enabled=true",
        "snapshots.enabled=true",
    ]) else {
        return;
    };
    let mut adders = Vec::new();
    for (workload, c) in containers(&docs) {
        let added = &c["securityContext"]["capabilities"]["add"];
        if added
            .as_sequence()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("NET_BIND_SERVICE")))
        {
            // allowPrivilegeEscalation: false sets no_new_privs, under which exec grants no
            // file capability: a non-root process would never hold the one added here.
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
                Some(true),
                "{workload}: a non-root process gets NET_BIND_SERVICE only through the file capability"
            );
            adders.push(format!("{workload}/{}", str_of(&c, "name")));
        }
    }
    assert_eq!(adders, vec!["ferrovol-nfs-controller/ferrovol".to_string()]);
}
