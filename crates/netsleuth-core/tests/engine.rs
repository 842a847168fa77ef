//! The flow engine and the detectors on synthetic packet sequences with synthetic time: each incident's
//! wire signature makes its detector fire with the confidence the evidence supports, and the healthy
//! look-alikes from incidents.md stay quiet.

mod support;

use netsleuth_core::node::NodeContext;
use netsleuth_core::{analyze, Analysis, Confidence, Input};
use support::*;

const OUT: u8 = PKTTYPE_OUTGOING;
const HOST: u8 = PKTTYPE_HOST;

/// A node's `-i any` capture: originals recorded as sent, copies at other points as received.
#[derive(Default)]
struct Cap(SllCapture);

impl Cap {
    fn new() -> Self {
        Cap::default()
    }
    fn send(&mut self, ts: i64, ifindex: u32, b: PacketBuilder) -> u16 {
        self.0.record(ts, ifindex, OUT, b)
    }
    fn copy(&mut self, ts: i64, ifindex: u32, ident: u16, b: PacketBuilder) {
        self.0.copy(ts, ifindex, HOST, ident, b)
    }
    fn analyze(self) -> Analysis {
        self.analyze_with(&NodeContext::default())
    }
    fn analyze_with(self, node: &NodeContext) -> Analysis {
        self.0.analyze_with(node)
    }
}

fn ids(a: &Analysis) -> Vec<(&'static str, Confidence)> {
    incident_ids(a)
}

fn assert_quiet(a: &Analysis) {
    assert!(
        ids(a).is_empty(),
        "expected no incident, got {:#?}",
        a.findings
    );
}

const C: [u8; 4] = [10, 244, 1, 5]; // client pod
const N: [u8; 4] = [192, 168, 11, 7]; // node
const SRV: [u8; 4] = [10, 232, 3, 28]; // remote server
const VIP: [u8; 4] = [10, 96, 0, 20];
const B1: [u8; 4] = [10, 244, 2, 11];
const B2: [u8; 4] = [10, 244, 2, 12];

/// Handshake + one data exchange on one tuple; returns (client next seq, server next seq).
fn handshake(
    cap: &mut Cap,
    t: i64,
    c: ([u8; 4], u16),
    s: ([u8; 4], u16),
    isn_c: u32,
    isn_s: u32,
) -> (u32, u32) {
    cap.send(t, 2, tcp_v4(c.0, c.1, s.0, s.1).seq(isn_c).flags(SYN));
    cap.send(
        t + MS,
        2,
        tcp_v4(s.0, s.1, c.0, c.1)
            .seq(isn_s)
            .ack(isn_c + 1)
            .flags(SYN | ACK),
    );
    cap.send(
        t + 2 * MS,
        2,
        tcp_v4(c.0, c.1, s.0, s.1)
            .seq(isn_c + 1)
            .ack(isn_s + 1)
            .flags(ACK),
    );
    cap.send(
        t + 3 * MS,
        2,
        tcp_v4(c.0, c.1, s.0, s.1)
            .seq(isn_c + 1)
            .ack(isn_s + 1)
            .flags(ACK | PSH)
            .payload(b"hello"),
    );
    cap.send(
        t + 4 * MS,
        2,
        tcp_v4(s.0, s.1, c.0, c.1)
            .seq(isn_s + 1)
            .ack(isn_c + 6)
            .flags(ACK | PSH)
            .payload(b"world!"),
    );
    (isn_c + 6, isn_s + 7)
}

#[test]
fn snat_remap_seed_000_shape_is_confirmed() {
    // Seed 000: the node's own view after SNAT: port 31445, then the same socket under 35051.
    let mut cap = Cap::new();
    let (cs, ss) = handshake(&mut cap, T0, (N, 31445), (SRV, 8899), 32386333, 3724549281);
    let t = T0 + 414 * S;
    cap.send(
        t,
        2,
        tcp_v4(N, 35051, SRV, 8899)
            .seq(cs)
            .ack(ss)
            .flags(ACK | PSH)
            .payload(b"x"),
    );
    cap.send(t + MS, 2, tcp_v4(SRV, 8899, N, 35051).seq(ss).flags(RST));
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("conntrack-snat-remap", Confidence::Confirmed)],
        "{:#?}",
        a.findings
    );
    let f = &a.findings[0];
    assert!(
        f.summary.contains("31445") && f.summary.contains("35051"),
        "{}",
        f.summary
    );
    let json = serde_json::to_value(netsleuth_core::report::json::Finding::from(f)).unwrap();
    let frames: Vec<u64> = json["evidence"][0]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(
        frames,
        vec![5, 6, 7],
        "the last old-tuple packet, the re-SNATed packet and the RST"
    );
}

#[test]
fn dnat_rebalance_with_both_legs_is_confirmed() {
    let mut cap = Cap::new();
    let (ci, si) = (1000u32, 50000u32);
    // -i any: the client's SYN to the VIP, and after DNAT to backend 1.
    let id = cap.send(T0, 3, tcp_v4(C, 40000, VIP, 80).seq(ci).flags(SYN));
    cap.copy(
        T0 + 10_000,
        4,
        id,
        tcp_v4(C, 40000, B1, 80).seq(ci).flags(SYN),
    );
    let id = cap.send(
        T0 + MS,
        4,
        tcp_v4(B1, 80, C, 40000)
            .seq(si)
            .ack(ci + 1)
            .flags(SYN | ACK),
    );
    cap.copy(
        T0 + MS + 10_000,
        3,
        id,
        tcp_v4(VIP, 80, C, 40000)
            .seq(si)
            .ack(ci + 1)
            .flags(SYN | ACK),
    );
    let id = cap.send(
        T0 + 2 * MS,
        3,
        tcp_v4(C, 40000, VIP, 80)
            .seq(ci + 1)
            .ack(si + 1)
            .flags(ACK)
            .payload(b"abc"),
    );
    cap.copy(
        T0 + 2 * MS + 10_000,
        4,
        id,
        tcp_v4(C, 40000, B1, 80)
            .seq(ci + 1)
            .ack(si + 1)
            .flags(ACK)
            .payload(b"abc"),
    );
    let id = cap.send(
        T0 + 3 * MS,
        4,
        tcp_v4(B1, 80, C, 40000).seq(si + 1).ack(ci + 4).flags(ACK),
    );
    cap.copy(
        T0 + 3 * MS + 10_000,
        3,
        id,
        tcp_v4(VIP, 80, C, 40000).seq(si + 1).ack(ci + 4).flags(ACK),
    );
    // After a silence, conntrack has forgotten: the next segment is DNATed to backend 2, which resets.
    let t = T0 + 7200 * S;
    let id = cap.send(
        t,
        3,
        tcp_v4(C, 40000, VIP, 80)
            .seq(ci + 4)
            .ack(si + 1)
            .flags(ACK | PSH)
            .payload(b"d"),
    );
    cap.copy(
        t + 10_000,
        4,
        id,
        tcp_v4(C, 40000, B2, 80)
            .seq(ci + 4)
            .ack(si + 1)
            .flags(ACK | PSH)
            .payload(b"d"),
    );
    let id = cap.send(t + MS, 4, tcp_v4(B2, 80, C, 40000).seq(si + 1).flags(RST));
    cap.copy(
        t + MS + 10_000,
        3,
        id,
        tcp_v4(VIP, 80, C, 40000).seq(si + 1).flags(RST),
    );
    let mut node = NodeContext::default();
    node.sysctls.insert(
        "net.netfilter.nf_conntrack_tcp_timeout_established".into(),
        "3600".into(),
    );
    let a = cap.analyze_with(&node);
    assert_eq!(
        ids(&a),
        vec![("conntrack-dnat-rebalance", Confidence::Confirmed)],
        "{:#?}",
        a.findings
    );
    let f = &a.findings[0];
    assert!(
        f.summary.contains("10.244.2.11") && f.summary.contains("10.244.2.12"),
        "{}",
        f.summary
    );
    assert!(
        f.reasoning
            .iter()
            .any(|r| r.contains("exceeds nf_conntrack_tcp_timeout_established")),
        "{:?}",
        f.reasoning
    );
    // Copies at two points are one packet each, not retransmissions.
    assert_eq!(a.stats.tcp_connections, 1);
    assert_eq!(a.stats.tcp_copies, 6);
    assert_eq!(a.stats.tcp_data_retransmissions, 0);
    assert_eq!(a.stats.tcp_syn_retransmissions, 0);
}

