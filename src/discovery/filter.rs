//! Which devices are candidates for volumes. Pure functions over [`Device`] facts.
//!
//! Safety first: no pattern admits a device that holds the OS, has partitions or any
//! signature, is mounted, has holders or is open exclusively. Beyond that, a device is a
//! candidate only when an include pattern names it: with no include pattern nothing is
//! claimed (an operator opts disks in). ram, zram, dm, md, sr, nbd, fd and loop devices are
//! excluded by default; an include pattern admits one only when it names it explicitly (a
//! pattern without wildcards, or one that spells the class, like `/dev/loop*`), so a broad
//! `/dev/*` never sweeps in a ram disk.

use super::device::{Device, DeviceType};
use crate::os::fsutil::at;
use glob::{MatchOptions, Pattern};
use serde::Deserialize;
use std::io;
use std::path::{Path, PathBuf};

/// Include/exclude rules of `--device-config FILE` (YAML, usually from a ConfigMap):
/// ```yaml
/// include: { paths: ["/dev/disk/by-id/wwn-*"], vendors: [], models: ["Samsung SSD*"] }
/// exclude: { paths: ["/dev/sdz"], vendors: ["VMware*"], models: [] }
/// nodes:                      # rules for some nodes only, added to the ones above
///   - name: "db-*"            # glob on the node name (--node-id)
///     include: { paths: ["/dev/nvme1n1"] }
///     exclude: { vendors: ["VMware*"] }
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    pub include: Rules,
    pub exclude: Rules,
    pub nodes: Vec<NodeRules>,
}

/// Rules that apply on the nodes whose name matches `name`, on top of the global rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRules {
    pub name: String,
    #[serde(default)]
    pub include: Rules,
    #[serde(default)]
    pub exclude: Rules,
}

/// Path, vendor and model patterns, as written (`String`) or compiled (`Pattern`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules<T = String> {
    pub paths: Vec<T>,
    pub vendors: Vec<T>,
    pub models: Vec<T>,
}

#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub include: Rules<Pattern>,
    pub exclude: Rules<Pattern>,
    /// Paths whose disks are the OS's: /, /boot, the state dir, the kubelet dir.
    pub protected_paths: Vec<PathBuf>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn compile(what: &str, pats: &[String]) -> io::Result<Vec<Pattern>> {
    pats.iter()
        .map(|p| Pattern::new(p).map_err(|e| invalid(format!("{what} pattern {p:?}: {e}"))))
        .collect()
}

const PATH_OPTS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};
const TEXT_OPTS: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl Filters {
    /// From `--device-include`, `--device-exclude`, an optional `--device-config` file, and the
    /// extra protected paths (state dir, kubelet dir; / and /boot are always protected), adding
    /// the rules of the config's node sections whose name matches `node`. A config with node
    /// sections needs the node's name.
    pub fn for_node(
        include: &[String],
        exclude: &[String],
        config: Option<&Path>,
        protected: &[PathBuf],
        node: Option<&str>,
    ) -> io::Result<Filters> {
        let cfg = match config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(at("device config ", p))?;
                Self::parse_config(&text).map_err(at("", p))?
            }
            None => FilterConfig::default(),
        };
        let mut cfg = cfg.on_node(node)?;
        cfg.include.paths.splice(0..0, include.iter().cloned());
        cfg.exclude.paths.splice(0..0, exclude.iter().cloned());
        let mut protected_paths = vec![PathBuf::from("/"), PathBuf::from("/boot")];
        protected_paths.extend(protected.iter().cloned());
        Ok(Filters {
            include: cfg.include.compile("include")?,
            exclude: cfg.exclude.compile("exclude")?,
            protected_paths,
        })
    }

    pub fn parse_config(text: &str) -> io::Result<FilterConfig> {
        if text.trim().is_empty() {
            return Ok(FilterConfig::default());
        }
        serde_yaml::from_str(text).map_err(|e| invalid(format!("bad YAML: {e}")))
    }

    /// Ok(()) for a candidate, else the reason it is excluded.
    pub fn evaluate(&self, dev: &Device) -> Result<(), String> {
        hard_exclusion(dev)?;
        self.selection(dev)
    }

    /// Whether the operator's rules name `dev` (include matches, no exclude does), whatever
    /// its contents: the devices this node reports to the cluster. A disk nobody opted in (the
    /// OS disk, another tenant's loop device) stays out of the API; one that was opted in but
    /// holds a filesystem is reported, as not a candidate, with the reason.
    pub fn selects(&self, dev: &Device) -> bool {
        self.selection(dev).is_ok()
    }

    /// Ok(()) when the patterns and rules admit `dev`, else why not (no safety checks).
    fn selection(&self, dev: &Device) -> Result<(), String> {
        if let Some(p) = self.path_match(&self.exclude.paths, dev) {
            return Err(format!("excluded by pattern {}", p.as_str()));
        }
        if let Some(p) = text_match(&self.exclude.vendors, &dev.vendor) {
            return Err(format!("excluded by vendor rule {}", p.as_str()));
        }
        if let Some(p) = text_match(&self.exclude.models, &dev.model) {
            return Err(format!("excluded by model rule {}", p.as_str()));
        }
        let by_path = self.path_match(&self.include.paths, dev);
        let by_text = text_match(&self.include.vendors, &dev.vendor)
            .or_else(|| text_match(&self.include.models, &dev.model));
        // The class of a device type excluded unless named explicitly.
        let t = dev.device_type;
        let class = (!matches!(t, DeviceType::Disk | DeviceType::Partition)).then(|| t.as_str());
        match (by_path, by_text, class) {
            (None, None, Some(c)) => Err(format!(
                "{c} device: excluded by default (name it with --device-include)"
            )),
            (None, None, None) => Err("not named by any include pattern".into()),
            (Some(p), _, Some(c)) if !names_explicitly(p.as_str(), c) => Err(format!(
                "{c} device: excluded by default; pattern {p} does not name it explicitly"
            )),
            (None, Some(_), Some(c)) => Err(format!(
                "{c} device: excluded by default; vendor/model rules do not admit it"
            )),
            _ => Ok(()),
        }
    }

    fn path_match<'a>(&self, pats: &'a [Pattern], dev: &Device) -> Option<&'a Pattern> {
        pats.iter()
            .find(|p| dev.names().any(|n| p.matches_path_with(n, PATH_OPTS)))
    }
}

