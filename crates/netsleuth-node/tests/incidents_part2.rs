//! Node detectors of the catalogue's second part (DNS, overlay and routing incidents) on the bundles
//! the lab collected (fixtures/lab/<id>/node.tar.gz) and on the node fixtures: incidents under way and
//! latent risks apart, healthy configurations quiet.

mod common;

use netsleuth_core::{Confidence, FindingKind};
use netsleuth_node::{check, read_bundle, CheckOptions, CheckReport};
use std::path::{Path, PathBuf};

fn lab_bundle(run: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/lab")
        .join(run)
        .join("node.tar.gz")
}

fn check_file(p: &Path) -> CheckReport {
    check(
        &read_bundle(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        &CheckOptions::default(),
    )
}

fn of(r: &CheckReport, id: &str) -> Vec<(FindingKind, Confidence, String)> {
    r.findings
        .iter()
        .filter(|f| f.id == id)
        .map(|f| (f.kind, f.confidence, f.summary.clone()))
        .collect()
}

#[test]
fn ndots_with_a_long_search_list_is_a_latent_risk() {
    let r = check_file(&lab_bundle("dns-ndots-amplification"));
    let f = of(&r, "dns-ndots-amplification");
    assert_eq!(f.len(), 1, "{}", common::show(&r));
    assert_eq!(
        (f[0].0, f[0].1),
        (FindingKind::LatentRisk, Confidence::Likely)
    );
    assert!(
        f[0].2.contains("ndots:5 and 4 search domains"),
        "{}",
        f[0].2
    );
    // ndots:5 with a single search domain (the musl container) is a walk of two: not listed.
    let r = check_file(&common::fixtures_dir().join("musl-container.tar.gz"));
    assert!(of(&r, "dns-ndots-amplification").is_empty());
}
