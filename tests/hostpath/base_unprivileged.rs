//! A hostpath driver that holds no volume never writes to its base: the local resizer runs as
//! an unprivileged user with every capability dropped, where the base's identity (a `trusted.`
//! xattr) cannot be written, and must still start and answer Probe ready. The identity is
//! written by the first volume made on the base instead. Needs root (to drop to uid 65534).

use crate::common;

use common::*;
use ferrovol::proto as csi;
use ferrovol::proto::identity_client::IdentityClient;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn an_unprivileged_driver_holding_no_volume_starts_and_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("csi.sock");
    let log = dir.path().join("driver.log");
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ferrovol"))
        .args([
            "serve",
            "--driver=local",
            "--backends=hostpath",
            "--roles=controller",
        ])
        .args(["--node-id=_local-resizer", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start ferrovol serve as uid 65534");
    let endpoint = ferrovol::server::Endpoint::Unix(socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the driver exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the driver never served");
        if let Ok(channel) = ferrovol::client::connect(&endpoint).await {
            break channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let probe = IdentityClient::new(channel)
        .probe(csi::ProbeRequest {})
        .await
        .map(tonic::Response::into_inner);
    let _ = child.kill();
    let _ = child.wait();
    let probe = probe.unwrap_or_else(|e| panic!("Probe: {e}"));
    assert_eq!(probe.ready, Some(true), "Probe must answer ready");
}

#[tokio::test]
async fn the_first_volume_records_the_base_identity() {
    let d = Driver::builder().start().await;
    let base = d.base().to_path_buf();
    assert_eq!(
        ferrovol::os::markers::base_marker(&base).unwrap(),
        None,
        "a base with nothing on it carries no identity before its first volume"
    );
    let mut c = d.controller();
    c.create_volume(create_req("first", 4 * MIB, mount_cap()))
        .await
        .expect("CreateVolume");
    assert!(
        ferrovol::os::markers::base_marker(&base).unwrap().is_some(),
        "the first volume's base carries the store's identity"
    );
}
