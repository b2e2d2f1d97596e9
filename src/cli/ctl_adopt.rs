//! `ferrovol ctl adopt`: brings existing data under the running driver through its admin API
//! (proto/admin.proto) and prints the PersistentVolume to apply. docs/adoption.md has the
//! recipes.

use super::size::parse_size;
use crate::proto::admin::{self as pb, admin_client::AdminClient, AdoptResponse};
use crate::server::BoxResult as Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tonic::transport::Channel;

#[derive(Debug, Args)]
pub struct AdoptArgs {
    #[command(subcommand)]
    pub what: AdoptWhat,
    /// The PersistentVolume's storageClassName (the class its PVC names; "" for none).
    #[arg(long, global = true, default_value = "")]
    pub storage_class: String,
}

#[derive(Debug, Subcommand)]
pub enum AdoptWhat {
    /// Make DIR the hostpath volume NAME in the pool on DIR's filesystem, in place: renamed into
    /// the pool's base, marked as the volume's, limited where the filesystem can; never copied
    /// (but see --reflink-copy).
    Dir {
        /// Absolute path of the directory, as the driver sees it.
        dir: PathBuf,
        /// The volume's (and the printed PersistentVolume's) name.
        #[arg(long)]
        name: String,
        /// The volume's capacity, e.g. 10Gi (the old PersistentVolume's).
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// btrfs: reflink-copy DIR into a new subvolume (so a qgroup limits it) and rename DIR
        /// aside to DIR.adopted-<token>, never deleted, instead of renaming DIR into place.
        #[arg(long)]
        reflink_copy: bool,
    },
    /// Claim the device with BlockDevice uid UID (see `ferrovol ctl devices`), which carries a
    /// filesystem, as the volume NAME, keeping the filesystem and its data.
    Device {
        uid: String,
        /// The volume's (and the printed PersistentVolume's) name.
        #[arg(long)]
        name: String,
    },
    /// Make the directory SUB_DIR of an NFS export a managed volume of the NFS driver (run
    /// against the NFS controller's socket): its record is written on the share, so DeleteVolume
    /// applies --on-delete to it afterwards. Nothing is moved or copied.
    Nfs {
        /// The NFS server (host name or address).
        #[arg(long)]
        server: String,
        /// The export's path on the server, e.g. /srv/nfs.
        #[arg(long)]
        share: String,
        /// The directory, relative to the export's root.
        #[arg(long)]
        sub_dir: String,
        /// The volume's (and the printed PersistentVolume's) name.
        #[arg(long)]
        name: String,
        /// The volume's capacity, e.g. 10Gi.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// What DeleteVolume does with the directory later: retain, archive or delete.
        #[arg(long, default_value = "retain")]
        on_delete: String,
    },
}

/// Whether `name` can name a PersistentVolume (a DNS subdomain: lowercase letters, digits, '-'
/// and '.', beginning and ending with a letter or digit, at most 253 characters), as the
/// printed one is named after the volume.
pub fn check_pv_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    ok.then_some(()).ok_or_else(|| {
        format!(
            "--name {name:?} cannot name a PersistentVolume: use lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit"
        )
    })
}

pub async fn run(channel: Channel, args: AdoptArgs) -> Result<()> {
    let name = match &args.what {
        AdoptWhat::Dir { name, .. }
        | AdoptWhat::Device { name, .. }
        | AdoptWhat::Nfs { name, .. } => name.clone(),
    };
    check_pv_name(&name)?;
    let mut admin = AdminClient::new(channel);
    let (place, resp) = match args.what {
        AdoptWhat::Dir {
            dir,
            size,
            reflink_copy,
            ..
        } => {
            let dir = super::absolute(&dir).display().to_string();
            let req = pb::AdoptDirectoryRequest {
                path: dir.clone(),
                name: name.clone(),
                capacity_bytes: size as i64,
                reflink_copy,
            };
            (dir, admin.adopt_directory(req).await)
        }
        AdoptWhat::Device { uid, .. } => {
            let req = pb::AdoptDeviceRequest {
                device_uid: uid.clone(),
                name: name.clone(),
            };
            (format!("device {uid}"), admin.adopt_device(req).await)
        }
        AdoptWhat::Nfs {
            server,
            share,
            sub_dir,
            size,
            on_delete,
            ..
        } => {
            let place = format!("{sub_dir} on {server}:{share}");
            let req = pb::AdoptNfsDirectoryRequest {
                server,
                share,
                sub_dir,
                name: name.clone(),
                capacity_bytes: size as i64,
                on_delete,
            };
            (place, admin.adopt_nfs_directory(req).await)
        }
    };
    let resp = resp
        .map_err(|s| format!("adopting {place}: {}", s.message()))?
        .into_inner();
    if !resp.capacity_enforced && !resp.node_id.is_empty() {
        let id = &resp.volume_id;
        eprintln!("note: volume {id}'s capacity is advisory (the filesystem cannot limit it)");
    }
    print!("{}", persistent_volume(&name, &args.storage_class, &resp)?);
    Ok(())
}

