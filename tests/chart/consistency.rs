//! Keeps the chart, the plain manifests, the image recipe and the docs equal to the code.
//!
//! The full offline validation (helm lint --strict, helm template per values combination,
//! kubeconform -strict) is scripts/chart-check.sh; these tests cover what must stay equal:
//! deploy/ and a fresh render, the chart's CRD and `ferrovol crd`, the host tools the code runs
//! and the list in docs/install.md and the Dockerfile, the sidecar tags in values.yaml and docs.

use crate::common::helm;

use helm::{helm, root, template};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

#[test]
fn deploy_manifests_equal_a_fresh_render() {
    let Some(helm) = helm() else {
        eprintln!("SKIPPED: helm is not installed; scripts/chart-check.sh installs it and checks this too");
        return;
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("deploy/values")).expect("deploy/values") {
        let values = entry.expect("deploy/values entry").path();
        let stem = values.file_stem().unwrap().to_string_lossy().into_owned();
        let manifest = if stem == "default" {
            "deploy/ferrovol.yaml".to_string()
        } else {
            format!("deploy/ferrovol-{stem}.yaml")
        };
        let rendered = template(
            &helm,
            [
                OsStr::new("--include-crds"),
                OsStr::new("-f"),
                values.as_os_str(),
            ],
            &format!("-f {}", values.display()),
        );
        assert!(
            rendered == read(&manifest),
            "{manifest} differs from a fresh render of {}; run scripts/chart-check.sh --update",
            values.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected deploy/values/default.yaml and more, found {checked}"
    );
}

#[test]
fn chart_crd_equals_ferrovol_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovol"))
        .arg("crd")
        .output()
        .expect("running ferrovol crd");
    if !out.status.success() {
        eprintln!(
            "SKIPPED: this ferrovol has no working `crd` subcommand yet ({}); the chart's CRD is a placeholder",
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("no output")
        );
        return;
    }
    let printed = String::from_utf8(out.stdout).expect("ferrovol crd prints UTF-8");
    let file = "charts/ferrovol/crds/blockdevices.ferrovol.io.yaml";
    assert!(
        printed == read(file),
        "{file} differs from `ferrovol crd`; regenerate it with: cargo run -- crd > {file}"
    );
}

/// Rows of the host-tool table in docs/install.md: (program, Debian package, status).
fn documented_tools() -> Vec<(String, String, String)> {
    let doc = read("docs/install.md");
    let table = doc
        .split("<!-- host-tools: begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- host-tools: end -->").next())
        .expect("docs/install.md has a host-tools table between its markers");
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect();
            assert!(cells.len() >= 6, "host-tools row needs 4 columns: {l}");
            (cells[1].clone(), cells[2].clone(), cells[4].clone())
        })
        .collect()
}

/// Programs the code runs: the literal argument of every `Command::new(` under src/.
fn programs_in_code() -> BTreeSet<String> {
    fn walk(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("reading src/") {
            let path = entry.expect("src entry").path();
            if path.is_dir() {
                walk(&path, found);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            // Unit-test files run tools to prepare fixtures; the driver never calls those.
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("_tests.rs"))
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("reading a source file");
            // Code under #[cfg(test)] at the end of a file is test code too.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for (at, _) in text.match_indices("Command::new(") {
                let arg = text[at + "Command::new(".len()..].trim_start();
                let name = arg
                    .strip_prefix('"')
                    .and_then(|a| a.split('"').next())
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: Command::new without a string literal; write the program name \
                             literally so docs/install.md's host-tool list can be checked",
                            path.display()
                        )
                    });
                found.insert(name.rsplit('/').next().unwrap_or(name).to_string());
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(&root().join("src"), &mut found);
    found
}

#[test]
fn host_tools_in_docs_match_the_code() {
    let docs = documented_tools();
    assert!(!docs.is_empty(), "docs/install.md lists no host tools");
    let called: BTreeSet<String> = docs
        .iter()
        .filter(|(_, _, status)| status == "called")
        .map(|(p, _, _)| p.clone())
        .collect();
    let listed: BTreeSet<String> = docs.iter().map(|(p, _, _)| p.clone()).collect();
    for (p, _, status) in &docs {
        assert!(
            status == "called" || status == "planned",
            "docs/install.md: status of {p} must be called or planned, not {status:?}"
        );
    }
    let code = programs_in_code();
    let undocumented: Vec<_> = code.difference(&listed).collect();
    assert!(
        undocumented.is_empty(),
        "src/ runs {undocumented:?}, missing from docs/install.md's host tools"
    );
    let not_called: Vec<_> = called.difference(&code).collect();
    assert!(
        not_called.is_empty(),
        "docs/install.md marks {not_called:?} called, but src/ never runs them"
    );
    let planned_but_called: Vec<_> = code.difference(&called).collect();
    assert!(
        planned_but_called.is_empty(),
        "src/ runs {planned_but_called:?}: mark them called in docs/install.md"
    );
}

#[test]
fn dockerfile_installs_every_host_tool_package() {
    let dockerfile = read("Dockerfile");
    let install = dockerfile
        .split("apt-get install")
        .nth(1)
        .and_then(|rest| rest.split("&&").next())
        .expect("Dockerfile has an apt-get install line");
    let installed: BTreeSet<&str> = install.split_whitespace().collect();
    for (program, package, _) in documented_tools() {
        assert!(
            installed.contains(package.as_str()),
            "the image lacks package {package} for {program}: add it to the Dockerfile's apt-get install"
        );
    }
}

#[test]
fn sidecar_images_in_docs_match_values() {
    let values = read("charts/ferrovol/values.yaml");
    let docs = read("docs/install.md");
    let mut images = Vec::new();
    let mut repo = None;
    for line in values.lines().map(str::trim) {
        if let Some(r) = line.strip_prefix("repository: registry.k8s.io/") {
            repo = Some(format!("registry.k8s.io/{r}"));
        } else if let (Some(t), Some(r)) = (line.strip_prefix("tag: "), repo.take()) {
            images.push(format!("{r}:{t}"));
        }
    }
    assert_eq!(
        images.len(),
        5,
        "values.yaml should name 5 sidecar images, found {images:?}"
    );
    for image in images {
        assert!(
            docs.contains(&format!("`{image}`")),
            "docs/install.md does not list `{image}`"
        );
    }
}
