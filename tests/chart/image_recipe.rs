//! scripts/image.sh builds the ferrovol image without a container engine from what it reads in
//! the Dockerfile. This checks that what it reads is the Dockerfile's final stage: the same
//! Debian suite, packages (less those purged again), file capability, user, entrypoint and
//! command, and that the stage holds nothing else image.sh would miss.

use crate::common::helm::root;
use std::collections::BTreeSet;
use std::process::Command;

/// The Dockerfile's final stage, continuation lines joined.
fn final_stage() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let lines: Vec<String> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let start = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[start..].to_vec()
}

/// The package names after `apt-get VERB` in `stage`, up to the next `&&`.
fn apt(stage: &[String], verb: &str) -> BTreeSet<String> {
    let needle = format!("apt-get {verb}");
    let mut out = BTreeSet::new();
    for line in stage {
        for part in line.split(needle.as_str()).skip(1) {
            let words = part.split("&&").next().unwrap().split_whitespace();
            out.extend(words.filter(|w| !w.starts_with('-')).map(String::from));
        }
    }
    out
}

fn instruction(stage: &[String], name: &str) -> String {
    let prefix = format!("{name} ");
    stage
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or("")
        .to_string()
}

/// `scripts/image.sh --print-recipe` as key -> value.
fn recipe() -> std::collections::BTreeMap<String, String> {
    let out = Command::new("bash")
        .arg(root().join("scripts/image.sh"))
        .arg("--print-recipe")
        .output()
        .expect("running scripts/image.sh");
    assert!(
        out.status.success(),
        "scripts/image.sh --print-recipe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn image_sh_reads_the_dockerfiles_final_stage() {
    let stage = final_stage();
    let recipe = recipe();

    let installed = apt(&stage, "install");
    let purged = apt(&stage, "purge");
    let want: BTreeSet<String> = installed.difference(&purged).cloned().collect();
    let got: BTreeSet<String> = recipe["packages"]
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(
        !want.is_empty(),
        "the Dockerfile's final stage installs no package"
    );
    assert_eq!(
        got, want,
        "image.sh's packages differ from the Dockerfile's"
    );

    let from = stage[0].split_whitespace().nth(1).unwrap();
    assert!(
        from.ends_with(&format!("debian:{}-slim", recipe["suite"])),
        "the Dockerfile's base {from} is not Debian {}",
        recipe["suite"]
    );

    let setcap = stage
        .iter()
        .find_map(|l| l.split("setcap ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the Dockerfile sets a file capability");
    assert_eq!(recipe["capability"], setcap);
    for name in ["USER", "ENTRYPOINT", "CMD"] {
        assert_eq!(
            recipe[&name.to_lowercase()],
            instruction(&stage, name),
            "{name}"
        );
    }
}

/// image.sh reads one apt-get install and copies only the binary: a second install line, a
/// second COPY or an instruction it does not know would be left out of its image.
#[test]
fn the_final_stage_holds_only_what_image_sh_reads() {
    let stage = final_stage();
    let installs: usize = stage
        .iter()
        .map(|l| l.matches("apt-get install").count())
        .sum();
    assert_eq!(installs, 1, "one apt-get install in the final stage");
    for line in &stage[1..] {
        let word = line.split_whitespace().next().unwrap();
        match word {
            "RUN" | "USER" | "ENTRYPOINT" | "CMD" => {}
            "COPY" => assert_eq!(line, "COPY --from=build /out/ferrovol /usr/bin/ferrovol"),
            other => panic!("scripts/image.sh does not know the Dockerfile's {other}: {line}"),
        }
    }
    let runs: Vec<&String> = stage.iter().filter(|l| l.starts_with("RUN ")).collect();
    let known = [
        "apt-get",
        "rm -rf /var/lib/apt/lists",
        "setcap",
        "find / -xdev",
    ];
    for run in runs {
        for step in run.trim_start_matches("RUN ").split("&&").map(str::trim) {
            assert!(
                known
                    .iter()
                    .any(|k| step.starts_with(k) || step.contains("apt-get")),
                "scripts/image.sh does not do the Dockerfile's step: {step}"
            );
        }
    }
}
