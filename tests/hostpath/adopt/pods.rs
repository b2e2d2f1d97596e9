//! The refusal of a directory a pod of the node uses, with Kubernetes configured: the driver
//! reads the node's pods, their claims and PersistentVolumes from a stand-in API server (plain
//! HTTP, named by KUBECONFIG) that answers what a kube-apiserver answers to those reads.

use super::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// What the stand-in API server holds and answers.
#[derive(Default)]
struct ApiState {
    pods: Vec<Value>,
    /// Objects by their API path (`/api/v1/persistentvolumes/pv-1`).
    objects: HashMap<String, Value>,
    /// Answer every call with a 500.
    failing: bool,
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason,
           "reason": reason, "code": code})
}

fn answer(state: &Mutex<ApiState>, line: &str) -> (u16, Value) {
    let s = state.lock().unwrap();
    let target = line.split(' ').nth(1).unwrap_or_default();
    if s.failing {
        return (500, status(500, "InternalError"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/api/v1/pods" {
        if !query.contains(&format!("fieldSelector=spec.nodeName%3D{NODE}")) {
            return (400, status(400, "BadRequest"));
        }
        let items = s.pods.clone();
        return (
            200,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                   "items": items}),
        );
    }
    match s.objects.get(path) {
        Some(o) => (200, o.clone()),
        None => (404, status(404, "NotFound")),
    }
}

/// Serves `state` on a port of 127.0.0.1; a kubeconfig naming it is written to `dir`.
async fn api_server(dir: &Path, state: Arc<Mutex<ApiState>>) -> PathBuf {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let (code, body) = answer(&state, text.lines().next().unwrap_or_default());
                let body = body.to_string();
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    kubeconfig(dir, port)
}

fn kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join(format!("kubeconfig-{port}"));
    fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\n\
             clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: t, context: {{cluster: c, user: u}}}}]\n"
        ),
    )
    .unwrap();
    path
}

/// A pod whose one container mounts its volume `data`, read-write.
fn pod(ns: &str, name: &str, phase: &str, volumes: Value) -> Value {
    mounting(ns, name, phase, volumes, false)
}

fn mounting(ns: &str, name: &str, phase: &str, volumes: Value, read_only: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"namespace": ns, "name": name},
           "spec": {"nodeName": NODE, "volumes": volumes, "containers": [{"name": "c", "image": "i",
               "volumeMounts": [{"name": "data", "mountPath": "/d", "readOnly": read_only}]}]},
           "status": {"phase": phase}})
}

fn host_path(path: &Path) -> Value {
    json!([{"name": "data", "hostPath": {"path": path}}])
}

fn claim(ns: &str, name: &str, phase: &str, volume: Option<&str>) -> (String, Value) {
    (
        format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}"),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"namespace": ns, "name": name},
               "spec": {"volumeName": volume}, "status": {"phase": phase}}),
    )
}

fn host_path_pv(name: &str, path: &Path) -> (String, Value) {
    (
        format!("/api/v1/persistentvolumes/{name}"),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
               "spec": {"hostPath": {"path": path}, "capacity": {"storage": "1Gi"}}}),
    )
}

/// The refusal carries `code` and names the directory and each of `causes`.
fn refused(r: Result<AdoptResponse, tonic::Status>, code: Code, dir: &Path, causes: &[&str]) {
    let s = r.expect_err("adoption should be refused");
    assert_eq!(s.code(), code, "{s:?}");
    for want in [&dir.display().to_string()[..], "othing was changed"]
        .iter()
        .chain(causes)
    {
        assert!(s.message().contains(want), "{want:?} in {}", s.message());
    }
}

