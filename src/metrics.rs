//! Prometheus metrics (docs/metrics.md), kept in prometheus-client's types and encoded as
//! OpenMetrics text for `crate::server::metrics`. Counters are bumped where things happen;
//! volume, device and NFS server gauges are read from the state that already holds them (the
//! ledgers, the device inventory, `os::nfscalls`) at each scrape.

use crate::discovery::inventory::Inventory;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
/// Sources read at each scrape, with their label, for as long as they live.
type Sources<L, T> = Vec<(L, Weak<T>)>;

/// Something that holds volumes and can count them when scraped (a backend's ledger).
pub trait VolumeCount: Send + Sync {
    fn volumes(&self) -> usize;
}

/// A backend with named pools (hostpath): whether each is usable, at each scrape.
pub trait PoolStates: Send + Sync {
    fn pool_states(&self) -> Vec<(String, bool)>;
}

struct Metrics {
    rpc: Histograms,
    commits: Counter,
    background_syncs: Counter,
    journal_damaged: Gauge,
    unexplained_dirs: Gauge,
    /// Set once the driver registers itself with the kubelet (exported from then on).
    kubelet_registered: OnceLock<Gauge>,
    ledgers: Mutex<Sources<String, dyn VolumeCount>>,
    inventories: Mutex<Sources<(), Inventory>>,
    pools: Mutex<Sources<String, dyn PoolStates>>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        // 0.1 ms to 26 s, a factor of 4 apart: capability calls and a slow mkfs in one view.
        rpc: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1e-4, 4.0, 10))),
        commits: Counter::default(),
        background_syncs: Counter::default(),
        journal_damaged: Gauge::default(),
        unexplained_dirs: Gauge::default(),
        kubelet_registered: OnceLock::new(),
        ledgers: Mutex::default(),
        inventories: Mutex::default(),
        pools: Mutex::default(),
    })
}

/// Counts one durable commit (an fsync or fdatasync the driver waits for).
pub fn count_commit() {
    metrics().commits.inc();
}

pub fn commits() -> u64 {
    metrics().commits.get()
}

/// Counts one sync that no operation waits for (journal compaction, in its own thread).
pub fn count_background_sync() {
    metrics().background_syncs.inc();
}

pub fn background_syncs() -> u64 {
    metrics().background_syncs.get()
}

/// Whether the state journal knows it lost changes (damage found, or restored from an older
/// copy).
pub fn set_journal_damaged(damaged: bool) {
    metrics().journal_damaged.set(damaged.into());
}

/// Counts directories found at start that no intact record explains and that were kept.
pub fn add_unexplained_dirs(n: u64) {
    metrics().unexplained_dirs.inc_by(n as i64);
}

pub fn set_kubelet_registered(registered: bool) {
    metrics()
        .kubelet_registered
        .get_or_init(Gauge::default)
        .set(registered.into());
}

/// Times one gRPC call: `path` is `/<service>/<method>`.
pub fn observe_rpc(path: &str, code: tonic::Code, elapsed: Duration) {
    let (service, method) = rpc_labels(path);
    let labels = vec![
        ("service", service.to_string()),
        ("method", method.to_string()),
        ("code", format!("{code:?}")),
    ];
    let secs = elapsed.as_secs_f64();
    metrics().rpc.get_or_create(&labels).observe(secs);
}

/// The labels of a call's path when csi.proto declares it, else `other`: a client must not be
/// able to make new series by calling methods that do not exist.
fn rpc_labels(path: &str) -> (&str, &str) {
    static DECLARED: OnceLock<HashSet<String>> = OnceLock::new();
    let declared = DECLARED.get_or_init(|| {
        let proto = include_str!("../proto/csi.proto");
        let mut service = "";
        let mut names = HashSet::new();
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap_or("");
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or("");
                names.insert(format!("/csi.v1.{service}/{method}"));
            }
        }
        names
    });
    match path.trim_start_matches('/').split_once('/') {
        Some(labels) if declared.contains(path) => labels,
        _ => ("other", "other"),
    }
}

/// Counts the volumes of `backend` held by `ledger` at each scrape, for as long as it lives.
pub fn count_volumes(backend: &str, ledger: Weak<dyn VolumeCount>) {
    lock(&metrics().ledgers).push((backend.to_string(), ledger));
}

/// Reports the pools of `backend` at each scrape, for as long as they live.
pub fn watch_pools(backend: &str, pools: Weak<dyn PoolStates>) {
    lock(&metrics().pools).push((backend.to_string(), pools));
}

