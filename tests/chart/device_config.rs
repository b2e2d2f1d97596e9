//! The device discovery config as the chart renders it, read by the driver's own parser on
//! each node: node sections of `local.device.discovery.nodes` reach the ConfigMap the node
//! plugin reads with `--device-config`, and split devices between nodes.

use crate::common::helm;

use ferrovol::discovery::Filters;
use helm::{helm, template};
use serde::Deserialize;
use serde_yaml::Value;

const VALUES: &str = r#"
local:
  device:
    enabled: true
    discovery:
      include: ["/dev/sd*"]
      nodes:
        - name: node-a
          include: ["/dev/loop10"]
        - name: "node-b*"
          include: ["/dev/loop11"]
          exclude: ["/dev/sdb"]
          rules:
            - {vendor: "VMware*", action: exclude}
            - {model: "Samsung*", action: include}
"#;

/// Every resource `helm template` renders with the values file `values`; None without helm.
fn render(values: &str) -> Option<Vec<Value>> {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm is not installed; scripts/chart-check.sh installs it");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let text = template(
        &helm,
        [std::ffi::OsStr::new("-f"), file.as_os_str()],
        "node sections",
    );
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect(),
    )
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("the chart renders no {kind} {name}"))
}

fn strs(patterns: &[glob::Pattern]) -> Vec<&str> {
    patterns.iter().map(|p| p.as_str()).collect()
}

/// The path patterns `f` includes and excludes.
fn patterns(f: &Filters) -> (Vec<&str>, Vec<&str>) {
    (strs(&f.include.paths), strs(&f.exclude.paths))
}

#[test]
fn node_sections_reach_the_node_plugin_and_apply_per_node() {
    let Some(docs) = render(VALUES) else {
        return;
    };
    // The node plugin reads the ConfigMap's file.
    let ds = object(&docs, "DaemonSet", "ferrovol-node");
    let pod = &ds["spec"]["template"]["spec"];
    let plugin = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("ferrovol"))
        .expect("the node pod runs ferrovol");
    let args: Vec<&str> = plugin["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--device-config=/etc/ferrovol/device-config.yaml"));
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some("device-config"))
        .expect("the node pod has the device-config volume");
    assert_eq!(
        volume["configMap"]["name"].as_str(),
        Some("ferrovol-device-config")
    );
    let mounted = plugin["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| {
            m["name"].as_str() == Some("device-config")
                && m["mountPath"].as_str() == Some("/etc/ferrovol")
        });
    assert!(mounted, "device-config is mounted at /etc/ferrovol");

    // What each node makes of the rendered file.
    let cm = object(&docs, "ConfigMap", "ferrovol-device-config");
    let text = cm["data"]["device-config.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("device-config.yaml");
    std::fs::write(&file, text).unwrap();
    let on = |node: &str| Filters::for_node(&[], &[], Some(&file), &[], Some(node)).unwrap();

    let a = on("node-a");
    assert_eq!(patterns(&a), (vec!["/dev/sd*", "/dev/loop10"], vec![]));
    assert!(a.exclude.vendors.is_empty() && a.include.models.is_empty());
    let b = on("node-b-1");
    assert_eq!(
        patterns(&b),
        (vec!["/dev/sd*", "/dev/loop11"], vec!["/dev/sdb"])
    );
    assert_eq!(strs(&b.exclude.vendors), ["VMware*"]);
    assert_eq!(strs(&b.include.models), ["Samsung*"]);
    let other = on("node-c");
    assert_eq!(patterns(&other), (vec!["/dev/sd*"], vec![]));
}

#[test]
fn a_node_section_without_a_name_fails_the_render() {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm is not installed; scripts/chart-check.sh installs it");
        return;
    };
    let out = std::process::Command::new(helm)
        .current_dir(helm::root())
        .args(["template", "ferrovol", "charts/ferrovol"])
        .args(["--set", "local.device.enabled=true"])
        .args([
            "--set",
            "local.device.discovery.nodes[0].include[0]=/dev/sdb",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "rendered a node section without a name"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("name"), "{err}");
}
