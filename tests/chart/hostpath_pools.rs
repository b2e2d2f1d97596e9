//! The hostpath pools as the chart renders them (charts/ferrovol/ci/pools-values.yaml), read
//! by the driver's own parser on each node: the node plugin reads the rendered config, mounts
//! the pool roots at the same paths, and each node gets its pools by name and labels; a pool
//! outside every root fails the render; the default values render no pool config.

use crate::common::helm;

use ferrovol::backend::hostpath::pool_config::{node_pools, PoolConfig};
use helm::{helm, root, template};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn node_container(docs: &[Value]) -> &Value {
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("ferrovol"))
        .expect("the node pod runs ferrovol")
}

fn args(c: &Value) -> Vec<&str> {
    c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn each_node_plugin_finds_its_pools_in_the_rendered_config() {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm is not installed; scripts/chart-check.sh installs it");
        return;
    };
    let values = root().join("charts/ferrovol/ci/pools-values.yaml");
    let docs = docs(&template(
        &helm,
        ["-f".as_ref(), values.as_os_str()],
        "pools",
    ));
    let plugin = node_container(&docs);
    let config = "/etc/ferrovol-pools/hostpath-pools.yaml";
    assert!(args(plugin).contains(&format!("--hostpath-pool-config={config}").as_str()));
    let mounts: Vec<(&str, &str)> = plugin["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(mounts.contains(&("hostpath-pools-config", "/etc/ferrovol-pools")));
    assert!(mounts.contains(&("hostpath-pools-0", "/var/lib/ferrovol/pools")));

    let cm = docs
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("ferrovol-hostpath-pools"))
        .expect("the pool ConfigMap");
    let cfg = PoolConfig::parse(cm["data"]["hostpath-pools.yaml"].as_str().unwrap()).unwrap();
    let pools = |node: &str, labels: &[(&str, &str)]| -> BTreeMap<String, PathBuf> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let named = cfg.for_node(node, &labels).unwrap();
        node_pools(&named, &[], Path::new("/var/lib/ferrovol/hostpath"))
            .into_iter()
            .map(|p| (p.name, p.path))
            .collect()
    };
    let p = |s: &str| PathBuf::from(s);
    assert_eq!(
        pools("web-1", &[]),
        BTreeMap::from([
            ("default".into(), p("/var/lib/ferrovol/hostpath")),
            ("slow".into(), p("/var/lib/ferrovol/pools/hdd")),
        ])
    );
    assert_eq!(
        pools("db-1", &[])["fast"],
        p("/var/lib/ferrovol/pools/nvme0")
    );
    let labelled = pools("web-2", &[("disk", "nvme")]);
    assert_eq!(labelled["fast"], p("/var/lib/ferrovol/pools/nvme1"));
    assert_eq!(labelled["default"], p("/var/lib/ferrovol/pools/big"));
}

#[test]
fn a_pool_outside_the_pool_roots_fails_the_render_and_defaults_render_no_pools() {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm is not installed; scripts/chart-check.sh installs it");
        return;
    };
    let out = std::process::Command::new(&helm)
        .current_dir(root())
        .args(["template", "ferrovol", "charts/ferrovol"])
        .args(["--set", "local.hostpath.pools.all.fast=/mnt/nvme"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rendered a pool the pod cannot see");
    assert!(
        err.contains("/mnt/nvme") && err.contains("poolRoots"),
        "{err}"
    );

    let docs = docs(&template(&helm, Vec::<&str>::new(), "defaults"));
    let a = args(node_container(&docs));
    assert!(!a.iter().any(|a| a.starts_with("--hostpath-pool")), "{a:?}");
    assert!(!docs
        .iter()
        .any(|d| d["metadata"]["name"].as_str() == Some("ferrovol-hostpath-pools")));
}
