//! StorageClass parameters of the NFS backend, decoded with serde straight from the CreateVolume
//! parameter map. Keys under `csi.storage.k8s.io/` (external-provisioner's metadata and secret
//! references) are skipped; any other unknown key is an error naming it and listing the known
//! ones, so a typo (`subdir` for `subDir`) fails loudly instead of being ignored.

use std::collections::BTreeMap;

use serde::de::value::{Error as DeError, MapDeserializer};
use serde::{Deserialize, Deserializer};

use super::pattern::{Pattern, DEFAULT_PATTERN};
use crate::nfs::{Version, Want};

/// What DeleteVolume does with the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Remove the directory and everything in it.
    #[default]
    Delete,
    /// Leave the directory as it is; only the record goes.
    Retain,
    /// Rename it to `archived-<dir>-<timestamp>` in the same parent.
    Archive,
}

/// Default mode of a new volume directory: writable by any pod user, as csi-driver-nfs does,
/// because pods rarely run as the directory's owner.
pub const DEFAULT_MOUNT_PERMISSIONS: u32 = 0o777;
const PREFIX_IGNORED: &str = "csi.storage.k8s.io/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsParams {
    pub server: String,
    pub share: String,
    pub sub_dir: Pattern,
    pub on_delete: OnDelete,
    pub mount_permissions: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `nfsvers`: the protocol the controller provisions with (and the node mounts with,
    /// unless mountOptions name a version). Default `auto`.
    pub nfs_vers: Want,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    server: String,
    share: String,
    #[serde(default, deserialize_with = "some")]
    sub_dir: Option<String>,
    #[serde(default)]
    on_delete: OnDelete,
    #[serde(default, deserialize_with = "octal")]
    mount_permissions: Option<u32>,
    #[serde(default, deserialize_with = "decimal")]
    uid: Option<u32>,
    #[serde(default, deserialize_with = "decimal")]
    gid: Option<u32>,
    #[serde(default, deserialize_with = "nfs_vers")]
    nfsvers: Want,
}

fn nfs_vers<'de, D: Deserializer<'de>>(d: D) -> Result<Want, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "3" => Ok(Want::Only(Version::V3)),
        "4.1" => Ok(Want::Only(Version::V41)),
        "auto" => Ok(Want::Auto),
        _ => Err(serde::de::Error::custom(format!(
            "nfsvers {s:?} is not one of \"3\", \"4.1\", \"auto\""
        ))),
    }
}

/// The version a mount option names (`vers=`/`nfsvers=`): 3, or any 4.x (whose handles are
/// NFSv4.1's: one handle family for every minor version).
fn mount_version(options: &[String]) -> Result<Option<Version>, ParamError> {
    let mut found = None;
    for opt in options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        let Some(v) = opt
            .strip_prefix("vers=")
            .or_else(|| opt.strip_prefix("nfsvers="))
        else {
            continue;
        };
        let this = match v {
            "3" => Version::V3,
            v if v == "4" || v.starts_with("4.") => Version::V41,
            _ => {
                return Err(ParamError(format!(
                    "mount option {opt:?}: only NFS versions 3 and 4.x are supported"
                )))
            }
        };
        if found.is_some_and(|f| f != this) {
            let why = format!("mountOptions name two NFS versions ({opt:?})");
            return Err(ParamError(why));
        }
        found = Some(this);
    }
    Ok(found)
}

impl NfsParams {
    /// The version to provision with, given the class's mountOptions (the capability's mount
    /// flags): `nfsvers` and a `vers=`/`nfsvers=` mount option must agree; `auto` follows the
    /// mount option when there is one.
    pub fn want(&self, mount_options: &[String]) -> Result<Want, ParamError> {
        match (self.nfs_vers, mount_version(mount_options)?) {
            (Want::Only(a), Some(b)) if a != b => Err(ParamError(format!(
                "nfsvers {a} disagrees with the NFS version {b} the mountOptions name; the controller and the node must speak one version"
            ))),
            (Want::Auto, Some(b)) => Ok(Want::Only(b)),
            (w, _) => Ok(w),
        }
    }
}

/// Plain string values cannot drive serde's `Option` (there is no "none" in a string map).
fn some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

fn octal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = String::deserialize(d)?;
    let digits = s.strip_prefix("0o").unwrap_or(&s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(Some(m)),
        _ => Err(serde::de::Error::custom(format!(
            "mountPermissions {s:?} is not an octal mode such as 0777"
        ))),
    }
}

fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<u32>()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a numeric id")))
}

/// The error names the offending key or value; callers map it to InvalidArgument.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid NFS StorageClass parameters: {0}")]
pub struct ParamError(pub String);

