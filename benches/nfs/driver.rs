//! The NFS driver's half of benches/nfs.rs (its `mod driver`): `ferrovol serve --driver nfs`
//! as a child process, CreateVolume + DeleteVolume pairs through real gRPC, the bare NFS calls
//! those pairs make, and CreateVolume latency while another server hangs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovol::nfs::NfsClient;
use ferrovol::proto as csi;
use ferrovol::proto::controller_client::ControllerClient;
use tonic::transport::Channel;

/// The NFS calls one driver pair makes, made directly with the same client: CreateVolume reads
/// the (absent) record, writes it Creating, makes the directory, writes it Ready; DeleteVolume
/// reads it, writes it Deleting, removes the directory, removes the record.
pub fn driver_sequence_pair(c: &NfsClient, worker: usize, n: u64) {
    let dir = format!("seq-w{worker}-{n}");
    let rec = format!(".ferrovol/volumes/seq-w{worker}-{n}.json");
    let body = br#"{"version":1,"state":"creating","sub_dir":"x"}"#;
    assert!(c.read_file(&rec).expect("read record").is_none());
    c.write_file_atomic(&rec, body).expect("write creating");
    c.mkdir(&dir, 0o777).expect("mkdir");
    c.write_file_atomic(&rec, body).expect("write ready");
    assert!(c.read_file(&rec).expect("read record").is_some());
    c.write_file_atomic(&rec, body).expect("write deleting");
    assert!(c.remove_tree(&dir).expect("remove dir"));
    assert!(c.remove_file(&rec).expect("remove record"));
}

pub struct Served {
    child: Child,
    _dir: tempfile::TempDir,
    pub channel: Channel,
}

impl Served {
    pub async fn start(timeout: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("csi.sock");
        let log = std::fs::File::create(dir.path().join("driver.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferrovol"))
            .args([
                "serve",
                "--driver",
                "nfs",
                "--node-id",
                "bench",
                "--nfs-timeout",
                timeout,
            ])
            .arg("--endpoint")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--publish-root")
            .arg(dir.path().join("kubelet"))
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ferrovol serve");
        let channel = connect(&sock).await;
        Served {
            child,
            _dir: dir,
            channel,
        }
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }
}

async fn connect(sock: &Path) -> Channel {
    let ep = ferrovol::server::Endpoint::Unix(PathBuf::from(sock));
    let t0 = Instant::now();
    loop {
        if sock.exists() {
            if let Ok(ch) = ferrovol::client::connect(&ep).await {
                return ch;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "driver did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn request(name: &str, params: &HashMap<String, String>) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.to_string(),
        parameters: params.clone(),
        volume_capabilities: vec![csi::VolumeCapability {
            access_type: Some(csi::volume_capability::AccessType::Mount(Default::default())),
            access_mode: Some(csi::volume_capability::AccessMode {
                mode: csi::volume_capability::access_mode::Mode::MultiNodeMultiWriter as i32,
            }),
        }],
        ..Default::default()
    }
}

pub async fn pair(c: &mut ControllerClient<Channel>, params: &HashMap<String, String>, name: &str) {
    let v = c
        .create_volume(request(name, params))
        .await
        .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}"))
        .into_inner()
        .volume
        .unwrap();
    c.delete_volume(csi::DeleteVolumeRequest {
        volume_id: v.volume_id,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("DeleteVolume {name}: {e}"));
}

/// Pairs per second through the driver with `conc` concurrent callers for `secs`.
pub async fn driver_rate(
    s: &Served,
    params: &HashMap<String, String>,
    conc: usize,
    secs: Duration,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|w| {
            let (mut c, stop, done, p) =
                (s.controller(), stop.clone(), done.clone(), params.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    pair(&mut c, &p, &format!("pvc-c{conc}-w{w}-{n}")).await;
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50 and p99 of `n` CreateVolumes (each followed by an untimed DeleteVolume) on the live share.
pub async fn create_latencies(
    s: &Served,
    params: &HashMap<String, String>,
    tag: &str,
    n: usize,
) -> (Duration, Duration) {
    let mut c = s.controller();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let v = c
            .create_volume(request(&format!("lat-{tag}-{i}"), params))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        lat.push(t.elapsed());
        c.delete_volume(csi::DeleteVolumeRequest {
            volume_id: v.volume_id,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    lat.sort();
    (pct(&lat, 0.5), pct(&lat, 0.99))
}

/// Keeps `conc` CreateVolumes against the hung server in flight until dropped.
pub fn hammer_dead(
    s: &Served,
    params: HashMap<String, String>,
    conc: usize,
) -> (Arc<AtomicBool>, Arc<AtomicU64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    for w in 0..conc {
        let (mut c, stop, failed, p) =
            (s.controller(), stop.clone(), failed.clone(), params.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c.create_volume(request(&format!("dead-{w}-{n}"), &p)).await;
                assert!(r.is_err(), "a hung server cannot create");
                failed.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        });
    }
    (stop, failed)
}
