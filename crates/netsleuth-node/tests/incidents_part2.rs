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

#[test]
fn a_service_backend_behind_a_hairpin_off_port_is_a_latent_risk() {
    let r = check_file(&lab_bundle("hairpin-off"));
    let f = of(&r, "hairpin-off");
    // The client pod (10.244.1.10) and the other backend (10.244.1.11) both back the Service; both
    // ports have hairpin off.
    assert_eq!(f.len(), 2, "{}", common::show(&r));
    assert!(f
        .iter()
        .all(|(k, c, _)| (*k, *c) == (FindingKind::LatentRisk, Confidence::Likely)));
    assert!(f
        .iter()
        .any(|(_, _, s)| s.contains("10.244.1.10") && s.contains("veth0")));
    // The fix turned hairpin on for the client's port: only the other backend is left.
    let r = check_file(&lab_bundle("hairpin-off-mitigated"));
    let f = of(&r, "hairpin-off");
    assert_eq!(f.len(), 1, "{}", common::show(&r));
    assert!(f[0].2.contains("10.244.1.11"), "{}", f[0].2);
    // bridge-nf-call-iptables=0: DNAT happens when the frame is routed, no hairpin needed.
    let r = check_file(&lab_bundle("bridge-nf-bypass"));
    assert!(of(&r, "hairpin-off").is_empty(), "{}", common::show(&r));
}

#[test]
fn strict_rp_filter_on_two_uplinks_is_a_latent_risk_and_loose_is_not() {
    let r = check_file(&lab_bundle("rp-filter-drop"));
    let f = of(&r, "rp-filter-drop");
    assert_eq!(f.len(), 1, "{}", common::show(&r));
    // The bundle is collected after the traffic: the counter did not move while it was read.
    assert_eq!(
        (f[0].0, f[0].1),
        (FindingKind::LatentRisk, Confidence::Likely)
    );
    assert!(f[0].2.contains("eth0, eth1"), "{}", f[0].2);
    let r = check_file(&lab_bundle("rp-filter-drop-mitigated"));
    assert!(of(&r, "rp-filter-drop").is_empty(), "{}", common::show(&r));
    // One uplink and no policy routing: strict filtering cannot see an asymmetric path.
    for b in ["clean", "bridge-nf-on", "masquerade", "lb-ip-local"] {
        let r = check_file(&common::fixtures_dir().join(format!("{b}.tar.gz")));
        assert!(
            of(&r, "rp-filter-drop").is_empty(),
            "{b}: {}",
            common::show(&r)
        );
    }
}

#[test]
fn a_dns_service_without_tcp_is_a_latent_risk() {
    let r = check_file(&lab_bundle("dns-truncation-fallback"));
    let f = of(&r, "dns-truncation-fallback");
    assert_eq!(f.len(), 1, "{}", common::show(&r));
    assert_eq!(f[0].0, FindingKind::LatentRisk);
    assert!(f[0].2.contains("udp only"), "{}", f[0].2);
    // With 53/tcp in the Service: nothing.
    let r = check_file(&lab_bundle("dns-truncation-fallback-mitigated"));
    assert!(
        of(&r, "dns-truncation-fallback").is_empty(),
        "{}",
        common::show(&r)
    );
}

#[test]
fn pod_interfaces_larger_than_the_overlay_are_a_latent_risk() {
    let r = check_file(&lab_bundle("overlay-mtu-blackhole"));
    let f = of(&r, "overlay-mtu-blackhole");
    assert_eq!(f.len(), 1, "{}", common::show(&r));
    assert_eq!(
        (f[0].0, f[0].1),
        (FindingKind::LatentRisk, Confidence::Likely)
    );
    assert!(
        f[0].2.contains("flannel.1") && f[0].2.contains("1450"),
        "{}",
        f[0].2
    );
    // No overlay device: nothing to compare.
    for b in ["clean", "bridge-nf-on", "masquerade"] {
        let r = check_file(&common::fixtures_dir().join(format!("{b}.tar.gz")));
        assert!(
            of(&r, "overlay-mtu-blackhole").is_empty(),
            "{b}: {}",
            common::show(&r)
        );
    }
}