#[test]
fn bridge_bypass_client_view_is_confirmed() {
    let mut cap = Cap::new();
    for (k, t) in [0i64, 1, 3].iter().enumerate() {
        let ts = T0 + t * S;
        cap.send(ts, 2, tcp_v4(C, 41000, VIP, 80).seq(7000).flags(SYN));
        cap.send(
            ts + MS,
            2,
            tcp_v4(B1, 80, C, 41000)
                .seq(9000 + k as u32)
                .ack(7001)
                .flags(SYN | ACK),
        );
        cap.send(
            ts + 2 * MS,
            2,
            tcp_v4(C, 41000, B1, 80).seq(7001).flags(RST),
        );
    }
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("bridge-nf-bypass", Confidence::Confirmed)],
        "{:#?}",
        a.findings
    );
}

#[test]
fn healthy_lookalikes_stay_quiet() {
    let mut cap = Cap::new();
    // An application reset: RST|ACK from a server that had the connection.
    let (cs, ss) = handshake(&mut cap, T0, (C, 42000), (SRV, 80), 100, 200);
    cap.send(
        T0 + 10 * MS,
        2,
        tcp_v4(SRV, 80, C, 42000).seq(ss).ack(cs).flags(RST | ACK),
    );
    // A closed port.
    cap.send(
        T0 + 20 * MS,
        2,
        tcp_v4(C, 42001, SRV, 81).seq(300).flags(SYN),
    );
    cap.send(
        T0 + 21 * MS,
        2,
        tcp_v4(SRV, 81, C, 42001).seq(0).ack(301).flags(RST | ACK),
    );
    // One lost SYN retransmitted.
    cap.send(
        T0 + 30 * MS,
        2,
        tcp_v4(C, 42002, SRV, 80).seq(400).flags(SYN),
    );
    handshake(&mut cap, T0 + 1030 * MS, (C, 42002), (SRV, 80), 400, 500);
    // A 4-tuple reused after TIME_WAIT with a new ISN.
    let (cs, ss) = handshake(&mut cap, T0 + 2 * S, (C, 42003), (SRV, 80), 600, 700);
    cap.send(
        T0 + 2 * S + 10 * MS,
        2,
        tcp_v4(C, 42003, SRV, 80).seq(cs).ack(ss).flags(FIN | ACK),
    );
    cap.send(
        T0 + 2 * S + 11 * MS,
        2,
        tcp_v4(SRV, 80, C, 42003)
            .seq(ss)
            .ack(cs + 1)
            .flags(FIN | ACK),
    );
    cap.send(
        T0 + 2 * S + 12 * MS,
        2,
        tcp_v4(C, 42003, SRV, 80).seq(cs + 1).ack(ss + 1).flags(ACK),
    );
    handshake(
        &mut cap,
        T0 + 70 * S,
        (C, 42003),
        (SRV, 80),
        900_000,
        800_000,
    );
    // A connection idle for an hour, then talking again normally.
    let (cs, ss) = handshake(&mut cap, T0 + 80 * S, (C, 42004), (SRV, 80), 10_000, 20_000);
    cap.send(
        T0 + 3680 * S,
        2,
        tcp_v4(C, 42004, SRV, 80)
            .seq(cs)
            .ack(ss)
            .flags(ACK | PSH)
            .payload(b"ping"),
    );
    cap.send(
        T0 + 3680 * S + MS,
        2,
        tcp_v4(SRV, 80, C, 42004).seq(ss).ack(cs + 4).flags(ACK),
    );
    // NXDOMAIN, and a normal parallel A/AAAA lookup.
    let dns = |ts: i64, cap: &mut Cap, id: u16, name: &str, qt: u16, nx: bool| {
        cap.send(
            ts,
            2,
            udp_v4(C, 5353, [10, 96, 0, 10], 53).payload(&dns_query(id, name, qt).build()),
        );
        let r = if nx {
            dns_response(id, name, qt).rcode(3)
        } else {
            dns_response(id, name, qt)
        };
        cap.send(
            ts + MS,
            2,
            udp_v4([10, 96, 0, 10], 53, C, 5353).payload(&r.build()),
        );
    };
    dns(T0 + 3700 * S, &mut cap, 1, "nope.example.", 1, true);
    dns(T0 + 3701 * S, &mut cap, 2, "ok.example.", 1, false);
    dns(
        T0 + 3701 * S + 10_000,
        &mut cap,
        3,
        "ok.example.",
        28,
        false,
    );
    let a = cap.analyze();
    assert_quiet(&a);
    assert_eq!(a.stats.tcp_resets_by_application, 1);
    assert_eq!(a.stats.tcp_resets_closed_port, 1);
    assert_eq!(a.stats.dns_nxdomain, 1);
    assert_eq!(
        a.stats.tcp_connections, 6,
        "the reused 4-tuple is a second connection"
    );
}

fn dns_pair(cap: &mut Cap, t: i64, port: u16, ids: (u16, u16)) -> (PacketBuilder, PacketBuilder) {
    let a = udp_v4(C, port, VIP, 53).payload(&dns_query(ids.0, "svc.example.", 1).build());
    let aaaa = udp_v4(C, port, VIP, 53).payload(&dns_query(ids.1, "svc.example.", 28).build());
    let _ = (cap, t);
    (a, aaaa)
}

