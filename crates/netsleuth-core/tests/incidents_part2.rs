//! The DNS, overlay and routing incidents of the catalogue's second part, on the lab's recordings
//! (fixtures/lab) and on hand-made look-alikes: what each capture must show, and what must stay quiet.

mod support;

use netsleuth_core::node::NodeContext;
use netsleuth_core::{analyze, Analysis, Confidence, FindingKind, Input};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lab")
}

fn run(files: &[PathBuf]) -> Analysis {
    run_with(files, &NodeContext::default())
}

fn facts(dir: &Path) -> NodeContext {
    serde_json::from_str(&std::fs::read_to_string(dir.join("facts.json")).expect("facts.json"))
        .expect("facts.json is a NodeContext")
}

fn run_with(files: &[PathBuf], node: &NodeContext) -> Analysis {
    analyze(
        files
            .iter()
            .map(|f| {
                Input::stream(
                    f.display().to_string(),
                    Box::new(
                        std::fs::File::open(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())),
                    ),
                )
            })
            .collect(),
        node,
    )
}

fn of<'a>(a: &'a Analysis, id: &str) -> Vec<&'a netsleuth_core::Finding> {
    a.findings.iter().filter(|f| f.id == id).collect()
}

#[test]
fn ndots_walk_that_held_lookups_back_is_a_contributing_cause() {
    let dir = fixtures().join("dns-ndots-amplification");
    for v in ["client.pcap", "server.pcap", "node.pcap", "veth.pcap"] {
        let a = run(&[dir.join(v)]);
        let f = of(&a, "dns-ndots-amplification");
        assert_eq!(f.len(), 1, "{v}: {:#?}", a.findings);
        assert_eq!(
            (f[0].kind, f[0].confidence),
            (FindingKind::Incident, Confidence::Likely),
            "{v}"
        );
        // The evidence is the walk: each search candidate NXDOMAIN, then the name itself.
        let frames: usize = f[0]
            .evidence
            .iter()
            .map(|e| match e {
                netsleuth_core::Evidence::Packets { frames, .. } => frames.len(),
                _ => 0,
            })
            .sum();
        assert!(frames >= 10, "{v}: {frames} frames of evidence");
        assert!(
            f[0].summary.contains("4 search domain(s)"),
            "{}",
            f[0].summary
        );
        assert!(f[0].look_alikes.iter().all(|l| l.ruled_out));
        // The slow-DNS symptom names it as its explanation.
        assert!(a.symptoms.iter().any(|s| s
            .considered
            .iter()
            .any(|c| c.id == "dns-ndots-amplification" && c.verdict == "explains")));
    }
}

/// The healthy look-alike: the same pod (ndots:5, four search domains) resolving in-cluster short
/// names, which the first search domain answers, and external names as FQDNs: no finding at all.
#[test]
fn ndots_pod_resolving_in_cluster_names_is_quiet() {
    let dir = fixtures().join("dns-ndots-amplification-mitigated");
    for v in ["client.pcap", "node.pcap"] {
        let a = run(&[dir.join(v)]);
        assert!(
            of(&a, "dns-ndots-amplification").is_empty(),
            "{v}: {:#?}",
            a.findings
        );
    }
    // The other DNS scenarios' pods have ndots:5 too and ask single names: no walk there.
    for d in [
        "dns-conntrack-race",
        "dns-id-collision",
        "dns-upstream-unreachable",
        "healthy",
    ] {
        let a = run(&[fixtures().join(d).join("node.pcap")]);
        assert!(
            of(&a, "dns-ndots-amplification").is_empty(),
            "{d}: {:#?}",
            a.findings
        );
    }
    // The Go program's pod does walk: it resolves `web.default.svc.cluster.local` (four dots, under
    // ndots:5) through the search list before the name itself is answered. Quick, so a latent risk
    // and never an incident.
    let a = run(&[fixtures().join("go-resolver-dns-first").join("node.pcap")]);
    let f = of(&a, "dns-ndots-amplification");
    assert_eq!(f.len(), 1, "{:#?}", a.findings);
    assert_eq!(f[0].kind, FindingKind::LatentRisk, "{:#?}", f[0]);
}

