//! `check` on collected bundles whose artifacts are rewritten to what a node carrying issue 15's
//! incidents shows (the lab's own bundles are checked in crates/netsleuth-lab/tests/fixtures.rs).

mod common;

use common::fixtures_dir;
use netsleuth_core::{Confidence, FindingKind};
use netsleuth_node::{check, read_bundle, CheckOptions, NodeFacts};

fn load(name: &str) -> NodeFacts {
    read_bundle(&fixtures_dir().join(format!("{name}.tar.gz"))).unwrap_or_else(|e| panic!("{e}"))
}

fn with(facts: &NodeFacts, edit: impl FnOnce(&mut netsleuth_node::facts::Artifacts)) -> NodeFacts {
    let mut arts = facts.artifacts().clone();
    edit(&mut arts);
    NodeFacts::from_artifacts(facts.manifest.clone(), arts)
}

fn set_sysctl(arts: &mut netsleuth_node::facts::Artifacts, key: &str, value: u64) {
    let p = "netns/node/sysctl.txt";
    let text = String::from_utf8(arts[p].clone()).unwrap();
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} ")))
        .map(str::to_string)
        .collect();
    out.push(format!("{key} = {value}"));
    arts.insert(p.into(), (out.join("\n") + "\n").into_bytes());
}

fn found(facts: &NodeFacts, id: &str) -> Vec<(FindingKind, Confidence, String)> {
    check(facts, &CheckOptions::default())
        .findings
        .iter()
        .filter(|f| f.id == id)
        .map(|f| (f.kind, f.confidence, f.summary.clone()))
        .collect()
}

#[test]
fn a_full_conntrack_table_is_an_incident_and_a_filling_one_a_risk() {
    let clean = load("clean");
    assert!(found(&clean, "conntrack-table-full").is_empty());
    let filling = with(&clean, |a| {
        set_sysctl(a, "net.netfilter.nf_conntrack_max", 262_144);
        set_sysctl(a, "net.netfilter.nf_conntrack_count", 209_000);
    });
    let got = found(&filling, "conntrack-table-full");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, got[0].1),
        (FindingKind::LatentRisk, Confidence::Likely)
    );
    let full = with(&clean, |a| {
        set_sysctl(a, "net.netfilter.nf_conntrack_max", 262_144);
        set_sysctl(a, "net.netfilter.nf_conntrack_count", 262_144);
        for (k, v) in [("sample-1", 10u64), ("sample-2", 55)] {
            a.insert(
                format!("netns/node/{k}/conntrack-S.txt"),
                format!("cpu=0 found=0 invalid=0 insert=0 insert_failed=0 drop={v} early_drop=0 error=0\n").into_bytes(),
            );
        }
    });
    let got = found(&full, "conntrack-table-full");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, got[0].1),
        (FindingKind::Incident, Confidence::Confirmed)
    );
    assert!(got[0].2.contains("10 → 55"), "{}", got[0].2);
}

#[test]
fn sockets_idle_past_the_cloud_timeouts_without_keepalive_are_a_risk() {
    let facts = load("idle-no-keepalive");
    // As collected, the sockets are idle about a second: nothing to say.
    assert!(found(&facts, "idle-timeout-reset").is_empty());
    let idle = with(&facts, |a| {
        let p = "netns/node/ss.txt";
        let text = String::from_utf8(a[p].clone()).unwrap();
        // The server side of one connection (not to a Service address) idle for 400 s.
        let text = text.replacen(
            "lastsnd:1288 lastrcv:1288 lastack:1288",
            "lastsnd:400000 lastrcv:400000 lastack:400000",
            1,
        );
        a.insert(p.into(), text.into_bytes());
    });
    let got = found(&idle, "idle-timeout-reset");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, got[0].1),
        (FindingKind::LatentRisk, Confidence::Possible)
    );
    assert!(got[0].2.starts_with("1 established socket"), "{}", got[0].2);
}
