//! Issue 15's conntrack incidents on synthetic packet sequences: each signature gives its finding at
//! the confidence its evidence supports, and the healthy look-alike of each stays quiet.

mod support;

use netsleuth_core::node::NodeContext;
use netsleuth_core::{Analysis, Confidence};
use support::*;

/// A pod's own capture: every packet recorded once, on its one interface.
#[derive(Default)]
struct Cap(SllCapture);

impl Cap {
    fn new() -> Self {
        Cap::default()
    }
    fn send(&mut self, ts: i64, b: PacketBuilder) {
        self.0.record(ts, 2, PKTTYPE_OUTGOING, b);
    }
    fn analyze_with(self, node: &NodeContext) -> Analysis {
        self.0.analyze_with(node)
    }
}

fn ids(a: &Analysis) -> Vec<(&'static str, Confidence)> {
    incident_ids(a)
}

const C: [u8; 4] = [10, 244, 1, 10];

/// A connection to `s` opened at `t` that exchanges one request/answer every 500 ms until `until`.
fn long_connection(cap: &mut Cap, t: i64, until: i64, s: [u8; 4], cport: u16) {
    let (ic, is) = (1000u32, 9000u32);
    cap.send(t, tcp_v4(C, cport, s, 8080).seq(ic).flags(SYN));
    cap.send(
        t + MS,
        tcp_v4(s, 8080, C, cport)
            .seq(is)
            .ack(ic + 1)
            .flags(SYN | ACK),
    );
    cap.send(
        t + 2 * MS,
        tcp_v4(C, cport, s, 8080).seq(ic + 1).ack(is + 1).flags(ACK),
    );
    let (mut c, mut sv) = (ic + 1, is + 1);
    let mut now = t + 10 * MS;
    while now < until {
        cap.send(
            now,
            tcp_v4(C, cport, s, 8080)
                .seq(c)
                .ack(sv)
                .flags(ACK | PSH)
                .payload(b"ping"),
        );
        c += 4;
        cap.send(
            now + MS,
            tcp_v4(s, 8080, C, cport)
                .seq(sv)
                .ack(c)
                .flags(ACK | PSH)
                .payload(b"pong!"),
        );
        sv += 5;
        now += 500 * MS;
    }
}

/// A connection attempt whose SYN is sent at `t`, `t + 1 s` and `t + 3 s` and never answered.
fn refused(cap: &mut Cap, t: i64, s: [u8; 4], cport: u16) {
    for k in [0, 1, 3] {
        cap.send(
            t + k * S,
            tcp_v4(C, cport, s, 8080)
                .seq(50_000 + cport as u32)
                .flags(SYN),
        );
    }
}

fn table_full_capture(destinations: &[[u8; 4]]) -> Cap {
    let mut cap = Cap::new();
    let alive = [10, 244, 2, 11];
    long_connection(&mut cap, T0, T0 + 8 * S, alive, 40_000);
    for (i, d) in destinations.iter().enumerate() {
        refused(&mut cap, T0 + 2 * S + i as i64 * MS, *d, 41_000 + i as u16);
    }
    cap
}