#[test]
fn hairpin_dnat_to_self_is_seen_from_the_node() {
    let dir = fixtures().join("hairpin-off");
    let a = run(&[dir.join("node.pcap")]);
    let f = of(&a, "hairpin-off");
    assert_eq!(f.len(), 1, "{:#?}", a.findings);
    assert_eq!(
        (f[0].kind, f[0].confidence),
        (FindingKind::Incident, Confidence::Likely)
    );
    assert!(
        f[0].summary.contains("the client itself"),
        "{}",
        f[0].summary
    );
    // The SYN translated to its own sender is in the evidence.
    assert!(f[0].evidence.iter().any(
        |e| matches!(e, netsleuth_core::Evidence::Packets { frames, .. }
        if frames.iter().any(|fr| fr.src == fr.dst && fr.what.contains("after DNAT")))
    ));
    // A first SYN lost at the bridge whose retransmission was balanced elsewhere is not a SNAT clash.
    assert!(of(&a, "snat-port-clash").is_empty(), "{:#?}", a.findings);
    // The client pod alone sees unanswered SYNs; the node facts (the Service's endpoints) link them.
    let a = run(&[dir.join("client.pcap")]);
    assert!(
        a.findings.iter().all(|f| f.kind != FindingKind::Incident),
        "{:#?}",
        a.findings
    );
    let a = run_with(&[dir.join("client.pcap")], &facts(&dir));
    let f = of(&a, "hairpin-off");
    assert_eq!(f.len(), 1, "{:#?}", a.findings);
    assert_eq!(f[0].confidence, Confidence::Likely);
}

/// The healthy look-alike: hairpin on, the pod's connects to its own Service DNATed to itself and
/// answered (masqueraded by kube-proxy): nothing from any vantage, with or without node facts.
#[test]
fn hairpin_on_is_quiet() {
    let dir = fixtures().join("hairpin-off-mitigated");
    for v in ["client.pcap", "server.pcap", "node.pcap", "veth.pcap"] {
        let a = run_with(&[dir.join(v)], &facts(&dir));
        assert!(
            a.findings.iter().all(|f| f.kind != FindingKind::Incident),
            "{v}: {:#?}",
            a.findings
        );
    }
}

#[test]
fn syns_dying_on_one_interface_are_the_reverse_path_filter() {
    let dir = fixtures().join("rp-filter-drop");
    let a = run(&[dir.join("node.pcap")]);
    let f = of(&a, "rp-filter-drop");
    assert_eq!(f.len(), 1, "{:#?}", a.findings);
    assert_eq!(
        (f[0].kind, f[0].confidence),
        (FindingKind::Incident, Confidence::Likely)
    );
    assert!(f[0].summary.contains("192.168.60.5"), "{}", f[0].summary);
    // The node facts (net.ipv4.conf.all.rp_filter = 1) confirm it.
    let a = run_with(&[dir.join("node.pcap")], &facts(&dir));
    let f = of(&a, "rp-filter-drop");
    assert_eq!(f[0].confidence, Confidence::Confirmed, "{:#?}", f[0]);
    // Analysed together with the client's capture (which names no interface, and sees each SYN
    // first), the node's copies still say where the SYNs came in.
    let a = run(&[dir.join("client.pcap"), dir.join("node.pcap")]);
    assert_eq!(
        a.findings
            .iter()
            .filter(|f| f.kind == FindingKind::Incident)
            .map(|f| (f.id, f.confidence))
            .collect::<Vec<_>>(),
        vec![("rp-filter-drop", Confidence::Likely)]
    );
    // With node facts saying rp_filter is loose everywhere, only `possible`.
    let mut loose = facts(&dir);
    for (k, v) in loose.sysctls.iter_mut() {
        if k.ends_with(".rp_filter") {
            *v = "2".into();
        }
    }
    let a = run_with(&[dir.join("node.pcap")], &loose);
    assert_eq!(of(&a, "rp-filter-drop")[0].confidence, Confidence::Possible);
}

