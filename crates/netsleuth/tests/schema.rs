//! Every command's `--format json` output validates against the checked-in JSON Schema
//! (`docs/netsleuth.schema.json`, generated from `netsleuth_core::report::json`) and reads back as the
//! report `Document`. `lab run` (root, minutes) is checked on recorded runs by `cmd::lab`'s unit test;
//! `NETSLEUTH_VALIDATE=FILE cargo test -p netsleuth --test schema -- --ignored validate_file` checks any
//! saved output, e.g. of a real `sudo netsleuth lab run --all --format json`.

use netsleuth_core::report::json::Document;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netsleuth"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read(root().join("docs/netsleuth.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&text).unwrap();
    jsonschema::validator_for(&schema).expect("the schema file is a valid JSON Schema")
}

/// Validates one output; returns it parsed.
fn check_output(v: &jsonschema::Validator, what: &str, out: &std::process::Output) -> Document {
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{what}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
    let typed: Document = serde_json::from_value(doc)
        .unwrap_or_else(|e| panic!("{what}: does not read back as a Document: {e}"));
    assert_eq!(
        Some(typed.summary.exit_code),
        out.status.code(),
        "{what}: summary.exit_code is the process's"
    );
    typed
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn analyze_of_every_lab_fixture_follows_the_schema() {
    let v = validator();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/lab"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut incidents = 0;
    for dir in dirs {
        let mut cmd = bin();
        cmd.args(["analyze", "--format", "json"]);
        let facts = dir.join("facts.json");
        if facts.is_file() {
            cmd.arg("--node").arg(&facts);
        }
        cmd.args(files(&dir, ".pcap"));
        let doc = check_output(&v, &dir.display().to_string(), &cmd.output().unwrap());
        assert_eq!(doc.command, "analyze");
        incidents += doc.summary.incidents;
    }
    assert!(incidents > 0, "some fixture has findings to validate");
}

#[test]
fn check_of_every_node_bundle_follows_the_schema() {
    let v = validator();
    let bundles = files(&root().join("fixtures/node"), ".tar.gz");
    assert!(!bundles.is_empty());
    for b in &bundles {
        let out = bin()
            .args(["check", "--format", "json", "--bundle"])
            .arg(b)
            .output()
            .unwrap();
        let doc = check_output(&v, &b.display().to_string(), &out);
        assert_eq!(doc.command, "check");
        assert!(doc.stats.contains_key("namespaces"), "the facts summary");
    }
}

#[test]
fn diff_follows_the_schema_with_and_without_differences() {
    let v = validator();
    let node = root().join("fixtures/node");
    for (a, b, differs) in [
        ("bridge-nf-off.tar.gz", "bridge-nf-on.tar.gz", true),
        ("clean.tar.gz", "clean.tar.gz", false),
    ] {
        let out = bin()
            .args(["diff", "--format", "json"])
            .arg(node.join(a))
            .arg(node.join(b))
            .output()
            .unwrap();
        let doc = check_output(&v, &format!("diff {a} {b}"), &out);
        let diff = doc.diff.expect("the diff section");
        assert_eq!(!diff.items.is_empty(), differs, "{a} {b}");
        assert_eq!(doc.inputs.len(), 2);
    }
}

#[test]
fn catalogue_follows_the_schema() {
    let out = bin()
        .args(["catalogue", "--format", "json"])
        .output()
        .unwrap();
    let doc = check_output(&validator(), "catalogue", &out);
    let catalogue = doc.catalogue.expect("the catalogue section");
    assert_eq!(catalogue.len(), netsleuth_core::detect::CATALOGUE.len());
}

/// A document from elsewhere (a saved `lab run --all --format json`): `NETSLEUTH_VALIDATE=FILE`.
#[test]
#[ignore = "validates a file given by NETSLEUTH_VALIDATE"]
fn validate_file() {
    let Some(path) = std::env::var_os("NETSLEUTH_VALIDATE") else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let errors: Vec<String> = validator()
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    serde_json::from_value::<Document>(doc).expect("reads back as a Document");
}