/// The lab's receiving node: `ethtool -k` of its VXLAN device is in the bundle (tx checksum offload on,
/// as flannel leaves it), and its kernel has ea64d8d6c675: no risk. The same node on a kernel without
/// the fix is a latent risk, not an incident (no packet with a wrong checksum is in a node's state).
#[test]
fn vxlan_tx_checksum_offload_is_a_risk_only_on_a_kernel_without_the_fix() {
    let path = lab_bundle("vxlan-checksum-offload");
    let mut facts = read_bundle(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let node = facts.node_netns().expect("node namespace");
    let flannel = node
        .offloads
        .iter()
        .flatten()
        .find(|d| d.device == "flannel.1")
        .expect("ethtool -k of flannel.1 in the bundle");
    assert_eq!(flannel.is_on("tx-checksum-ip-generic"), Some(true));
    let r = check(&facts, &CheckOptions::default());
    assert!(
        of(&r, "vxlan-checksum-offload").is_empty(),
        "{}",
        common::show(&r)
    );
    facts.kernel = Some("5.4.0-26-generic".into());
    let r = check(&facts, &CheckOptions::default());
    let f = of(&r, "vxlan-checksum-offload");
    assert_eq!(f.len(), 1, "{}", common::show(&r));
    assert_eq!(f[0].0, FindingKind::LatentRisk);
    assert!(f[0].2.contains("flannel.1"), "{}", f[0].2);
}

/// The `clean` bundle (a host's initial namespace, two samples) with the neighbour tables rewritten:
/// gc_thresh 128/512/1024, `entries` and `table_fulls` per sample, and a kernel log.
fn neighbours(entries: u64, fulls: [u64; 2], log: Option<&str>) -> netsleuth_node::NodeFacts {
    let clean =
        read_bundle(&common::fixtures_dir().join("clean.tar.gz")).unwrap_or_else(|e| panic!("{e}"));
    let mut arts = clean.artifacts().clone();
    let p = "netns/node/sysctl.txt";
    let mut text = String::from_utf8(arts[p].clone()).unwrap();
    for (k, v) in [(1, 128), (2, 512), (3, 1024)] {
        text.push_str(&format!("net.ipv4.neigh.default.gc_thresh{k} = {v}\n"));
    }
    arts.insert(p.into(), text.into_bytes());
    // The corpus's own stat file, with this test's entries and table_fulls (the last column).
    let corpus = std::fs::read_to_string(
        common::node_corpus_dir()
            .map(|d| d.join("proc/node_exporter.stat_arp_cache"))
            .unwrap_or_default(),
    )
    .unwrap_or_else(|_| "entries  allocs destroys hash_grows  lookups hits  res_failed  rcv_probes_mcast rcv_probes_ucast  periodic_gc_runs forced_gc_runs unresolved_discards table_fulls\n00000014  00000001 00000002 00000003  00000004 00000005  00000006  00000007 00000008  00000009 0000000a 0000000b 0000000c\n".into());
    for (i, f) in fulls.iter().enumerate() {
        let mut lines: Vec<String> = corpus.lines().map(str::to_string).collect();
        for (cpu, l) in lines.iter_mut().skip(1).enumerate() {
            let mut cols: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            cols[0] = format!("{entries:08x}");
            let last = cols.len() - 1;
            // Per CPU: the first CPU carries the count, the others none (the sum is `f`).
            cols[last] = format!("{:08x}", if cpu == 0 { *f } else { 0 });
            *l = cols.join(" ");
        }
        arts.insert(
            format!("netns/node/sample-{}/stat-arp_cache", i + 1),
            (lines.join("\n") + "\n").into_bytes(),
        );
    }
    match log {
        Some(l) => {
            arts.insert(
                "node/kernel-log-neighbour-overflow.txt".into(),
                l.as_bytes().to_vec(),
            );
        }
        None => {
            arts.remove("node/kernel-log-neighbour-overflow.txt");
        }
    }
    netsleuth_node::NodeFacts::from_artifacts(clean.manifest.clone(), arts)
}

fn neighbour_findings(f: &netsleuth_node::NodeFacts) -> Vec<(FindingKind, Confidence, String)> {
    of(
        &check(f, &CheckOptions::default()),
        "neighbour-table-overflow",
    )
}

#[test]
fn a_neighbour_table_refusing_entries_is_an_incident_and_a_filling_one_a_risk() {
    // Far below the thresholds, kernel log read and quiet: nothing.
    let quiet = neighbours(20, [0, 0], Some("count 0\n"));
    assert!(neighbour_findings(&quiet).is_empty());
    // Above gc_thresh2, nothing refused: a latent risk, and the unread kernel log is said.
    let filling = neighbour_findings(&neighbours(700, [0, 0], None));
    assert_eq!(filling.len(), 1, "{filling:?}");
    assert_eq!(
        (filling[0].0, filling[0].1),
        (FindingKind::LatentRisk, Confidence::Likely)
    );
    assert!(
        filling[0].2.contains("700 ipv4 neighbour entries"),
        "{}",
        filling[0].2
    );
    // table_fulls rising between the samples: neighbours refused while the check ran.
    let full = neighbour_findings(&neighbours(1024, [3, 40], Some("count 0\n")));
    assert_eq!(full.len(), 1, "{full:?}");
    assert_eq!(
        (full[0].0, full[0].1),
        (FindingKind::Incident, Confidence::Confirmed)
    );
    assert!(
        full[0].2.contains("table_fulls rose 3 → 40"),
        "{}",
        full[0].2
    );
    // The kernel's message with the table past gc_thresh2: confirmed; with a small table: likely.
    let log = "count 2\nneighbour: arp_cache: neighbor table overflow!\nneighbour: arp_cache: neighbor table overflow!\n";
    let logged = neighbour_findings(&neighbours(900, [5, 5], Some(log)));
    assert_eq!(
        (logged[0].0, logged[0].1),
        (FindingKind::Incident, Confidence::Confirmed),
        "{logged:?}"
    );
    let old = neighbour_findings(&neighbours(30, [5, 5], Some(log)));
    assert_eq!(
        (old[0].0, old[0].1),
        (FindingKind::Incident, Confidence::Likely),
        "{old:?}"
    );
}

#[test]
fn a_namespace_without_the_host_thresholds_says_nothing_of_the_table() {
    // The lab's node is a namespace: no gc_thresh, no stat files; its /proc/net/arp is read.
    let r = check_file(&lab_bundle("neighbour-table-overflow"));
    assert!(
        of(&r, "neighbour-table-overflow").is_empty(),
        "{}",
        common::show(&r)
    );
    let facts = read_bundle(&lab_bundle("neighbour-table-overflow")).unwrap();
    let node = facts.node_netns().unwrap();
    let arp = node
        .arp
        .as_ref()
        .expect("the node namespace's /proc/net/arp");
    assert!(arp.entries() >= 256, "{arp:?}");
    assert!(node.sysctl("net.ipv4.neigh.default.gc_thresh3").is_none());
    // `ip -j neigh` tells the states apart: the sweep's entries are still being resolved.
    let states = node
        .neighbours
        .as_ref()
        .expect("the node namespace's ip -j neigh");
    assert!(
        states.counts[&("inet".to_string(), "INCOMPLETE".to_string())] >= 256,
        "{states:?}"
    );
}