#[test]
fn dns_race_one_point_is_likely_and_nat_view_is_confirmed() {
    // One point: A answered, AAAA lost and re-sent after 5 s.
    let mut cap = Cap::new();
    for i in 0..2u16 {
        let t = T0 + i as i64 * 20 * S;
        let (a, aaaa) = dns_pair(&mut cap, t, 6000 + i, (0x100 + i, 0x200 + i));
        cap.send(t, 2, a);
        cap.send(t + 30_000, 2, aaaa.clone());
        cap.send(
            t + MS,
            2,
            udp_v4(VIP, 53, C, 6000 + i).payload(
                &dns_response(0x100 + i, "svc.example.", 1)
                    .answer_a([1, 2, 3, 4])
                    .build(),
            ),
        );
        cap.send(t + 5 * S, 2, aaaa);
        cap.send(
            t + 5 * S + MS,
            2,
            udp_v4(VIP, 53, C, 6000 + i)
                .payload(&dns_response(0x200 + i, "svc.example.", 28).build()),
        );
    }
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("dns-conntrack-race", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
    assert!(a.findings[0]
        .reasoning
        .iter()
        .any(|r| r.contains("2 lookups")));

    // One such lookup alone, at one point, is any lost packet: a symptom with the race considered,
    // not a finding (a query lost beyond the node looks the same from the pod).
    let mut cap = Cap::new();
    let (a4, a6) = dns_pair(&mut cap, T0, 6050, (0x150, 0x250));
    cap.send(T0, 2, a4);
    cap.send(T0 + 30_000, 2, a6.clone());
    cap.send(
        T0 + MS,
        2,
        udp_v4(VIP, 53, C, 6050).payload(
            &dns_response(0x150, "svc.example.", 1)
                .answer_a([1, 2, 3, 4])
                .build(),
        ),
    );
    cap.send(T0 + 5 * S, 2, a6);
    cap.send(
        T0 + 5 * S + MS,
        2,
        udp_v4(VIP, 53, C, 6050).payload(&dns_response(0x250, "svc.example.", 28).build()),
    );
    let a = cap.analyze();
    assert_eq!(ids(&a), vec![], "{:#?}", a.findings);
    assert!(
        a.symptoms
            .iter()
            .any(|s| s.considered.iter().any(|c| c.id == "dns-conntrack-race")),
        "{:#?}",
        a.symptoms
    );

    // Node view: the lost AAAA is seen before DNAT only; the A at both points.
    let mut cap = Cap::new();
    let (qa, qaaaa) = dns_pair(&mut cap, T0, 6100, (0x300, 0x301));
    let id = cap.send(T0, 3, qa);
    cap.copy(
        T0 + 5_000,
        4,
        id,
        udp_v4(C, 6100, B1, 53).payload(&dns_query(0x300, "svc.example.", 1).build()),
    );
    cap.send(T0 + 20_000, 3, qaaaa.clone());
    let id = cap.send(
        T0 + MS,
        4,
        udp_v4(B1, 53, C, 6100).payload(
            &dns_response(0x300, "svc.example.", 1)
                .answer_a([1, 2, 3, 4])
                .build(),
        ),
    );
    cap.copy(
        T0 + MS + 5_000,
        3,
        id,
        udp_v4(VIP, 53, C, 6100).payload(
            &dns_response(0x300, "svc.example.", 1)
                .answer_a([1, 2, 3, 4])
                .build(),
        ),
    );
    cap.send(T0 + 5 * S, 3, qaaaa);
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("dns-conntrack-race", Confidence::Confirmed)],
        "{:#?}",
        a.findings
    );
}

#[test]
fn dns_id_collision_aaaa_first_is_likely() {
    let mut cap = Cap::new();
    let (qa, qaaaa) = dns_pair(&mut cap, T0, 6200, (0x4242, 0x4242));
    cap.send(T0, 2, qa);
    cap.send(T0 + 10_000, 2, qaaaa);
    cap.send(
        T0 + MS,
        2,
        udp_v4(VIP, 53, C, 6200).payload(&dns_response(0x4242, "svc.example.", 28).build()),
    );
    cap.send(
        T0 + 2 * MS,
        2,
        udp_v4(VIP, 53, C, 6200).payload(
            &dns_response(0x4242, "svc.example.", 1)
                .answer_a([1, 2, 3, 4])
                .build(),
        ),
    );
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("dns-id-collision", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
}

#[test]
fn dead_upstream_among_live_ones_is_likely() {
    let mut cap = Cap::new();
    let good = [10, 0, 0, 2];
    let dead = [10, 225, 30, 181];
    for i in 0..4u16 {
        let t = T0 + i as i64 * 3 * S;
        cap.send(
            t,
            2,
            udp_v4(C, 7000 + i, dead, 53).payload(&dns_query(i, "a.example.", 1).build()),
        );
        cap.send(
            t + S,
            2,
            udp_v4(C, 7100 + i, good, 53).payload(&dns_query(i, "a.example.", 1).build()),
        );
        cap.send(
            t + S + MS,
            2,
            udp_v4(good, 53, C, 7100 + i).payload(
                &dns_response(i, "a.example.", 1)
                    .answer_a([1, 1, 1, 1])
                    .build(),
            ),
        );
    }
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("dns-upstream-unreachable", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
    assert!(a.findings[0].summary.contains("10.225.30.181"));
}

#[test]
fn snat_clash_at_node_is_confirmed() {
    let mut cap = Cap::new();
    let c2 = [10, 244, 1, 6];
    // Two pods' SYNs to the same server at the same moment; both map to node port 1024.
    let id = cap.send(T0, 3, tcp_v4(C, 50000, SRV, 80).seq(111).flags(SYN));
    cap.copy(
        T0 + 5_000,
        9,
        id,
        tcp_v4(N, 1024, SRV, 80).seq(111).flags(SYN),
    );
    cap.send(
        T0 + 20_000,
        5,
        tcp_v4(c2, 50001, SRV, 80).seq(222).flags(SYN),
    ); // dropped at insert
    cap.send(
        T0 + MS,
        9,
        tcp_v4(SRV, 80, N, 1024).seq(5).ack(112).flags(SYN | ACK),
    );
    // One second later the second pod retransmits; this time it gets port 1025.
    let id = cap.send(T0 + S, 5, tcp_v4(c2, 50001, SRV, 80).seq(222).flags(SYN));
    cap.copy(
        T0 + S + 5_000,
        9,
        id,
        tcp_v4(N, 1025, SRV, 80).seq(222).flags(SYN),
    );
    cap.send(
        T0 + S + MS,
        9,
        tcp_v4(SRV, 80, N, 1025).seq(6).ack(223).flags(SYN | ACK),
    );
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("snat-port-clash", Confidence::Confirmed)],
        "{:#?}",
        a.findings
    );
}

/// The lab's snat-port-clash run that CI once saw named `tw-recycle-paws`: the pod whose SYN died at
/// conntrack insert had the lower TS clock, so its SYN looked "backwards" against the other pod's
/// accepted one. A SYN the node's own capture saw die before its egress never met the server's PAWS
/// check.
#[test]
fn a_clash_drop_with_a_backwards_timestamp_is_a_clash_not_paws() {
    const SNAT: [u8; 4] = [192, 168, 50, 10];
    let mut cap = Cap::new();
    let c2 = [10, 244, 1, 6];
    let id = cap.send(
        T0,
        3,
        tcp_v4(C, 40000, SRV, 80)
            .seq(111)
            .flags(SYN)
            .ts(9_000_000, 0),
    );
    cap.copy(
        T0 + 5_000,
        9,
        id,
        tcp_v4(SNAT, 1024, SRV, 80)
            .seq(111)
            .flags(SYN)
            .ts(9_000_000, 0),
    );
    // The second pod's SYN (TS clock far behind) is dropped at insert: seen before SNAT only.
    cap.send(
        T0 + 20_000,
        5,
        tcp_v4(c2, 40000, SRV, 80).seq(222).flags(SYN).ts(4_000, 0),
    );
    let sa = |dst: [u8; 4], port: u16, ack: u32, tsecr: u32| {
        tcp_v4(SRV, 80, dst, port)
            .seq(5)
            .ack(ack)
            .flags(SYN | ACK)
            .ts(77, tsecr)
    };
    let id = cap.send(T0 + MS, 9, sa(SNAT, 1024, 112, 9_000_000));
    cap.copy(T0 + MS + 5_000, 3, id, sa(C, 40000, 112, 9_000_000));
    // One second later its retransmission gets the other port of the range and is answered.
    let id = cap.send(
        T0 + S,
        5,
        tcp_v4(c2, 40000, SRV, 80).seq(222).flags(SYN).ts(5_000, 0),
    );
    cap.copy(
        T0 + S + 5_000,
        9,
        id,
        tcp_v4(SNAT, 1025, SRV, 80).seq(222).flags(SYN).ts(5_000, 0),
    );
    let id = cap.send(T0 + S + MS, 9, sa(SNAT, 1025, 223, 5_000));
    cap.copy(T0 + S + MS + 5_000, 5, id, sa(c2, 40000, 223, 5_000));
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("snat-port-clash", Confidence::Confirmed)],
        "{:#?}",
        a.findings
    );
}