/// The healthy look-alike: the same asymmetric path with loose filtering (rp_filter=2): the SYN
/// comes in on eth1 and is answered out of eth0. Nothing from any vantage.
#[test]
fn an_asymmetric_path_with_loose_filtering_is_quiet() {
    let dir = fixtures().join("rp-filter-drop-mitigated");
    for v in ["client.pcap", "server.pcap", "node.pcap", "veth.pcap"] {
        let a = run_with(&[dir.join(v)], &facts(&dir));
        assert!(
            a.findings.iter().all(|f| f.kind != FindingKind::Incident),
            "{v}: {:#?}",
            a.findings
        );
    }
}

#[test]
fn a_truncated_answer_whose_tcp_retry_dies_is_the_fallback() {
    let dir = fixtures().join("dns-truncation-fallback");
    for v in ["client.pcap", "node.pcap"] {
        let a = run(&[dir.join(v)]);
        let f = of(&a, "dns-truncation-fallback");
        assert_eq!(f.len(), 1, "{v}: {:#?}", a.findings);
        assert_eq!(
            (f[0].kind, f[0].confidence),
            (FindingKind::Incident, Confidence::Likely),
            "{v}"
        );
        assert!(f[0].summary.contains("never answered"), "{}", f[0].summary);
        // The TCP 53 SYNs are the fallback's, not another SYN-drop cause's.
        assert_eq!(
            a.findings
                .iter()
                .filter(|f| f.kind == FindingKind::Incident)
                .count(),
            1
        );
    }
    // The node facts show the kube-dns Service with 53/udp only: confirmed.
    let a = run_with(&[dir.join("client.pcap")], &facts(&dir));
    assert_eq!(
        of(&a, "dns-truncation-fallback")[0].confidence,
        Confidence::Confirmed
    );
    // The DNS pod's own view has the truncated answers and no TCP: not enough without the libc.
    let a = run(&[dir.join("server.pcap")]);
    assert!(
        of(&a, "dns-truncation-fallback").is_empty(),
        "{:#?}",
        a.findings
    );
}

/// The healthy look-alike: a legitimate TC=1 answer re-asked over TCP and answered (the answer is
/// larger than the capture's snap length, so only its bytes are seen): quiet from every vantage.
#[test]
fn a_truncated_answer_retried_over_tcp_is_quiet() {
    let dir = fixtures().join("dns-truncation-fallback-mitigated");
    for v in ["client.pcap", "server.pcap", "node.pcap", "veth.pcap"] {
        let a = run_with(&[dir.join(v)], &facts(&dir));
        assert!(
            a.findings.iter().all(|f| f.kind != FindingKind::Incident),
            "{v}: {:#?}",
            a.findings
        );
    }
}

#[test]
fn full_size_segments_never_acknowledged_are_the_overlay_mtu() {
    let dir = fixtures().join("overlay-mtu-blackhole");
    // The sender's own view and its node's `-i any` (the lab records the server's node as the node).
    for v in ["server.pcap", "node.pcap"] {
        let a = run(&[dir.join(v)]);
        let f = of(&a, "overlay-mtu-blackhole");
        assert_eq!(f.len(), 1, "{v}: {:#?}", a.findings);
        assert_eq!(
            (f[0].kind, f[0].confidence),
            (FindingKind::Incident, Confidence::Likely),
            "{v}"
        );
        assert!(f[0].reasoning.iter().any(|r| r.contains("no ICMP")), "{v}");
    }
    // The receiving side sees a request answered by nothing: no finding.
    let a = run(&[dir.join("client.pcap")]);
    assert!(
        of(&a, "overlay-mtu-blackhole").is_empty(),
        "{:#?}",
        a.findings
    );
}

/// The healthy look-alike: the same overlay with the ICMP let through: frag-needed reaches the
/// sender, its path MTU adapts, the transfer completes. The ICMP is in the capture; no finding.
#[test]
fn frag_needed_arriving_and_pmtu_adapting_is_quiet() {
    let dir = fixtures().join("overlay-mtu-blackhole-mitigated");
    let a = run(&[dir.join("server.pcap")]);
    assert!(
        a.symptoms.iter().any(|s| s.summary.contains("ICMP")),
        "{:#?}",
        a.symptoms
    );
    for v in ["client.pcap", "server.pcap", "node.pcap", "veth.pcap"] {
        let a = run_with(&[dir.join(v)], &facts(&dir));
        assert!(
            a.findings.iter().all(|f| f.kind != FindingKind::Incident),
            "{v}: {:#?}",
            a.findings
        );
    }
}

