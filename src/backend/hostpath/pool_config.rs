//! Which hostpath pools (named base paths) this node has: `--hostpath-pool NAME=PATH` flags and
//! `--hostpath-pool-config FILE`, a YAML map rendered by the chart (like the device backend's
//! `--device-config`, with sections for some nodes only):
//! ```yaml
//! pools:                     # every node's pools: name -> path
//!   default: /var/lib/ferrovol/hostpath
//!   slow: /mnt/hdd/ferrovol
//! nodes:                     # sections for some nodes, applied in order on top of `pools`
//!   - name: "db-*"           # glob on the node name (--node-id); omitted: any name
//!     labels: {disk: nvme}   # node labels that must all match; omitted: any labels
//!     pools:                 # a pool named here replaces one of the same name, else is added
//!       fast: /mnt/nvme0/ferrovol
//! ```
//! A section with neither `name` nor `labels` is refused (it would be `pools` again).

use glob::Pattern;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The pool a class without a `pool` parameter uses, and the one `--hostpath-base` names.
pub const DEFAULT_POOL: &str = "default";

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    pub pools: BTreeMap<String, PathBuf>,
    pub nodes: Vec<NodePools>,
}

/// Pools of the nodes whose name matches `name` and whose labels include `labels`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodePools {
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub pools: BTreeMap<String, PathBuf>,
}

/// One pool this node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub path: PathBuf,
    /// Whether a missing path is created: only for `--hostpath-base` (as before pools
    /// existed). A pool's path is a disk's mount point or a directory on it: a missing one
    /// means the disk is not mounted, and creating it would fill the root disk instead.
    pub create_missing: bool,
}

/// A pool name: a DNS label (it appears in StorageClass parameters, metric labels and, for
/// pools other than `default`, in the state journal's keys).
pub fn validate_name(name: &str) -> io::Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        return Ok(());
    }
    Err(invalid(format!(
        "hostpath pool name {name:?}: use 1-63 lowercase letters, digits and '-', not at either end"
    )))
}

/// Parses `NAME=PATH` of `--hostpath-pool`.
pub fn parse_flag(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PATH"))?;
    validate_name(name).map_err(|e| e.to_string())?;
    if !Path::new(path).is_absolute() {
        return Err(format!("{s:?}: the path must be absolute"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

impl PoolConfig {
    pub fn read(path: &Path) -> io::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("hostpath pool config {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> io::Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| invalid(format!("bad YAML: {e}")))
    }

    /// Whether a section selects by node labels (the caller then reads the node's labels).
    pub fn needs_labels(&self) -> bool {
        self.nodes.iter().any(|n| !n.labels.is_empty())
    }

    /// The pools of node `node` with labels `labels`: `pools`, then every matching section.
    pub fn for_node(
        &self,
        node: &str,
        labels: &BTreeMap<String, String>,
    ) -> io::Result<BTreeMap<String, PathBuf>> {
        let mut out = self.pools.clone();
        for section in &self.nodes {
            if section.name.is_none() && section.labels.is_empty() {
                return Err(invalid(
                    "a node section needs a name glob or labels (else put its pools in `pools`)"
                        .to_string(),
                ));
            }
            let name_matches = match &section.name {
                Some(glob) => Pattern::new(glob)
                    .map_err(|e| invalid(format!("node section name {glob:?}: {e}")))?
                    .matches(node),
                None => true,
            };
            let labels_match = section.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
            if name_matches && labels_match {
                out.extend(section.pools.clone());
            }
        }
        for (name, path) in &out {
            validate_name(name)?;
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "hostpath pool {name}: path {} is not absolute",
                    path.display()
                )));
            }
        }
        Ok(out)
    }
}

/// This node's pools: the config's (for this node), then the flags (a flag replaces a pool of
/// the same name), then `default` from `--hostpath-base` unless named otherwise.
pub fn node_pools(
    config: &BTreeMap<String, PathBuf>,
    flags: &[(String, PathBuf)],
    hostpath_base: &Path,
) -> Vec<PoolSpec> {
    let mut named = config.clone();
    named.extend(flags.iter().cloned());
    let mut out = Vec::new();
    if !named.contains_key(DEFAULT_POOL) {
        out.push(PoolSpec {
            name: DEFAULT_POOL.to_string(),
            path: hostpath_base.to_path_buf(),
            create_missing: true,
        });
    }
    out.extend(named.into_iter().map(|(name, path)| PoolSpec {
        name,
        path,
        create_missing: false,
    }));
    out
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
pools:
  default: /var/lib/ferrovol/hostpath
  slow: /mnt/hdd/ferrovol
nodes:
  - name: "db-*"
    pools: {fast: /mnt/nvme0/ferrovol}
  - labels: {disk: nvme}
    pools: {fast: /mnt/nvme1/ferrovol, slow: /mnt/sata/ferrovol}
"#;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sections_add_and_replace_pools_by_name_and_labels() {
        let c = PoolConfig::parse(CONFIG).unwrap();
        assert!(c.needs_labels());
        let plain = c.for_node("web-1", &labels(&[])).unwrap();
        assert_eq!(plain.keys().collect::<Vec<_>>(), ["default", "slow"]);
        let db = c.for_node("db-1", &labels(&[])).unwrap();
        assert_eq!(db["fast"], Path::new("/mnt/nvme0/ferrovol"));
        let both = c.for_node("db-2", &labels(&[("disk", "nvme")])).unwrap();
        assert_eq!(both["fast"], Path::new("/mnt/nvme1/ferrovol"));
        assert_eq!(both["slow"], Path::new("/mnt/sata/ferrovol"));
        let other_label = c.for_node("web-2", &labels(&[("disk", "hdd")])).unwrap();
        assert!(!other_label.contains_key("fast"));
    }

    #[test]
    fn refuses_bad_names_paths_keys_and_empty_sections() {
        assert!(PoolConfig::parse("pools: {Fast: /x}")
            .unwrap()
            .for_node("n", &BTreeMap::new())
            .is_err());
        assert!(PoolConfig::parse("pools: {fast: relative}")
            .unwrap()
            .for_node("n", &BTreeMap::new())
            .is_err());
        assert!(PoolConfig::parse("pool: {fast: /x}").is_err());
        assert!(PoolConfig::parse("nodes: [{pools: {fast: /x}}]")
            .unwrap()
            .for_node("n", &BTreeMap::new())
            .is_err());
        assert!(parse_flag("fast").is_err());
        assert!(parse_flag("fast=rel").is_err());
        assert!(parse_flag("a@b=/x").is_err());
        assert_eq!(
            parse_flag("fast=/mnt/f").unwrap(),
            ("fast".to_string(), PathBuf::from("/mnt/f"))
        );
    }

    #[test]
    fn the_base_flag_is_the_default_pool_unless_one_is_named_so() {
        let flags = vec![("fast".to_string(), PathBuf::from("/f"))];
        let pools = node_pools(&BTreeMap::new(), &flags, Path::new("/b"));
        assert_eq!(pools[0].name, "default");
        assert!(pools[0].create_missing);
        assert!(!pools[1].create_missing);
        let named = BTreeMap::from([("default".to_string(), PathBuf::from("/d"))]);
        let pools = node_pools(&named, &flags, Path::new("/b"));
        assert_eq!(pools.len(), 2);
        assert!(pools.iter().all(|p| !p.create_missing));
    }
}