#[test]
fn paws_drop_by_backwards_timestamps_is_likely() {
    let mut cap = Cap::new();
    let mut t = T0;
    // Client A (TS clock high) connects fine twice; client B behind the same SNAT IP (TS clock low)
    // is ignored twice, 1-3-7 s retransmissions.
    for (k, (tsval, ok)) in [
        (9_000_000u32, true),
        (100, false),
        (9_000_500, true),
        (200, false),
    ]
    .iter()
    .enumerate()
    {
        let port = 30000 + k as u16;
        let isn = 1000 * (k as u32 + 1);
        if *ok {
            cap.send(
                t,
                2,
                tcp_v4(N, port, SRV, 80).seq(isn).flags(SYN).ts(*tsval, 0),
            );
            cap.send(
                t + MS,
                2,
                tcp_v4(SRV, 80, N, port)
                    .seq(7)
                    .ack(isn + 1)
                    .flags(SYN | ACK),
            );
        } else {
            for d in [0, 1, 3, 7] {
                cap.send(
                    t + d * S,
                    2,
                    tcp_v4(N, port, SRV, 80)
                        .seq(isn)
                        .flags(SYN)
                        .ts(tsval + d as u32 * 1000, 0),
                );
            }
        }
        t += 10 * S;
    }
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("tw-recycle-paws", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
    let mut node = NodeContext::default();
    node.sysctls
        .insert("net.ipv4.tcp_tw_recycle".into(), "1".into());
    let _ = node;
}

#[test]
fn listen_overflow_burst_is_likely() {
    let mut cap = Cap::new();
    for k in 0..10u32 {
        let t = T0 + k as i64 * 10 * MS;
        let port = 33000 + k as u16;
        let isn = 10_000 * (k + 1);
        cap.send(t, 2, tcp_v4(C, port, SRV, 8080).seq(isn).flags(SYN));
        if k % 3 == 0 {
            // Dropped: answered only after the 1 s retransmission.
            cap.send(t + S, 2, tcp_v4(C, port, SRV, 8080).seq(isn).flags(SYN));
            cap.send(
                t + S + MS,
                2,
                tcp_v4(SRV, 8080, C, port)
                    .seq(k)
                    .ack(isn + 1)
                    .flags(SYN | ACK),
            );
        } else {
            cap.send(
                t + MS,
                2,
                tcp_v4(SRV, 8080, C, port)
                    .seq(k)
                    .ack(isn + 1)
                    .flags(SYN | ACK),
            );
        }
    }
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("listen-queue-overflow", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
}

/// A load balancer's health checks from `lb` to the NodePort: two SYNs, each retransmitted at 1 and 3 s
/// and never answered, while the same port answers another source.
fn unanswered_health_checks(lb: [u8; 4]) -> Cap {
    let mut cap = Cap::new();
    for k in 0..2u32 {
        for d in [0i64, 1, 3] {
            cap.send(
                T0 + k as i64 * 20 * S + d * S,
                2,
                tcp_v4(lb, 40000 + k as u16, N, 30080)
                    .seq(5000 + k)
                    .flags(SYN),
            );
        }
    }
    handshake(
        &mut cap,
        T0 + 50 * S,
        ([10, 0, 9, 9], 45000),
        (N, 30080),
        1,
        2,
    );
    cap
}

#[test]
fn local_source_drop_with_node_fact_is_confirmed() {
    let lb = [170, 106, 134, 124];
    let cap = unanswered_health_checks(lb);
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("local-source-drop", Confidence::Possible)],
        "{:#?}",
        a.findings
    );
    let mut cap2 = Cap::new();
    for k in 0..2u32 {
        for d in [0i64, 1, 3] {
            cap2.send(
                T0 + k as i64 * 20 * S + d * S,
                2,
                tcp_v4(lb, 40000 + k as u16, N, 30080)
                    .seq(5000 + k)
                    .flags(SYN),
            );
        }
    }
    handshake(
        &mut cap2,
        T0 + 50 * S,
        ([10, 0, 9, 9], 45000),
        (N, 30080),
        1,
        2,
    );
    let mut node = NodeContext::default();
    node.ipvs_bound_addrs.push(std::net::IpAddr::from(lb));
    let a = cap2.analyze_with(&node);
    assert_eq!(
        ids(&a),
        vec![("local-source-drop", Confidence::Confirmed)],
        "{:#?}",
        a.findings
    );
}

#[test]
fn memory_follows_live_connections_not_packets() {
    let mut cap = Cap::new();
    // 20 000 short connections one after another: at most a handful alive at a time.
    for k in 0..20_000u32 {
        let t = T0 + k as i64 * 10 * MS;
        let port = 1024 + (k % 60000) as u16;
        let (cs, ss) = handshake(&mut cap, t, (C, port), (SRV, 80), k * 1000, k * 2000);
        cap.send(
            t + 5 * MS,
            2,
            tcp_v4(C, port, SRV, 80).seq(cs).ack(ss).flags(FIN | ACK),
        );
        cap.send(
            t + 6 * MS,
            2,
            tcp_v4(SRV, 80, C, port)
                .seq(ss)
                .ack(cs + 1)
                .flags(FIN | ACK),
        );
        cap.send(
            t + 7 * MS,
            2,
            tcp_v4(C, port, SRV, 80).seq(cs + 1).ack(ss + 1).flags(ACK),
        );
    }
    let a = cap.analyze();
    assert_quiet(&a);
    assert_eq!(a.stats.tcp_connections, 20_000);
    assert!(
        a.stats.tcp_peak_live_connections < 700,
        "peak live {}",
        a.stats.tcp_peak_live_connections
    );
}

#[test]
fn syns_cut_off_by_the_end_of_the_capture_are_not_an_overflow() {
    // Regression: unanswered SYNs a few ms before the capture ends were taken for dropped ones.
    let mut cap = Cap::new();
    for k in 0..200u32 {
        handshake(
            &mut cap,
            T0 + k as i64 * 5 * MS,
            (C, 20000 + k as u16),
            ([10, 2, 0, 1], 80),
            k * 7919,
            k * 104729,
        );
    }
    let t = T0 + 1001 * MS;
    for k in 0..5u32 {
        cap.send(
            t + k as i64 * 4 * MS,
            2,
            tcp_v4(C, 30000 + k as u16, [10, 2, 0, 1], 80)
                .seq(77 + k)
                .flags(SYN),
        );
    }
    assert_quiet(&cap.analyze());
}

