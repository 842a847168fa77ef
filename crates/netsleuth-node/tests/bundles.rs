//! `check --bundle` and `diff` on bundles collected from the test namespaces (fixtures/node/, written by
//! the live tests with NETSLEUTH_UPDATE_FIXTURES=1). No root needed.

mod common;

use common::fixtures_dir;
use netsleuth_core::{Confidence, FindingKind};
use netsleuth_node::bundle::read_bundle_from;
use netsleuth_node::{
    check, diff, read_bundle, to_node_context, write_bundle, CheckOptions, CheckReport, NodeFacts,
};
use std::path::Path;

fn load(name: &str) -> NodeFacts {
    let p = fixtures_dir().join(format!("{name}.tar.gz"));
    read_bundle(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn run(name: &str) -> CheckReport {
    check(&load(name), &CheckOptions::default())
}

fn only(r: &CheckReport) -> Vec<(&'static str, FindingKind)> {
    r.findings.iter().map(|f| (f.id, f.kind)).collect()
}

#[test]
fn each_fixture_names_its_incident_and_only_it() {
    let cases: &[(&str, &[(&str, FindingKind)])] = &[
        ("clean", &[]),
        ("bridge-nf-on", &[]),
        (
            "bridge-nf-off",
            &[("bridge-nf-bypass", FindingKind::LatentRisk)],
        ),
        (
            "masquerade",
            &[("snat-port-clash", FindingKind::LatentRisk)],
        ),
        (
            "lb-ip-local",
            &[("local-source-drop", FindingKind::LatentRisk)],
        ),
        (
            "listen-overflow",
            &[("listen-queue-overflow", FindingKind::Incident)],
        ),
        (
            "idle-no-keepalive",
            &[("conntrack-dnat-rebalance", FindingKind::LatentRisk)],
        ),
        (
            "dead-nameserver",
            &[("dns-upstream-unreachable", FindingKind::Incident)],
        ),
        (
            "musl-container",
            &[
                ("dns-id-collision", FindingKind::LatentRisk),
                ("go-resolver-dns-first", FindingKind::LatentRisk),
                // Its kube-dns Service (the container's nameserver) is programmed for 53/udp only.
                ("dns-truncation-fallback", FindingKind::LatentRisk),
            ],
        ),
    ];
    for (name, expected) in cases {
        let r = run(name);
        let mut got = only(&r);
        got.sort();
        let mut want: Vec<_> = expected.to_vec();
        want.sort();
        assert_eq!(got, want, "{name}: {}", common::show(&r));
        for f in &r.findings {
            assert!(
                !f.evidence.is_empty(),
                "{name}/{}: a finding without evidence",
                f.id
            );
            assert!(!f.explanation.is_empty() && !f.remedy.is_empty());
        }
    }
}

#[test]
fn findings_carry_specific_evidence() {
    let r = run("listen-overflow");
    let f = &r.findings[0];
    assert_eq!(
        f.confidence,
        Confidence::Confirmed,
        "counter rose and the full listener was seen"
    );
    assert!(f.evidence.iter().any(|e| matches!(e, netsleuth_core::Evidence::Counter { name, before: Some(b), after, .. } if name.contains("Listen") && after > b)));
    let r = run("dead-nameserver");
    let f = &r.findings[0];
    assert!(f.evidence.iter().any(|e| matches!(e, netsleuth_core::Evidence::Config { source, .. } if source.ends_with("/etc/resolvconf/resolv.conf.d/base"))), "{:?}", f.evidence);
}

#[test]
fn bundle_round_trip_keeps_findings_and_artifacts() {
    let facts = load("musl-container");
    let mut buf = Vec::new();
    netsleuth_node::bundle::write_bundle_to(&facts, &mut buf).unwrap();
    let again = read_bundle_from(buf.as_slice(), Path::new("memory")).unwrap();
    assert_eq!(facts.artifacts(), again.artifacts());
    let (a, b) = (
        check(&facts, &CheckOptions::default()),
        check(&again, &CheckOptions::default()),
    );
    assert_eq!(only(&a), only(&b));
    let tmp = std::env::temp_dir().join(format!("nsn-rt-{}.tar.gz", std::process::id()));
    write_bundle(&facts, &tmp).unwrap();
    assert!(read_bundle(&tmp).is_ok());
    std::fs::remove_file(tmp).unwrap();
}

#[test]
fn damaged_bundles_are_errors_not_panics() {
    let bytes = std::fs::read(fixtures_dir().join("clean.tar.gz")).unwrap();
    for cut in [0, 10, 100, bytes.len() / 2, bytes.len() - 1] {
        let r = read_bundle_from(&bytes[..cut], Path::new("cut"));
        assert!(r.is_err(), "a bundle cut at {cut} bytes was accepted");
    }
    assert!(read_bundle_from(&b"not a bundle"[..], Path::new("x")).is_err());
    let e = read_bundle(Path::new("/nonexistent/bundle.tar.gz"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/bundle.tar.gz"), "{e}");
}

#[test]
fn diff_leads_with_what_matters_for_the_catalogue() {
    let d = diff(&load("bridge-nf-off"), &load("bridge-nf-on"));
    let first = &d.items[0];
    assert_eq!(first.rank, 0);
    assert!(
        d.items
            .iter()
            .take_while(|i| i.rank == 0)
            .any(|i| i.key == "net.bridge.bridge-nf-call-iptables"
                && i.incident.as_deref() == Some("bridge-nf-bypass")),
        "{:#?}",
        d.items
    );
    assert!(d
        .items
        .iter()
        .any(|i| i.area == "finding" && i.key == "bridge-nf-bypass"));
    let same = diff(&load("clean"), &load("clean"));
    assert!(
        same.items.is_empty(),
        "a bundle differs from itself: {:#?}",
        same.items
    );
}

#[test]
fn node_context_carries_services_and_nat_flags() {
    let ctx = to_node_context(&load("idle-no-keepalive"));
    let svc = ctx
        .services
        .iter()
        .find(|s| s.vip.to_string() == "10.96.0.20")
        .expect("the Service VIP");
    assert_eq!(svc.port, 80);
    assert_eq!(svc.endpoints, vec![("10.0.0.2".parse().unwrap(), 8080)]);
    assert!(ctx.kernel_release.is_some());
    assert!(ctx
        .sysctl("net.netfilter.nf_conntrack_tcp_timeout_established")
        .is_some());
    let m = to_node_context(&load("masquerade"));
    assert_eq!(m.masquerade_without_random_fully.len(), 1);
    let l = to_node_context(&load("lb-ip-local"));
    assert!(l
        .ipvs_bound_addrs
        .contains(&"203.0.113.10".parse().unwrap()));
}

#[test]
fn a_kernel_without_the_tw_recycle_removal_and_with_counters_rising_is_an_incident() {
    // tcp_tw_recycle cannot be set on this kernel (removed in 4.12), so the sysctl and the counters of
    // an old node are written into a collected bundle's artifacts: the detector reads what such a
    // node's files say.
    let facts = load("clean");
    let mut arts = facts.artifacts().clone();
    let sys = arts.get_mut("netns/node/sysctl.txt").unwrap();
    sys.extend_from_slice(b"net.ipv4.tcp_tw_recycle = 1\n");
    for (k, v) in [("sample-1", 10u64), ("sample-2", 42)] {
        let p = format!("netns/node/{k}/netstat");
        let t = String::from_utf8(arts[&p].clone()).unwrap();
        let t = t.replacen("TcpExt: ", "TcpExt: PAWSPassive ", 1);
        let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
        let i = lines
            .iter()
            .position(|l| {
                l.starts_with("TcpExt: ")
                    && l.split_whitespace()
                        .nth(1)
                        .map(|x| x.parse::<u64>().is_ok())
                        .unwrap_or(false)
            })
            .unwrap();
        lines[i] = lines[i].replacen("TcpExt: ", &format!("TcpExt: {v} "), 1);
        arts.insert(p, (lines.join("\n") + "\n").into_bytes());
    }
    let mut m = facts.manifest.clone();
    m.kernel = Some("4.4.0-generic".into());
    arts.insert("node/kernel-release".into(), b"4.4.0-generic\n".to_vec());
    let old = NodeFacts::from_artifacts(m, arts);
    let r = check(&old, &CheckOptions::default());
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "tw-recycle-paws")
        .expect("tw-recycle-paws");
    assert_eq!(f.kind, FindingKind::Incident);
    assert!(f.summary.contains("10 → 42"), "{}", f.summary);
}

#[test]
fn insert_failures_rising_with_masquerade_without_random_fully_is_an_incident() {
    // A real clash needs two SYNs racing on two CPUs; the collected bundle's conntrack -S samples are
    // rewritten to what such a node shows: insert_failed and drop rising between the samples.
    let facts = load("masquerade");
    let mut arts = facts.artifacts().clone();
    for (k, v) in [("sample-1", 100u64), ("sample-2", 130)] {
        arts.insert(
            format!("netns/node/{k}/conntrack-S.txt"),
            format!("cpu=0 found=0 invalid=0 insert=0 insert_failed={v} drop={v} early_drop=0 error=0\n").into_bytes(),
        );
    }
    let r = check(
        &NodeFacts::from_artifacts(facts.manifest.clone(), arts),
        &CheckOptions::default(),
    );
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "snat-port-clash")
        .expect("snat-port-clash");
    assert_eq!(f.kind, FindingKind::Incident);
    assert_eq!(f.confidence, Confidence::Likely);
    assert!(f.summary.contains("100 → 130"), "{}", f.summary);
    // The same counters with every rule --random-fully: only possible.
    let facts = load("masquerade");
    let mut arts = facts.artifacts().clone();
    let save = String::from_utf8(arts["netns/node/iptables-save.txt"].clone()).unwrap();
    let fixed: String = save
        .lines()
        .map(|l| {
            if l.contains("MASQUERADE") && !l.contains("--random-fully") {
                format!("{l} --random-fully")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    arts.insert("netns/node/iptables-save.txt".into(), fixed.into_bytes());
    for (k, v) in [("sample-1", 100u64), ("sample-2", 130)] {
        arts.insert(
            format!("netns/node/{k}/conntrack-S.txt"),
            format!("cpu=0 insert_failed={v} drop={v}\n").into_bytes(),
        );
    }
    let r = check(
        &NodeFacts::from_artifacts(facts.manifest.clone(), arts),
        &CheckOptions::default(),
    );
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "snat-port-clash")
        .expect("snat-port-clash");
    assert_eq!(f.confidence, Confidence::Possible, "{}", f.summary);
}

#[test]
fn node_context_carries_the_containers_hosts_entries() {
    // analyze --node uses them to recognise DNS queries for names a pod's /etc/hosts pins.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/node/musl-container.tar.gz");
    let facts = netsleuth_node::read_bundle(&path).expect("fixture bundle");
    let ctx = netsleuth_node::to_node_context(&facts);
    let names: Vec<&str> = ctx.hosts.iter().map(|(_, n)| n.as_str()).collect();
    assert!(names.contains(&"apiserver.internal"), "{names:?}");
    assert!(
        !names.contains(&"localhost"),
        "loopback entries are left out: {names:?}"
    );
}

/// The lab's bundles of the issue-15 scenarios (fixtures/lab/<run>/node.tar.gz): the node's state
/// names what it can see of each, and the mitigated runs' state names nothing of it.
#[test]
fn lab_bundles_of_the_port_and_time_wait_incidents() {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lab");
    let of = |run: &str, id: &str| -> Vec<(FindingKind, Confidence, String)> {
        let facts =
            read_bundle(&lab.join(run).join("node.tar.gz")).unwrap_or_else(|e| panic!("{e}"));
        check(&facts, &CheckOptions::default())
            .findings
            .into_iter()
            .filter(|f| f.id == id)
            .map(|f| (f.kind, f.confidence, f.summary))
            .collect()
    };
    // The client pod's ten-port range, every port in TIME_WAIT toward the server: under way.
    let got = of("ephemeral-port-exhaustion", "ephemeral-port-exhaustion");
    assert!(
        matches!(got.as_slice(), [(FindingKind::Incident, Confidence::Confirmed, s)] if s.contains("all 10 ports")),
        "{got:?}"
    );
    assert!(of(
        "ephemeral-port-exhaustion-mitigated",
        "ephemeral-port-exhaustion"
    )
    .is_empty());
    // The SNAT node forgets closed connections after 1 s: a latent risk there (the PAWS counter is
    // the server's, on another node).
    let got = of("timewait-paws-reject", "timewait-paws-reject");
    assert!(
        matches!(
            got.as_slice(),
            [(FindingKind::LatentRisk, Confidence::Likely, _)]
        ),
        "{got:?}"
    );
    assert!(of("timewait-paws-reject-mitigated", "timewait-paws-reject").is_empty());
}
