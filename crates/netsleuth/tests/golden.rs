//! Golden files of the human report: `netsleuth analyze` of every lab fixture (its captures with its
//! node facts, as the lab's own analysis reads them), so a change of wording shows in review.
//!
//! The fixtures are discovered: every `fixtures/lab/<run>/` with a `run.json` must have its
//! `tests/golden/<run>.txt`, and every golden file its fixture. After a deliberate change (or a new
//! fixture), rewrite them with `NETSLEUTH_UPDATE_GOLDEN=1 cargo test -p netsleuth --test golden` and
//! review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The lab runs under `fixtures/lab`, by name.
fn fixture_runs() -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(workspace().join("fixtures/lab"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("run.json").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    runs
}

/// `netsleuth analyze` of a run's captures (paths relative to the workspace, so the report does not
/// depend on where the repository is) with its facts.json; UTC, no colour (a pipe).
fn report(run: &str, extra: &[&str]) -> String {
    let dir = Path::new("fixtures/lab").join(run);
    let mut captures: Vec<PathBuf> = std::fs::read_dir(workspace().join(&dir))
        .unwrap()
        .map(|e| dir.join(e.unwrap().file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    captures.sort();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netsleuth"));
    cmd.current_dir(workspace())
        .env_remove("NO_COLOR")
        .args(["analyze", "--utc"])
        .args(extra)
        .args(&captures);
    if workspace().join(&dir).join("facts.json").is_file() {
        cmd.arg("--node").arg(dir.join("facts.json"));
    }
    let out = cmd.output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{run}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compares `text` with the golden file `name`, or writes it under `NETSLEUTH_UPDATE_GOLDEN`.
/// Returns the mismatch, if any.
fn check(name: &str, text: &str) -> Option<String> {
    let path = golden_dir().join(format!("{name}.txt"));
    if std::env::var_os("NETSLEUTH_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, text).unwrap();
        return None;
    }
    let Ok(want) = std::fs::read_to_string(&path) else {
        return Some(format!("{name}: no golden file {}", path.display()));
    };
    if want == text {
        return None;
    }
    let first = want
        .lines()
        .zip(text.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(want.lines().count().min(text.lines().count()));
    Some(format!(
        "{name}: differs from {} from line {}:\n  golden: {:?}\n  now:    {:?}",
        path.display(),
        first + 1,
        want.lines().nth(first),
        text.lines().nth(first)
    ))
}

/// The layout rules every report keeps: 80 columns, and the cause within the first screen.
fn check_layout(name: &str, text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.chars().count() > 80 {
            bad.push(format!(
                "{name}:{}: {} columns: {l}",
                i + 1,
                l.chars().count()
            ));
        }
    }
    // The first finding's id is named within the first 24 lines (a terminal's first screen).
    let first_id = text
        .lines()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix('[')?
                .split_once("] ")?
                .1
                .split_once(':')
        })
        .map(|(id, _)| id.to_string());
    if let Some(id) = first_id {
        let at = text.lines().position(|l| l.contains(&id)).unwrap();
        if at >= 24 {
            bad.push(format!(
                "{name}: the cause {id} is first named on line {}",
                at + 1
            ));
        }
    } else if !text.starts_with("No incident found") {
        bad.push(format!(
            "{name}: neither a cause nor \"No incident found\" leads"
        ));
    }
    bad
}

#[test]
fn the_human_report_of_every_lab_fixture_matches_its_golden_file() {
    let runs = fixture_runs();
    assert!(runs.len() >= 12, "{runs:?}");
    let mut problems = Vec::new();
    for run in &runs {
        let text = report(run, &[]);
        problems.extend(check(run, &text));
        problems.extend(check_layout(run, &text));
    }
    // With the cluster's objects, the same capture names its pods, Services and nodes.
    for (run, name) in [
        ("conntrack-dnat-rebalance", "conntrack-dnat-rebalance.k8s"),
        ("conntrack-snat-remap", "conntrack-snat-remap.k8s"),
    ] {
        let text = report(run, &["--k8s", "fixtures/k8s/lab-cluster.json"]);
        problems.extend(check(name, &text));
        problems.extend(check_layout(name, &text));
    }
    // A golden file without its fixture is stale.
    if std::env::var_os("NETSLEUTH_UPDATE_GOLDEN").is_none() {
        for e in std::fs::read_dir(golden_dir()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let run = name.trim_end_matches(".txt").trim_end_matches(".k8s");
            if !runs.iter().any(|r| r == run) {
                problems.push(format!(
                    "golden file {name} has no fixture fixtures/lab/{run}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n(hint: after a deliberate change or a new fixture, \
         `NETSLEUTH_UPDATE_GOLDEN=1 cargo test -p netsleuth --test golden` rewrites them; review the diff)",
        problems.join("\n")
    );
}

/// `check --bundle` of every lab bundle keeps the same layout rules (no golden file: the bundles'
/// notes change with the collector, the layout must not).
#[test]
fn the_check_of_every_lab_bundle_fits_80_columns_with_the_cause_first() {
    let mut problems = Vec::new();
    for run in fixture_runs() {
        let bundle = Path::new("fixtures/lab").join(&run).join("node.tar.gz");
        if !workspace().join(&bundle).is_file() {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
            .current_dir(workspace())
            .args(["check", "--bundle"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(matches!(out.status.code(), Some(0 | 1)), "{run}");
        problems.extend(check_layout(
            &format!("check {run}"),
            &String::from_utf8_lossy(&out.stdout),
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
