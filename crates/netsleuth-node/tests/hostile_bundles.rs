//! Bundles built to hurt the reader: gzip bombs, members outside the layout, members that claim more
//! than they hold, manifests that list artifacts the archive lacks. Each is a clear error or a notice,
//! never unbounded memory. Built in memory here, plus the reproducers of `shared/hostile`.

mod common;

use common::{fixtures_dir, hostile};
use netsleuth_node::bundle::{
    read_bundle_from, read_bundle_from_with, read_bundle_with, BundleError, ReadLimits, MAX_MEMBER,
    MAX_TOTAL_DECOMPRESSED,
};
use netsleuth_node::facts::paths;
use netsleuth_node::{read_bundle, NodeFacts};
use std::io::Write;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// A tar.gz of `members` (regular files), in order. Names are written as given, also those the tar
/// crate's own builder refuses (`..`, absolute paths), as a hostile writer would.
fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, bytes) in members {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_gnu_mut().unwrap().name;
        assert!(
            path.len() < name.len(),
            "{path}: too long for a plain header"
        );
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, *bytes).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A fixture bundle's manifest and artifacts, to rebuild variants of it.
fn fixture(name: &str) -> NodeFacts {
    read_bundle(&fixtures_dir().join(format!("{name}.tar.gz"))).unwrap()
}

fn manifest_json(facts: &NodeFacts) -> Vec<u8> {
    serde_json::to_vec(&facts.manifest).unwrap()
}

/// The fixture rebuilt with `extra` members after its own, and without the artifacts `drop` names.
fn variant(facts: &NodeFacts, drop: &[&str], extra: &[(&str, &[u8])]) -> Vec<u8> {
    let manifest = manifest_json(facts);
    let mut members: Vec<(&str, &[u8])> = vec![(paths::MANIFEST, &manifest)];
    for (p, b) in facts.artifacts() {
        if !drop.contains(&p.as_str()) {
            members.push((p, b));
        }
    }
    members.extend_from_slice(extra);
    tar_gz(&members)
}

fn codes(facts: &NodeFacts) -> Vec<&'static str> {
    facts.diagnostics.iter().map(|d| d.code).collect()
}

#[test]
fn the_limits_are_what_the_readme_says() {
    assert_eq!(MAX_TOTAL_DECOMPRESSED, 256 * MIB);
    assert_eq!(MAX_MEMBER, 64 * MIB);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains("256 MiB") && readme.contains("64 MiB"),
        "README's reliability section states the bundle budget"
    );
}

#[test]
fn every_fixture_member_is_in_the_layout_and_every_claimed_artifact_is_there() {
    for e in std::fs::read_dir(fixtures_dir()).unwrap() {
        let p = e.unwrap().path();
        let facts = read_bundle(&p).unwrap();
        for d in &facts.diagnostics {
            assert!(
                d.code != "unknown-member" && d.code != "missing-from-bundle",
                "{}: {}",
                p.display(),
                d.message
            );
        }
        for member in facts.artifacts().keys() {
            assert!(paths::is_layout_member(member), "{member}");
        }
    }
}

#[test]
fn layout_paths() {
    for p in [
        "manifest.json",
        "node/kernel-release",
        "probes.json",
        "netns/node/iptables-save.txt",
        "netns/netns-4026532184/sample-12/netstat",
        "root/root-4027/etc/resolv.conf",
        "root/node/libc.json",
    ] {
        assert!(paths::is_layout_member(p), "{p}");
    }
    for p in [
        "",
        "extra.bin",
        "netns/node/extra.bin",
        "netns//sysctl.txt",
        "netns/../sysctl.txt",
        "netns/node/sample-/netstat",
        "netns/node/sample-1x/netstat",
        "netns/node/sample-1/sysctl.txt",
        "root/x/etc/passwd",
        "root/../etc/hosts",
        "../manifest.json",
        "/manifest.json",
    ] {
        assert!(!paths::is_layout_member(p), "{p}");
    }
}

