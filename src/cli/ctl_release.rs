//! `ferrovol ctl clear-released`: clears the Released claim a device delete left on a device of
//! the node whose driver it talks to (the admin API's ClearReleasedDevice). docs/adoption.md
//! ("A Released device") has the procedure.

use crate::proto::admin::{self as pb, admin_client::AdminClient};
use crate::server::BoxResult as Result;
use tonic::transport::Channel;

pub async fn clear_released(channel: Channel, uid: String, volume: String) -> Result<()> {
    let req = pb::ClearReleasedDeviceRequest {
        device_uid: uid.clone(),
        volume: volume.clone(),
    };
    let resp = (AdminClient::new(channel).clear_released_device(req).await)
        .map_err(|s| format!("clearing device {uid}: {}", s.message()))?
        .into_inner();
    let at = &resp.device_path;
    if resp.cleared {
        println!("device {uid} ({at}): Released claim of volume {volume} cleared; it is Unclaimed");
        println!("  it had been released because: {}", resp.reason);
    } else {
        println!("device {uid} ({at}) is Unclaimed already; nothing was changed");
    }
    if resp.candidate {
        println!("  it is a candidate: the next volume that fits takes it and may format it");
    } else {
        println!(
            "  it is no candidate for a new volume (it carries a signature, or the include \
             rules do not name it: `ferrovol ctl devices` says which)"
        );
    }
    Ok(())
}
