//! `serve --endpoint tcp://...` serves the same CSI services over TCP (used by remote debugging
//! and by sidecars that cannot share a socket directory).

use ferrovol::proto::{identity_client::IdentityClient, GetPluginInfoRequest, ProbeRequest};
use ferrovol::server::Endpoint;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn serves_identity_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    // Take a free port from the kernel, then hand it to the driver.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint: Endpoint = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovol"))
        .args([
            "serve",
            "--node-id",
            "tcp-node",
            "--endpoint",
            &endpoint.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferrovol serve");

    let mut channel = None;
    for _ in 0..100 {
        if let Ok(c) = ferrovol::client::connect(&endpoint).await {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut identity = IdentityClient::new(channel.expect("driver never listened on TCP"));
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "local.csi.ferrovol.io");
    let probe = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));
    child.kill().unwrap();
    child.wait().unwrap();
}