impl NfsParams {
    pub fn parse(params: &BTreeMap<String, String>) -> Result<NfsParams, ParamError> {
        let own = params
            .iter()
            .filter(|(k, _)| !k.starts_with(PREFIX_IGNORED))
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let raw = Raw::deserialize(MapDeserializer::<_, DeError>::new(own))
            .map_err(|e| ParamError(e.to_string()))?;
        let (server, share) = (&raw.server, &raw.share);
        if server.is_empty() || server.contains(['/', ' ', '\0']) {
            let why = format!("server {server:?} must be a host name or address");
            return Err(ParamError(why));
        }
        if !share.starts_with('/') || share.contains('\0') {
            let why = format!("share {share:?} must be an absolute export path such as /srv/nfs");
            return Err(ParamError(why));
        }
        let sub_dir = Pattern::parse(raw.sub_dir.as_deref().unwrap_or(DEFAULT_PATTERN))
            .map_err(|e| ParamError(e.to_string()))?;
        Ok(NfsParams {
            server: raw.server,
            // "/srv/nfs/" and "/srv/nfs" are one export.
            share: match raw.share.trim_end_matches('/') {
                "" => "/".to_string(),
                s => s.to_string(),
            },
            sub_dir,
            on_delete: raw.on_delete,
            mount_permissions: raw.mount_permissions.unwrap_or(DEFAULT_MOUNT_PERMISSIONS),
            uid: raw.uid,
            gid: raw.gid,
            nfs_vers: raw.nfsvers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn full_parameters_decode() {
        let p = NfsParams::parse(&map(&[
            ("server", "10.0.0.5"),
            ("share", "/srv/nfs/"),
            ("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}"),
            ("onDelete", "archive"),
            ("mountPermissions", "0750"),
            ("uid", "1000"),
            ("gid", "2000"),
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/provisioner-secret-name", "x"),
        ]))
        .unwrap();
        assert_eq!(
            (p.server.as_str(), p.share.as_str()),
            ("10.0.0.5", "/srv/nfs")
        );
        assert_eq!(
            p.sub_dir.as_str(),
            "${pvc.metadata.namespace}/${pvc.metadata.name}"
        );
        assert_eq!(
            (p.on_delete, p.mount_permissions, p.uid, p.gid),
            (OnDelete::Archive, 0o750, Some(1000), Some(2000))
        );
    }

    #[test]
    fn defaults_apply() {
        let p = NfsParams::parse(&map(&[("server", "nfs.example"), ("share", "/")])).unwrap();
        assert_eq!(p.sub_dir, Pattern::default());
        assert_eq!(
            (
                p.on_delete,
                p.mount_permissions,
                p.uid,
                p.gid,
                p.share.as_str()
            ),
            (OnDelete::Delete, 0o777, None, None, "/")
        );
    }

    #[test]
    fn errors_name_the_key_or_value() {
        let base = [("server", "s"), ("share", "/e")];
        let err = |extra: &[(&str, &str)]| {
            let mut m = map(&base);
            m.extend(map(extra));
            NfsParams::parse(&m).unwrap_err().to_string()
        };
        let e = err(&[("subdir", "x")]);
        assert!(
            e.contains("unknown field `subdir`") && e.contains("subDir") && e.contains("onDelete"),
            "{e}"
        );
        assert!(err(&[("onDelete", "shred")]).contains("shred"));
        assert!(err(&[("mountPermissions", "999")]).contains("999"));
        assert!(err(&[("mountPermissions", "17777")]).contains("17777"));
        assert!(err(&[("uid", "-1")]).contains("\"-1\""));
        assert!(err(&[("subDir", "${nope}")]).contains("${nope}"));
        assert!(err(&[("share", "relative")]).contains("relative"));
        assert!(err(&[("nfsvers", "4")]).contains("\"4\""));
        assert!(NfsParams::parse(&map(&[("share", "/e")]))
            .unwrap_err()
            .to_string()
            .contains("server"));
    }

    #[test]
    fn nfsvers_defaults_to_auto_and_must_agree_with_mount_options() {
        let base = [("server", "s"), ("share", "/e")];
        let p = NfsParams::parse(&map(&base)).unwrap();
        assert_eq!(p.nfs_vers, Want::Auto);
        let opts = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(p.want(&[]).unwrap(), Want::Auto);
        assert_eq!(
            p.want(&opts(&["hard,nfsvers=3"])).unwrap(),
            Want::Only(Version::V3)
        );
        assert_eq!(
            p.want(&opts(&["vers=4.2"])).unwrap(),
            Want::Only(Version::V41)
        );
        let mut m = map(&base);
        m.insert("nfsvers".into(), "4.1".into());
        let p = NfsParams::parse(&m).unwrap();
        assert_eq!(
            p.want(&opts(&["vers=4.1"])).unwrap(),
            Want::Only(Version::V41)
        );
        let e = p.want(&opts(&["vers=3"])).unwrap_err().to_string();
        assert!(e.contains("disagrees"), "{e}");
        m.insert("nfsvers".into(), "3".into());
        let p = NfsParams::parse(&m).unwrap();
        assert!(p.want(&opts(&["nfsvers=4"])).is_err());
        assert!(p.want(&opts(&["vers=3", "vers=4.1"])).is_err());
        assert!(p.want(&opts(&["vers=2"])).is_err());
    }
}