#[test]
fn the_decompressed_total_has_a_budget() {
    let facts = fixture("clean");
    let rules = vec![b'#'; 6 * MIB as usize];
    let bytes = variant(
        &facts,
        &[],
        &[
            ("netns/node/iptables-save.txt", &rules),
            ("netns/node/ip6tables-save.txt", &rules),
            ("netns/node/iptables-legacy-save.txt", &rules),
        ],
    );
    let tight = ReadLimits {
        total: 16 * MIB,
        member: 8 * MIB,
    };
    let err = read_bundle_from_with(bytes.as_slice(), Path::new("b.tar.gz"), &tight).unwrap_err();
    match &err {
        BundleError::OverBudget {
            member,
            reached,
            budget,
            ..
        } => {
            assert_eq!(
                member.as_deref(),
                Some("netns/node/iptables-legacy-save.txt")
            );
            assert!(*reached > 16 * MIB && *reached < 19 * MIB, "{reached}");
            assert_eq!(*budget, 16 * MIB);
        }
        e => panic!("{e}"),
    }
    let text = err.to_string();
    for what in [
        "b.tar.gz",
        "iptables-legacy-save.txt",
        "16.0 MiB",
        "NETSLEUTH_BUNDLE_BUDGET_MIB",
    ] {
        assert!(text.contains(what), "{what} not in: {text}");
    }
    // The same bundle within the default budget.
    assert!(read_bundle_from(bytes.as_slice(), Path::new("b.tar.gz")).is_ok());
}

#[test]
fn skipped_members_and_trailing_data_count_against_the_budget() {
    let facts = fixture("clean");
    let tight = ReadLimits {
        total: 16 * MIB,
        member: 8 * MIB,
    };
    // A member outside the layout is not held, but its bytes are decompressed to skip it.
    let big = vec![0u8; 32 * MIB as usize];
    let bytes = variant(&facts, &[], &[("padding.bin", &big)]);
    match read_bundle_from_with(bytes.as_slice(), Path::new("b"), &tight) {
        Err(BundleError::OverBudget { member, .. }) => {
            assert_eq!(member.as_deref(), Some("padding.bin"))
        }
        r => panic!("{:?}", r.map(|_| ())),
    }
    // Zeros after the archive's end, inside the gzip stream: read to check the gzip trailer.
    let mut plain = Vec::new();
    {
        let mut tar = tar::Builder::new(&mut plain);
        let manifest = manifest_json(&facts);
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, paths::MANIFEST, manifest.as_slice())
            .unwrap();
        for (p, b) in facts.artifacts() {
            let mut h = tar::Header::new_gnu();
            h.set_size(b.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, p, b.as_slice()).unwrap();
        }
        tar.finish().unwrap();
    }
    plain.resize(plain.len() + 32 * MIB as usize, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let bytes = gz.finish().unwrap();
    match read_bundle_from_with(bytes.as_slice(), Path::new("b"), &tight) {
        Err(BundleError::OverBudget { member: None, .. }) => {}
        r => panic!("{:?}", r.map(|_| ())),
    }
}