#[test]
fn conntrack_table_full_three_destinations_one_alive_is_likely_and_confirmed_with_the_count() {
    let dests = [[10, 244, 2, 11], [10, 244, 2, 12], [10, 96, 0, 20]];
    let a = table_full_capture(&dests).analyze_with(&NodeContext::default());
    assert_eq!(
        ids(&a),
        vec![("conntrack-table-full", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
    let mut node = NodeContext::default();
    node.sysctls
        .insert("net.netfilter.nf_conntrack_count".into(), "262144".into());
    node.sysctls
        .insert("net.netfilter.nf_conntrack_max".into(), "262144".into());
    let a = table_full_capture(&dests).analyze_with(&node);
    assert_eq!(
        ids(&a),
        vec![("conntrack-table-full", Confidence::Confirmed)]
    );
    // A table far from full when the node was read: the capture alone cannot say more than possible.
    node.sysctls
        .insert("net.netfilter.nf_conntrack_count".into(), "1200".into());
    let a = table_full_capture(&dests).analyze_with(&node);
    assert_eq!(
        ids(&a),
        vec![("conntrack-table-full", Confidence::Possible)]
    );
}

#[test]
fn conntrack_table_full_two_destinations_is_possible() {
    let a = table_full_capture(&[[10, 244, 2, 11], [10, 244, 2, 12]])
        .analyze_with(&NodeContext::default());
    assert_eq!(
        ids(&a),
        vec![("conntrack-table-full", Confidence::Possible)]
    );
}

/// Healthy look-alike: new connections to three hosts that are down (a stale endpoint list) fail
/// together while an existing connection to a fourth host flows. Nothing proves the failing hosts
/// alive, so it is a symptom, not a full table.
#[test]
fn dead_hosts_while_another_connection_flows_are_not_a_full_table() {
    let a = table_full_capture(&[[10, 244, 3, 1], [10, 244, 3, 2], [10, 244, 3, 3]])
        .analyze_with(&NodeContext::default());
    assert!(ids(&a).is_empty(), "{:#?}", a.findings);
    assert!(
        !a.symptoms.is_empty(),
        "the retransmitted SYNs stay a symptom"
    );
}

const VIP: [u8; 4] = [10, 96, 0, 30];
const POD: [u8; 4] = [10, 244, 2, 11];

/// The client's view of an established connection to the Service address; with `stray`, one segment
/// from the backend's own address arrives on the same port and the client resets it, then the
/// Service connection is reset on the next request.
fn invalid_reset_client_view(stray: bool) -> Cap {
    let mut cap = Cap::new();
    let (cport, ic, is) = (45_000u16, 7000u32, 3_000_000u32);
    cap.send(T0, tcp_v4(C, cport, VIP, 80).seq(ic).flags(SYN));
    cap.send(
        T0 + MS,
        tcp_v4(VIP, 80, C, cport)
            .seq(is)
            .ack(ic + 1)
            .flags(SYN | ACK),
    );
    cap.send(
        T0 + 2 * MS,
        tcp_v4(C, cport, VIP, 80).seq(ic + 1).ack(is + 1).flags(ACK),
    );
    cap.send(
        T0 + 3 * MS,
        tcp_v4(C, cport, VIP, 80)
            .seq(ic + 1)
            .ack(is + 1)
            .flags(ACK | PSH)
            .payload(b"hello\n"),
    );
    cap.send(
        T0 + 4 * MS,
        tcp_v4(VIP, 80, C, cport)
            .seq(is + 1)
            .ack(ic + 7)
            .flags(ACK | PSH)
            .payload(b"pod:hello\n"),
    );
    cap.send(
        T0 + 40 * MS,
        tcp_v4(C, cport, VIP, 80)
            .seq(ic + 7)
            .ack(is + 11)
            .flags(ACK),
    );
    if stray {
        let late = is + 11 + (1 << 30);
        cap.send(
            T0 + S,
            tcp_v4(POD, 8080, C, cport)
                .seq(late)
                .ack(ic + 7)
                .flags(ACK | PSH)
                .payload(b"late\n"),
        );
        cap.send(
            T0 + S + MS / 10,
            tcp_v4(C, cport, POD, 8080).seq(ic + 7).flags(RST),
        );
        cap.send(
            T0 + 2 * S,
            tcp_v4(C, cport, VIP, 80)
                .seq(ic + 7)
                .ack(is + 11)
                .flags(ACK | PSH)
                .payload(b"after\n"),
        );
        cap.send(
            T0 + 2 * S + MS,
            tcp_v4(VIP, 80, C, cport).seq(ic + 7).flags(RST),
        );
    } else {
        // Healthy: the client's application aborts the connection (RST|ACK to the Service address).
        cap.send(
            T0 + 2 * S,
            tcp_v4(C, cport, VIP, 80)
                .seq(ic + 7)
                .ack(is + 11)
                .flags(RST | ACK),
        );
    }
    cap
}

#[test]
fn conntrack_invalid_reset_from_the_client_is_likely() {
    let a = invalid_reset_client_view(true).analyze_with(&NodeContext::default());
    assert_eq!(
        ids(&a),
        vec![("conntrack-invalid-reset", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
}

/// Healthy look-alikes: an application abort of a Service connection, and a segment from an
/// unrelated host to a client port that no established connection uses (a scan, a stale peer),
/// answered by the client's RST: no reply skipped reverse NAT.
#[test]
fn application_aborts_and_unrelated_strays_are_not_invalid_resets() {
    let a = invalid_reset_client_view(false).analyze_with(&NodeContext::default());
    assert!(ids(&a).is_empty(), "{:#?}", a.findings);
    let mut cap = Cap::new();
    cap.send(
        T0,
        tcp_v4(POD, 8080, C, 47_000)
            .seq(5)
            .ack(99)
            .flags(ACK | PSH)
            .payload(b"x"),
    );
    cap.send(T0 + MS, tcp_v4(C, 47_000, POD, 8080).seq(99).flags(RST));
    let a = cap.analyze_with(&NodeContext::default());
    assert!(ids(&a).is_empty(), "{:#?}", a.findings);
}

const DNS_VIP: [u8; 4] = [10, 96, 0, 10];

fn query(cap: &mut Cap, t: i64, cport: u16, id: u16, name: &str, server: [u8; 4], answered: bool) {
    cap.send(
        t,
        udp_v4(C, cport, server, 53).payload(&dns_query(id, name, QTYPE_A).build()),
    );
    if answered {
        cap.send(
            t + MS,
            udp_v4(server, 53, C, cport).payload(
                &dns_response(id, name, QTYPE_A)
                    .answer_a([10, 96, 1, 1])
                    .build(),
            ),
        );
    }
}

/// One long-lived socket answered, then unanswered for 3 s while a new socket to the same address is
/// answered (`stale`); or every socket to a dead server unanswered (a dead nameserver, the look-alike).
fn stale_udp_capture(stale: bool) -> Cap {
    let mut cap = Cap::new();
    let names = [
        "api.default.svc.cluster.local",
        "db.default.svc.cluster.local",
    ];
    for i in 0..4 {
        query(
            &mut cap,
            T0 + i * 250 * MS,
            40_001,
            100 + i as u16,
            names[i as usize % 2],
            DNS_VIP,
            stale,
        );
    }
    for i in 0..12 {
        let t = T0 + 2 * S + i * 250 * MS;
        query(
            &mut cap,
            t,
            40_001,
            200 + i as u16,
            names[i as usize % 2],
            DNS_VIP,
            false,
        );
        if i % 3 == 1 {
            query(
                &mut cap,
                t + 10 * MS,
                40_002 + i as u16,
                300 + i as u16,
                names[i as usize % 2],
                DNS_VIP,
                stale,
            );
        }
    }
    cap
}

#[test]
fn stale_udp_conntrack_from_the_client_is_likely() {
    let a = stale_udp_capture(true).analyze_with(&NodeContext::default());
    assert_eq!(
        ids(&a),
        vec![("stale-udp-conntrack", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
}

/// Healthy look-alike for this detector: a nameserver that answers no socket at all is
/// dns-upstream-unreachable's (or nobody's), never a pinned flow.
#[test]
fn a_server_that_answers_no_socket_is_not_a_stale_entry() {
    let a = stale_udp_capture(false).analyze_with(&NodeContext::default());
    assert!(
        ids(&a).iter().all(|(id, _)| *id != "stale-udp-conntrack"),
        "{:#?}",
        a.findings
    );
}

/// Healthy look-alike (as in the corpus's wwwww.pcap): one name retried from a socket that was
/// answered before, unanswered for seconds (a slow upstream), while other sockets are answered.
#[test]
fn one_name_retried_unanswered_is_not_a_stale_entry() {
    let mut cap = Cap::new();
    let name = "www.perldoc.com";
    query(
        &mut cap,
        T0,
        40_001,
        7,
        "metrics.example.com",
        DNS_VIP,
        true,
    );
    for k in [0, 2, 4, 8] {
        query(&mut cap, T0 + S + k * S, 40_001, 9, name, DNS_VIP, false);
    }
    query(
        &mut cap,
        T0 + S + 10 * MS,
        40_002,
        11,
        "www.ietf.org",
        DNS_VIP,
        true,
    );
    query(
        &mut cap,
        T0 + 4 * S,
        40_003,
        12,
        "api.example.com",
        DNS_VIP,
        true,
    );
    let a = cap.analyze_with(&NodeContext::default());
    assert!(
        ids(&a).iter().all(|(id, _)| *id != "stale-udp-conntrack"),
        "{:#?}",
        a.findings
    );
}

const LB: [u8; 4] = [203, 0, 113, 10];

/// A connection to a balancer's address, idle for `idle`, then the client's next segment answered by
/// a bare RST with TTL `rst_ttl` (the server's packets arrive with TTL 62).
fn idle_then_reset(idle: i64, rst_ttl: u8) -> Cap {
    let mut cap = Cap::new();
    let (cport, ic, is) = (46_000u16, 500u32, 80_000u32);
    cap.send(T0, tcp_v4(C, cport, LB, 443).seq(ic).flags(SYN).ttl(64));
    cap.send(
        T0 + MS,
        tcp_v4(LB, 443, C, cport)
            .seq(is)
            .ack(ic + 1)
            .flags(SYN | ACK)
            .ttl(62),
    );
    cap.send(
        T0 + 2 * MS,
        tcp_v4(C, cport, LB, 443)
            .seq(ic + 1)
            .ack(is + 1)
            .flags(ACK)
            .ttl(64),
    );
    cap.send(
        T0 + 3 * MS,
        tcp_v4(C, cport, LB, 443)
            .seq(ic + 1)
            .ack(is + 1)
            .flags(ACK | PSH)
            .payload(b"hi")
            .ttl(64),
    );
    cap.send(
        T0 + 4 * MS,
        tcp_v4(LB, 443, C, cport)
            .seq(is + 1)
            .ack(ic + 3)
            .flags(ACK | PSH)
            .payload(b"yo")
            .ttl(62),
    );
    cap.send(
        T0 + 40 * MS,
        tcp_v4(C, cport, LB, 443)
            .seq(ic + 3)
            .ack(is + 3)
            .flags(ACK)
            .ttl(64),
    );
    let t = T0 + 40 * MS + idle;
    cap.send(
        t,
        tcp_v4(C, cport, LB, 443)
            .seq(ic + 3)
            .ack(is + 3)
            .flags(ACK | PSH)
            .payload(b"again")
            .ttl(64),
    );
    cap.send(
        t + MS,
        tcp_v4(LB, 443, C, cport)
            .seq(is + 3)
            .flags(RST)
            .ttl(rst_ttl),
    );
    cap
}

#[test]
fn idle_timeout_reset_by_a_nearer_box_is_likely() {
    let a = idle_then_reset(360 * S, 63).analyze_with(&NodeContext::default());
    assert_eq!(
        ids(&a),
        vec![("idle-timeout-reset", Confidence::Likely)],
        "{:#?}",
        a.findings
    );
}

/// Healthy look-alikes: the server itself resets after the idle time (same TTL as its SYN-ACK: a
/// restarted server or an application that dropped the connection), and a long idle followed by a
/// normal exchange.
#[test]
fn the_servers_own_reset_after_idle_is_not_a_middlebox() {
    let a = idle_then_reset(360 * S, 62).analyze_with(&NodeContext::default());
    assert!(
        ids(&a).iter().all(|(id, _)| *id != "idle-timeout-reset"),
        "{:#?}",
        a.findings
    );
    let mut cap = Cap::new();
    long_connection(&mut cap, T0, T0 + S, LB, 46_100);
    long_connection(&mut cap, T0 + 400 * S, T0 + 401 * S, LB, 46_101);
    assert!(ids(&cap.analyze_with(&NodeContext::default())).is_empty());
}