// vxlan-checksum-offload on hand-made captures: the underlay between node A (192.168.50.10, client pod
// 10.244.1.10) and node B (192.168.50.20, server pod 10.244.2.11), flannel's VXLAN on UDP 8472.

const NODE_A: [u8; 4] = [192, 168, 50, 10];
const NODE_B: [u8; 4] = [192, 168, 50, 20];
const POD_A: [u8; 4] = [10, 244, 1, 10];
const POD_B: [u8; 4] = [10, 244, 2, 11];

/// A pod's connect to the other node's pod, as the underlay carries it: each inner packet in VXLAN,
/// A→B with `to_b` checksums and B→A with `to_a`. The client retransmits its SYN after 1 s and 3 s
/// when `answered` is false (the SYN-ACKs never arrive), else the handshake completes.
fn vxlan_handshake(
    to_b: support::UdpChecksumMode,
    to_a: support::UdpChecksumMode,
    answered: bool,
    frame: impl Fn(support::PacketBuilder, bool) -> Vec<u8>,
) -> Vec<(i64, Vec<u8>)> {
    use support::*;
    let syn = tcp_v4(POD_A, 40100, POD_B, 8080)
        .seq(1000)
        .flags(SYN)
        .mss(1410);
    let synack = tcp_v4(POD_B, 8080, POD_A, 40100)
        .seq(9000)
        .ack(1001)
        .flags(SYN | ACK)
        .mss(1410);
    let a_to_b = |p: &PacketBuilder| p.vxlan(1, NODE_A, NODE_B, 8472).udp_checksum(to_b);
    let b_to_a = |p: &PacketBuilder| p.vxlan(1, NODE_B, NODE_A, 8472).udp_checksum(to_a);
    let mut out = Vec::new();
    let tries: &[i64] = if answered { &[0] } else { &[0, 1000, 3000] };
    for (i, t) in tries.iter().enumerate() {
        out.push((T0 + t * MS, frame(a_to_b(&syn).ident(10 + i as u16), true)));
        out.push((
            T0 + (t + 1) * MS,
            frame(b_to_a(&synack).ident(20 + i as u16), false),
        ));
    }
    if answered {
        let ack = tcp_v4(POD_A, 40100, POD_B, 8080)
            .seq(1001)
            .ack(9001)
            .flags(ACK);
        out.push((T0 + 2 * MS, frame(a_to_b(&ack).ident(30), true)));
    }
    out
}

fn analyze_frames(linktype: u32, frames: &[(i64, Vec<u8>)], caplen: usize) -> Analysis {
    let mut w = support::PcapWriter::nanos(linktype);
    for (ts, f) in frames {
        w.push_cut(*ts, f, caplen);
    }
    analyze(
        vec![Input::stream(
            "underlay.pcap",
            Box::new(std::io::Cursor::new(w.finish())),
        )],
        &NodeContext::default(),
    )
}

#[test]
fn wrong_outer_checksums_one_way_with_the_handshake_resent_are_the_vxlan_offload_bug() {
    use support::*;
    // The receiving node A's underlay (Ethernet): A's SYNs leave with no checksum (0, Linux's VXLAN
    // default), B's SYN-ACKs arrive with a wrong non-zero one, and A never answers them.
    let frames = vxlan_handshake(
        UdpChecksumMode::Zero,
        UdpChecksumMode::Value(0xBAD1),
        false,
        |p, _| p.ethernet(),
    );
    let a = analyze_frames(LINKTYPE_ETHERNET, &frames, usize::MAX);
    let f = of(&a, "vxlan-checksum-offload");
    assert_eq!(f.len(), 1, "{:#?}", a.findings);
    assert_eq!(
        (f[0].kind, f[0].confidence),
        (FindingKind::Incident, Confidence::Confirmed)
    );
    assert!(
        f[0].summary.contains("192.168.50.20 to 192.168.50.10"),
        "{}",
        f[0].summary
    );
    assert!(
        f[0].reasoning.iter().any(|r| r.contains("sent again")),
        "{:#?}",
        f[0].reasoning
    );
    // The lost handshake is this incident's, not a SYN-drop detector's.
    let incidents: Vec<_> = a
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Incident)
        .map(|f| f.id)
        .collect();
    assert_eq!(incidents, ["vxlan-checksum-offload"], "{:#?}", a.findings);

    // Wrong both ways: no evidence that one node's sender is at fault.
    let frames = vxlan_handshake(
        UdpChecksumMode::Value(0xBAD2),
        UdpChecksumMode::Value(0xBAD1),
        false,
        |p, _| p.ethernet(),
    );
    let a = analyze_frames(LINKTYPE_ETHERNET, &frames, usize::MAX);
    let f = of(&a, "vxlan-checksum-offload");
    assert_eq!(f[0].confidence, Confidence::Possible, "{:#?}", f[0]);
}

