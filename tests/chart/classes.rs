//! Every StorageClass the chart renders provisions: the chart is rendered with its default values
//! and with each combination in charts/ferrovol/ci/ (what scripts/chart-check.sh renders), every
//! StorageClass is taken from the output, and CreateVolume runs with exactly its parameters (plus
//! the csi.storage.k8s.io/* keys external-provisioner adds with --extra-create-metadata) against a
//! real driver of its backend: hostpath on a temp dir, device on loop devices, NFS on nfs-ganesha
//! (its server and share given to helm, so the class names them). Needs root, helm, ganesha.

use crate::common;
use crate::common::ganesha;
use crate::common::helm;
use crate::common::loopdisks;

use common::*;
use ferrovol::proto as csi;
use ganesha::Ganesha;
use helm::{helm, root, template};
use loopdisks::{image, Disk};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// One rendered StorageClass: where it came from, its provisioner and parameters.
#[derive(Debug, Clone)]
struct Class {
    render: String,
    name: String,
    provisioner: String,
    parameters: BTreeMap<String, String>,
}

/// The StorageClasses of `helm template` with `values` (None: the defaults), NFS pointed at `g`.
fn render(helm: &Path, values: Option<&Path>, g: &Ganesha) -> Vec<Class> {
    let label = values.map_or("default values".to_string(), |v| {
        v.strip_prefix(root()).unwrap_or(v).display().to_string()
    });
    let mut args: Vec<OsString> = ["--set", "nfs.server=127.0.0.1", "--set-string"]
        .map(OsString::from)
        .into();
    args.push(format!("nfs.share={}", g.share()).into());
    if let Some(v) = values {
        args.extend(["-f".into(), v.into()]);
    }
    let text = template(helm, args, &format!("({label})"));
    let mut classes = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_yaml::Value::deserialize(doc).expect("rendered YAML parses");
        if v.get("kind").and_then(|k| k.as_str()) != Some("StorageClass") {
            continue;
        }
        let s = |v: &serde_yaml::Value| v.as_str().expect("a string").to_string();
        let parameters = v["parameters"]
            .as_mapping()
            .expect("a StorageClass with parameters")
            .iter()
            .map(|(k, v)| (s(k), s(v)))
            .collect();
        classes.push(Class {
            render: label.clone(),
            name: s(&v["metadata"]["name"]),
            provisioner: s(&v["provisioner"]),
            parameters,
        });
    }
    classes
}

/// CreateVolume as external-provisioner sends it for a PVC of `class`.
fn request(class: &Class, n: usize) -> csi::CreateVolumeRequest {
    let pv = format!("pvc-0000000{n}-1111-2222-3333-444444444444");
    let mut params: HashMap<String, String> = class.parameters.clone().into_iter().collect();
    params.insert("csi.storage.k8s.io/pvc/namespace".into(), "apps".into());
    params.insert("csi.storage.k8s.io/pvc/name".into(), format!("data-{n}"));
    params.insert("csi.storage.k8s.io/pv/name".into(), pv.clone());
    let mut r = create_req(&pv, 64 * MIB, mount_cap());
    r.parameters = params;
    r
}

#[tokio::test]
async fn every_rendered_storage_class_provisions() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !ganesha::available() {
        eprintln!("SKIPPED: needs root, nfs-ganesha, nfs-ganesha-vfs and rpcbind");
        return;
    }
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm is not installed; scripts/chart-check.sh installs it");
        return;
    };
    let g = Ganesha::start();
    let mut renders: Vec<Option<PathBuf>> = vec![None];
    let mut ci: Vec<PathBuf> = std::fs::read_dir(root().join("charts/ferrovol/ci"))
        .expect("charts/ferrovol/ci")
        .map(|e| e.expect("ci entry").path())
        .collect();
    ci.sort();
    renders.extend(ci.into_iter().map(Some));
    let mut classes: Vec<Class> = renders
        .iter()
        .flat_map(|v| render(&helm, v.as_deref(), &g))
        .collect();
    // One provisioning per distinct class is enough: renders repeat the same ones.
    let mut seen = std::collections::BTreeSet::new();
    classes.retain(|c| seen.insert((c.provisioner.clone(), c.parameters.clone())));
    let backend = |c: &Class| c.parameters.get("backend").cloned().unwrap_or_default();
    for want in ["hostpath", "device", "nfs"] {
        assert!(
            classes.iter().any(|c| backend(c) == want),
            "no render has a {want} StorageClass: {classes:?}"
        );
    }

    // The device classes' disks: one blank loop device each, large enough for XFS, rotational
    // as the class's selector asks (an SSD when it does not ask).
    let disk_dir = tempfile::tempdir().unwrap();
    let rotational: Vec<&str> = classes
        .iter()
        .filter(|c| backend(c) == "device")
        .map(|c| {
            let selector = c
                .parameters
                .get("deviceSelector")
                .map_or("", String::as_str);
            if selector.contains("rotational=true") {
                "1"
            } else {
                "0"
            }
        })
        .collect();
    let disks: Vec<Disk> = rotational
        .iter()
        .enumerate()
        .map(|(i, rot)| {
            let d = Disk::attach(&image(disk_dir.path(), &format!("d{i}.img"), 512));
            let name = Path::new(d.path())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            std::fs::write(format!("/sys/block/{name}/queue/rotational"), rot)
                .expect("mark the loop device (non-)rotational");
            d
        })
        .collect();
    // The hostpath driver has every pool a class names, each a directory of its own.
    let pools: std::collections::BTreeSet<&str> = classes
        .iter()
        .filter_map(|c| c.parameters.get("pool").map(String::as_str))
        .collect();
    let mut hostpath = Driver::builder();
    for pool in pools {
        let dir = hostpath.path().join(format!("pool-{pool}"));
        std::fs::create_dir(&dir).unwrap();
        hostpath = hostpath
            .arg("--hostpath-pool")
            .arg(format!("{pool}={}", dir.display()));
    }
    let hostpath = hostpath.start().await;
    let mut device = Driver::builder().arg("--backends").arg("device");
    for d in &disks {
        device = device.arg("--device-include").arg(d.path());
    }
    let device = device.start().await;
    let share = format!("127.0.0.1:{}", g.share());
    let nfs = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .arg("--nfs-share")
        .arg(&share)
        .start()
        .await;

    let mut failures = Vec::new();
    for (n, class) in classes.iter().enumerate() {
        let d = match backend(class).as_str() {
            "hostpath" => &hostpath,
            "device" => &device,
            "nfs" => &nfs,
            other => panic!("StorageClass {} has backend {other:?}", class.name),
        };
        match d.controller().create_volume(request(class, n)).await {
            Ok(r) => {
                let v = r.into_inner().volume.unwrap();
                eprintln!("{} ({}): {}", class.name, class.render, v.volume_id);
                d.delete(&v.volume_id).await;
            }
            Err(st) => failures.push(format!(
                "StorageClass {} ({}), parameters {:?}: {st:?}",
                class.name, class.render, class.parameters
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "CreateVolume with a rendered StorageClass failed:\n{}",
        failures.join("\n")
    );
}