/// The PersistentVolume that makes the adopted volume usable: the driver's volumeHandle and
/// attributes, the node it lives on (none for an NFS volume, which every node reaches, and
/// which many pods may share), reclaimPolicy Retain.
pub fn persistent_volume(name: &str, storage_class: &str, resp: &AdoptResponse) -> Result<String> {
    let attributes: std::collections::BTreeMap<_, _> = resp.volume_context.iter().collect();
    let mut csi = serde_json::json!({
        "driver": resp.driver_name,
        "volumeHandle": resp.volume_id,
        "volumeAttributes": attributes,
    });
    if !resp.fs_type.is_empty() {
        csi["fsType"] = resp.fs_type.clone().into();
    }
    let local = !resp.node_id.is_empty();
    let mut pv = serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": { "name": name },
        "spec": {
            "capacity": { "storage": resp.capacity_bytes.to_string() },
            "accessModes": [if local { "ReadWriteOnce" } else { "ReadWriteMany" }],
            "volumeMode": "Filesystem",
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "csi": csi,
        }
    });
    if local {
        pv["spec"]["nodeAffinity"] = serde_json::json!({ "required": { "nodeSelectorTerms": [{
            "matchExpressions": [{
                "key": resp.topology_key,
                "operator": "In",
                "values": [resp.node_id],
            }]
        }]}});
    }
    Ok(serde_yaml::to_string(&pv)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_volume_binds_to_the_node_and_is_retained() {
        let resp = pb::AdoptResponse {
            volume_id: "hostpath/n1/data".into(),
            capacity_bytes: 1 << 30,
            volume_context: [("ferrovol.io/backend".to_string(), "hostpath".to_string())].into(),
            driver_name: "local.csi.ferrovol.io".into(),
            node_id: "n1".into(),
            topology_key: "topology.ferrovol.io/node".into(),
            capacity_enforced: false,
            fs_type: String::new(),
        };
        let text = persistent_volume("data", "local", &resp).unwrap();
        let pv: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["csi"]["volumeHandle"], "hostpath/n1/data");
        assert_eq!(pv["spec"]["csi"]["driver"], "local.csi.ferrovol.io");
        assert_eq!(pv["spec"]["storageClassName"], "local");
        assert_eq!(pv["spec"]["capacity"]["storage"], "1073741824");
        let term = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0];
        assert_eq!(term["matchExpressions"][0]["values"][0], "n1");
        assert_eq!(
            pv["spec"]["csi"]["volumeAttributes"]["ferrovol.io/backend"],
            "hostpath"
        );
        assert!(pv["spec"]["csi"].get("fsType").is_none());
        assert_eq!(pv["spec"]["accessModes"][0], "ReadWriteOnce");
    }

    #[test]
    fn only_names_a_persistent_volume_can_have_are_taken() {
        for ok in ["pvc-1c0a4e36", "data", "a.b-c", "0x"] {
            assert!(check_pv_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "pvc-1_shop_db",
            "Data",
            "-a",
            "a-",
            ".a",
            "a/b",
            &"a".repeat(254),
        ] {
            assert!(check_pv_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_nfs_volume_has_no_node_and_many_writers() {
        let resp = pb::AdoptResponse {
            volume_id: "nfs/0123abcd/media".into(),
            capacity_bytes: 1 << 30,
            volume_context: [("subDir".to_string(), "media".to_string())].into(),
            driver_name: "nfs.csi.ferrovol.io".into(),
            ..Default::default()
        };
        let pv: serde_json::Value =
            serde_yaml::from_str(&persistent_volume("media", "", &resp).unwrap()).unwrap();
        assert!(pv["spec"].get("nodeAffinity").is_none());
        assert_eq!(pv["spec"]["accessModes"][0], "ReadWriteMany");
        assert_eq!(pv["spec"]["csi"]["volumeAttributes"]["subDir"], "media");
    }
}