async fn driver_with_api(kubeconfig_of: impl FnOnce(&Path) -> PathBuf) -> Driver {
    let b = Driver::builder();
    let kc = kubeconfig_of(b.path());
    b.env("KUBECONFIG", kc)
        .env("POD_NAMESPACE", "ferrovol")
        .env("POD_NAME", "ferrovol-node-x")
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_a_pod_uses_through_a_host_path_or_a_claim_is_refused_until_the_pod_ends() {
    let state = Arc::new(Mutex::new(ApiState::default()));
    let scratch = tempfile::tempdir().unwrap();
    let kc = api_server(scratch.path(), state.clone()).await;
    let d = driver_with_api(|_| kc).await;
    let src = outside_dir(&d, "app");
    let old = src.parent().unwrap().to_path_buf();
    let sibling = old.join("app-old");
    fs::create_dir_all(&sibling).unwrap();
    let set_pods = |pods: Vec<Value>| state.lock().unwrap().pods = pods;
    // None of these uses the directory: the driver's own pod (its mounts hold every pool), a
    // pod that ended, a pod on a sibling with a common prefix, a pod on a path missing here, a
    // node agent that reads the whole tree above it.
    let bystanders = vec![
        mounting(
            "monitoring",
            "agent",
            "Running",
            host_path(Path::new("/")),
            true,
        ),
        pod(
            "ferrovol",
            "ferrovol-node-x",
            "Running",
            host_path(d.root()),
        ),
        pod("ns", "done", "Succeeded", host_path(&src)),
        pod("ns", "crashed", "Failed", host_path(&src)),
        pod("ns", "sibling", "Running", host_path(&sibling)),
        pod(
            "ns",
            "elsewhere",
            "Running",
            host_path(&d.root().join("missing/app")),
        ),
    ];

    // A hostPath volume on the directory (written with a trailing slash).
    let mut pods = bystanders.clone();
    pods.push(pod("ns", "web", "Running", host_path(&src.join(""))));
    set_pods(pods);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(
        r,
        Code::FailedPrecondition,
        &src,
        &["pod ns/web", "hostPath volume \"data\""],
    );
    assert_untouched(&src, "app");

    // Read-only on the directory itself is use too: adoption would take its data away.
    let mut pods = bystanders.clone();
    pods.push(mounting("ns", "reader", "Running", host_path(&src), true));
    set_pods(pods);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(r, Code::FailedPrecondition, &src, &["pod ns/reader"]);

    // A hostPath volume on a directory inside it, through a symbolic link.
    std::os::unix::fs::symlink(&src, d.root().join("link")).unwrap();
    let mut pods = bystanders.clone();
    pods.push(pod(
        "ns",
        "sub",
        "Pending",
        host_path(&d.root().join("link/sub")),
    ));
    set_pods(pods);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    let resolved = format!("resolved: {}", src.join("sub").display());
    refused(
        r,
        Code::FailedPrecondition,
        &src,
        &["pod ns/sub", &resolved],
    );

    // A claim bound to a hostPath PersistentVolume on its parent.
    let mut pods = bystanders.clone();
    pods.push(pod(
        "ns",
        "db",
        "Running",
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}]),
    ));
    set_pods(pods.clone());
    state.lock().unwrap().objects = HashMap::from([
        claim("ns", "db-data", "Bound", Some("pv-db")),
        host_path_pv("pv-db", &old),
    ]);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(
        r,
        Code::FailedPrecondition,
        &src,
        &["pod ns/db", "claim ns/db-data (PersistentVolume pv-db)"],
    );

    // A claim whose volume cannot be known refuses, naming it.
    state.lock().unwrap().objects = HashMap::from([claim("ns", "db-data", "Pending", None)]);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(
        r,
        Code::FailedPrecondition,
        &src,
        &["ns/db-data", "bound to no PersistentVolume"],
    );
    state.lock().unwrap().objects = HashMap::from([claim("ns", "db-data", "Bound", Some("pv-db"))]);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(
        r,
        Code::FailedPrecondition,
        &src,
        &["ns/db-data", "pv-db, which does not exist"],
    );
    state.lock().unwrap().objects.clear();
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(
        r,
        Code::FailedPrecondition,
        &src,
        &["ns/db-data", "which does not exist"],
    );

    // An API server that answers an error proves nothing.
    state.lock().unwrap().failing = true;
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(r, Code::Unavailable, &src, &["list the pods of node"]);
    assert_untouched(&src, "app");
    assert!(d.state_records().is_empty());

    // Once the pod ended, the directory is adopted with its data.
    state.lock().unwrap().failing = false;
    set_pods(bystanders);
    adopt(&d, &src, "v", 64 * MIB)
        .await
        .expect("adopt once no pod uses it");
    assert_data(&d.volume_dir("v"), "app");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_kubernetes_configured_an_unreachable_api_server_refuses_adoption() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = driver_with_api(|dir| kubeconfig(dir, port)).await;
    let src = outside_dir(&d, "app");
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(r, Code::Unavailable, &src, &["Kubernetes API"]);
    assert_untouched(&src, "app");
    assert!(d.state_records().is_empty());
}
