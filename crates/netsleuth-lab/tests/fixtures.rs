//! The lab's checked-in runs (fixtures/lab, written by scripts/regen-lab-fixtures.sh) hold what the
//! rest of netsleuth reads: every vantage point of each scenario as a small capture, and node facts
//! that are exactly what `analyze --node` makes of the run's bundle. Needs no root.

use netsleuth_core::node::NodeContext;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lab")
}

fn runs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures/lab")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("run.json").exists())
        .collect();
    v.sort();
    assert!(
        v.len() >= 23,
        "expected every scenario's runs, found {}",
        v.len()
    );
    v
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// facts.json is the bundle read as `analyze --node node.tar.gz` reads it, plus the sysctls the
/// scenario emulates (listed in run.json): the lab analyses with the node crate's facts, not its own.
#[test]
fn facts_json_is_what_analyze_reads_from_the_runs_bundle() {
    for dir in runs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let facts = netsleuth_node::read_bundle(&dir.join("node.tar.gz"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut ctx = netsleuth_node::to_node_context(&facts);
        let run = json(&dir.join("run.json"));
        for (k, v) in run["emulated_sysctls"]
            .as_object()
            .expect("emulated_sysctls")
        {
            ctx.sysctls
                .insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
        // Where the facts came from differs by design: the run read its namespace, a reader the file.
        let mut read = serde_json::to_value(&ctx).unwrap();
        let mut written = json(&dir.join("facts.json"));
        let source = written["source"].take();
        let source = source.as_str().unwrap_or_default();
        assert!(
            source.starts_with("netns ") && facts.manifest.target.starts_with(source),
            "{name}: facts.json from {source}, the bundle of {}",
            facts.manifest.target
        );
        read["source"].take();
        if std::env::var_os("NETSLEUTH_REWRITE_FACTS").is_some() && read != written {
            // After the node context gained a field: rewrite facts.json from its own bundle (no lab
            // run needed), then review the diff.
            let mut out = ctx.clone();
            out.source = source.to_string();
            let text = serde_json::to_string_pretty(&out).unwrap() + "\n";
            std::fs::write(dir.join("facts.json"), text).unwrap();
            continue;
        }
        assert_eq!(
            read, written,
            "{name}: facts.json is not the bundle's context (after a change to the node context: NETSLEUTH_REWRITE_FACTS=1 cargo test -p netsleuth-lab --test fixtures, then review the diff)"
        );
    }
}

/// The Services the scenario programmed are in the facts under the name `analyze` reads
/// (`services`), so a Service VIP is recognised from the lab's facts as from a bundle.
#[test]
fn services_are_where_the_detectors_look_for_them() {
    let dir = fixtures().join("conntrack-dnat-rebalance");
    let text = std::fs::read_to_string(dir.join("facts.json")).unwrap();
    let ctx: NodeContext = serde_json::from_str(&text).unwrap();
    let vip: IpAddr = "10.96.0.20".parse().unwrap();
    let svc = ctx
        .service_for(vip, 80)
        .expect("the web Service in facts.json");
    assert_eq!(svc.endpoints.len(), 2);
    assert_eq!(
        ctx.sysctl("net.netfilter.nf_conntrack_tcp_timeout_established"),
        Some("2")
    );
}

/// (file, link type) of each vantage point; `routing.pcap` only where the remote node has pods.
/// Ethernet (1) for one interface, LINUX_SLL2 (276) for `-i any`.
const VANTAGES: &[(&str, u32)] = &[
    ("node.pcap", 276),
    ("client.pcap", 1),
    ("server.pcap", 1),
    ("veth.pcap", 1),
];

/// Every run is recorded from every vantage its topology has, as small captures (snaplen ≤ 262).
#[test]
fn every_run_has_every_vantage_small() {
    for dir in runs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let scenario = name.trim_end_matches("-mitigated");
        let mut files: Vec<(&str, u32)> = VANTAGES.to_vec();
        if matches!(
            scenario,
            "conntrack-dnat-rebalance"
                | "dns-id-collision"
                | "healthy"
                | "conntrack-table-full"
                | "conntrack-invalid-reset"
                | "stale-udp-conntrack"
                | "idle-timeout-reset"
                | "ipvs-conn-reuse"
                | "vxlan-checksum-offload"
                | "neighbour-table-overflow"
        ) {
            files.push(("routing.pcap", 276));
        } else {
            assert!(
                !dir.join("routing.pcap").exists(),
                "{name}: no routing node"
            );
        }
        for (file, mut linktype) in files {
            if scenario == "tw-recycle-paws" && file == "client.pcap" {
                // The client side is the client node's `-i any` (both pods before and after SNAT).
                linktype = 276;
            }
            let path = dir.join(file);
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{name}/{file} missing: {e}"));
            assert!(bytes.len() >= 24, "{name}/{file}: no pcap header");
            assert!(
                bytes.len() <= 200 * 1024,
                "{name}/{file}: {} bytes",
                bytes.len()
            );
            assert_eq!(
                &bytes[..4],
                &[0xd4, 0xc3, 0xb2, 0xa1],
                "{name}/{file}: pcap"
            );
            let snaplen = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
            let link = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
            assert!(snaplen <= 262, "{name}/{file}: snaplen {snaplen}");
            assert_eq!(link, linktype, "{name}/{file}: link type");
        }
    }
}

/// `check` on the bundles the lab collected from namespaces built to carry each node-visible incident
/// of issue 15: the incident run names it as under way (with the kind the node's state supports),
/// the mitigated run does not name it at all.
#[test]
fn check_names_the_node_visible_incidents_of_the_runs() {
    use netsleuth_core::{Confidence, FindingKind};
    let cases: &[(&str, FindingKind, Confidence)] = &[
        (
            "conntrack-table-full",
            FindingKind::Incident,
            Confidence::Likely,
        ),
        // The INVALID packets were counted before the node was read: the state is a latent risk.
        (
            "conntrack-invalid-reset",
            FindingKind::LatentRisk,
            Confidence::Likely,
        ),
        (
            "stale-udp-conntrack",
            FindingKind::Incident,
            Confidence::Likely,
        ),
    ];
    for (scenario, kind, min) in cases {
        let facts = netsleuth_node::read_bundle(&fixtures().join(scenario).join("node.tar.gz"))
            .unwrap_or_else(|e| panic!("{scenario}: {e}"));
        let r = netsleuth_node::check(&facts, &netsleuth_node::CheckOptions::default());
        let mine: Vec<_> = r.findings.iter().filter(|f| f.id == *scenario).collect();
        assert!(
            mine.iter()
                .any(|f| f.kind == *kind && f.confidence >= *min && !f.evidence.is_empty()),
            "{scenario}: check should name it as {kind:?} ≥ {min:?}: {:?}",
            r.findings
                .iter()
                .map(|f| (f.id, f.kind, f.confidence, &f.summary))
                .collect::<Vec<_>>()
        );
        let mitigated = fixtures().join(format!("{scenario}-mitigated"));
        let facts = netsleuth_node::read_bundle(&mitigated.join("node.tar.gz"))
            .unwrap_or_else(|e| panic!("{scenario}-mitigated: {e}"));
        let r = netsleuth_node::check(&facts, &netsleuth_node::CheckOptions::default());
        assert!(
            r.findings.iter().all(|f| f.id != *scenario),
            "{scenario}-mitigated: check still names it: {:?}",
            r.findings.iter().map(|f| &f.summary).collect::<Vec<_>>()
        );
    }
}