impl FilterConfig {
    /// The global rules plus those of every node section matching `node`. Every section's
    /// name is checked, so a typo fails on every node, not only on the one it names.
    fn on_node(mut self, node: Option<&str>) -> io::Result<FilterConfig> {
        for section in std::mem::take(&mut self.nodes) {
            let name = Pattern::new(&section.name)
                .map_err(|e| invalid(format!("node section name {:?}: {e}", section.name)))?;
            // The section's own patterns are compiled below only on its nodes: check them here.
            section.include.compile("include")?;
            section.exclude.compile("exclude")?;
            let Some(node) = node else {
                return Err(invalid(
                    "the device config has node sections, but no node name is known".into(),
                ));
            };
            if name.matches_with(node, PATH_OPTS) {
                self.include.extend(section.include);
                self.exclude.extend(section.exclude);
            }
        }
        Ok(self)
    }
}

impl Rules {
    /// Compiled; `what` (include or exclude) names the rules in errors.
    fn compile(&self, what: &str) -> io::Result<Rules<Pattern>> {
        Ok(Rules {
            paths: compile(what, &self.paths)?,
            vendors: compile(&format!("{what} vendor"), &self.vendors)?,
            models: compile(&format!("{what} model"), &self.models)?,
        })
    }

    fn extend(&mut self, more: Rules) {
        self.paths.extend(more.paths);
        self.vendors.extend(more.vendors);
        self.models.extend(more.models);
    }
}

fn text_match<'a>(pats: &'a [Pattern], value: &Option<String>) -> Option<&'a Pattern> {
    let v = value.as_deref()?.trim();
    pats.iter().find(|p| p.matches_with(v, TEXT_OPTS))
}

/// The reasons no pattern can override, in the order an operator should read them.
fn hard_exclusion(dev: &Device) -> Result<(), String> {
    if !dev.holds_os.is_empty() {
        return Err(format!("holds the OS: {}", join_paths(&dev.holds_os)));
    }
    if let Some(e) = &dev.probe_error {
        return Err(format!("cannot read its signatures: {e}"));
    }
    if !dev.partitions.is_empty() {
        return Err(format!("has partitions: {}", dev.partitions.join(", ")));
    }
    if !dev.signatures.is_empty() {
        let s: Vec<String> = dev.signatures.iter().map(|s| s.to_string()).collect();
        return Err(format!("has signatures: {}", s.join(", ")));
    }
    if !dev.mount_points.is_empty() {
        return Err(format!("mounted at {}", join_paths(&dev.mount_points)));
    }
    if !dev.holders.is_empty() {
        return Err(format!("held by {}", dev.holders.join(", ")));
    }
    if dev.held_exclusively {
        return Err("open exclusively by another user (O_EXCL open failed)".into());
    }
    if dev.size_bytes == 0 {
        return Err("no medium (size 0)".into());
    }
    Ok(())
}

fn join_paths(p: &[PathBuf]) -> String {
    let shown: Vec<String> = p.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// A pattern names a class explicitly when it has no wildcard at all, or when its text spells
/// the class ("/dev/loop*" names loop devices; "/dev/*" names nothing in particular).
fn names_explicitly(pattern: &str, class: &str) -> bool {
    let literal = !pattern.contains(['*', '?', '[']);
    let spelled = match class {
        "dm" => pattern.contains("dm-") || pattern.contains("/mapper/"),
        "rom" => pattern.contains("sr") || pattern.contains("cdrom"),
        c => pattern.contains(c),
    };
    literal || spelled
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
