//! Test harness: runs the real `ferrovol serve` binary on a Unix socket inside a fresh temporary
//! directory, hands out typed CSI clients, and on drop kills the driver and removes every mount
//! and loop device it (or the test) left under that directory.
//!
//! Pieces: `process` (spawning children safely), `scratch` (the temp dir), `driver` (the
//! process and its CSI clients), `serve` (the `ferrovol serve` command line and the wait for
//! Probe, shared with the ops bench), `hostpath` (the hostpath backend's fixture: its start
//! arguments, id format and leak check), `requests`, `system` (mount table, loop devices,
//! tools, file systems on loop devices).
//!
//! Fixtures some binaries use, as `common::<name>`: `ganesha` (a real nfs-ganesha), `nfs` and
//! `nfs_snap` (the NFS driver against it), `deadserver` and `hungfs` (an NFS server that never
//! answers, over the network and as a mount), `disks` and `fake_sysfs` (loop devices with chosen
//! signatures and identities), `hostpath_snap` (snapshot fixtures), `helm`.
//!
//! Layout of a scratch directory:
//!   csi.sock        the endpoint
//!   driver.log      stdout and stderr of every run of the driver (shown when a start fails)
//!   data/           --data-dir
//!   state/          --state-dir (records live in the journal, state/journal/)
//!   hostpath/       --hostpath-base unless the test picks another one
//!   kubelet/        staging and target paths handed to NodeStage / NodePublish

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use ferrovol::proto as csi;
use ferrovol::proto::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};
use std::ffi::OsString;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub use csi::volume_capability::access_mode::Mode;

mod driver;
mod hostpath;
mod process;
mod requests;
mod scratch;
mod serve;
mod system;
mod xattr;

pub mod deadserver;
pub mod disks;
pub mod fake_sysfs;
pub mod ganesha;
pub mod helm;
pub mod hostpath_snap;
pub mod hungfs;
pub mod nfs;
pub mod nfs_snap;

pub use driver::*;
pub use process::*;
pub use requests::*;
pub use scratch::*;
pub use serve::*;
pub use system::*;
#[allow(unused_imports)] // Only the tests that plant markers by hand use it.
pub use xattr::*;

/// The node id every test driver runs as.
pub const NODE: &str = "test-node";
pub const MIB: i64 = 1 << 20;

/// How long a driver gets to answer Probe after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