/// Analyse raw pcap bytes.
fn analyze_bytes(bytes: Vec<u8>) -> Analysis {
    analyze(
        vec![Input::stream(
            "synthetic.pcap",
            Box::new(std::io::Cursor::new(bytes)),
        )],
        &NodeContext::default(),
    )
}

#[test]
fn symptoms_without_a_catalogue_cause_are_listed_with_the_causes_considered() {
    // A pod-side capture: five connections aborted by the application (RST|ACK), one SYN
    // retransmitted then answered, and DNS answered after two seconds. No catalogue cause fits, but
    // the report must not read as "all is well".
    use netsleuth_core::symptoms::SymptomKind;
    let mut cap = Cap::new();
    for k in 0..5u32 {
        let t = T0 + k as i64 * S;
        let port = 41000 + k as u16;
        let (cn, sn) = handshake(
            &mut cap,
            t,
            (C, port),
            (SRV, 443),
            1000 * (k + 1),
            7000 * (k + 1),
        );
        cap.send(
            t + 10 * MS,
            2,
            tcp_v4(SRV, 443, C, port).seq(sn).ack(cn).flags(RST | ACK),
        );
    }
    let t = T0 + 10 * S;
    cap.send(t, 2, tcp_v4(C, 42000, SRV, 443).seq(5).flags(SYN));
    cap.send(t + S, 2, tcp_v4(C, 42000, SRV, 443).seq(5).flags(SYN));
    cap.send(
        t + S + MS,
        2,
        tcp_v4(SRV, 443, C, 42000).seq(9).ack(6).flags(SYN | ACK),
    );
    let t = T0 + 15 * S;
    cap.send(
        t,
        2,
        udp_v4(C, 6100, VIP, 53).payload(&dns_query(0x77, "api.example.", 1).build()),
    );
    cap.send(
        t + 2 * S,
        2,
        udp_v4(VIP, 53, C, 6100).payload(
            &dns_response(0x77, "api.example.", 1)
                .answer_a([1, 2, 3, 4])
                .build(),
        ),
    );
    cap.send(T0 + 40 * S, 2, tcp_v4(C, 42001, SRV, 443).seq(1).flags(ACK));
    let a = cap.analyze();
    assert_quiet(&a);
    let kinds: Vec<_> = a.symptoms.iter().map(|s| (s.kind, s.count)).collect();
    assert_eq!(
        kinds,
        vec![
            (SymptomKind::ConnectionResets, 5),
            (SymptomKind::SynRetransmissions, 1),
            (SymptomKind::DnsSlow, 1)
        ],
        "{:#?}",
        a.symptoms
    );
    let resets = &a.symptoms[0];
    assert!(
        resets.summary.contains("5 RST|ACK from the server"),
        "{}",
        resets.summary
    );
    assert!(resets
        .considered
        .iter()
        .any(|c| c.id == "conntrack-dnat-rebalance" && c.verdict == "not-seen"));
    assert!(resets
        .considered
        .iter()
        .any(|c| c.id == "application" && c.verdict == "explains"));
    let syn = &a.symptoms[1];
    assert!(syn
        .considered
        .iter()
        .any(|c| c.id == "listen-queue-overflow" && c.why.contains("ListenOverflows")));
    assert!(syn.otherwise.is_some());
    assert!(!syn.evidence.is_empty());
    let dns = &a.symptoms[2];
    assert!(dns.considered.iter().all(|c| c.verdict == "not-seen"));
}

#[test]
fn a_healthy_capture_has_no_symptoms() {
    let mut cap = Cap::new();
    handshake(&mut cap, T0, (C, 40000), (SRV, 443), 100, 900);
    let a = cap.analyze();
    assert!(a.symptoms.is_empty(), "{:#?}", a.symptoms);
    assert!(a.blind_spots.is_empty(), "{:#?}", a.blind_spots);
}

#[test]
fn two_ports_of_one_overloaded_listener_are_one_finding_with_two_cases() {
    let mut cap = Cap::new();
    for (i, sport) in [8080u16, 8443].into_iter().enumerate() {
        for k in 0..10u32 {
            let t = T0 + i as i64 * 30 * S + k as i64 * 10 * MS;
            let port = 33000 + (i as u16) * 100 + k as u16;
            let isn = 10_000 * (k + 1) + i as u32;
            cap.send(t, 2, tcp_v4(C, port, SRV, sport).seq(isn).flags(SYN));
            let answer_at = if k % 3 == 0 {
                cap.send(t + S, 2, tcp_v4(C, port, SRV, sport).seq(isn).flags(SYN));
                t + S + MS
            } else {
                t + MS
            };
            cap.send(
                answer_at,
                2,
                tcp_v4(SRV, sport, C, port)
                    .seq(k)
                    .ack(isn + 1)
                    .flags(SYN | ACK),
            );
        }
    }
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("listen-queue-overflow", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
    let f = &a.findings[0];
    assert_eq!(f.cases.len(), 1, "{:#?}", f);
    assert!(
        f.summary.contains(":8080") && f.cases[0].contains(":8443"),
        "{} / {:?}",
        f.summary,
        f.cases
    );
}

#[test]
fn blind_spots_are_named() {
    // DNS cut by a 64-byte snap length: the question cannot be read.
    let mut w = PcapWriter::with(LINKTYPE_ETHERNET, true, false, 64);
    let q = udp_v4(C, 6000, VIP, 53)
        .payload(&dns_query(1, "a-rather-long-name.svc.cluster.local.", 1).build());
    for k in 0..3 {
        let frame = q.ethernet();
        w.push_cut(T0 + k * S, &frame, 64);
    }
    let a = analyze_bytes(w.finish());
    assert!(
        a.blind_spots
            .iter()
            .any(|b| b.what.contains("cut by the snap length")
                && b.undecided.contains(&"dns-id-collision")),
        "{:#?}",
        a.blind_spots
    );

    // A query in the last seconds of the capture: its answer may have come after the end.
    let mut cap = Cap::new();
    handshake(&mut cap, T0, (C, 40000), (SRV, 443), 100, 900);
    cap.send(
        T0 + S,
        2,
        udp_v4(C, 6001, VIP, 53).payload(&dns_query(2, "late.example.", 1).build()),
    );
    let a = cap.analyze();
    assert!(a.symptoms.is_empty(), "not a symptom: {:#?}", a.symptoms);
    assert!(
        a.blind_spots
            .iter()
            .any(|b| b.what.contains("before the capture ended")),
        "{:#?}",
        a.blind_spots
    );

    // Frames of a link type netsleuth does not decode (802.11).
    let w = PcapWriter::new(105)
        .packet(T0, &[0u8; 40])
        .packet(T0 + S, &[0u8; 40]);
    let a = analyze_bytes(w.finish());
    assert!(
        a.blind_spots
            .iter()
            .any(|b| b.what.contains("not examined")),
        "{:#?}",
        a.blind_spots
    );
    assert_eq!(a.stats.ip_packets, 0);
}

/// Client pod's view of a connection to `server`: handshake, silence of `idle`, then a data segment
/// answered by `answer_flags` (with seq = what the client acknowledged).
fn client_view_after_idle(
    server: ([u8; 4], u16),
    idle: i64,
    answer_flags: u8,
    fin_first: bool,
) -> Analysis {
    let mut cap = Cap::new();
    let (cn, sn) = handshake(&mut cap, T0, (C, 45000), server, 1000, 5000);
    let mut t = T0 + 5 * MS;
    if fin_first {
        cap.send(
            t,
            2,
            tcp_v4(server.0, server.1, C, 45000)
                .seq(sn)
                .ack(cn)
                .flags(FIN | ACK),
        );
        t += MS;
    }
    t += idle;
    cap.send(
        t,
        2,
        tcp_v4(C, 45000, server.0, server.1)
            .seq(cn)
            .ack(sn)
            .flags(ACK | PSH)
            .payload(b"ping"),
    );
    let ack = if answer_flags & ACK != 0 { cn + 4 } else { 0 };
    cap.send(
        t + MS,
        2,
        tcp_v4(server.0, server.1, C, 45000)
            .seq(sn)
            .ack(ack)
            .flags(answer_flags),
    );
    cap.analyze()
}

#[test]
fn client_view_of_a_lost_conntrack_entry_is_possible_and_names_its_look_alikes() {
    let a = client_view_after_idle((VIP, 80), 30 * S, RST, false);
    assert_eq!(
        ids(&a),
        vec![("conntrack-dnat-rebalance", Confidence::Possible)],
        "{:#?}",
        a.findings
    );
    let f = &a.findings[0];
    assert!(
        f.reasoning.iter().any(|r| r.contains("-i any")),
        "{:#?}",
        f.reasoning
    );
    let alike = |id: &str| {
        f.look_alikes
            .iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("{id}: {:#?}", f.look_alikes))
    };
    assert!(alike("application").ruled_out);
    assert!(!alike("conntrack-snat-remap").ruled_out);
    assert!(!alike("server-restart").ruled_out);

    // Healthy look-alikes: an application's RST|ACK after idle, a RST after the server's FIN, and a
    // bare RST from a server on the open internet (a load balancer's, a restarted server's).
    assert_quiet(&client_view_after_idle((VIP, 80), 30 * S, RST | ACK, false));
    assert_quiet(&client_view_after_idle((VIP, 80), 30 * S, RST, true));
    assert_quiet(&client_view_after_idle(
        ([93, 184, 216, 34], 443),
        30 * S,
        RST,
        false,
    ));
}