/// The healthy look-alike: a capture on the sending host with tx checksum offload. Its outgoing
/// VXLAN packets carry only the pseudo-header sum (the NIC completes it after the capture point);
/// the handshake completes. No finding; a blind spot says why these checksums show nothing.
#[test]
fn a_pseudo_header_checksum_seen_leaving_the_sending_host_is_offload_not_a_fault() {
    use support::*;
    let frames = vxlan_handshake(
        UdpChecksumMode::PseudoHeaderOnly,
        UdpChecksumMode::Computed,
        true,
        |p, outgoing| {
            p.sll2(
                2,
                if outgoing {
                    PKTTYPE_OUTGOING
                } else {
                    PKTTYPE_HOST
                },
            )
        },
    );
    let a = analyze_frames(LINKTYPE_LINUX_SLL2, &frames, usize::MAX);
    assert!(
        of(&a, "vxlan-checksum-offload").is_empty(),
        "{:#?}",
        a.findings
    );
    assert!(
        a.blind_spots
            .iter()
            .any(|b| b.what.contains("pseudo-header") && b.what.contains("2 VXLAN")),
        "{:#?}",
        a.blind_spots
    );
}

/// Zero outer checksums (no checksum: Linux VXLAN's default over IPv4) both ways are not an error.
#[test]
fn zero_outer_checksums_are_allowed() {
    use support::*;
    let frames = vxlan_handshake(
        UdpChecksumMode::Zero,
        UdpChecksumMode::Zero,
        true,
        |p, _| p.ethernet(),
    );
    let a = analyze_frames(LINKTYPE_ETHERNET, &frames, usize::MAX);
    assert!(a.findings.is_empty(), "{:#?}", a.findings);
    assert!(a.blind_spots.is_empty(), "{:#?}", a.blind_spots);
}

/// A snap length that cuts the inner payload leaves the checksum unverifiable: counted as a blind
/// spot, never guessed as a fault.
#[test]
fn tunnel_packets_cut_by_the_snap_length_are_a_blind_spot() {
    use support::*;
    let frames = vxlan_handshake(
        UdpChecksumMode::Zero,
        UdpChecksumMode::Value(0xBAD1),
        false,
        |p, _| p.ethernet(),
    );
    // 14 + 20 + 8 + 8 + 14 + 20 (inner IP): the inner TCP header still decodes only partly, so cut
    // inside the inner TCP options instead (the SYNs carry 4 bytes of MSS).
    let a = analyze_frames(LINKTYPE_ETHERNET, &frames, 14 + 20 + 8 + 8 + 14 + 20 + 20);
    assert!(
        of(&a, "vxlan-checksum-offload").is_empty(),
        "{:#?}",
        a.findings
    );
    assert!(
        a.blind_spots
            .iter()
            .any(|b| b.what.contains("snap length") && b.what.contains("VXLAN")),
        "{:#?}",
        a.blind_spots
    );
}

