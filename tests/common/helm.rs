//! helm for the chart tests (tests/chart): where it is installed, and `helm template` of
//! charts/ferrovol as its release `ferrovol` in namespace `ferrovol`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// helm from PATH, or where `go install` puts it (scripts/chart-check.sh installs it).
pub fn helm() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("helm"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let gopath = Command::new("go")
        .args(["env", "GOPATH"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("bin/helm"));
    on_path.into_iter().chain(gopath).find(|p| p.is_file())
}

/// What `helm template` of the chart with `args` after it prints; a failure panics with
/// `label` (which render it was) and helm's stderr.
pub fn template<I, S>(helm: &Path, args: I, label: &str) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(helm)
        .current_dir(root())
        .args([
            "template",
            "ferrovol",
            "charts/ferrovol",
            "--namespace",
            "ferrovol",
        ])
        .args(args)
        .output()
        .expect("running helm template");
    assert!(
        out.status.success(),
        "helm template {label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm output is UTF-8")
}