#[test]
fn localhost_asked_from_dns_without_hosts_is_a_possible_go_resolver_finding() {
    let mut cap = Cap::new();
    for (k, name) in ["localhost.default.svc.cluster.local.", "localhost."]
        .into_iter()
        .enumerate()
    {
        let t = T0 + k as i64 * S;
        cap.send(
            t,
            2,
            udp_v4(C, 6200 + k as u16, VIP, 53)
                .payload(&dns_query(0x40 + k as u16, name, 1).build()),
        );
        cap.send(
            t + MS,
            2,
            udp_v4(VIP, 53, C, 6200 + k as u16)
                .payload(&dns_response(0x40 + k as u16, name, 1).rcode(3).build()),
        );
    }
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("go-resolver-dns-first", Confidence::Possible)],
        "{:#?}",
        a.findings
    );
    assert!(a.findings[0]
        .reasoning
        .iter()
        .any(|r| r.contains("nsswitch.conf")));

    // A name that is not in the given hosts file, asked from DNS: healthy.
    let mut cap = Cap::new();
    cap.send(
        T0,
        2,
        udp_v4(C, 6300, VIP, 53).payload(&dns_query(0x50, "db.example.", 1).build()),
    );
    cap.send(
        T0 + MS,
        2,
        udp_v4(VIP, 53, C, 6300).payload(
            &dns_response(0x50, "db.example.", 1)
                .answer_a([10, 1, 1, 1])
                .build(),
        ),
    );
    let node = NodeContext {
        hosts: vec![("127.0.0.1".parse().unwrap(), "localhost".into())],
        ..NodeContext::default()
    };
    assert_quiet(&cap.analyze_with(&node));
}

#[test]
fn a_routing_node_sees_each_packet_twice_and_the_id_collision_still_shows() {
    // `tcpdump -i any` on a node that only routes: every packet on the pod's veth (ifindex 5) and on
    // the uplink (ifindex 2), same tuple, same IP id. musl sends A and AAAA with one id, the AAAA is
    // answered first.
    let mut cap = Cap::new();
    let q = |qt| udp_v4(C, 6400, SRV, 53).payload(&dns_query(0x5151, "svc.example.", qt).build());
    let ia = cap.send(T0, 5, q(1));
    cap.copy(T0 + 20_000, 2, ia, q(1));
    let iaaaa = cap.send(T0 + 10_000, 5, q(28));
    cap.copy(T0 + 30_000, 2, iaaaa, q(28));
    let r6 = udp_v4(SRV, 53, C, 6400).payload(&dns_response(0x5151, "svc.example.", 28).build());
    let i6 = cap.send(T0 + MS, 2, r6.clone());
    cap.copy(T0 + MS + 20_000, 5, i6, r6);
    let r4 = udp_v4(SRV, 53, C, 6400).payload(
        &dns_response(0x5151, "svc.example.", 1)
            .answer_a([1, 2, 3, 4])
            .build(),
    );
    let i4 = cap.send(T0 + 2 * MS, 2, r4.clone());
    cap.copy(T0 + 2 * MS + 20_000, 5, i4, r4);
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("dns-id-collision", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
    assert_eq!(
        a.stats.dns_queries, 2,
        "copies are one query seen at two points"
    );
    assert_eq!(a.stats.dns_retries, 0);

    // The same routing node, healthy: distinct ids, each answered; copies stay quiet.
    let mut cap = Cap::new();
    for (k, qt) in [(0u16, 1u16), (1, 28)] {
        let q =
            udp_v4(C, 6500, SRV, 53).payload(&dns_query(0x6000 + k, "svc.example.", qt).build());
        let t = T0 + k as i64 * 10_000;
        let i = cap.send(t, 5, q.clone());
        cap.copy(t + 20_000, 2, i, q);
        let r =
            udp_v4(SRV, 53, C, 6500).payload(&dns_response(0x6000 + k, "svc.example.", qt).build());
        let i = cap.send(t + MS, 2, r.clone());
        cap.copy(t + MS + 20_000, 5, i, r);
    }
    let a = cap.analyze();
    assert_quiet(&a);
    assert!(a.symptoms.is_empty(), "{:#?}", a.symptoms);
}

#[test]
fn paws_with_the_hosts_behind_snat_visible_is_confirmed() {
    // A node's `-i any`: two pods (their own TS clocks) SNATed to one node address; the server drops
    // exactly the SYN whose TSval is behind the last accepted one from that address.
    const SNAT: [u8; 4] = [192, 168, 50, 10];
    let mut cap = Cap::new();
    let mut connect =
        |t: i64, pod: [u8; 4], port: u16, snat_port: u16, isn: u32, tsval: u32, answered: bool| {
            let syn = |src: [u8; 4], sport: u16| {
                tcp_v4(src, sport, SRV, 80).seq(isn).flags(SYN).ts(tsval, 0)
            };
            let tries = if answered { 1 } else { 3 };
            for k in 0..tries {
                let at = t + k as i64 * S;
                let id = cap.send(at, 5, syn(pod, port));
                cap.copy(at + 10_000, 2, id, syn(SNAT, snat_port));
            }
            if answered {
                let sa = |dst: [u8; 4], dport: u16| {
                    tcp_v4(SRV, 80, dst, dport)
                        .seq(isn ^ 0x5555)
                        .ack(isn + 1)
                        .flags(SYN | ACK)
                        .ts(77, tsval)
                };
                let id = cap.send(t + MS, 2, sa(SNAT, snat_port));
                cap.copy(t + MS + 10_000, 5, id, sa(pod, port));
            }
        };
    connect(T0, [10, 244, 1, 11], 40000, 50000, 1_000, 9_000_000, true);
    connect(
        T0 + 100 * MS,
        [10, 244, 1, 12],
        40001,
        50001,
        2_000,
        4_000,
        false,
    );
    connect(
        T0 + 200 * MS,
        [10, 244, 1, 11],
        40002,
        50002,
        3_000,
        9_000_100,
        true,
    );
    cap.send(T0 + 10 * S, 2, tcp_v4(SRV, 80, C, 1).seq(1).flags(ACK));
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("tw-recycle-paws", Confidence::Confirmed)],
        "{:#?}",
        a.findings
    );
    assert!(
        a.findings[0]
            .reasoning
            .iter()
            .any(|r| r.contains("before SNAT")),
        "{:#?}",
        a.findings[0].reasoning
    );
}