#[test]
fn the_lab_run_is_named_from_every_vantage_that_sees_the_tunnel() {
    let dir = fixtures().join("vxlan-checksum-offload");
    // The receiving node (its `-i any`, its eth0 underlay): arriving wrong checksums one way, the
    // carried SYN-ACKs sent again.
    for v in ["node.pcap", "veth.pcap"] {
        let a = run(&[dir.join(v)]);
        let f = of(&a, "vxlan-checksum-offload");
        assert_eq!(f.len(), 1, "{v}: {:#?}", a.findings);
        assert_eq!(
            (f[0].kind, f[0].confidence),
            (FindingKind::Incident, Confidence::Confirmed),
            "{v}"
        );
        assert!(
            f[0].look_alikes
                .iter()
                .any(|l| l.id == "capture-offload" && l.ruled_out),
            "{v}"
        );
        // The lost handshakes are not offered to the SYN-drop detectors.
        let others: Vec<_> = a
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Incident && f.id != "vxlan-checksum-offload")
            .collect();
        assert!(others.is_empty(), "{v}: {others:#?}");
    }
    // The sending node's `-i any`: the wrong checksums leave it; a NIC after the capture point could
    // still rewrite them, so it is only possible, and says so.
    let a = run(&[dir.join("routing.pcap")]);
    let f = of(&a, "vxlan-checksum-offload");
    assert_eq!(f[0].confidence, Confidence::Possible, "{:#?}", f[0]);
    assert!(f[0]
        .look_alikes
        .iter()
        .any(|l| l.id == "capture-offload" && !l.ruled_out));
    // The pods see only stalled handshakes: a symptom, no finding.
    for v in ["client.pcap", "server.pcap"] {
        let a = run(&[dir.join(v)]);
        assert!(a.findings.is_empty(), "{v}: {:#?}", a.findings);
        assert!(!a.symptoms.is_empty(), "{v}");
    }
    // With the node's facts (this kernel has the fix, flannel.1 offloads its tx checksum) the finding
    // says the sender is elsewhere and shows the device.
    let a = run_with(&[dir.join("node.pcap")], &facts(&dir));
    let f = of(&a, "vxlan-checksum-offload");
    assert!(
        f[0].reasoning
            .iter()
            .any(|r| r.contains("has ea64d8d6c675")),
        "{:#?}",
        f[0].reasoning
    );
}

/// The mitigated run: no outer checksum (0) both ways, the requests answered. Quiet everywhere.
#[test]
fn the_lab_run_without_the_rewrite_is_quiet() {
    let dir = fixtures().join("vxlan-checksum-offload-mitigated");
    for v in [
        "client.pcap",
        "server.pcap",
        "node.pcap",
        "veth.pcap",
        "routing.pcap",
    ] {
        let a = run_with(&[dir.join(v)], &facts(&dir));
        assert!(
            a.findings.iter().all(|f| f.kind != FindingKind::Incident),
            "{v}: {:#?}",
            a.findings
        );
    }
}

/// The healthy look-alike on a real kernel: overlay-mtu-blackhole's VXLAN devices compute their outer
/// checksums with tx offload on, so every datagram the sending node's `-i any` and its underlay see
/// carries a checksum not yet completed (the pseudo-header sum, or local checksum offload: right once
/// the inner checksum is filled in). Not a fault: a blind spot, never a finding.
#[test]
fn checksums_left_to_offload_on_a_real_sending_host_are_a_blind_spot() {
    for run in ["overlay-mtu-blackhole", "overlay-mtu-blackhole-mitigated"] {
        for v in ["node.pcap", "veth.pcap"] {
            let a = run_with(&[fixtures().join(run).join(v)], &NodeContext::default());
            assert!(
                of(&a, "vxlan-checksum-offload").is_empty(),
                "{run}/{v}: {:#?}",
                a.findings
            );
            assert!(
                a.blind_spots
                    .iter()
                    .any(|b| b.what.contains("not yet computed")),
                "{run}/{v}: {:#?}",
                a.blind_spots
            );
        }
    }
}

