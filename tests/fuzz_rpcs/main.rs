//! A seeded fuzz run of every CSI RPC against the real driver (hostpath backend,
//! real gRPC over the Unix socket), with plausible and hostile values in every field.
//!
//! After every call: the driver still answers Probe, the code is neither Unknown nor Internal
//! (the driver refuses bad input with a precise code; Internal would blame itself), and its log
//! shows no panic. After the run: the sentinels planted outside the publish root are intact,
//! nothing generated appeared in the scratch directory's top level, in / or in /tmp, and no
//! mount of ours appeared outside the publish root.
//!
//! Deterministic: each RPC has its own fixed seed. FERROVOL_FUZZ_CASES (default 300 per RPC)
//! and FERROVOL_FUZZ_SEED (mixed into every RPC's seed) explore further by hand.

mod calls;
#[path = "../common/mod.rs"]
mod common;
mod escape;
mod plausible;
mod strategies;

use calls::*;
use common::*;
use ferrovol::proto as csi;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strategies::*;

/// Per call: a driver that takes longer than this is counted as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

struct Fuzz {
    rt: tokio::runtime::Runtime,
    driver: Driver,
    pools: P,
    cases: u32,
    seed: u64,
    /// rpc -> code -> count
    codes: Mutex<BTreeMap<&'static str, BTreeMap<String, u32>>>,
    violations: Mutex<Vec<String>>,
    times: Mutex<BTreeMap<&'static str, Duration>>,
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// FNV-1a: a stable seed per RPC name.
fn fnv(s: &str, mix: u64) -> u64 {
    s.bytes().fold(0xcbf29ce484222325 ^ mix, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn short(s: String) -> String {
    if s.len() <= 700 {
        return s;
    }
    let mut end = 700;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

impl Fuzz {
    /// Runs `cases` generated requests through `call`; checks each outcome.
    fn run<S, F, Fut, T>(&self, rpc: &'static str, strategy: S, call: F)
    where
        S: Strategy,
        S::Value: Debug + Clone,
        F: Fn(S::Value) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let config = Config {
            cases: self.cases,
            failure_persistence: None,
            max_shrink_iters: 0,
            ..Config::default()
        };
        let seed = fnv(rpc, self.seed).to_le_bytes().repeat(4);
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        let rpc_start = Instant::now();
        let result = runner.run(&strategy, |req| {
            // Formatted only when needed: a request with hundreds of map entries is costly to print.
            let copy = req.clone();
            let shown = move || short(format!("{copy:?}"));
            let t0 = Instant::now();
            let outcome = self
                .rt
                .block_on(async { tokio::time::timeout(CALL_TIMEOUT, call(req)).await });
            if std::env::var_os("FERROVOL_FUZZ_TRACE").is_some() {
                eprintln!("{rpc} {:?} {:.200}", t0.elapsed(), shown());
            }
            let code = match &outcome {
                Err(_) => "hung".to_string(),
                Ok(Ok(_)) => "Ok".to_string(),
                Ok(Err(s)) => format!("{:?}", s.code()),
            };
            *self
                .codes
                .lock()
                .unwrap()
                .entry(rpc)
                .or_default()
                .entry(code.clone())
                .or_default() += 1;
            if let Ok(Err(s)) = &outcome {
                if matches!(s.code(), tonic::Code::Unknown | tonic::Code::Internal) {
                    self.violate(format!(
                        "{rpc}: {:?} {:?} for {}",
                        s.code(),
                        s.message(),
                        shown()
                    ));
                }
            }
            if code == "hung" {
                self.violate(format!(
                    "{rpc}: no answer within {CALL_TIMEOUT:?} for {}",
                    shown()
                ));
            }
            if !self.alive() {
                self.violate(format!(
                    "{rpc}: driver stopped answering Probe after {}",
                    shown()
                ));
                return Err(TestCaseError::fail("driver is gone"));
            }
            Ok(())
        });
        self.times.lock().unwrap().insert(rpc, rpc_start.elapsed());
        if let Err(e) = result {
            self.violate(format!("{rpc}: the run stopped: {e}"));
            self.report_and_fail();
        }
    }

    fn violate(&self, what: String) {
        eprintln!("VIOLATION {what}");
        self.violations.lock().unwrap().push(what);
    }

    fn alive(&self) -> bool {
        let mut identity = self.driver.identity();
        self.rt.block_on(async {
            matches!(
                tokio::time::timeout(
                    Duration::from_secs(10),
                    identity.probe(csi::ProbeRequest {})
                )
                .await,
                Ok(Ok(_))
            )
        })
    }

    fn report_and_fail(&self) -> ! {
        let v = self.violations.lock().unwrap();
        panic!("{} violation(s):\n{}", v.len(), v.join("\n"));
    }
}

fn setup() -> Fuzz {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let driver = rt.block_on(Driver::start());
    let scratch = driver.root().to_path_buf();
    let kubelet = scratch.join("kubelet");
    let outside = scratch.join("outside");
    let tmp_target = std::env::temp_dir().join(format!("{MARK}-link-{}", std::process::id()));
    escape::plant(&scratch, &kubelet, &outside, &tmp_target);
    let pools = Arc::new(Pools {
        scratch,
        kubelet,
        outside,
        links: escape::LINKS.iter().map(|s| s.to_string()).collect(),
        ids: Mutex::new(Vec::new()),
        paths: Mutex::new(Vec::new()),
        staged: Mutex::new(Vec::new()),
        seen: Mutex::new(Default::default()),
    });
    // A staged and published volume of each access type, so node RPCs meet real mounts.
    rt.block_on(async {
        for (name, cap) in [("fzz-mnt", mount_cap()), ("fzz-blk", block_cap())] {
            let id = driver.create(name, 16 * MIB, cap.clone()).await.volume_id;
            let (staging, target) = driver.stage_and_publish(&id, name, cap).await;
            pools.add_id(id.clone());
            pools.staged.lock().unwrap().push((id, path_str(&staging)));
            let mut paths = pools.paths.lock().unwrap();
            paths.push(path_str(&staging));
            paths.push(path_str(&target));
        }
    });
    Fuzz {
        rt,
        driver,
        pools,
        cases: env_num("FERROVOL_FUZZ_CASES", 300) as u32,
        seed: env_num("FERROVOL_FUZZ_SEED", 0),
        codes: Mutex::new(BTreeMap::new()),
        violations: Mutex::new(Vec::new()),
        times: Mutex::new(BTreeMap::new()),
    }
}

#[test]
fn fuzz_every_rpc() {
    let started = Instant::now();
    let root_before = escape::names(std::path::Path::new("/"));
    let tmp_before = escape::names(&std::env::temp_dir());
    let mounts_before = escape::mounts();
    let f = setup();
    let outside_before = escape::tree(&f.pools.outside);
    let top_before = escape::names(&f.pools.scratch);

    identity_rpcs(&f);
    controller_rpcs(&f);
    node_rpcs(&f);
    delete_volume(&f);

    // The driver's own record of failures: a panic caught on the blocking pool or in a task.
    let log = f.driver.log();
    for line in log.lines().filter(|l| l.contains("panicked")) {
        f.violate(format!("driver log: {}", short(line.to_string())));
    }
    let outside_after = escape::tree(&f.pools.outside);
    if outside_after != outside_before {
        f.violate(format!(
            "the sentinel tree outside the roots changed:\nbefore {outside_before:#?}\nafter {outside_after:#?}"
        ));
    }
    let top_after = escape::names(&f.pools.scratch);
    if top_after != top_before {
        f.violate(format!(
            "new entries in the scratch directory: {:?}",
            top_after.difference(&top_before).collect::<Vec<_>>()
        ));
    }
    let mut seen = f.pools.seen.lock().unwrap().clone();
    // The scratch directory itself is new in /tmp, and its name is in every generated path.
    seen.remove(&*f.pools.scratch.file_name().unwrap().to_string_lossy());
    for (dir, before) in [("/", &root_before), ("/tmp", &tmp_before)] {
        let new = escape::new_generated(std::path::Path::new(dir), before, &seen, MARK);
        if !new.is_empty() {
            f.violate(format!("generated names appeared in {dir}: {new:?}"));
        }
    }
    let escaped = escape::escaped_mounts(
        &mounts_before,
        &f.pools.scratch,
        std::slice::from_ref(&f.pools.kubelet),
        MARK,
    );
    if !escaped.is_empty() {
        f.violate(format!("mounts outside the publish root: {escaped:#?}"));
    }

    let codes = f.codes.lock().unwrap();
    let total: u32 = codes.values().flat_map(|c| c.values()).sum();
    println!(
        "fuzz: {} RPCs, {total} cases in {:?}",
        codes.len(),
        started.elapsed()
    );
    for (rpc, by_code) in codes.iter() {
        let n: u32 = by_code.values().sum();
        let t = f
            .times
            .lock()
            .unwrap()
            .get(rpc)
            .copied()
            .unwrap_or_default();
        println!("  {rpc:<28} {n:>5} {:>6.1}s  {by_code:?}", t.as_secs_f64());
    }
    drop(codes);
    if !f.violations.lock().unwrap().is_empty() {
        f.report_and_fail();
    }
}

fn identity_rpcs(f: &Fuzz) {
    let id = || f.driver.identity();
    f.run("GetPluginInfo", Just(()), |_| async move {
        id().get_plugin_info(csi::GetPluginInfoRequest {}).await
    });
    f.run("GetPluginCapabilities", Just(()), |_| async move {
        id().get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
            .await
    });
    f.run("Probe", Just(()), |_| async move {
        id().probe(csi::ProbeRequest {}).await
    });
}