/// A client pod's own capture: the clients are seen before SNAT only, each under its own address.
/// One client's SYNs, each retransmitted twice, go unanswered exactly when their TSval is behind the
/// one the server last accepted from another client: compared per server (not per source address),
/// and only `possible`, since the shared SNAT address is not seen.
#[test]
fn paws_seen_before_snat_only_is_compared_across_clients() {
    let mut cap = Cap::new();
    let mut connect = |t: i64, pod: [u8; 4], port: u16, isn: u32, tsval: u32, answered: bool| {
        let syn = tcp_v4(pod, port, SRV, 80).seq(isn).flags(SYN).ts(tsval, 0);
        let tries = if answered { 1 } else { 3 };
        for k in 0..tries {
            cap.send(t + k as i64 * S, 5, syn.clone());
        }
        if answered {
            let sa = tcp_v4(SRV, 80, pod, port)
                .seq(isn ^ 0x5555)
                .ack(isn + 1)
                .flags(SYN | ACK)
                .ts(77, tsval);
            cap.send(t + MS, 5, sa);
        }
    };
    connect(T0, [10, 244, 1, 11], 40000, 1_000, 9_000_000, true);
    connect(T0 + 100 * MS, [10, 244, 1, 12], 40001, 2_000, 4_000, false);
    connect(
        T0 + 200 * MS,
        [10, 244, 1, 11],
        40002,
        3_000,
        9_000_100,
        true,
    );
    connect(T0 + 300 * MS, [10, 244, 1, 12], 40003, 4_000, 4_100, false);
    cap.send(T0 + 10 * S, 5, tcp_v4(SRV, 80, C, 1).seq(1).flags(ACK));
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("tw-recycle-paws", Confidence::Possible)],
        "{:#?}",
        a.findings
    );
    assert!(
        a.findings[0]
            .summary
            .contains("2 connection(s) from 10.244.1.12")
            && a.findings[0].summary.contains("another client"),
        "{}",
        a.findings[0].summary
    );
}

#[test]
fn a_local_address_proven_on_the_wire_makes_local_source_drop_likely() {
    // SYNs from the LB address arrive on the uplink and are never answered while the NodePort answers
    // others; the same capture shows the node's own connection to the LB address over `lo`.
    let lb = [170, 106, 134, 124];
    let mut cap = unanswered_health_checks(lb);
    // A probe from the node itself to lb:80, routed over lo (ifindex 1).
    cap.send(T0 + 55 * S, 1, tcp_v4(lb, 51000, lb, 80).seq(70).flags(SYN));
    cap.send(
        T0 + 55 * S + MS,
        1,
        tcp_v4(lb, 80, lb, 51000).seq(90).ack(71).flags(SYN | ACK),
    );
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("local-source-drop", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
    assert!(
        a.findings[0]
            .reasoning
            .iter()
            .any(|r| r.contains("loopback")),
        "{:#?}",
        a.findings[0].reasoning
    );

    // A server the node only forwards to (its connection seen on two interfaces) is not the node's
    // own address: its unanswered SYNs to the NodePort stay `possible`.
    let mut cap = Cap::new();
    for k in 0..2u32 {
        for d in [0i64, 1, 3] {
            cap.send(
                T0 + k as i64 * 20 * S + d * S,
                2,
                tcp_v4(SRV, 40000 + k as u16, N, 30080)
                    .seq(5000 + k)
                    .flags(SYN),
            );
        }
    }
    handshake(
        &mut cap,
        T0 + 50 * S,
        ([10, 0, 9, 9], 45000),
        (N, 30080),
        1,
        2,
    );
    let syn = tcp_v4(C, 46000, SRV, 443).seq(10).flags(SYN);
    let id = cap.send(T0 + 55 * S, 5, syn.clone());
    cap.copy(T0 + 55 * S + 10_000, 2, id, syn);
    let sa = tcp_v4(SRV, 443, C, 46000).seq(20).ack(11).flags(SYN | ACK);
    let id = cap.send(T0 + 55 * S + MS, 2, sa.clone());
    cap.copy(T0 + 55 * S + MS + 10_000, 5, id, sa);
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("local-source-drop", Confidence::Possible)],
        "{:#?}",
        a.findings
    );

    // Healthy: a SYN-ACK to a local (non-LB) address and nothing unanswered.
    let mut cap = Cap::new();
    handshake(&mut cap, T0, (N, 45000), (SRV, 443), 1, 2);
    cap.send(T0 + S, 1, tcp_v4(N, 51000, N, 80).seq(70).flags(SYN));
    cap.send(
        T0 + S + MS,
        1,
        tcp_v4(N, 80, N, 51000).seq(90).ack(71).flags(SYN | ACK),
    );
    assert_quiet(&cap.analyze());
}

