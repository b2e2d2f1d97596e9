//! StorageClass parameters of the device backend, and the `deviceSelector` they may carry.

use crate::discovery::Device;
use crate::error::{Error, Result};
use crate::os::mkfs;
use glob::{MatchOptions, Pattern};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceParams {
    /// ext4 or xfs (filesystem volumes; default ext4, or the capability's fs_type).
    fs_type: String,
    /// Extra mkfs arguments, split on whitespace.
    mkfs_options: String,
    /// `rotational=false,model=Samsung*,vendor=ATA,path=/dev/disk/by-id/nvme-*`.
    device_selector: String,
}

impl DeviceParams {
    pub fn decode(params: &BTreeMap<String, String>) -> Result<Self> {
        let p: DeviceParams = crate::backend::params::decode(super::BACKEND, params)?;
        if let Some(fs) = p.fs_type().filter(|fs| !mkfs::SUPPORTED.contains(fs)) {
            return Err(Error::invalid(format!(
                "device StorageClass parameters: fsType {fs:?} is not one of {:?}",
                mkfs::SUPPORTED
            )));
        }
        p.selector()?;
        Ok(p)
    }

    /// The class's fsType, if it names one (parameters carry strings only: empty is none).
    pub fn fs_type(&self) -> Option<&str> {
        Some(self.fs_type.as_str()).filter(|f| !f.is_empty())
    }

    pub fn selector(&self) -> Result<Selector> {
        Selector::parse(&self.device_selector)
    }

    pub fn mkfs_args(&self) -> Vec<String> {
        self.mkfs_options
            .split_whitespace()
            .map(String::from)
            .collect()
    }
}

/// Which devices a class may take. Every given term must hold.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    model: Option<Pattern>,
    vendor: Option<Pattern>,
    path: Option<Pattern>,
    rotational: Option<bool>,
}

const TEXT: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl Selector {
    pub fn parse(text: &str) -> Result<Selector> {
        let bad = |why: String| Error::invalid(format!("deviceSelector {text:?}: {why}"));
        let mut s = Selector::default();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = term
                .split_once('=')
                .ok_or_else(|| bad(format!("{term:?} is not key=value")))?;
            let (k, v) = (k.trim(), v.trim());
            let pat = || Pattern::new(v).map_err(|e| bad(format!("{k}: {e}")));
            match k {
                "model" => s.model = Some(pat()?),
                "vendor" => s.vendor = Some(pat()?),
                "path" => s.path = Some(pat()?),
                "rotational" => {
                    let why = || bad(format!("rotational must be true or false, not {v:?}"));
                    s.rotational = Some(v.parse().map_err(|_| why())?);
                }
                other => {
                    let known = "model, vendor, path, rotational";
                    return Err(bad(format!("unknown key {other:?} (known: {known})")));
                }
            }
        }
        Ok(s)
    }

    pub fn matches(&self, d: &Device) -> bool {
        let text = |p: &Option<Pattern>, v: &Option<String>| {
            p.as_ref()
                .is_none_or(|p| v.as_deref().is_some_and(|v| p.matches_with(v.trim(), TEXT)))
        };
        text(&self.model, &d.model)
            && text(&self.vendor, &d.vendor)
            && self
                .path
                .as_ref()
                .is_none_or(|p| d.names().any(|n| p.matches_path(n)))
            && self.rotational.is_none_or(|r| r == d.rotational)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::DeviceType;

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_and_refuses_unknown_keys() {
        let p = DeviceParams::decode(&params(&[
            ("backend", "device"),
            ("fsType", "xfs"),
            ("mkfsOptions", "-K  -b size=4096"),
        ]))
        .unwrap();
        assert_eq!(p.fs_type(), Some("xfs"));
        assert_eq!(p.mkfs_args(), ["-K", "-b", "size=4096"]);
        let e = DeviceParams::decode(&params(&[("quota", "enforce")])).unwrap_err();
        assert!(e.to_string().contains("quota"), "{e}");
        let e = DeviceParams::decode(&params(&[("fsType", "btrfs")])).unwrap_err();
        assert!(e.to_string().contains("btrfs"), "{e}");
    }

    #[test]
    fn selector_terms_all_hold() {
        let mut d = Device::fake("sdb", DeviceType::Disk);
        d.model = Some("Samsung SSD 980 ".into());
        d.by_id = vec!["/dev/disk/by-id/nvme-Samsung_1".into()];
        let s = |t: &str| Selector::parse(t).unwrap();
        assert!(s("").matches(&d));
        assert!(s("rotational=false,model=samsung*").matches(&d));
        assert!(!s("rotational=true").matches(&d));
        assert!(!s("vendor=ATA").matches(&d), "no vendor known: no match");
        assert!(s("path=/dev/disk/by-id/nvme-*").matches(&d));
        assert!(!s("path=/dev/sdc").matches(&d));
        assert!(Selector::parse("size=1").is_err());
        assert!(Selector::parse("rotational=maybe").is_err());
    }
}
