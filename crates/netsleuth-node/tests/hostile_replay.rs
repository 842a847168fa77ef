//! Hostile input replayed on the stable toolchain, with overflow checks on (`[profile.test]`):
//!
//! - every bundle in `shared/hostile/` (`*.tar.gz`) through `read_bundle`, then through the
//!   `bundle_reader` fuzz harness (`read_bundle_from`, `check`, `to_node_context`, `diff`, reports);
//! - every reproducer in `fuzz/crashers/{bundle_reader,node_parsers}/` through the harness of the
//!   target that found it (the same file, included with `#[path]`).
//!
//! `shared/hostile` is found by `common::hostile` (beside the checkout); without it the tests print a
//! note and pass, except under `CI=true`, where a missing directory fails them. Captures are replayed
//! by crates/netsleuth-core/tests/hostile.rs; the bundle reader's limits are tested one by one in
//! hostile_bundles.rs.

mod common;

#[path = "../../../fuzz/harness/bundle_reader.rs"]
mod bundle_reader;
#[path = "../../../fuzz/harness/node_parsers.rs"]
mod node_parsers;

use netsleuth_node::read_bundle;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// `shared/hostile` beside the checkout, found (and required under `CI=true`) as
/// `common::hostile` finds each reproducer.
fn hostile_dir() -> Option<PathBuf> {
    common::hostile("README.md").and_then(|p| p.parent().map(Path::to_path_buf))
}

fn crashers_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/crashers")
        .join(target)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs `f` on every file; fails once at the end, naming every file that panicked and why.
fn replay(what: &str, paths: &[PathBuf], f: impl Fn(&Path)) {
    let mut failed = Vec::new();
    for p in paths {
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(p))) {
            failed.push(format!("{}: {}", p.display(), panic_text(e)));
        }
    }
    eprintln!("{what}: {} files replayed", paths.len());
    assert!(
        failed.is_empty(),
        "{what}: {} of {} files panicked:\n{}",
        failed.len(),
        paths.len(),
        failed.join("\n")
    );
}

#[test]
fn hostile_bundles_read_without_panic() {
    let Some(dir) = hostile_dir() else { return };
    let bundles: Vec<PathBuf> = files(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert!(
        bundles.len() >= 3,
        "expected the hostile bundles in {}",
        dir.display()
    );
    replay("hostile bundles", &bundles, |p| {
        // An error is an answer; only a panic fails.
        let _ = read_bundle(p);
        bundle_reader::run(&std::fs::read(p).unwrap());
    });
}

#[test]
fn fuzz_crashers_replay_without_panic() {
    replay(
        "bundle_reader crashers",
        &files(&crashers_dir("bundle_reader")),
        |p| bundle_reader::run(&std::fs::read(p).unwrap()),
    );
    replay(
        "node_parsers crashers",
        &files(&crashers_dir("node_parsers")),
        |p| node_parsers::run(&std::fs::read(p).unwrap()),
    );
}