#[test]
fn a_query_lost_beyond_the_node_after_dnat_is_not_a_race() {
    // Node view: A and AAAA both leave the node after DNAT; the AAAA's answer never comes back (lost
    // beyond the node) and the resolver re-sends it after its timeout. Not the conntrack race: the
    // query did get through NAT.
    let mut cap = Cap::new();
    let (qa, qaaaa) = dns_pair(&mut cap, T0, 6150, (0x310, 0x311));
    let id = cap.send(T0, 3, qa);
    cap.copy(
        T0 + 5_000,
        4,
        id,
        udp_v4(C, 6150, B1, 53).payload(&dns_query(0x310, "svc.example.", 1).build()),
    );
    let id = cap.send(T0 + 20_000, 3, qaaaa.clone());
    cap.copy(
        T0 + 25_000,
        4,
        id,
        udp_v4(C, 6150, B1, 53).payload(&dns_query(0x311, "svc.example.", 28).build()),
    );
    let r = |qt| {
        udp_v4(B1, 53, C, 6150)
            .payload(&dns_response(if qt == 1 { 0x310 } else { 0x311 }, "svc.example.", qt).build())
    };
    let id = cap.send(T0 + MS, 4, r(1));
    cap.copy(
        T0 + MS + 5_000,
        3,
        id,
        udp_v4(VIP, 53, C, 6150).payload(&dns_response(0x310, "svc.example.", 1).build()),
    );
    let id = cap.send(T0 + 5 * S, 3, qaaaa);
    cap.copy(
        T0 + 5 * S + 5_000,
        4,
        id,
        udp_v4(C, 6150, B1, 53).payload(&dns_query(0x311, "svc.example.", 28).build()),
    );
    let id = cap.send(T0 + 5 * S + MS, 4, r(28));
    cap.copy(
        T0 + 5 * S + MS + 5_000,
        3,
        id,
        udp_v4(VIP, 53, C, 6150).payload(&dns_response(0x311, "svc.example.", 28).build()),
    );
    cap.send(T0 + 40 * S, 3, tcp_v4(C, 1, SRV, 2).seq(1).flags(ACK));
    assert_quiet(&cap.analyze());
}

#[test]
fn one_same_id_lookup_sent_to_two_nameservers_is_one_lookup_with_every_answer_matched() {
    // musl sends A and AAAA, one id, from one socket to each nameserver of resolv.conf at once; each
    // server answers AAAA (NODATA) before A. Every answer belongs to the query of its server and type:
    // none is "never answered", and the two pairs are one lookup.
    const NS2: [u8; 4] = [10, 96, 0, 11];
    let mut cap = Cap::new();
    let q = |ns: [u8; 4], qt| {
        udp_v4(C, 6600, ns, 53).payload(&dns_query(0x7171, "svc.example.", qt).build())
    };
    cap.send(T0, 2, q(SRV, 1));
    cap.send(T0 + 10_000, 2, q(NS2, 1));
    cap.send(T0 + 20_000, 2, q(SRV, 28));
    cap.send(T0 + 30_000, 2, q(NS2, 28));
    for (k, ns) in [SRV, NS2].into_iter().enumerate() {
        let at = T0 + MS + k as i64 * 10_000;
        cap.send(
            at,
            2,
            udp_v4(ns, 53, C, 6600).payload(&dns_response(0x7171, "svc.example.", 28).build()),
        );
        cap.send(
            at + 30 * MS,
            2,
            udp_v4(ns, 53, C, 6600).payload(
                &dns_response(0x7171, "svc.example.", 1)
                    .answer_a([1, 2, 3, 4])
                    .build(),
            ),
        );
    }
    let a = cap.analyze();
    assert_eq!(
        ids(&a),
        vec![("dns-id-collision", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
    assert!(
        a.findings[0].summary.starts_with("1 lookup(s)"),
        "{}",
        a.findings[0].summary
    );
    assert_eq!(
        (
            a.stats.dns_queries,
            a.stats.dns_unanswered,
            a.stats.dns_retries
        ),
        (4, 0, 0),
        "{:?}",
        a.stats
    );
}

#[test]
fn an_icmp_error_seen_at_two_points_of_one_capture_counts_once() {
    // A routing node's `-i any`: each port-unreachable on the pod's veth and on the uplink, same IP
    // identification; two distinct errors stay two.
    let mut cap = Cap::new();
    for k in 0..2i64 {
        let e = icmp(
            std::net::Ipv4Addr::from(C),
            std::net::Ipv4Addr::from(SRV),
            3,
            3,
        );
        let id = cap.send(T0 + k * S, 5, e.clone());
        cap.copy(T0 + k * S + 20_000, 2, id, e);
    }
    let a = cap.analyze();
    let icmp = a
        .symptoms
        .iter()
        .find(|s| s.summary.contains("ICMP"))
        .unwrap_or_else(|| panic!("{:#?}", a.symptoms));
    assert_eq!(icmp.count, 2, "{}", icmp.summary);
}

/// A client that closes first and connects again on the same 4-tuple within 60 s (tcp_tw_reuse taking
/// its TIME_WAIT ports) three times: possible port pressure from the capture alone; with the client's
/// range known to hold only that port, every port was held: confirmed.
#[test]
fn ports_reused_inside_the_clients_time_wait_are_port_pressure() {
    let build = || {
        let mut cap = Cap::new();
        for round in 0..4u32 {
            let t = T0 + i64::from(round) * 2 * S;
            let isn = 1000 + round * 100_000;
            let (cs, ss) = handshake(&mut cap, t, (C, 42100), (SRV, 80), isn, 9000 + round);
            cap.send(
                t + 10 * MS,
                2,
                tcp_v4(C, 42100, SRV, 80).seq(cs).ack(ss).flags(FIN | ACK),
            );
            cap.send(
                t + 11 * MS,
                2,
                tcp_v4(SRV, 80, C, 42100)
                    .seq(ss)
                    .ack(cs + 1)
                    .flags(FIN | ACK),
            );
            cap.send(
                t + 12 * MS,
                2,
                tcp_v4(C, 42100, SRV, 80).seq(cs + 1).ack(ss + 1).flags(ACK),
            );
        }
        cap
    };
    assert_eq!(
        ids(&build().analyze()),
        vec![("ephemeral-port-exhaustion", Confidence::Possible)]
    );
    let node = NodeContext {
        local_port_ranges: vec![(std::net::IpAddr::from(C), 42100, 42100)],
        ..Default::default()
    };
    assert_eq!(
        ids(&build().analyze_with(&node)),
        vec![("ephemeral-port-exhaustion", Confidence::Confirmed)]
    );
}

/// Without any port reused in TIME_WAIT, the range is used up only by as many connections held at
/// once as it has ports: three open connections fill a range of three ports (confirmed), not one of
/// four (no finding, however the connections overlap).
#[test]
fn as_many_connections_held_at_once_as_the_range_has_ports_use_it_up() {
    let build = || {
        let mut cap = Cap::new();
        let mut open = Vec::new();
        for (k, port) in [42100u16, 42101, 42102].into_iter().enumerate() {
            let t = T0 + k as i64 * 10 * MS;
            let isn = 1000 + k as u32 * 100_000;
            open.push((
                port,
                handshake(&mut cap, t, (C, port), (SRV, 80), isn, 9000),
            ));
        }
        // Each still in use a second later: all three held at once.
        for (k, (port, (cs, ss))) in open.into_iter().enumerate() {
            let t = T0 + S + k as i64 * MS;
            cap.send(t, 2, tcp_v4(C, port, SRV, 80).seq(cs).ack(ss).flags(ACK));
        }
        cap
    };
    let range = |hi: u16| NodeContext {
        local_port_ranges: vec![(std::net::IpAddr::from(C), 42100, hi)],
        ..Default::default()
    };
    assert_eq!(
        ids(&build().analyze_with(&range(42102))),
        vec![("ephemeral-port-exhaustion", Confidence::Confirmed)]
    );
    assert_eq!(ids(&build().analyze_with(&range(42103))), vec![]);
}