#[test]
fn an_arp_storm_while_syns_die_is_a_possible_neighbour_table_overflow() {
    let dir = fixtures().join("neighbour-table-overflow");
    for (v, want) in [
        ("node.pcap", Some(Confidence::Possible)),
        ("routing.pcap", Some(Confidence::Possible)),
        ("client.pcap", None),
        ("server.pcap", None),
        ("veth.pcap", None),
    ] {
        let a = run(&[dir.join(v)]);
        let f = of(&a, "neighbour-table-overflow");
        assert_eq!(
            f.first().map(|f| f.confidence),
            want,
            "{v}: {:#?}",
            a.findings
        );
        // Nothing else claims the SYNs the emulated full table dropped.
        assert!(
            a.findings
                .iter()
                .all(|f| f.kind != FindingKind::Incident || f.id == "neighbour-table-overflow"),
            "{v}: {:#?}",
            a.findings
        );
    }
    let a = run(&[dir.join("node.pcap")]);
    let f = &of(&a, "neighbour-table-overflow")[0];
    assert!(
        f.summary.contains("for 300 distinct neighbours")
            && f.summary.contains("3 connection(s) failed"),
        "{}",
        f.summary
    );
    assert!(f.look_alikes.iter().any(|l| l.id == "scan"));
    // The node and the routing node see each request once each: together, still one request each.
    let both = run(&[dir.join("node.pcap"), dir.join("routing.pcap")]);
    let requests = |f: &netsleuth_core::Finding| {
        f.summary
            .split(" sent ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .map(str::to_string)
    };
    assert_eq!(
        requests(of(&both, "neighbour-table-overflow")[0]),
        requests(f),
        "{}",
        of(&both, "neighbour-table-overflow")[0].summary
    );
    // The run's facts: 300-odd entries in the node namespace past the emulated gc_thresh3 = 256.
    let a = run_with(&[dir.join("node.pcap")], &facts(&dir));
    let f = of(&a, "neighbour-table-overflow");
    assert_eq!(f[0].confidence, Confidence::Likely, "{:#?}", f[0].reasoning);
    assert!(f[0]
        .reasoning
        .iter()
        .any(|r| r.contains("at or past gc_thresh3 = 256")));
}

#[test]
fn raised_thresholds_leave_the_sweep_quiet() {
    // The same sweep (a storm of ARP requests) with every connection answered: nothing.
    let dir = fixtures().join("neighbour-table-overflow-mitigated");
    for v in [
        "node.pcap",
        "routing.pcap",
        "client.pcap",
        "server.pcap",
        "veth.pcap",
    ] {
        let a = run_with(&[dir.join(v)], &facts(&dir));
        assert!(
            a.findings.iter().all(|f| f.kind != FindingKind::Incident),
            "{v}: {:#?}",
            a.findings
        );
    }
}

mod neighbour_lookalikes {
    //! Hand-made captures: what an ARP/ND storm needs to be named, and what stays quiet.
    use super::support::*;
    use super::*;

    const T0: i64 = 1_700_000_000_000_000_000;
    const MS: i64 = 1_000_000;

    fn arp(op: u16, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.extend_from_slice(&[0; 18]);
        f
    }

    fn analyse(w: PcapWriter) -> Analysis {
        analyze(
            vec![Input::stream(
                "synthetic.pcap",
                Box::new(std::io::Cursor::new(w.finish())),
            )],
            &NodeContext::default(),
        )
    }

    const NODE: [u8; 4] = [10, 244, 0, 1];

    /// Requests from the node for `n` targets in 10.244.x.y, 10 ms apart; `answered` of them
    /// answered and asked for again 2 s later.
    fn storm(w: &mut PcapWriter, n: u32, answered: u32) {
        for i in 0..n {
            let t = [10, 244, 1 + (i / 250) as u8, (1 + i % 250) as u8];
            let ts = T0 + i64::from(i) * 10 * MS;
            w.push(ts, &arp(1, NODE, t));
            if i < answered {
                w.push(ts + MS, &arp(2, t, NODE));
                w.push(ts + 2000 * MS, &arp(1, NODE, t));
            }
        }
    }

    /// Two connections from a pod whose SYNs are sent three times and never answered.
    fn failing_syns(w: &mut PcapWriter, at: i64) {
        for (k, port) in [40001u16, 40002].into_iter().enumerate() {
            for r in 0..3 {
                let ts = at + k as i64 * 100 * MS + r * 1000 * MS;
                w.push(
                    ts,
                    &tcp_v4([10, 244, 2, 10], port, [10, 244, 9, 21], 8080)
                        .seq(7)
                        .flags(SYN)
                        .ethernet(),
                );
            }
        }
    }

    fn neighbour(a: &Analysis) -> Vec<(Confidence, String)> {
        a.findings
            .iter()
            .filter(|f| f.id == "neighbour-table-overflow")
            .map(|f| (f.confidence, f.summary.clone()))
            .collect()
    }

    #[test]
    fn churn_of_answered_neighbours_asked_again_while_syns_die() {
        let mut w = PcapWriter::nanos(LINKTYPE_ETHERNET);
        storm(&mut w, 150, 150);
        failing_syns(&mut w, T0 + 500 * MS);
        let a = analyse(w);
        let f = neighbour(&a);
        assert_eq!(f.len(), 1, "{:#?}", a.findings);
        assert_eq!(f[0].0, Confidence::Possible);
        assert!(
            f[0].1.contains("0 never answered, 150 asked again"),
            "{}",
            f[0].1
        );
    }

    #[test]
    fn failures_long_before_the_storm_do_not_hide_those_during_it() {
        // 100 connections failing a few minutes earlier (an unrelated outage), then the storm.
        let mut w = PcapWriter::nanos(LINKTYPE_ETHERNET);
        for k in 0..100u16 {
            for r in 0..2 {
                w.push(
                    T0 - 300_000 * MS + i64::from(k) * 10 * MS + r * 1000 * MS,
                    &tcp_v4([10, 244, 3, 10], 30000 + k, [10, 244, 9, 99], 80)
                        .seq(1)
                        .flags(SYN)
                        .ethernet(),
                );
            }
        }
        storm(&mut w, 150, 0);
        failing_syns(&mut w, T0 + 500 * MS);
        let a = analyse(w);
        let f = neighbour(&a);
        assert_eq!(f.len(), 1, "{:#?}", a.findings);
        assert!(
            f[0].1.contains("while 2 connection(s) failed"),
            "{}",
            f[0].1
        );
    }

    #[test]
    fn a_sweep_while_everything_works_is_quiet() {
        // A scan's or a new node's burst of requests with no failing connection: nothing to name.
        let mut w = PcapWriter::nanos(LINKTYPE_ETHERNET);
        storm(&mut w, 400, 0);
        assert!(neighbour(&analyse(w)).is_empty());
    }

    #[test]
    fn a_normal_rate_and_gratuitous_arps_are_quiet() {
        let mut w = PcapWriter::nanos(LINKTYPE_ETHERNET);
        // 40 neighbours, each answered, and 500 gratuitous announcements of 500 addresses (a
        // failover, many pods starting), while connections fail.
        storm(&mut w, 40, 40);
        for i in 0..500u32 {
            let a = [10, 244, 5 + (i / 250) as u8, (1 + i % 250) as u8];
            w.push(T0 + i64::from(i) * MS, &arp(1, a, a));
            w.push(T0 + i64::from(i) * MS + 1, &arp(2, a, a));
            w.push(T0 + i64::from(i) * MS + 2, &arp(1, [0, 0, 0, 0], a));
        }
        failing_syns(&mut w, T0 + 100 * MS);
        let a = analyse(w);
        assert!(neighbour(&a).is_empty(), "{:#?}", a.findings);
    }

    #[test]
    fn an_nd_storm_counts_like_an_arp_one() {
        let mut w = PcapWriter::nanos(LINKTYPE_ETHERNET);
        for i in 0..120u16 {
            let group = format!("ff02::1:ff00:{:x}", i + 1);
            w.push(
                T0 + i64::from(i) * 10 * MS,
                &icmp(
                    "fd00::1".parse::<std::net::IpAddr>().unwrap(),
                    group.parse::<std::net::IpAddr>().unwrap(),
                    135,
                    0,
                )
                .ethernet(),
            );
        }
        for r in 0..3 {
            w.push(
                T0 + r * 1000 * MS,
                &tcp_v6("fd00::1", 40001, "fd00::99", 80)
                    .seq(1)
                    .flags(SYN)
                    .ethernet(),
            );
        }
        let a = analyse(w);
        let f = neighbour(&a);
        assert_eq!(f.len(), 1, "{:#?}", a.findings);
        assert!(
            f[0].1.contains("ND request(s) for 120 distinct"),
            "{}",
            f[0].1
        );
    }
}
