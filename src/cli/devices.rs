//! `ferrovol devices`: one discovery scan, printed as a table (or JSON). Reads only; it never
//! writes to a device or to the inventory.

use crate::discovery::{scan, Claim, Device, Entry, Filters};
use crate::server::BoxResult;
use clap::Args;
use std::path::PathBuf;

/// Which devices may hold volumes: the device backend's (`serve`) and discovery's (`devices`).
#[derive(Debug, Args)]
pub struct DeviceFilterArgs {
    /// Device backend: glob on the /dev path or any by-id/by-path link of a device that may
    /// hold volumes (repeatable). With none, no device is a candidate: the backend claims
    /// nothing, and lists (and `devices` prints) only what it sees.
    #[arg(long = "device-include", value_name = "PATTERN")]
    pub include: Vec<String>,

    /// Device backend: glob of devices never to use (repeatable); beats any include.
    #[arg(long = "device-exclude", value_name = "PATTERN")]
    pub exclude: Vec<String>,

    /// Device backend: YAML file with include/exclude rules by path, vendor and model.
    #[arg(long = "device-config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub filter: DeviceFilterArgs,
    /// Further paths whose disks are the OS's (besides / and /boot): the state dir, the kubelet dir.
    #[arg(long = "protect", value_name = "PATH", default_values = ["/var/lib/kubelet"])]
    pub protect: Vec<PathBuf>,
    /// Node name that qualifies node-local identities and picks the config's node sections.
    /// Default: the hostname.
    #[arg(long = "node-id")]
    pub node: Option<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DevicesArgs) -> BoxResult<()> {
    let node = node_or_hostname(args.node)?;
    let filters = Filters::for_node(
        &args.filter.include,
        &args.filter.exclude,
        args.filter.config.as_deref(),
        &args.protect,
        Some(&node),
    )?;
    let devs = scan::scan_all(&node, &filters)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&devs)?);
    } else {
        print!("{}", table(&devs));
    }
    Ok(())
}

/// `node`, or this host's name.
pub(super) fn node_or_hostname(node: Option<String>) -> BoxResult<String> {
    Ok(match node {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    })
}

/// The table: one line per device.
pub fn table(devs: &[Device]) -> String {
    let rows = devs.iter().map(|d| {
        let sig = d
            .filesystem
            .as_ref()
            .map(|f| f.fs_type.clone())
            .or_else(|| d.partition_table.clone())
            .unwrap_or_else(|| "-".into());
        [
            d.uid.clone(),
            d.dev_path.display().to_string(),
            human(d.size_bytes),
            d.device_type.as_str().into(),
            sig,
            if d.candidate { "yes" } else { "no" }.into(),
            d.excluded_reason.clone().unwrap_or_else(|| "-".into()),
        ]
    });
    align("UID PATH SIZE TYPE FS/PT CANDIDATE REASON", rows)
}

/// The live inventory a serving driver keeps (`<state-dir>/devices.json`), as written last,
/// with the node's own claims from its state journal.
pub fn read_inventory(state_dir: &std::path::Path) -> std::io::Result<Vec<Entry>> {
    let path = state_dir.join("devices.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("device inventory {}: {e} (has `ferrovol serve --backends device` run with this state dir?)", path.display()),
        )
    })?;
    let mut f = crate::discovery::inventory::Persisted::parse(&path, &bytes)?;
    let journal = state_dir.join("journal");
    if journal.exists() {
        let live = crate::state::journal::peek(&journal)?;
        let claims = crate::backend::device::claims::from_records(&live, &f.node)?;
        for e in &mut f.devices {
            if let Some(c) = claims.get(&e.device.uid) {
                e.claim = c.clone();
            }
        }
    }
    Ok(f.devices)
}

/// The inventory table: one line per device ever seen, with its state and claim (volume and
/// node). REASON names the other devices that present the same identity, else why a Released
/// device was not reused, else why discovery excludes it.
pub fn inventory_table(entries: &[Entry]) -> String {
    let rows = entries.iter().map(|e| {
        let d = &e.device;
        let excluded = d.excluded_reason.clone().unwrap_or_else(|| "-".into());
        let (volume, reason) = match &e.claim {
            Claim::Unclaimed => ("-".to_string(), excluded),
            Claim::Claimed { volume, node } => (format!("{volume} ({node})"), "-".to_string()),
            Claim::Released {
                volume,
                reason,
                node,
            } => (format!("{volume} ({node})"), reason.clone()),
        };
        // Two devices presenting one identity outweigh any other reason.
        let reason = match e.conflict.as_slice() {
            [] => reason,
            others => format!("identity also presented by /dev/{}", others.join(", /dev/")),
        };
        [
            d.uid.clone(),
            d.dev_path.display().to_string(),
            human(d.size_bytes),
            e.state.as_str().into(),
            e.claim.kind().into(),
            volume,
            reason,
        ]
    });
    align("UID PATH SIZE STATE CLAIM VOLUME REASON", rows)
}

/// `rows` in columns under `header` (its names space separated); the last column is not padded.
fn align(header: &str, rows: impl Iterator<Item = [String; 7]>) -> String {
    let mut names = header.split(' ').map(String::from);
    let head = std::array::from_fn(|_| names.next().unwrap_or_default());
    let rows: Vec<[String; 7]> = std::iter::once(head).chain(rows).collect();
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = if i == 6 { 0 } else { widths[i] }))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// 1.5G, 64M, 512K: binary units, one decimal when it matters.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() < 0.05 || v >= 100.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_inventory_prints_its_header_alone() {
        assert_eq!(
            super::inventory_table(&[]),
            "UID  PATH  SIZE  STATE  CLAIM  VOLUME  REASON\n"
        );
        assert!(super::table(&[]).starts_with("UID  PATH  SIZE  TYPE  FS/PT  CANDIDATE  REASON"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(super::human(64 << 20), "64M");
        assert_eq!(super::human(1536 << 20), "1.5G");
        assert_eq!(super::human(256 << 30), "256G");
        assert_eq!(super::human(100), "100B");
    }
}
