//! StorageClass parameters of the hostpath backend, decoded with serde from the parameter map.

use crate::error::Result;
use serde::Deserialize;
use std::collections::BTreeMap;

/// How a volume's size is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    /// Enforce with a project quota where the filesystem supports it, else advisory.
    #[default]
    Auto,
    /// Refuse to create a volume whose size cannot be enforced.
    Enforce,
    /// Never set a quota.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostpathParams {
    #[serde(default)]
    pub quota: QuotaMode,
    /// The node's pool (named base path) the volume lives in.
    #[serde(default = "default_pool")]
    pub pool: String,
}

fn default_pool() -> String {
    super::pool_config::DEFAULT_POOL.to_string()
}

impl HostpathParams {
    pub fn decode(params: &BTreeMap<String, String>) -> Result<Self> {
        let p: Self = crate::backend::params::decode(super::BACKEND, params)?;
        super::pool_config::validate_name(&p.pool)
            .map_err(|e| crate::error::Error::invalid(format!("parameter pool: {e}")))?;
        Ok(p)
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
    fn decodes_quota_and_ignores_sidecar_keys() {
        let p = HostpathParams::decode(&map(&[
            ("quota", "enforce"),
            ("backend", "hostpath"),
            ("csi.storage.k8s.io/pvc/name", "x"),
        ]))
        .unwrap();
        assert_eq!(p.quota, QuotaMode::Enforce);
        assert_eq!(
            HostpathParams::decode(&map(&[])).unwrap().quota,
            QuotaMode::Auto
        );
    }

    #[test]
    fn rejects_unknown_keys_and_values() {
        let e = HostpathParams::decode(&map(&[("basepath", "/x")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("basepath") && text.contains("quota"),
            "{text}"
        );
        assert!(HostpathParams::decode(&map(&[("quota", "sometimes")])).is_err());
        assert!(HostpathParams::decode(&map(&[("pool", "Fast/1")])).is_err());
        let p = HostpathParams::decode(&map(&[("pool", "fast")])).unwrap();
        assert_eq!(p.pool, "fast");
        assert_eq!(HostpathParams::decode(&map(&[])).unwrap().pool, "default");
    }
}
