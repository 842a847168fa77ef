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
