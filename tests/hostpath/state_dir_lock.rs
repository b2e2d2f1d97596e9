//! One state directory, one driver: a second `ferrovol serve` on the same --state-dir would
//! append to the same journal and corrupt it, so it must refuse to start and leave the first
//! one serving.

use crate::common;

use common::*;
use ferrovol::proto as csi;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `ferrovol serve` on the driver's state dir and base, with a socket and data dir of its own.
fn second_serve(d: &Driver) -> Command {
    let root = d.root().join("second");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrovol"));
    cmd.arg("serve")
        .arg("--endpoint")
        .arg(format!("unix://{}", root.join("csi.sock").display()))
        .arg("--node-id")
        .arg(NODE)
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--state-dir")
        .arg(d.state_dir())
        .arg("--hostpath-base")
        .arg(d.base())
        .arg("--publish-root")
        .arg(root.join("kubelet"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

#[tokio::test]
async fn a_second_driver_on_the_same_state_dir_refuses_to_start() {
    let d = Driver::start().await;
    let mut controller = d.controller();
    controller
        .create_volume(create_req("before", MIB, mount_cap()))
        .await
        .expect("create before");

    let log = d.root().join("second.log");
    let mut cmd = second_serve(&d);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    let mut second = spawn(&mut cmd).expect("spawn the second driver");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!(
                "a second driver on the same state dir started and kept running:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !status.success(),
        "a second driver on the same state dir exited {status:?}\n{stderr}"
    );
    let state_dir = d.state_dir().display().to_string();
    let holder = d.pid().expect("first driver runs").to_string();
    assert!(
        stderr.contains(&state_dir) && stderr.contains(&holder),
        "the refusal names neither the state dir {state_dir} nor the holder {holder}:\n{stderr}"
    );

    // The first driver still serves, and its journal is whole.
    d.identity()
        .probe(csi::ProbeRequest {})
        .await
        .expect("probe the first driver");
    controller
        .create_volume(create_req("after", MIB, mount_cap()))
        .await
        .expect("create after");
    assert!(d.state_record("before").is_some() && d.state_record("after").is_some());
}

#[tokio::test]
async fn the_lock_dies_with_a_killed_driver() {
    let mut d = Driver::start().await;
    d.kill9();
    // A kill -9 leaves the lock file but no lock: the next start takes it.
    d.restart().await;
    d.identity()
        .probe(csi::ProbeRequest {})
        .await
        .expect("probe after restart");
}