/// Counts the devices of `inventory` at each scrape, for as long as it lives.
pub fn count_devices(inventory: Weak<Inventory>) {
    lock(&metrics().inventories).push(((), inventory));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A gauge family that `fill` sets from every source of `list` still alive, with its label;
/// the sources that are gone are forgotten.
fn scrape<L, T: ?Sized>(
    list: &Mutex<Sources<L, T>>,
    fill: impl Fn(&Family<Labels, Gauge>, &L, &T),
) -> Family<Labels, Gauge> {
    let family = Family::default();
    lock(list).retain(|(label, source)| {
        let Some(source) = source.upgrade() else {
            return false;
        };
        fill(&family, label, &source);
        true
    });
    family
}

/// Registers each `name: help => metric` with registry `r`: a table of the series.
macro_rules! register {
    ($r:ident, $($name:literal: $help:literal => $metric:expr,)*) => {
        $($r.register($name, $help, $metric);)*
    };
}

/// The OpenMetrics text of the series `register` adds to a registry of names under `prefix`
/// (also `nodeloss::metrics`').
pub fn text(prefix: &str, register: impl FnOnce(&mut Registry)) -> String {
    let mut r = Registry::with_prefix(prefix);
    register(&mut r);
    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}

/// The OpenMetrics text of every series.
pub fn render() -> String {
    let m = metrics();
    let volumes = scrape(&m.ledgers, |family, backend, ledger| {
        let labels = vec![("backend", backend.clone())];
        let n = ledger.volumes() as i64;
        family.get_or_create(&labels).inc_by(n);
    });
    let devices = scrape(&m.inventories, |family, (), inventory| {
        for e in inventory.snapshot() {
            let labels = vec![
                ("state", e.state.as_str().into()),
                ("claim", e.claim.kind().into()),
            ];
            family.get_or_create(&labels).inc();
        }
    });
    let pools_up = scrape(&m.pools, |family, backend, pools| {
        for (pool, up) in pools.pool_states() {
            let labels = vec![("backend", backend.clone()), ("pool", pool)];
            family.get_or_create(&labels).set(up.into());
        }
    });
    let (nfs_up, nfs_abandoned): (Family<Labels, Gauge>, Family<Labels, Gauge>) =
        Default::default();
    for s in crate::os::nfscalls::servers() {
        let labels = vec![("server", s.name)];
        if s.abandoned > 0 {
            nfs_abandoned.get_or_create(&labels).set(s.abandoned as i64);
        }
        if !s.resolver {
            nfs_up.get_or_create(&labels).set(s.answering.into());
        }
    }
    text("ferrovol", |r| {
        register! { r,
            "rpc_duration_seconds": "CSI calls served, timed, by service, method and gRPC code"
                => m.rpc.clone(),
            "state_commits": "Durable commits (fsync/fdatasync) that operations waited for"
                => m.commits.clone(),
            "state_background_syncs": "Syncs of journal compaction, which no operation waits for"
                => m.background_syncs.clone(),
            "state_journal_damaged": "1 when the state journal knows it lost changes (damaged, or restored from an older copy)"
                => m.journal_damaged.clone(),
            "unexplained_directories": "Directories kept at start that no intact state record explains"
                => m.unexplained_dirs.clone(),
            "volumes": "Volumes this process holds, by backend" => volumes,
            "devices": "Block devices in this node's inventory" => devices,
            "pool_up": "1 while a storage pool (a hostpath base path) is usable, 0 while it is missing or refused"
                => pools_up,
            "nfs_server_up": "0 while the NFS server is known not to answer kernel calls, else 1"
                => nfs_up,
            "nfs_abandoned_kernel_calls": "Kernel calls to an NFS server still running past their deadline"
                => nfs_abandoned,
        }
        if let Some(g) = m.kubelet_registered.get() {
            register! { r,
                "kubelet_registered": "Whether the kubelet reported the driver registered (1) or not yet or refused (0)"
                    => g.clone(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn renders_observed_calls() {
        super::observe_rpc(
            "/csi.v1.Controller/CreateVolume",
            tonic::Code::Ok,
            Duration::from_micros(300),
        );
        let text = super::render();
        let line = "ferrovol_rpc_duration_seconds_bucket{le=\"0.0004\",service=\"csi.v1.Controller\",method=\"CreateVolume\",code=\"Ok\"} 1";
        assert!(text.contains(line), "{text}");
    }

    #[test]
    fn a_method_the_proto_does_not_declare_is_one_bounded_label() {
        for i in 0..3 {
            super::observe_rpc(
                &format!("/csi.v1.Controller/MadeUp{i}"),
                tonic::Code::Unimplemented,
                Duration::from_micros(10),
            );
        }
        super::observe_rpc(
            "/x.Y/Z",
            tonic::Code::Unimplemented,
            Duration::from_micros(10),
        );
        let text = super::render();
        assert!(!text.contains("MadeUp") && !text.contains("x.Y"), "{text}");
        assert!(
            text.contains("ferrovol_rpc_duration_seconds_count{service=\"other\",method=\"other\",code=\"Unimplemented\"} 4"),
            "{text}"
        );
    }

    #[test]
    fn a_server_that_answered_is_up() {
        let source = "metrics-test-server:/export";
        crate::os::nfscalls::with_deadline(source, "statfs", Duration::from_secs(60), || Ok(()))
            .unwrap();
        let text = super::render();
        assert!(
            text.contains("ferrovol_nfs_server_up{server=\"metrics-test-server\"} 1"),
            "{text}"
        );
    }
}
