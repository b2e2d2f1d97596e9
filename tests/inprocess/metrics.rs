//! Every RPC, including the capability RPCs and the ones not offered, is counted once in the
//! Prometheus metrics by method and code, and writes one log line naming method and code.

use crate::controller_table::serve_two_on;
use crate::harness::*;
use ferrovol::proto as csi;
use std::collections::BTreeMap;

/// ferrovol_rpc_duration_seconds_count by (method, code).
fn counts() -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in ferrovol::metrics::render().lines() {
        let Some(rest) = line.strip_prefix("ferrovol_rpc_duration_seconds_count{service=\"") else {
            continue;
        };
        let (_service, rest) = rest.split_once("\",method=\"").expect("method label");
        let (method, rest) = rest.split_once("\",code=\"").expect("code label");
        let (code, n) = rest.split_once("\"} ").expect("count");
        out.insert((method.to_string(), code.to_string()), n.parse().unwrap());
    }
    out
}

/// The (method, code) of every "rpc" log line from `from` on.
fn logged(from: usize) -> Vec<(String, String)> {
    log_lines()[from..]
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "rpc")
        .map(|v| {
            let f = &v["fields"];
            (
                f["method"].as_str().unwrap_or_default().to_string(),
                f["code"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_rpc_is_counted_and_each_change_or_failure_logged_once() {
    // Exclusive: no other test's calls may land in the counts or the log between the snapshots.
    let _only = process_lock().write().await;
    let mut s = serve_two_on(true).await;
    let before = counts();
    let log_from = log_lines().len();
    let c = &mut s.controller;
    let i = &mut s.identity;
    i.get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap();
    i.get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap();
    i.probe(csi::ProbeRequest {}).await.unwrap();
    c.controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap();
    c.create_snapshot(csi::CreateSnapshotRequest::default())
        .await
        .unwrap_err();
    c.controller_modify_volume(csi::ControllerModifyVolumeRequest::default())
        .await
        .unwrap_err();
    c.list_volumes(csi::ListVolumesRequest {
        max_entries: -1,
        starting_token: String::new(),
    })
    .await
    .unwrap_err();
    c.create_volume(create_req("m1", "local", vec![swr()]))
        .await
        .unwrap();
    c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
        volume_id: "local/node-1/nope".into(),
        node_id: NODE.into(),
        volume_capability: Some(swr()),
        ..Default::default()
    })
    .await
    .unwrap_err();
    let n = &mut s.node;
    n.node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .unwrap();
    n.node_get_info(csi::NodeGetInfoRequest {}).await.unwrap();
    n.node_stage_volume(csi::NodeStageVolumeRequest::default())
        .await
        .unwrap_err();

    let want = [
        ("GetPluginInfo", "Ok"),
        ("GetPluginCapabilities", "Ok"),
        ("Probe", "Ok"),
        ("ControllerGetCapabilities", "Ok"),
        ("CreateSnapshot", "Unimplemented"),
        ("ControllerModifyVolume", "Unimplemented"),
        ("ListVolumes", "InvalidArgument"),
        ("CreateVolume", "Ok"),
        ("ControllerPublishVolume", "NotFound"),
        ("NodeGetCapabilities", "Ok"),
        ("NodeGetInfo", "Ok"),
        ("NodeStageVolume", "InvalidArgument"),
    ];
    let after = counts();
    let key = |m: &str, c: &str| (m.to_string(), c.to_string());
    for (m, c) in want {
        let was = before.get(&key(m, c)).copied().unwrap_or(0);
        assert_eq!(
            after.get(&key(m, c)).copied().unwrap_or(0),
            was + 1,
            "{m} {c}"
        );
    }
    let total = |m: &BTreeMap<(String, String), u64>| m.values().sum::<u64>();
    assert_eq!(
        total(&after),
        total(&before) + want.len() as u64,
        "no other series moved"
    );

    // Log lines (info and above) say "OK" for success and the code's name otherwise. A polled
    // read-only call that succeeds logs at debug only; its failure still logs.
    let polled = [
        "GetPluginInfo",
        "GetPluginCapabilities",
        "Probe",
        "ControllerGetCapabilities",
        "ListVolumes",
        "NodeGetCapabilities",
        "NodeGetInfo",
    ];
    let lines = logged(log_from);
    let expected: Vec<(String, String)> = want
        .iter()
        .filter(|(m, c)| !(polled.contains(m) && *c == "Ok"))
        .map(|(m, c)| key(m, if *c == "Ok" { "OK" } else { c }))
        .collect();
    assert!(
        expected.contains(&key("ListVolumes", "InvalidArgument")),
        "a polled call's failure is expected in the log"
    );
    assert_eq!(lines, expected);
}