#[test]
fn a_member_over_the_cap_is_refused_by_its_header_before_it_is_read() {
    // A header claiming 100 MiB and no data: refused before anything is allocated or decompressed.
    let mut h = tar::Header::new_gnu();
    h.set_path("netns/node/iptables-save.txt").unwrap();
    h.set_size(100 * MIB);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(h.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    let err = read_bundle_from(bytes.as_slice(), Path::new("claims.tar.gz")).unwrap_err();
    match &err {
        BundleError::TooLarge {
            member, size, max, ..
        } => {
            assert_eq!(member, "netns/node/iptables-save.txt");
            assert_eq!((*size, *max), (100 * MIB, MAX_MEMBER));
        }
        e => panic!("{e}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("100.0 MiB") && text.contains("64.0 MiB"),
        "{text}"
    );
}

#[test]
fn members_outside_the_layout_are_skipped_unread_and_named() {
    let facts = fixture("clean");
    let blob = vec![7u8; 3 * MIB as usize];
    let bytes = variant(
        &facts,
        &[],
        &[
            ("netns/node/extra.bin", &blob),
            ("../../etc/cron.d/evil", b"* * * * * root sh\n"),
            ("notes/\u{1b}]0;title\u{7}.txt", b"hello"),
        ],
    );
    // A member cap below the blob's size: only a member that is read can hit it.
    let limits = ReadLimits {
        total: MAX_TOTAL_DECOMPRESSED,
        member: MIB,
    };
    let got = read_bundle_from_with(bytes.as_slice(), Path::new("extra.tar.gz"), &limits).unwrap();
    assert_eq!(
        got.artifacts(),
        facts.artifacts(),
        "nothing outside the layout is kept"
    );
    let notice = got
        .diagnostics
        .iter()
        .find(|d| d.code == "unknown-member")
        .unwrap_or_else(|| panic!("{:?}", codes(&got)));
    assert_eq!(notice.count, 3);
    assert_eq!(notice.source, "extra.tar.gz");
    for name in ["netns/node/extra.bin", "etc/cron.d/evil", "notes/"] {
        assert!(notice.message.contains(name), "{}", notice.message);
    }
}

#[test]
fn artifacts_the_manifest_claims_but_the_archive_lacks_are_reported() {
    let facts = fixture("clean");
    let gone = "netns/node/sysctl.txt";
    assert!(facts.artifacts().contains_key(gone));
    let bytes = variant(&facts, &[gone], &[]);
    let got = read_bundle_from(bytes.as_slice(), Path::new("cut.tar.gz")).unwrap();
    let missing: Vec<&str> = got
        .diagnostics
        .iter()
        .filter(|d| d.code == "missing-from-bundle")
        .map(|d| d.source.as_str())
        .collect();
    assert_eq!(missing, [gone]);
    assert!(got.diagnostics[0]
        .message
        .contains("listed in manifest.json"));

    // None of them: an error, not a clean bill of health.
    let every: Vec<&str> = facts.artifacts().keys().map(String::as_str).collect();
    let bytes = variant(&facts, &every, &[]);
    match read_bundle_from(bytes.as_slice(), Path::new("empty.tar.gz")) {
        Err(BundleError::NothingCollected {
            claimed, missing, ..
        }) => {
            assert!(claimed > 10, "{claimed}");
            assert!(!missing.is_empty() && missing.len() <= claimed);
        }
        r => panic!("{:?}", r.map(|f| codes(&f))),
    }
}

#[test]
fn shared_manifest_only_bundle_is_an_error_naming_what_is_missing() {
    let Some(p) = hostile("manifest-only.tar.gz") else {
        return;
    };
    let err = read_bundle(&p).unwrap_err();
    assert!(
        matches!(err, BundleError::NothingCollected { claimed: 24, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("none of the 24 artifacts") && text.contains("node/kernel-release"),
        "{text}"
    );
}

#[test]
fn shared_gzip_bomb_stays_within_the_budget() {
    let Some(p) = hostile("bomb-iptables-20MiB.tar.gz") else {
        return;
    };
    // 20 MiB of rules is a big node, not an attack: read within the default limits...
    let facts = read_bundle(&p).unwrap();
    assert_eq!(
        facts.artifacts()["netns/node/iptables-save.txt"].len() as u64,
        20 * MIB
    );
    // ...and the budget is what measures it: 20 MiB and a little (manifest, headers) decompressed.
    for (total, fits) in [(21 * MIB, true), (20 * MIB, false)] {
        let limits = ReadLimits {
            total,
            member: MAX_MEMBER,
        };
        match read_bundle_with(&p, &limits) {
            Ok(_) => assert!(fits, "read within {total}"),
            Err(BundleError::OverBudget { member, .. }) => {
                assert!(!fits, "refused within {total}");
                assert_eq!(member.as_deref(), Some("netns/node/iptables-save.txt"));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn limits_without_bounds_read_a_bundle_and_trust_no_header_with_memory() {
    let unbounded = ReadLimits {
        total: u64::MAX,
        member: u64::MAX,
    };
    let bytes = std::fs::read(fixtures_dir().join("clean.tar.gz")).unwrap();
    let facts = read_bundle_from_with(bytes.as_slice(), Path::new("clean"), &unbounded).unwrap();
    assert_eq!(facts.artifacts(), fixture("clean").artifacts());
    // A header claiming 1 TiB, then nothing: a read error, not an attempt to allocate 1 TiB.
    let mut h = tar::Header::new_gnu();
    h.set_path("netns/node/iptables-save.txt").unwrap();
    h.set_size(1 << 40);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(h.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    match read_bundle_from_with(bytes.as_slice(), Path::new("claims"), &unbounded) {
        Err(BundleError::Archive { .. }) => {}
        r => panic!("{:?}", r.map(|_| ())),
    }
}
